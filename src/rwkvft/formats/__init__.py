"""File formats: one module per format, each registering a `Format` record (registry.py says
what a record declares); the functions below are the only way in.

    read_model(path) -> official state dict        (any model file or folder)
    load_model(path, device, dtype) -> nn.Module
    read_adapter(path) -> (tensors, config)       (ours, RWKV-PEFT's, HF peft folders)
    read_state(path, model_config) -> {key: (H,N,N)}   (Runner / RWKV-PEFT .pth, Ai00 .state)
    write_state_dict(sd, path, dtype) / write_model(sd, path, fmt, dtype)
    export(base, adapter, fmt, output, ...) -> lines    merge(base, adapter, output, ...) -> line
    identify(path) -> dict                        (`rwkvft inspect`)
Modules are imported in the order readers are asked (a folder: HF peft adapter before HF model).
"""
from __future__ import annotations

from ..adapters.fingerprint import check_fingerprint, fingerprint
from ..adapters.merge import merge_state_dict, unmerge_state_dict
from ..models.schema import check_against, infer_config
# registration order = the order readers are asked
from . import hf_peft, adapter_file, rwkv_peft  # noqa: E402,I001  (adapters)
from . import hf_native, hf_fla, pth, safetensors_model, ai00_model  # noqa: E402  (models)
from . import runner_state, ai00_state, ai00_lora  # noqa: E402  (states, Ai00 LoRA)
from .adapter_file import save_adapter
from .ai00_lora import ai00_lora_tensors
from .ai00_model import ai00_key, ai00_state_dict, official_from_ai00
from .export_api import export
from .hf_fla import read_hf_folder, write_hf_folder
from .hf_native import read_native, write_native_folder
from .hf_peft import hf_peft_adapter, read_hf_peft
from .inspect import describe_model, identify
from .merge_api import merge, merge_adapter_file
from .reading import (load_inputs, load_model, read_adapter, read_model, read_state, with_alpha,
                      write_model, write_state_dict)
from .registry import Format, export_targets, formats, get, register, require, unregister

read_state_dict = read_model        # the name callers of rwkvft.checkpoint know
read_state_file = read_state

__all__ = ["Format", "ai00_key", "ai00_lora_tensors", "ai00_state_dict", "check_against",
           "check_fingerprint", "describe_model", "export", "export_targets", "fingerprint", "formats", "get",
           "hf_peft_adapter", "identify", "infer_config", "load_inputs", "load_model", "merge",
           "merge_adapter_file", "merge_state_dict", "official_from_ai00", "read_adapter",
           "read_hf_folder", "read_hf_peft", "read_native", "write_native_folder", "read_model", "read_state", "read_state_dict",
           "read_state_file", "register", "require", "save_adapter", "unmerge_state_dict",
           "unregister", "with_alpha", "write_hf_folder", "write_model", "write_state_dict",
           "hf_fla", "hf_native", "pth", "safetensors_model", "ai00_model", "runner_state", "ai00_state",
           "ai00_lora", "adapter_file", "rwkv_peft", "hf_peft"]
