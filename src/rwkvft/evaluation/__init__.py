"""Benchmark evaluation through lm-evaluation-harness (optional extra `rwkvft[eval]`).

scoring: log-likelihoods / generation in token ids, shared-context and rolling paths (torch only).
harness: the lm-eval `LM` ("rwkvft" in lm-eval's model registry). tasks: run, compare, report.
Import `harness` only when lm-eval is wanted; `tasks.require_lm_eval` names the extra if absent.
"""
