"""`python -m rwkvft.evaluation ARGS`: lm-eval's own command line (`lm_eval ARGS`) with the
"rwkvft" model registered first. The installed package makes the plain `lm_eval --model rwkvft`
work by itself (lm_eval_plugin.py); this is for where site-packages' .pth files do not run
(`python -S`, a source tree used through PYTHONPATH without installing)."""
from __future__ import annotations


def main() -> None:
    from .tasks import require_lm_eval
    require_lm_eval()
    from . import harness  # noqa: F401  registers "rwkvft" in lm-eval's model registry
    from lm_eval.__main__ import cli_evaluate
    cli_evaluate()


if __name__ == "__main__":
    main()
