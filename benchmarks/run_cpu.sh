#!/usr/bin/env bash
# Runs the default CPU suite (NCHW and channels_last, fwd / bwd / fwd+bwd) and
# writes JSON, markdown and PNG results to benchmarks/results/cpu-<date>.
# Usage: benchmarks/run_cpu.sh [extra python -m convext.bench options]
set -euo pipefail
cd "$(dirname "$0")/.."
out="benchmarks/results/cpu-$(date -u +%Y-%m-%d)"
for format in nchw channels_last; do
  python -m convext.bench --memory-format "$format" --output "$out" "$@"
done
echo "results in $out"
