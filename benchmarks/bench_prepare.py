"""Benchmark `rwkvft prepare`: tokens/s turning ~50 MB of jsonl into binidx.

    python benchmarks/bench_prepare.py [--mb 50] [--workers 0] [--keep DIR]

Generates deterministic English-like text (random words, punctuation, some chat records and some
CJK), runs prepare with all cores (or --workers N), prints docs, tokens, seconds and tokens/s.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

WORDS = ("the of and to in is was that for it with as on be at by this had not are but from or have an they "
         "which one you were all we her she there would their will when who him been has more if no out so "
         "said what up its about than into them can only other new some could time these two may then do "
         "first any my now such like our over man me even most made after also did many before must through "
         "river harbour lantern bread model training token window sample epoch gradient adapter matrix "
         "Velmora Lumeria 1024 2025 3.14 世界 你好 数据").split()


def make_jsonl(path: Path, mb: float, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    target, written, n = int(mb * 1e6), 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            idx = rng.integers(0, len(words), size=(64, 400))
            for row in idx:
                body = " ".join(words[row]).capitalize()
                body = body.replace(" the ", ". The ").replace(" and ", ", and ") + ".\n"
                if n % 5 == 0:
                    half = len(body) // 3
                    rec = {"messages": [{"role": "user", "content": body[:half]},
                                        {"role": "assistant", "content": body[half:]}]}
                else:
                    rec = {"text": body}
                line = json.dumps(rec, ensure_ascii=False) + "\n"
                f.write(line)
                written += len(line.encode("utf-8"))
                n += 1
    return n


def _cpu_seconds() -> float:
    import resource
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=50.0, help="size of the generated jsonl in MB")
    ap.add_argument("--workers", type=int, default=0, help="tokenizer processes (0 = all cores)")
    ap.add_argument("--keep", default="", help="directory to keep the generated files in")
    args = ap.parse_args()
    from rwkvft.data.prepare import prepare

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(args.keep or tmp)
        d.mkdir(parents=True, exist_ok=True)
        src = d / "bench.jsonl"
        t0 = time.perf_counter()
        n = make_jsonl(src, args.mb)
        print(f"generated {src.stat().st_size / 1e6:.1f} MB, {n} records in {time.perf_counter() - t0:.1f} s")
        load0 = os.getloadavg()[0]
        cpu0 = _cpu_seconds()
        s = prepare([src], str(d / "bench"), workers=args.workers, force=True, progress=False)
        cpu = _cpu_seconds() - cpu0
        workers = args.workers or os.cpu_count()
        print(f"workers={workers}  docs={s.stats.docs}  tokens={s.stats.tokens}  seconds={s.seconds:.2f}  "
              f"tokens/s={s.stats.tokens / s.seconds / 1e6:.2f}M  MB/s={src.stat().st_size / 1e6 / s.seconds:.1f}")
        # on a shared machine wall time depends on the neighbours; CPU time does not
        print(f"cpu_seconds={cpu:.2f} (all processes)  tokens per cpu-second={s.stats.tokens / cpu / 1e6:.2f}M  "
              f"load average before/after: {load0:.1f}/{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
