# Sourced by gpu_check.sh and gpu_bench.sh (docs/gpu.md): on a fresh device machine, install the
# carried wheels (.whl/), put this checkout on PYTHONPATH, and write env.txt. Sets OUT, PY, PYTHONPATH.
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=python3

# (a) wheels carried in .whl/ (fla-core, bitsandbytes, deepspeed + deps, pyrwkv-tokenizer)
if compgen -G ".whl/*.whl" > /dev/null; then
  timeout 120 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl >> "$OUT/env.txt" 2>&1 || echo "wheel install failed" >> "$OUT/env.txt"
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# (b) this checkout, by path (subprocesses inherit it; nothing to install, no network needed)
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}"

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    timeout 60 $PY - <<'PYEOF'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO GPU")
for m in ("fla", "bitsandbytes", "deepspeed", "triton", "lightning", "pyrwkv_tokenizer",
          "pytest_timeout", "rwkv7_hf", "rwkv", "rwkvft"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"))
    except Exception as e:  # report, do not stop: the tests skip what is missing
        print(m, "NOT IMPORTABLE:", type(e).__name__, str(e)[:200])
PYEOF
} >> "$OUT/env.txt" 2>&1
