"""benchmarks/profile_step.py's one map from profiled ops to classes, on a hand-built step whose
classes are known: the scopes' forward ops, their backward through autograd's sequence numbers,
and a block's matmuls apart from its elementwise ops."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

spec = importlib.util.spec_from_file_location(
    "profile_step", Path(__file__).resolve().parents[2] / "benchmarks" / "profile_step.py")
profile_step = importlib.util.module_from_spec(spec)
spec.loader.exec_module(profile_step)


def test_ops_land_in_their_classes():
    S = profile_step.SCOPE
    w = torch.randn(256, 256)                       # frozen
    mix = torch.randn(256, 256, requires_grad=True)  # a trainable low-rank-like matrix
    x = torch.randn(64, 256, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function(S + "block"):
            with record_function(S + "frozen"):
                y = x @ w.T
            z = torch.tanh(y) @ mix                 # a block matmul (mixes) of an elementwise op
            u = torch.sigmoid(z) * 3.0
        with record_function(S + "head"):
            loss = torch.nn.functional.cross_entropy(u, torch.zeros(64, dtype=torch.long))
        loss.backward()
        with record_function(S + "optimizer"):
            mix.data.add_(mix.grad, alpha=-0.1)
    classes = profile_step.breakdown(prof.events())
    for c in ("frozen-weight matmul", "low-rank mixes (w/a/v/g)", "block elementwise", "head + CE",
              "optimizer", "bwd: frozen-weight matmul", "bwd: low-rank mixes (w/a/v/g)",
              "bwd: block elementwise", "bwd: head + CE"):
        assert classes.get(c, 0) > 0, (c, classes)
    assert "bwd: data" not in classes and "bwd: optimizer" not in classes
    both = profile_step.with_backward(classes)
    assert both["head + CE"] == classes["head + CE"] + classes["bwd: head + CE"]
