#!/usr/bin/env bash
# One script for the GPU machine (see docs/gpu.md): install carried wheels, run the GPU tests,
# then the benchmark table of the GPU issue. Everything lands in $OUT (or ./gpu_out):
#   env.txt (GPU, versions), pytest.log, results.jsonl (one `rwkvft bench --json` per line),
#   bench.log (stderr of the benchmarks). Budget: about 8 minutes on one H100/H200; each part
#   has its own timeout so a slow part cannot eat the others.
set -u
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=python3

# (a) wheels carried in .whl/ (fla-core, bitsandbytes, deepspeed + deps, pyrwkv-tokenizer)
if compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || echo "wheel install failed" >> "$OUT/env.txt"
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# (b) this checkout (no network there: no build isolation, no dependencies)
$PY -m pip install -q --no-deps --no-build-isolation -e . >> "$OUT/env.txt" 2>&1 \
  || export PYTHONPATH="$PWD/src:${PYTHONPATH:-}"

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY - <<'EOF'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
for m in ("fla", "bitsandbytes", "deepspeed", "triton", "lightning", "pyrwkv_tokenizer", "rwkvft"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"))
    except Exception as e:  # report, do not stop: the tests skip what is missing
        print(m, "NOT IMPORTABLE:", type(e).__name__, str(e)[:200])
EOF
} >> "$OUT/env.txt" 2>&1

# (c) GPU tests (compiles the CUDA kernel into ~/.cache/rwkvft on first use; fla autotunes)
set -o pipefail
timeout 300 $PY -m pytest -m gpu -q -rs tests 2>&1 | tee "$OUT/pytest.log" | tail -25

# (d) the issue's table: MiSS r=64, ctx 1024; each run a separate process, bounded in time
bench() {
  timeout 60 $PY -m rwkvft bench --json --peft miss --peft_config '{"r":64}' --ctx_len 1024 \
      --warmup 2 --steps 5 "$@" >> "$OUT/results.jsonl" 2>> "$OUT/bench.log" \
    || echo "{\"failed\": \"$*\"}" >> "$OUT/results.jsonl"
}
for size in 0.1b 0.4b 1.5b 2.9b; do
  for quant in none int8 nf4; do
    bench --size "$size" --micro_bsz 1 --grad_cp 1 --precision bf16 --quant "$quant"
  done
done
bench --size 1.5b --micro_bsz 8 --grad_cp 0 --precision bf16                # RWKV-PEFT's H200 row
bench --size 1.5b --micro_bsz 8 --grad_cp 0 --precision bf16 --op fla       # same with fla
$PY - "$OUT/results.jsonl" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "failed" in r:
        print("FAILED", r["failed"]); continue
    print(f"{r['size']:>5} mb{r['micro_bsz']} cp{r['grad_cp']} {r['quant']:>4} op={r['op']:<6} "
          f"{r['tokens_per_s']:>9,.0f} tok/s  {r['peak_mem_allocated_gib']:6.2f} GiB alloc "
          f"{r['peak_mem_reserved_gib']:6.2f} GiB resv  MFU {100 * r['mfu']:5.1f}%  "
          f"(matmul {r['matmul_flops_per_s'] / 1e12:.0f} TFLOP/s)")
EOF
