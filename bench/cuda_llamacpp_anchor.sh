#!/usr/bin/env bash
# Issue 13's proof on one GPU machine, in one run: Strata's CUDA backend against llama.cpp built
# with CUDA from the source the llama-cpp-python 0.3.36 sdist vendors, on the same forged models.
# Two halves, because the GPU machine reaches nothing outside itself and takes little luggage:
#   bench/cuda_llamacpp_anchor.sh prepare DIR SDIST
#       (here) the sdist's llama.cpp slimmed to what a CUDA llama-bench / llama-perplexity build
#       needs (no models, docs, tests, examples, other backends or tools): DIR/llama.slim.tar.xz, ~2.4 MB.
#   bench/cuda_llamacpp_anchor.sh run DIR STRATA TOKENIZER TEXT [PRESET...]
#       (on the GPU machine) builds llama-bench and llama-perplexity (sm_90, -j16, in the background),
#       forges each preset as Q4_K_M with STRATA (default smollm2-135m gemma-3-270m llama-3-8b; add
#       mixtral-8x7b once MoE runs on the GPU), then per model:
#         - pp512 / tg128: `strata bench --gpu` and llama-bench -ngl 99 with flash attention off and
#           on (the better counted), the ratio, and each generation rate as % of the HBM bound
#           (weight bytes per token / the device bandwidth Strata measures by a device copy);
#       and on the small presets (those under 1 GB):
#         - greedy text (64 tokens) GPU vs CPU;
#         - perplexity on TEXT (ctx 512, 8 chunks): Strata GPU, Strata CPU, llama.cpp GPU, each pair
#           within 0.1% (random weights: the numbers are large, agreement is what is checked).
#       Results go to $OUT (or /tmp/llama_anchor/out) as they come: summary.txt holds the table.
# ARCH (default 90) picks the CUDA architecture; JOBS (default 16) the build's parallelism;
# SKIP_LLAMA=1 leaves llama.cpp out.
set -uo pipefail
mode=${1:?usage: prepare DIR SDIST | run DIR STRATA TOKENIZER TEXT [PRESET...]}
dir=${2:?directory}
case "$mode" in
  prepare)
    sdist=${3:?sdist tarball}
    mkdir -p "$dir"
    tmp=$(mktemp -d)
    tar xzf "$sdist" -C "$tmp"
    mv "$(ls -d "$tmp"/llama_cpp_python-*/vendor/llama.cpp)" "$tmp/llama.slim"
    (cd "$tmp/llama.slim" &&
      rm -rf models docs tests benches media pocs examples .git .devops gguf-py conversion scripts ci app skills \
        grammars requirements ./*.py &&
      for b in vulkan sycl opencl metal hexagon webgpu et cann musa hip kompute zdnn rpc blas zendnn openvino virtgpu; do
        rm -rf "ggml/src/ggml-$b"
      done &&
      cd tools && ls | grep -vxE 'CMakeLists.txt|llama-bench|perplexity' | xargs rm -rf &&
      printf 'add_subdirectory(llama-bench)\nadd_subdirectory(perplexity)\n' >CMakeLists.txt)
    tar cJf "$dir/llama.slim.tar.xz" -C "$tmp" llama.slim
    rm -rf "$tmp"
    ls -la "$dir/llama.slim.tar.xz"
    exit 0
    ;;
  run) ;;
  *)
    echo "unknown mode $mode" >&2
    exit 2
    ;;
esac

strata=${3:?strata binary (CUDA build)}
tokenizer=${4:?GGUF with tokenizer metadata for forge}
text=${5:?text for perplexity}
shift 5
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(smollm2-135m gemma-3-270m llama-3-8b)
arch=${ARCH:-90}
jobs=${JOBS:-16}
work=/tmp/llama_anchor
out=${OUT:-$work/out}
mkdir -p "$work" "$out"
summary=$out/summary.txt
say() { echo "$*" | tee -a "$summary"; }
: >"$summary"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,memory.total --format=csv,noheader | tee -a "$summary"

# llama.cpp: configure and build in the background while Strata's half runs (SKIP_LLAMA=1: Strata's
# numbers alone, e.g. again after a change, against the llama.cpp numbers of an earlier run).
if [ -n "${SKIP_LLAMA:-}" ]; then
  echo skipped >"$work/build.rc"
  sleep 0 &
else (
  tar xJf "$dir/llama.slim.tar.xz" -C "$work" &&
    cmake -S "$work/llama.slim" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="$arch" -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
      -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF >"$out/llama_configure.log" 2>&1 &&
    cmake --build "$work/build" -j "$jobs" --target llama-bench llama-perplexity >"$out/llama_build.log" 2>&1
  echo $? >"$work/build.rc"
) &
fi
build_pid=$!
build_start=$(date +%s)

# ---- models
declare -A model
for p in "${presets[@]}"; do
  model[$p]=$work/$p.Q4_K_M.gguf
  if ! "$strata" forge --preset "$p" --type Q4_K_M -o "${model[$p]}" --tokenizer-from "$tokenizer" \
    >"$out/forge_$p.log" 2>&1; then
    say "forge $p failed: $(tail -1 "$out/forge_$p.log")"
    unset "model[$p]"
  fi
done
small() { [ "$(stat -c %s "$1")" -lt 1000000000 ]; }

# ---- Strata: greedy text and perplexity, GPU against CPU (small models)
prompt="The history of the printing press begins in the fifteenth century, when"
declare -A ppl
for p in "${presets[@]}"; do
  m=${model[$p]:-}
  [ -n "$m" ] && small "$m" || continue
  for dev in gpu cpu; do
    timeout 120 "$strata" run "$m" --local -p "$prompt" -n 64 --temp 0 --$dev >"$out/greedy_${p}_$dev.txt" \
      2>"$out/greedy_${p}_$dev.err" || say "strata run $p --$dev failed: $(tail -1 "$out/greedy_${p}_$dev.err")"
    timeout 180 "$strata" perplexity "$m" -f "$text" -c 512 --chunks 8 --$dev >"$out/ppl_${p}_$dev.txt" \
      2>"$out/ppl_${p}_$dev.err" || say "strata perplexity $p --$dev failed: $(tail -1 "$out/ppl_${p}_$dev.err")"
    ppl[$p.$dev]=$(sed -n 's/.*PPL = \([0-9.]*\).*/\1/p' "$out/ppl_${p}_$dev.txt")
  done
  if cmp -s "$out/greedy_${p}_gpu.txt" "$out/greedy_${p}_cpu.txt"; then
    say "$p greedy 64 tokens GPU vs CPU: equal"
  else
    say "$p greedy 64 tokens GPU vs CPU: DIFFER (first differing byte: $(cmp "$out/greedy_${p}_gpu.txt" \
      "$out/greedy_${p}_cpu.txt" | sed 's/.*byte //'))"
  fi
done

# ---- wait for llama.cpp
wait "$build_pid"
rc=$(cat "$work/build.rc" 2>/dev/null || echo 1)
say "llama.cpp CUDA build (sm_$arch, -j$jobs): rc $rc in $(($(date +%s) - build_start)) s"
bin=$work/build/bin
[ "$rc" = 0 ] || [ "$rc" = skipped ] || tail -30 "$out/llama_build.log" "$out/llama_configure.log"

# ---- llama.cpp perplexity, then the three-way agreement
for p in "${presets[@]}"; do
  m=${model[$p]:-}
  [ -n "$m" ] && small "$m" || continue
  if [ "$rc" = 0 ]; then
    timeout 120 "$bin/llama-perplexity" -m "$m" -f "$text" -c 512 --chunks 8 -ngl 99 >"$out/ppl_${p}_llama.txt" 2>&1
    ppl[$p.llama]=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$out/ppl_${p}_llama.txt")
  fi
  python3 - "$p" "${ppl[$p.gpu]:-}" "${ppl[$p.cpu]:-}" "${ppl[$p.llama]:-}" <<'EOF' | tee -a "$summary"
import sys
name, vals = sys.argv[1], dict(zip(("strata-gpu", "strata-cpu", "llama.cpp-gpu"), sys.argv[2:]))
vals = {k: float(v) for k, v in vals.items() if v}
print(f"{name} perplexity (ctx 512, 8 chunks): " + ", ".join(f"{k} {v:.4f}" for k, v in vals.items()))
keys = list(vals)
for i in range(len(keys)):
    for j in range(i + 1, len(keys)):
        a, b = vals[keys[i]], vals[keys[j]]
        d = abs(a - b) / b * 100
        print(f"  {keys[i]} vs {keys[j]}: {d:.4f}% ({'within' if d < 0.1 else 'OUTSIDE'} 0.1%)")
EOF
done

# ---- speed: pp512 / tg128
say ""
say "model | strata pp512 | llama.cpp pp512 (fa) | ratio | strata tg128 | llama.cpp tg128 (fa) | ratio | strata %HBM | llama.cpp %HBM"
for p in "${presets[@]}"; do
  m=${model[$p]:-}
  [ -n "$m" ] || continue
  timeout 240 "$strata" bench "$m" -p 512 -n 128 --gpu --json >"$out/bench_${p}_strata.json" 2>"$out/bench_${p}_strata.err" ||
    say "strata bench $p failed: $(tail -1 "$out/bench_${p}_strata.err")"
  if [ "$rc" = 0 ]; then
    timeout 240 "$bin/llama-bench" -m "$m" -ngl 99 -fa off,on -p 512 -n 128 -r 3 -o json >"$out/bench_${p}_llama.json" \
      2>"$out/bench_${p}_llama.err" || say "llama-bench $p failed: $(tail -1 "$out/bench_${p}_llama.err")"
  fi
  python3 - "$p" "$out/bench_${p}_strata.json" "$out/bench_${p}_llama.json" <<'EOF' | tee -a "$summary"
import json, sys
name, s_path, l_path = sys.argv[1:]
try:
    s = json.loads(open(s_path).read().strip().splitlines()[-1])
except Exception as e:
    print(f"{name} | strata bench unreadable ({e})"); sys.exit()
best = {"pp": (0.0, None), "tg": (0.0, None)}
try:
    for r in json.load(open(l_path)):
        kind = "pp" if r["n_prompt"] > 0 else "tg"
        if r["avg_ts"] > best[kind][0]:
            best[kind] = (r["avg_ts"], int(bool(r.get("flash_attn"))))
except Exception:
    pass
bound = s["tg_bound_tok_s"]
def ratio(a, b): return f"{a / b:.2f}x" if b else "-"
lp, lpf = best["pp"]; lt, ltf = best["tg"]
print(f"{name} | {s['pp_tok_s']:.0f} | {lp:.0f} (fa {lpf}) | {ratio(s['pp_tok_s'], lp)} | {s['tg_tok_s']:.1f} | "
      f"{lt:.1f} (fa {ltf}) | {ratio(s['tg_tok_s'], lt)} | {100 * s['tg_tok_s'] / bound:.1f}% | "
      f"{100 * lt / bound:.1f}%   [{s['weight_bytes_per_token'] / 1e6:.0f} MB/token, {s['read_bandwidth_gb_s']:.0f} GB/s]")
EOF
done
