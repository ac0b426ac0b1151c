"""`rwkvft.export`: base + adapter -> a file or folder another runtime loads beside (or instead
of) the base, in any registered export format. The base and the adapter are never overwritten;
an existing output is replaced only with force; the format refuses a method its file cannot
hold, from the method's own declaration (registry.require)."""
from __future__ import annotations

from pathlib import Path

from ..adapters import registry as methods
from ..errors import UserError
from ..utils import require_file, same_file
from . import registry
from .reading import load_inputs


def _check_paths(base: Path, adapter: Path, out: Path, fmt, force: bool) -> None:
    if not base.is_dir():
        require_file(base, "base model")
    if not adapter.is_dir():
        require_file(adapter, "adapter")
    for what, p in (("the base model", base), ("the adapter", adapter)):
        if same_file(p, out) or (p.resolve().is_relative_to(out.resolve()) and out.exists()):
            raise UserError(f"--output {out} would overwrite {what}; choose another path")
    if fmt.output == "file" and out.is_dir():
        raise UserError(f"--output {out} is a directory; --format {fmt.name} writes a file: "
                        f"give a file name")
    if out.exists() and not force:
        raise UserError(f"{out} already exists; pass --force to replace it or choose another path")


def export(base, adapter, fmt: str, output, lora_alpha: float | None = None, force: bool = False,
           **options) -> list[str]:
    """Write `adapter` (trained on `base`) as export format `fmt` at `output`; returns the lines
    telling the user what was written and how to load it."""
    target = registry.get(fmt)
    if target.export is None:
        raise UserError(f"{fmt} is not an export format; use one of "
                        f"{', '.join(f.name for f in registry.export_targets())}")
    unknown = sorted(k for k, v in options.items() if v is not None and k not in target.options)
    if unknown:
        raise UserError(f"--{unknown[0]} does not apply to --format {fmt}")
    base, adapter, out = Path(base), Path(adapter), Path(output)
    _check_paths(base, adapter, out, target, force)
    base_sd, adapter_sd, config = load_inputs(base, adapter, lora_alpha)
    registry.require(target, methods.get(config.get("method")), config)
    options = {k: v for k, v in options.items() if v is not None}
    if "chat_template" in target.options and "chat_template" not in options:
        # the exported chat template writes what the run trained on (its train_config.json)
        from ..data.templates.jinja import run_chat_template
        options["chat_template"] = run_chat_template(adapter)
    return target.export(base_sd, adapter_sd, config, out, options)
