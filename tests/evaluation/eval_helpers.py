"""Local lm-eval tasks written by the tests (no hub downloads) and small references."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

MC_DOCS = [{"question": f"What is {i} plus {i + 1}?", "choices": [str(2 * i + 1), str(2 * i), "seven", "a blue"],
            "label": i % 4} for i in range(8)]
ROLL_DOCS = [{"text": "The quick brown fox jumps over the lazy dog. " * (1 + i % 3) + f"Line {i}."}
             for i in range(4)]
GEN_DOCS = [{"q": f"Count: {i}, {i + 1},", "a": f" {i + 2}"} for i in range(4)]


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_tasks(root: Path) -> Path:
    """A multiple-choice, a rolling-perplexity and a generation task (stop string "\\n") over
    local jsonl files; returns the folder to pass as include_path."""
    tasks = root / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    files = {name: _jsonl(root / f"{name}.jsonl", rows)
             for name, rows in (("mc", MC_DOCS), ("roll", ROLL_DOCS), ("gen", GEN_DOCS))}

    def head(name, kind):
        return (f"task: h28_{name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                f"    test: {files[name]}\ntest_split: test\noutput_type: {kind}\n")

    (tasks / "mc.yaml").write_text(head("mc", "multiple_choice") + (
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{label}}"\nmetric_list:\n  - metric: acc\n    aggregation: mean\n'
        '    higher_is_better: true\n'))
    (tasks / "roll.yaml").write_text(head("roll", "loglikelihood_rolling") + (
        'doc_to_text: ""\ndoc_to_target: "{{text}}"\nmetric_list:\n  - metric: word_perplexity\n'
        '  - metric: bits_per_byte\n'))
    (tasks / "gen.yaml").write_text(head("gen", "generate_until") + (
        'doc_to_text: "{{q}}"\ndoc_to_target: "{{a}}"\ngeneration_kwargs:\n  until: ["\\n"]\n'
        '  max_gen_toks: 6\n  do_sample: false\nmetric_list:\n  - metric: exact_match\n'
        '    aggregation: mean\n    higher_is_better: true\n'))
    return tasks


def direct_logprob(model, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
    """sum of log-softmax over the continuation tokens, one pass over context + continuation."""
    with torch.no_grad():
        logits = model(torch.tensor([ctx + cont]))[0, len(ctx) - 1:len(ctx) + len(cont) - 1]
    logp = torch.log_softmax(logits.double(), dim=-1)
    t = torch.tensor(cont)
    return float(logp.gather(-1, t[:, None]).sum()), bool((logp.argmax(-1) == t).all())


def greedy_text(model, tokenizer, prompt: list[int], n: int) -> list[int]:
    """n greedy tokens, each from a full re-read of prompt + tokens so far (no state)."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids]))[0, -1].argmax())
            if nxt == 0:
                break
            ids.append(nxt)
    return ids[len(prompt):]


def mc_hits(model, tokenizer) -> list[float]:
    """Per document of MC_DOCS: 1.0 when the choice with the highest direct log-likelihood is the
    label (the h28_mc task's prompt and lm-eval's " " target delimiter)."""
    hits = []
    for doc in MC_DOCS:
        context = f"Question: {doc['question']}\nAnswer:"
        ctx = tokenizer.encode(context)
        lls = [direct_logprob(model, ctx, tokenizer.encode(context + " " + c)[len(ctx):])[0]
               for c in doc["choices"]]
        hits.append(float(max(range(len(lls)), key=lls.__getitem__) == doc["label"]))
    return hits


# Fixtures for the lm-eval test modules (imported by name: a conftest.py here would shadow
# tests/conftest.py, which test modules import as `conftest`).
@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    return write_tasks(tmp_path_factory.mktemp("lmeval_cli"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's tiny World-vocabulary base and its trained MiSS adapter (short run)."""
    from rwkvft.cli import main
    out = tmp_path_factory.mktemp("demo") / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--epoch_steps", "6", "--n_embd", "64"]) == 0
    return out / "demo-base.pth", sorted((out / "run").glob("rwkv-*.pth"))[-1]
