"""Checkpoint files: official RWKV .pth / .safetensors (rwkv_format), adapter files, merges.

File I/O only; the schema (infer_config, check_against, shapes) is rwkvft.models.schema and is
re-exported here for existing callers."""
from .rwkv_format import check_against, infer_config, read_state_dict, write_state_dict

__all__ = ["read_state_dict", "infer_config", "check_against", "write_state_dict"]
