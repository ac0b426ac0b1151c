"""`rwkvft.new_model.write_new_model`: a freshly initialised RWKV-7 checkpoint file (bf16) of any
size; `rwkvft init` calls it. The official init, except that att.output and ffn.value get small
orthogonal weights so that every method (state tuning too) trains (models/init.py); `official=True`
keeps their zeros."""
from __future__ import annotations

from pathlib import Path

from .errors import UserError


def write_new_model(out, n_layer: int, n_embd: int, vocab_size: int = 65536, head_size: int = 64,
                    seed: int = 0, force: bool = False, official: bool = False) -> str:
    """Write the checkpoint to `out` (.pth or .safetensors); returns a one-line summary."""
    from .formats import write_state_dict
    from .models.init import init_state_dict, new_config

    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name such as {out}/rwkv-init.pth")
    if out.exists() and not force:
        raise UserError(f"{out} already exists; pass --force to overwrite it or choose another --out")
    cfg = new_config(n_layer, n_embd, vocab_size, head_size)
    sd = init_state_dict(cfg, seed=seed, trainable=not official)
    write_state_dict(sd, out)
    n_params = sum(t.numel() for t in sd.values())
    return (f"wrote {out}: RWKV-7 L{cfg.n_layer} C{cfg.n_embd} V{cfg.vocab_size}, "
            f"{n_params / 1e6:.2f}M parameters, bf16, seed {seed}"
            f"{', official init (zero att.output / ffn.value)' if official else ''}")
