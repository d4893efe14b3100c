#!/usr/bin/env bash
# The CUDA backend's kernel speeds on this machine's GPU (bench/cuda_ops.cu): decode matvec per type
# against the memory bound, prompt matmul, attention. Builds the CUDA variant unless a built
# cuda_ops_bench is given.
#   bench/cuda_ops.sh [path/to/cuda_ops_bench]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
if [ -z "$bin" ]; then
  make --no-print-directory cuda-build CUDA_ARCHS="${CUDA_ARCHS:-90}"
  bin=${CUDA_BUILD:-build-cuda}/cuda_ops_bench
fi
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem,memory.total --format=csv,noheader || true
"$bin"
