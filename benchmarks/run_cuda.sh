#!/usr/bin/env bash
# Runs the default suite on the GPU against cuDNN (fp32 with torch's TF32
# setting, fp16, bf16; NCHW and channels_last; fwd / bwd / fwd+bwd) and writes
# JSON, markdown and PNG results to benchmarks/results/cuda-<date>, or to the
# folder given as CONVEXT_BENCH_OUT; CONVEXT_BENCH_DTYPES picks some of the dtypes.
# Usage: benchmarks/run_cuda.sh [extra python -m convext.bench options]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${CONVEXT_BENCH_OUT:-benchmarks/results/cuda-$(date -u +%Y-%m-%d)}"
for dtype in ${CONVEXT_BENCH_DTYPES:-float32 float16 bfloat16}; do
  for format in nchw channels_last; do
    python -m convext.bench --device cuda --dtype "$dtype" --memory-format "$format" --output "$out" "$@"
  done
done
echo "results in $out"
