#!/usr/bin/env bash
# The GPU tests on the device machine, in ONE `run` call of at most 600 s (docs/gpu.md):
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
# Arguments (optional): BUDGET_S (570) PER_TEST_S (240).
# Writes to $OUT (or ./gpu_out): env.txt (GPU, versions), pytest.log (one line per test as it
# finishes), junit.xml, summary.txt. Each test has its own time limit (pytest-timeout; the first
# CUDA test JIT-builds the kernel, the first fla test autotunes); the whole pytest run is
# interrupted (SIGINT: pytest still writes its summary and junit.xml) early enough that this
# script always ends with a summary inside the 600 s. The benchmark table is gpu_bench.sh.
set -u
START=$SECONDS
BUDGET=${1:-570}     # seconds for the whole script (run's cap is 600)
PER_TEST=${2:-240}   # seconds per test
cd "$(dirname "$0")/.."
source benchmarks/gpu_setup.sh

args=(-m pytest -m gpu -v -rfEs -p no:cacheprovider --continue-on-collection-errors
      --junitxml="$OUT/junit.xml" tests)
if $PY -c "import pytest_timeout" 2> /dev/null; then
  args+=(--timeout="$PER_TEST" --timeout-method=signal)
else
  echo "pytest-timeout missing: no per-test limit" | tee -a "$OUT/summary.txt"
fi
left=$(( BUDGET - (SECONDS - START) - 25 ))   # 25 s: SIGINT grace + summary
echo "pytest -m gpu: ${left} s in all, ${PER_TEST} s per test" | tee -a "$OUT/summary.txt"
timeout --signal=INT --kill-after=15 "$left" $PY "${args[@]}" > "$OUT/pytest.log" 2>&1
rc=$?

# summary from the per-test lines, so it exists even when pytest was killed before its own
{
  case $rc in
    0) echo "pytest: rc 0, no failures" ;;
    124|137|130) echo "pytest: STOPPED by the ${left} s limit (rc $rc); tests after the last line below did not run" ;;
    *) echo "pytest: rc $rc" ;;
  esac
  for outcome in PASSED FAILED ERROR SKIPPED XFAIL; do
    printf '%-8s %s\n' "$outcome" "$(grep -c "::.* $outcome" "$OUT/pytest.log")"
  done
  grep -E "::.* (FAILED|ERROR)" "$OUT/pytest.log" | head -40
  echo "--- last lines of pytest.log"
  tail -15 "$OUT/pytest.log"
  echo "elapsed $(( SECONDS - START )) s"
} | tee -a "$OUT/summary.txt"
exit $rc
