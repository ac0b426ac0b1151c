"""`python -m rwkvft.evaluation ARGS`: lm-eval's own command line (`lm_eval ARGS`) with the
"rwkvft" model registered first, for lm-eval releases that do not yet load installed model
plugins from the `lm_eval.models` entry point group (0.4.x up to at least 0.4.13)."""
from __future__ import annotations


def main() -> None:
    from .tasks import require_lm_eval
    require_lm_eval()
    from . import harness  # noqa: F401  registers "rwkvft" in lm-eval's model registry
    from lm_eval.__main__ import cli_evaluate
    cli_evaluate()


if __name__ == "__main__":
    main()
