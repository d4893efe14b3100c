#!/usr/bin/env bash
# The whole forward pass on the GPU against the CPU, on one real model (default SmolLM2): greedy
# text of both, perplexity of both on a text (default the GPL-3), and pp512/tg128 of both with the
# GPU's generation rate as a share of its memory bandwidth's bound. Needs a CUDA build of strata
# (make cuda-build) and a GPU.
#   bench/cuda_model_check.sh [STRATA [MODEL [TEXT]]]
# Exactness criteria (tests/model/gpu_forward_test.cpp holds the unit-level ones): greedy text equal
# up to a near-tie; perplexity within 0.1% of the CPU's.
set -euo pipefail
strata=${1:-build-cuda/strata}
model=${2:-$HOME/.cache/strata/models/SmolLM2-135M-Instruct.Q4_1.gguf}
text=${3:-/usr/share/common-licenses/GPL-3}
prompt="The history of the printing press begins in the fifteenth century, when"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
echo "== greedy text (64 tokens)"
for dev in gpu cpu; do
  "$strata" run "$model" --local -p "$prompt" -n 64 --temp 0 --$dev >"/tmp/cuda_check_$dev.txt" 2>"/tmp/cuda_check_$dev.err" ||
    { cat "/tmp/cuda_check_$dev.err"; exit 1; }
  echo "[$dev] $(tr '\n' ' ' <"/tmp/cuda_check_$dev.txt")"
  grep -E "prompt:|generation:" "/tmp/cuda_check_$dev.err" || true
done
if cmp -s /tmp/cuda_check_gpu.txt /tmp/cuda_check_cpu.txt; then echo "greedy text: equal"; else echo "greedy text: DIFFERS"; fi
echo "== perplexity ($text, ctx 512)"
declare -A ppl
for dev in gpu cpu; do
  out=$("$strata" perplexity "$model" -f "$text" -c 512 --$dev 2>"/tmp/cuda_check_ppl_$dev.err")
  ppl[$dev]=$(echo "$out" | sed -n 's/.*PPL = \([0-9.]*\).*/\1/p')
  echo "[$dev] PPL ${ppl[$dev]}  ($(tail -1 "/tmp/cuda_check_ppl_$dev.err"))"
done
python3 -c "g,c=${ppl[gpu]},${ppl[cpu]}; d=abs(g-c)/c*100; print(f'perplexity GPU vs CPU: {d:.4f}% ({\"within\" if d<0.1 else \"OUTSIDE\"} 0.1%)')"
echo "== bench pp512 / tg128"
for dev in gpu cpu; do
  echo "[$dev]"
  "$strata" bench "$model" -p 512 -n 128 --$dev 2>/dev/null
done
