#!/usr/bin/env bash
# The benchmark table of the GPU issue, in ONE `run` call (docs/gpu.md):
#   run(command="bash benchmarks/gpu_bench.sh", carry=[".whl"], timeout_s=600)
# MiSS r=64, ctx 1024; each row a separate `rwkvft bench --json` process with its own time limit
# (the limits add up to 550 s with the kernel build). Writes $OUT/results.jsonl (one object per
# row, {"failed": ...} for a row that failed or ran out of time), bench.log (stderr) and prints
# the table; the table is printed also when interrupted.
set -u
cd "$(dirname "$0")/.."
source benchmarks/gpu_setup.sh

table() {
  $PY - "$OUT/results.jsonl" <<'PYEOF'
import json, os, sys
path = sys.argv[1]
for line in (open(path) if os.path.exists(path) else []):
    r = json.loads(line)
    if "failed" in r:
        print("FAILED", r["failed"]); continue
    print(f"{r['size']:>5} mb{r['micro_bsz']} cp{r['grad_cp']} {r['quant']:>4} op={r['op']:<6} "
          f"{r['tokens_per_s']:>9,.0f} tok/s  {r['peak_mem_allocated_gib']:6.2f} GiB alloc "
          f"{r['peak_mem_reserved_gib']:6.2f} GiB resv  MFU {100 * r['mfu']:5.1f}%  "
          f"(matmul {r['matmul_flops_per_s'] / 1e12:.0f} TFLOP/s)")
PYEOF
}
trap 'table; exit 130' INT TERM

if [ "${1:-}" = compile ]; then   # --compile section: its limits add up to 480 s
  timeout 150 $PY benchmarks/bench_compile.py --json --accelerator gpu --size 0.1b --ctx_len 1024 \
      --micro_bsz 8 --pairs 4 >> "$OUT/compile.jsonl" 2>> "$OUT/bench.log" \
    || echo '{"failed": "bench_compile 0.1b"}' >> "$OUT/compile.jsonl"
  timeout 150 $PY benchmarks/bench_compile.py --json --accelerator gpu --size 1.5b --ctx_len 1024 \
      --micro_bsz 8 --pairs 3 >> "$OUT/compile.jsonl" 2>> "$OUT/bench.log" \
    || echo '{"failed": "bench_compile 1.5b"}' >> "$OUT/compile.jsonl"
  for c in 0 1; do
    timeout 90 $PY benchmarks/profile_step.py --json --accelerator gpu --size 0.1b --ctx_len 1024 \
        --micro_bsz 8 --compile $c >> "$OUT/profile.jsonl" 2>> "$OUT/bench.log" \
      || echo "{\"failed\": \"profile_step compile=$c\"}" >> "$OUT/profile.jsonl"
  done
  cat "$OUT/compile.jsonl" "$OUT/profile.jsonl"
  exit 0
fi

# the CUDA kernel's JIT build (~60-130 s) once, outside the rows' limits
timeout 90 $PY -c "from rwkvft.kernels.cuda import load_ops; load_ops()" >> "$OUT/bench.log" 2>&1 \
  || echo '{"failed": "CUDA kernel build (rows fall back to fla/chunked)"}' >> "$OUT/results.jsonl"

bench() {  # bench LIMIT_S ARGS...
  local limit=$1; shift
  timeout "$limit" $PY -m rwkvft bench --json --peft miss --peft_config '{"r":64}' --ctx_len 1024 \
      --warmup 2 --steps 5 "$@" >> "$OUT/results.jsonl" 2>> "$OUT/bench.log" \
    || echo "{\"failed\": \"$* (limit ${limit} s)\"}" >> "$OUT/results.jsonl"
}
declare -A LIMIT=([0.1b]=20 [0.4b]=25 [1.5b]=35 [2.9b]=45)   # per row; 3 quant rows per size
for size in 0.1b 0.4b 1.5b 2.9b; do
  for quant in none int8 nf4; do
    bench "${LIMIT[$size]}" --size "$size" --micro_bsz 1 --grad_cp 1 --precision bf16 --quant "$quant"
  done
done
bench 35 --size 1.5b --micro_bsz 8 --grad_cp 0 --precision bf16             # RWKV-PEFT's H200 row
bench 50 --size 1.5b --micro_bsz 8 --grad_cp 0 --precision bf16 --op fla    # same with fla (autotunes)
table
