#!/usr/bin/env bash
# The long differential-fuzzing profile: tests/test_fuzz.py with thousands of
# cases per op (CONVEXT_FUZZ_EXAMPLES, default 5000), its result recorded in
# fuzz/last-run.md with the machine, torch version and date. Each example is
# logged before it runs (CONVEXT_FUZZ_LOG), so a crash names its example.
# Usage: fuzz/run_long.sh [extra pytest options]
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${CONVEXT_FUZZ_EXAMPLES:-5000}"
log="$(mktemp)"
examples_log="$(mktemp)"
trap 'rm -f "$log" "$examples_log"' EXIT
status=0
CONVEXT_FUZZ_EXAMPLES="$examples" CONVEXT_FUZZ_LOG="$examples_log" python -X faulthandler -m pytest -q tests/test_fuzz.py --hypothesis-show-statistics "$@" \
  >"$log" 2>&1 || status=$?
{
  echo "# Last long fuzzing run"
  echo
  echo "\`CONVEXT_FUZZ_EXAMPLES=$examples fuzz/run_long.sh\` on $(date -u +%Y-%m-%d), $(python -c 'import platform, torch; print(platform.node(), "with torch", torch.__version__)'), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'). Exit status $status."
  echo
  echo '```'
  grep -E "^tests/test_fuzz.py::|passing|failing|^ +\* |passed|failed" "$log" || true
  echo '```'
  if [ "$status" -gt 128 ]; then
    echo
    echo "The process died of signal $((status - 128)) in this example:"
    echo
    echo '```'
    tail -n 1 "$examples_log"
    grep -m1 -A6 "Fatal Python error" "$log" || true
    echo '```'
  fi
} >fuzz/last-run.md
cat fuzz/last-run.md
exit "$status"
