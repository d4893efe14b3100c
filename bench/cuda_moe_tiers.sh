#!/usr/bin/env bash
# Issue 14's H100 runs (and issue 13's MoE-in-VRAM row): Strata on forged MoE models with every
# weight in VRAM, then with 8 GB and 2 GB of VRAM (--gpu-mem: attention, norms, router and shared
# experts in VRAM; routed experts in pinned host RAM, a VRAM cache of some, the CPU computing the
# misses, prompt batches copying theirs over PCIe), each beside its bound and llama.cpp.
#
#   bench/cuda_moe_tiers.sh STRATA TOKENIZER [PRESET...]
#     STRATA     a CUDA build of strata; TOKENIZER a GGUF with tokenizer.* keys (forge's source)
#     PRESET     forge presets, default: mixtral-8x7b qwen3-30b-a3b (Q4_K_M, 28 and 18 GB on disk)
#   env: THREADS (16), GPU_MEMS ("all 8G 2G"), PP (512), TG (128), WORK (/tmp/moe_tiers),
#        KEEP=1 keeps each forged model (else removed after its runs: the device has 64 GB of disk),
#        LLAMA_BENCH=path to a CUDA llama-bench (bench/cuda_llamacpp_anchor.sh builds one from the
#        0.3.36 sdist) to measure llama.cpp's settings here; without it the issue's table is printed.
#
# Bounds: "all" uses the HBM bound (weight bytes per token / the device copy bandwidth, strata bench
# prints it); --gpu-mem runs print two: the plan the run itself followed (this machine's measured
# speeds; `strata bench` prints "gpu tier plan: ... predicted") and `strata plan --profile lent-h100`
# (the issue's figures: host RAM 95 GB/s, pinned PCIe 55 GB/s), both bandwidth bounds, not
# measurements. Random forged weights route near-uniformly: the worst case for a VRAM expert cache.
set -uo pipefail
strata=${1:?usage: cuda_moe_tiers.sh STRATA TOKENIZER [PRESET...]}
tokenizer=${2:?tokenizer GGUF}
shift 2
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(mixtral-8x7b qwen3-30b-a3b)
threads=${THREADS:-16}
read -r -a mems <<<"${GPU_MEMS:-all 8G 2G}"
pp=${PP:-512}
tg=${TG:-128}
work=${WORK:-/tmp/moe_tiers}
mkdir -p "$work"
summary=$work/summary.txt
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }

say "# strata MoE tiers: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1), $threads threads, pp$pp tg$tg"
for preset in "${presets[@]}"; do
  model=$work/$preset-Q4_K_M.gguf
  if [ ! -s "$model" ]; then
    t0=$(date +%s)
    "$strata" forge --preset "$preset" --type Q4_K_M --tokenizer-from "$tokenizer" -o "$model" >"$work/forge-$preset.txt" 2>&1 ||
      { say "$preset: forge failed: $(tail -1 "$work/forge-$preset.txt")"; continue; }
    say "$preset: forged $(du -h "$model" | cut -f1) in $(($(date +%s) - t0)) s"
  fi
  for mem in "${mems[@]}"; do
    if [ "$mem" = all ]; then args=(--gpu); else args=(--gpu-mem "$mem"); fi
    log=$work/bench-$preset-$mem.txt
    # The context llama-bench uses (prompt + generation), so the KV cache takes what it takes there.
    timeout 900 "$strata" bench "$model" -p "$pp" -n "$tg" -c $((pp + tg)) -t "$threads" "${args[@]}" --stats >"$log" 2>&1
    rc=$?
    ppr=$(awk '/^prompt /{print $4}' "$log")
    tgr=$(awk '/^generation /{print $4}' "$log")
    if [ "$mem" = all ]; then
      bound=$(grep -o 'memory-bound generation limit [0-9.]*' "$log" | awk '{print $4}')
      say "$preset all-in-VRAM: prompt ${ppr:-?} tok/s, generation ${tgr:-?} tok/s (HBM bound ${bound:-?} tok/s) rc=$rc"
    else
      plan=$("$strata" plan "$model" --profile lent-h100 --gpu-mem "$mem" --mem 100G -t "$threads" -c $((pp + tg)) 2>&1)
      pg=$(echo "$plan" | grep -o '^generation: [0-9.]*' | awk '{print $2}')
      pq=$(echo "$plan" | grep -o '^prompt ([0-9]* tokens a batch): [0-9.]*' | awk '{print $NF}')
      say "$preset --gpu-mem $mem: prompt ${ppr:-?} tok/s, generation ${tgr:-?} tok/s rc=$rc (lent-h100 profile plan: prompt ${pq:-?}, generation ${pg:-?})"
      grep -E '^gpu (experts|tier)' "$log" | sed 's/^/    /' | tee -a "$summary"
    fi
    [ $rc -eq 0 ] || tail -5 "$log" | sed 's/^/    /' | tee -a "$summary"
  done
  if [ -n "${LLAMA_BENCH:-}" ]; then
    for setting in "-ngl 99" "-ngl 99 -ncmoe 24" "-ngl 99 -ot exps=CPU"; do
      # shellcheck disable=SC2086
      r=$(timeout 900 "$LLAMA_BENCH" -m "$model" -p "$pp" -n "$tg" -t "$threads" $setting -o csv 2>/dev/null |
        awk -F, 'NR>1{print $(NF-1)}' | tr '\n' ' ')
      say "$preset llama.cpp $setting: pp/tg tok/s $r"
    done
  elif [ "$preset" = mixtral-8x7b ]; then
    say "$preset llama.cpp (issue 14's table, same machine kind): all in VRAM 4334 / 196.7; -ncmoe 24 221 / 13.4;"
    say "    -ncmoe 24 --no-host 28 / 15.5; -ot exps=CPU (2 GB) 157 / 10.9; CPU only 18 / 10.0 (prompt / generation tok/s)"
  fi
  [ "${KEEP:-0}" = 1 ] || rm -f "$model"
done
cat "$summary"
