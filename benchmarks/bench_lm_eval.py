"""Shared-context vs plain scoring through lm-eval on a synthetic task of MMLU's shape.

Usage: python benchmarks/bench_lm_eval.py [--n_layer 12 --n_embd 768] [--limit 100] [--shots 5]
                                          [--shared_docs N] [--plain_limit N] [--device cpu]
                                          [--threads N] [--out DIR]

MMLU itself is on the Hugging Face hub (not downloadable here), so this writes a stand-in with
its shape: 4 choices answered by one letter, a 5-shot prompt of questions with lettered options
(about MMLU's prompt length: ~100 tokens an example, ~600 a prompt), read by lm-eval from a
local YAML + jsonl exactly as a hub task would be. The model is a random one of the given shape
(the 0.1B shape by default): speed does not depend on the weights. Prints, for both paths, the
tokens run through the model and the wall time; `--plain_limit` runs the plain path on fewer
documents (it is ~4x slower) and scales its time to --limit (`--shared_docs` the same for the
shared path). Both paths score the same documents first, so their accuracies agree.
Besides wall time it prints the process's CPU time: on a machine busy with other jobs, CPU time
with `--threads 1` is what the run costs one quiet core (wall time there only says how busy it was).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import torch

WORDS = ("the of a in to is was for that with as by on are from which be this or at an it have "
         "energy cell market law theorem value function river species court moral acid protein "
         "economy number vector culture history reaction temperature pressure equation policy").split()


def _sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize()


def write_task(root: Path, n_docs: int, shots: int, seed: int = 0) -> Path:
    rng = random.Random(seed)

    def doc():
        return {"question": _sentence(rng, 40) + "?", "choices": [_sentence(rng, 9) for _ in range(4)],
                "answer": rng.randrange(4)}
    for split, n in (("dev", shots), ("test", n_docs)):
        (root / f"{split}.jsonl").write_text("".join(json.dumps(doc()) + "\n" for _ in range(n)))
    (root / "tasks").mkdir(exist_ok=True)
    (root / "tasks" / "mmlu_shaped.yaml").write_text(
        "task: mmlu_shaped\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    dev: {root / 'dev.jsonl'}\n    test: {root / 'test.jsonl'}\n"
        "test_split: test\nfewshot_split: dev\nfewshot_config:\n  sampler: first_n\n"
        f"num_fewshot: {shots}\noutput_type: multiple_choice\n"
        'description: "The following are multiple choice questions (with answers) about science.\\n\\n"\n'
        'doc_to_text: "{{question.strip()}}\\nA. {{choices[0]}}\\nB. {{choices[1]}}\\nC. {{choices[2]}}'
        '\\nD. {{choices[3]}}\\nAnswer:"\n'
        'doc_to_choice: ["A", "B", "C", "D"]\ndoc_to_target: answer\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    return root / "tasks"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n_layer", type=int, default=12)
    ap.add_argument("--n_embd", type=int, default=768)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--shared_docs", type=int, default=None, help="documents the shared path runs (default --limit)")
    ap.add_argument("--plain_limit", type=int, default=None, help="documents the plain path runs (default --limit)")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from rwkvft.formats import write_state_dict
    from rwkvft.evaluation.harness import RwkvLM
    from rwkvft.evaluation.tasks import run_tasks, task_manager
    from rwkvft.models.init import new_config, random_state_dict

    root = Path(args.out or tempfile.mkdtemp(prefix="rwkvft-bench-lm-eval-"))
    root.mkdir(parents=True, exist_ok=True)
    tasks = write_task(root, args.limit, args.shots)
    cfg = new_config(args.n_layer, args.n_embd, 65536)
    path = write_state_dict(random_state_dict(cfg, seed=0), root / "model.pth", dtype=torch.float32)
    params = sum(t.numel() for t in torch.load(path, weights_only=True).values())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; device {args.device} {args.dtype}")
    print(f"model: RWKV-7 {args.n_layer} layers x {args.n_embd} ({params / 1e6:.0f}M parameters, random "
          f"weights); task: MMLU-shaped, 4 choices, {args.shots}-shot, {args.limit} documents")
    tm = task_manager(["mmlu_shaped"], tasks)
    rows = {}
    for label, shared, limit in (("shared context", True, args.shared_docs or args.limit),
                                 ("plain", False, args.plain_limit or args.limit)):
        lm = RwkvLM(pretrained=path, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                    shared_context=shared)
        t0, cpu0 = time.perf_counter(), time.process_time()
        table = run_tasks(lm, ["mmlu_shaped"], limit=limit, tm=tm)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        c = lm.scorer.counter
        rows[label] = table["mmlu_shaped"]["acc"][0]
        scale = args.limit / limit
        print(f"{label:15s} {limit:4d} docs: {c.total:8d} tokens run ({c.tokens['context']} context, "
              f"{c.tokens['continuation']} continuation), {seconds:7.1f} s wall, {cpu:7.1f} s CPU"
              + (f" -> ~{seconds * scale:.0f} s wall, ~{cpu * scale:.0f} s CPU for {args.limit} docs"
                 if scale != 1 else "")
              + f", acc {rows[label]:.4f}")
        if label == "shared context":
            print(f"{'':15s} prompt length: {c.tokens['context'] / limit:.0f} tokens on average")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
