"""An lm-evaluation-harness `LM` over an rwkvft model: `lm_eval --model rwkvft` and `rwkvft eval --tasks`.

lm-eval does the prompts, few-shot examples, metrics and their standard errors; this class only
turns its requests into token ids (lm-eval's own context/continuation split through TemplateLM,
with the World tokenizer) and scores them with evaluation.scoring (shared-context by default).

Registered under the name "rwkvft" in lm-eval's model registry when this module is imported;
the plain `lm_eval --model rwkvft` finds it through lm_eval_plugin.py (a lazy placeholder that
imports this module when lm-eval asks for the model) or, with lm-eval releases that read it, the
`lm_eval.models` entry point in pyproject.toml.
"""
from __future__ import annotations

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from ..errors import UserError
from .scoring import Scorer

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def _device(device) -> str:
    """lm-eval's command line asks for "cuda" unless told otherwise; like its HF model, run on
    the CPU (saying so) when no GPU is visible."""
    import torch
    device = str(device or "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        import logging
        logging.getLogger(__name__).warning("no CUDA GPU visible: the rwkvft model runs on the CPU")
        return "cpu"
    return device


def _flag(value) -> bool:
    """model_args arrive as strings from the lm_eval command line."""
    return str(value).lower() in ("1", "true", "yes") if not isinstance(value, bool) else value


@register_model("rwkvft")
class RwkvLM(TemplateLM):
    """model_args: pretrained (checkpoint path) or model (an nn.Module already built), adapter,
    state, lora_alpha, device (cpu / cuda[:N]), dtype (float32 / bfloat16), batch_size,
    shared_context (1 = run each shared context once; 0 = the plain path), window (tokens per
    rolling window), op (WKV op), seed (sampling)."""

    backend = "causal"

    def __init__(self, pretrained=None, model=None, adapter=None, state=None, lora_alpha=None,
                 device="cpu", dtype="float32", batch_size=8, shared_context=True, window=2048,
                 op=None, seed=1234, tokenizer=None, max_batch_size=None, **unknown):
        super().__init__()
        if unknown:   # a misspelt adapter= must not quietly score the base model
            raise UserError(f"unknown rwkvft model argument(s) {', '.join(sorted(unknown))}; known: "
                            f"pretrained, adapter, state, lora_alpha, device, dtype, batch_size, "
                            f"shared_context, window, op, seed")
        import torch

        from ..data.tokenizer import WorldTokenizer
        if model is None and pretrained is None:
            raise UserError("the rwkvft model needs pretrained=PATH (a .pth / .safetensors / HF folder)")
        if str(dtype) not in DTYPES:
            raise UserError(f"dtype {dtype!r} is not one of float32, bfloat16, float16")
        torch_dtype = getattr(torch, DTYPES[str(dtype)])
        device = _device(device)
        batch_size = int(batch_size) if str(batch_size).isdigit() else 8   # lm-eval may say "auto"
        if model is None:
            from ..assembly import assemble_model  # the one model + adapter + state path
            model = assemble_model(pretrained, adapter or None, state or None,
                                   None if lora_alpha is None else float(lora_alpha),
                                   device=device, dtype=torch_dtype)
        if op is not None:
            model.set_runtime(op=op)
        self.tokenizer = tokenizer or WorldTokenizer()
        if model.config.vocab_size < self.tokenizer.vocab_size:
            raise UserError(f"the World tokenizer needs a model with vocab {self.tokenizer.vocab_size}; "
                            f"this one has {model.config.vocab_size}")
        self._model, self._device = model.eval(), torch.device(device)
        self.scorer = Scorer(model, device, batch_size=int(batch_size), window=int(window))
        self.shared_context, self.seed = _flag(shared_context), int(seed)
        self.name = str(pretrained) if pretrained is not None else "model"

    # ------------------------------------------------------------ what lm-eval asks of a model
    @property
    def eot_token_id(self) -> int:
        return 0  # the World vocabulary's end of text / document separator

    @property
    def device(self):
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return "rwkv-world"

    def chat_template(self, chat_template=False):
        if chat_template:
            raise UserError("this RWKV model has no chat template in rwkvft; drop apply_chat_template "
                            "(score the task as plain text)")
        return None

    def apply_chat_template(self, chat_history, add_generation_prompt=True):
        raise UserError("this RWKV model has no chat template in rwkvft; drop apply_chat_template "
                        "(score the task as plain text)")

    def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
        return self.tokenizer.encode(string)

    def tok_decode(self, ids) -> str:
        return self.tokenizer.decode(ids)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        pairs = [(list(ctx), list(cont)) for _, ctx, cont in requests]
        for (strings, _, cont) in requests:
            if not cont:
                raise UserError(f"a continuation tokenizes to nothing ({strings[1]!r}); check the "
                                f"task's doc_to_choice / doc_to_target")
        with _bar(len(pairs), disable_tqdm, "loglikelihood") as bar:
            out = self.scorer.loglikelihood(pairs, shared=self.shared_context, progress=bar.update)
        for (strings, _, _), res in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood", strings, res)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        docs = [self.tok_encode(req.args[0]) for req in requests]
        with _bar(len(docs), disable_tqdm, "loglikelihood_rolling") as bar:
            out = self.scorer.rolling(docs, prefix=self.prefix_token_id, progress=bar.update)
        for req, res in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood_rolling", (req.args[0],), res)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        prompts, settings = [], []
        for req in requests:
            context, kwargs = req.args[0], dict(req.args[1] or {})
            prompts.append(self.tok_encode(context) or [self.eot_token_id])
            settings.append(self._gen_settings(kwargs))
        with _bar(len(prompts), disable_tqdm, "generate_until") as bar:
            out = self.scorer.generate(prompts, settings, self.tok_decode, progress=bar.update)
        for req, res in zip(requests, out):
            self.cache_hook.add_partial("generate_until", req.args, res)
        return out

    def _gen_settings(self, kwargs: dict) -> dict:
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        sampled = _flag(kwargs.pop("do_sample", False))
        temperature = float(kwargs.pop("temperature", 1.0 if sampled else 0.0))
        if not sampled:
            temperature = 0.0
        return {"until": until, "max_tokens": int(kwargs.pop("max_gen_toks", 256)),
                "temperature": temperature, "top_p": float(kwargs.pop("top_p", 1.0) or 1.0),
                "seed": int(kwargs.pop("seed", self.seed))}


class _bar:
    """A tqdm bar, or nothing (tqdm is a core dependency already)."""

    def __init__(self, total: int, disable: bool, desc: str):
        from tqdm import tqdm
        self._bar = tqdm(total=total, disable=disable or total < 64, desc=desc)

    def __enter__(self):
        return self._bar

    def __exit__(self, *exc):
        self._bar.close()
