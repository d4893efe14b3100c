#!/usr/bin/env bash
# Issue 14's benchmark on the H100, one script: Strata's three tiers (--gpu-mem 8G and 2G: attention,
# norms and router in VRAM, routed experts in pinned host RAM with a VRAM cache of some, the CPU
# computing misses beside the GPU) against llama.cpp's settings from the issue's table, on forged
# Mixtral-8x7B and Qwen3-30B-A3B Q4_K_M, 16 threads, pp512 / tg128, each beside its bound; then the
# 16 GB host-memory cgroup case with the model on the disk. llama.cpp is built on the device from the
# llama-cpp-python 0.3.36 sdist's vendored source (slimmed: bench/cuda_llamacpp_anchor.sh prepare).
#
# The device takes calls of at most 10 minutes and keeps /tmp between calls made within ~30 s of
# each other, so the work comes in steps (each appends to $WORK/results and copies it to $OUT; a step
# stops starting runs near its STEP_BUDGET (570 s) and, run again, does only what is not done):
#   bench/cuda_moe_tiers.sh prepare DIR STRATA [LLAMA_SLIM]      (here) DIR gets this script, strata
#       (CUDA build, xz), the runtime libraries it needs (LIBS, default .dev/gpumoe/lib), a tokenizer
#       GGUF (TOKENIZER, default .dev/tok/smollm2-tokenizer.gguf.gz) and the slim llama.cpp tarball
#       (default .dev/cuda/anchor/llama.slim.tar.gz): ~15 MB to carry.
#   bash DIR/cuda_moe_tiers.sh setup DIR     (~6 min) llama-bench built (CUDA, sm_90, -j16) while
#       both models are forged
#   bash DIR/cuda_moe_tiers.sh strata DIR    (~6 min) strata bench --gpu-mem 8G and 2G on both (8G once
#       more with every prompt miss copied: --gpu-prompt-copy-share 1, against the plan's CPU share), the
#       plan's predictions (this machine's measured speeds) and the lent-h100 profile's beside them,
#       VRAM: the peak nvidia-smi sees (CUDA context included) and the run's own use measured by
#       strata bench (free memory before the session less after the warm-up) against what the
#       session and the expert tier counted (the plan's fixed part and arena)
#   bash DIR/cuda_moe_tiers.sh llama DIR     (~5 min) llama-bench: -ngl 99 -ncmoe N (N: ~8 GB of
#       VRAM, 24 on Mixtral as in the issue), the same with --no-host 1, and -ngl 99 -ot exps=CPU
#   bash DIR/cuda_moe_tiers.sh cgroup DIR    (~5 min) whether a 16 GB memory cgroup can be made here;
#       if so, Mixtral from a cold page cache under it: llama.cpp -ncmoe N (mmap) and Strata
#   bash DIR/cuda_moe_tiers.sh report [RESULTS]   the table and the issue's bars (also run by each step)
#   bash DIR/cuda_moe_tiers.sh all DIR       every step in one go (no 10-minute limit)
# env: THREADS (16), MODELS ("mixtral-8x7b qwen3-30b-a3b"), MEMS ("8G 2G"), PP (512), TG (128),
#      REPS (llama-bench repetitions, 2), WORK (/tmp/moe_tiers), JOBS (16), ARCH (90), COPY_ALL (1),
#      FORGE_THREADS (4).
#
# Random forged weights route near-uniformly: the worst case for a VRAM expert cache (the hit rates
# printed say so). Bounds are the planner's predictions (bandwidth and compute of each resource
# with the speeds measured here), not measurements.
set -uo pipefail
mode=${1:?usage: prepare DIR STRATA [LLAMA_SLIM] | setup|strata|llama|cgroup|all DIR | report [RESULTS]}
work=${WORK:-/tmp/moe_tiers}
res=$work/results
threads=${THREADS:-16}
read -r -a models <<<"${MODELS:-mixtral-8x7b qwen3-30b-a3b}"
read -r -a mems <<<"${MEMS:-8G 2G}"
pp=${PP:-512}
tg=${TG:-128}
reps=${REPS:-2}

if [ "$mode" = prepare ]; then
  dir=${2:?DIR}
  strata=${3:?STRATA binary (CUDA build)}
  slim=${4:-.dev/cuda/anchor/llama.slim.tar.gz}
  mkdir -p "$dir/lib"
  cp "$0" "$dir/cuda_moe_tiers.sh"
  xz -c "$strata" >"$dir/strata.xz"
  cp "${LIBS:-.dev/gpumoe/lib}"/*.xz "$dir/lib/"
  cp "${TOKENIZER:-.dev/tok/smollm2-tokenizer.gguf.gz}" "$dir/tokenizer.gguf.gz"
  cp "$slim" "$dir/"
  du -sh "$dir"
  exit 0
fi

mkdir -p "$work" "$res"
# A device call ends at 10 minutes: a step starts no run with less than ~90 s of STEP_BUDGET left
# (it says so; run the step again, or per model with MODELS=..., to finish).
step_end=$((SECONDS + ${STEP_BUDGET:-570}))
time_for() {  # NAME: whether a run may start
  [ $((step_end - SECONDS)) -ge 90 ] && return 0
  say "skipped $1: $((step_end - SECONDS)) s left of the step's budget"
  return 1
}
out=${OUT:-$work/out}
mkdir -p "$out"
say() { echo "$*" | tee -a "$res/log.txt"; }
# One result a line: KIND MODEL SETTING key=value ... (report reads them).
record() { echo "$*" >>"$res/results.txt"; }

report() {
  python3 - "${1:-$res}/results.txt" <<'EOF'
import sys, collections
rows = collections.defaultdict(dict)
try:
    lines = open(sys.argv[1]).read().splitlines()
except OSError as e:
    print(f"no results: {e}"); sys.exit()
for line in lines:
    parts = line.split()
    if len(parts) < 3: continue
    kind, model, setting = parts[:3]
    kv = dict(p.split("=", 1) for p in parts[3:] if "=" in p)
    rows[(model, kind, setting)] = kv
def f(kv, k):
    try: return float(kv.get(k, ""))
    except ValueError: return None
def fmt(x, d=1): return "?" if x is None else f"{x:,.{d}f}"
models = sorted({m for m, _, _ in rows})
print("| model | engine and setting | VRAM MiB | prompt tok/s | generation tok/s | bound (plan here / lent-h100 profile) | notes |")
print("|---|---|---|---|---|---|---|")
for m in models:
    for (mm, kind, setting), kv in sorted(rows.items()):
        if mm != m or kind == "cgroup": continue
        bound = ""
        if kind == "strata":
            bound = (f"pp {fmt(f(kv,'plan_pp'),0)} ({kv.get('plan_pp_bound','?')}), tg {fmt(f(kv,'plan_tg'))} ({kv.get('plan_tg_bound','?')})"
                     f" / pp {fmt(f(kv,'h100_pp'),0)}, tg {fmt(f(kv,'h100_tg'))}")
        notes = " ".join(f"{k}={v}" for k, v in kv.items() if k in ("hit", "plan_hit", "pcie_mb", "gpu_experts", "cpu_experts", "rc", "why", "cache", "staging",
                                                              "measured_mib", "counted_mib"))
        print(f"| {m} | {kind} {setting.replace('_', ' ')} | {fmt(f(kv,'vram_mib'),0)} | {fmt(f(kv,'pp'),0)} | {fmt(f(kv,'tg'),2)} | {bound} | {notes} |")
print()
# The issue's bars: at ~8 GB, generation >= 1.5x llama.cpp's best generation setting and prompt >= 3x
# its best prompt setting; at 2 GB >= 1.5x -ot exps=CPU.
for m in models:
    def get(kind, setting, key):
        return f(rows.get((m, kind, setting), {}), key)
    l8 = [s for (mm, k, s) in rows if mm == m and k == "llama.cpp" and s.startswith("ncmoe")]
    best_tg = max([get("llama.cpp", s, "tg") or 0 for s in l8], default=0)
    best_pp = max([get("llama.cpp", s, "pp") or 0 for s in l8], default=0)
    for s8 in sorted(s for (mm, k, s) in rows if mm == m and k == "strata" and s.startswith("8G")):
        s8pp, s8tg = get("strata", s8, "pp"), get("strata", s8, "tg")  # one configuration: both bars
        if s8pp and best_pp:
            print(f"{m} {s8}: prompt {s8pp:,.0f} vs 3 x {best_pp:,.0f} = {3*best_pp:,.0f}: {'MET' if s8pp >= 3*best_pp else 'not met'} ({s8pp/best_pp:.2f}x)")
        if s8tg and best_tg:
            print(f"{m} {s8}: generation {s8tg:.2f} vs 1.5 x {best_tg:.2f} = {1.5*best_tg:.2f}: {'MET' if s8tg >= 1.5*best_tg else 'not met'} ({s8tg/best_tg:.2f}x)")
    ot = rows.get((m, "llama.cpp", "ot_exps_CPU"), {})
    for key, name in (("pp", "prompt"), ("tg", "generation")):
        s2, l2 = get("strata", "2G", key), f(ot, key)
        if s2 and l2:
            print(f"{m} 2 GB: {name} {s2:,.2f} vs 1.5 x -ot exps=CPU {l2:,.2f} = {1.5*l2:,.2f}: {'MET' if s2 >= 1.5*l2 else 'not met'} ({s2/l2:.2f}x)")
for (m, kind, setting), kv in sorted(rows.items()):
    if kind == "cgroup":
        print(f"cgroup: {m} {setting}: " + " ".join(f"{k}={v}" for k, v in kv.items()))
EOF
}

if [ "$mode" = report ]; then
  report "${2:-$res}"
  exit 0
fi

dir=${2:?DIR (prepared)}
dir=$(cd "$dir" && pwd)
cd "$work" || exit 1
bin=$work/bin
strata=$bin/strata
# ---- the binaries (once per machine: later steps find them in $work)
if [ ! -x "$strata" ]; then
  mkdir -p "$bin/lib"
  xz -dc "$dir/strata.xz" >"$strata" && chmod +x "$strata"
  for f in "$dir"/lib/*.xz; do xz -dc "$f" >"$bin/lib/$(basename "${f%.xz}")"; done
  gunzip -c "$dir/tokenizer.gguf.gz" >"$work/tokenizer.gguf"
fi
export LD_LIBRARY_PATH=$bin/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
if ldd "$strata" | grep -q "not found"; then
  d=$(dirname "$(find / -name 'libcublas.so.*' -not -path '/proc/*' 2>/dev/null | head -1)")
  export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d
fi
ldd "$strata" | grep "not found" && say "strata: libraries missing"
model_path() { echo "$work/$1-Q4_K_M.gguf"; }
finish() {
  report >"$res/report.txt" 2>&1
  cp -r "$res" "$out/" 2>/dev/null
  cat "$res/report.txt"
}

# VRAM in use (MiB) sampled while a command runs; prints the peak less what was in use before.
vram_now() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1; }
with_vram() {  # FILE COMMAND...: runs it, the peak VRAM above the idle level into FILE
  local file=$1
  shift
  local idle
  idle=$(vram_now)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 >"$file.samples" 2>/dev/null &
  local sampler=$!
  "$@"
  local rc=$?
  kill "$sampler" 2>/dev/null
  wait "$sampler" 2>/dev/null
  sort -n "$file.samples" | tail -1 | awk -v idle="${idle:-0}" '{print $1 - idle}' >"$file"
  return $rc
}

# llama.cpp's -ncmoe for ~8 GB of VRAM: the smallest N (the first N layers' experts on the CPU) whose
# GPU weights (all but token_embd and those experts) fit 8.05 GB, the issue table's count: 24 on
# Mixtral (8.01 GB). From the tensor table (strata plan --json: no weights read).
ncmoe_for_8g() {
  "$strata" plan "$1" --json --mem 200G --gpu-mem 0 -c $((pp + tg)) 2>/dev/null | python3 -c '
import json, sys, re
p = json.load(sys.stdin)
layers, other = {}, 0
for t in p["tensors"]:
    m = re.match(r"blk\.(\d+)\.ffn_(gate|up|down)_exps", t["name"])
    if m: layers[int(m.group(1))] = layers.get(int(m.group(1)), 0) + t["bytes"]
    elif t["name"] != "token_embd.weight": other += t["bytes"]
L = len(layers)
print(next((n for n in range(L + 1) if other + sum(layers[l] for l in range(n, L)) <= 8.05e9), L))'
}

step_setup() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$res/log.txt"
  nproc | sed 's/^/cores: /' | tee -a "$res/log.txt"
  free -g | head -2 | tee -a "$res/log.txt"
  df -h /tmp | tail -1 | tee -a "$res/log.txt"
  local slim
  slim=$(ls "$dir"/llama.slim.tar.* 2>/dev/null | head -1)
  if [ ! -x "$work/llama/build/bin/llama-bench" ] && [ -n "$slim" ]; then
    (
      mkdir -p "$work/llama" && tar xf "$slim" -C "$work/llama" &&
        cmake -S "$work/llama/llama.slim" -B "$work/llama/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
          -DCMAKE_CUDA_ARCHITECTURES="${ARCH:-90}" -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
          -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF >"$res/llama_configure.log" 2>&1 &&
        cmake --build "$work/llama/build" -j "${JOBS:-16}" --target llama-bench >"$res/llama_build.log" 2>&1
      echo $? >"$work/llama/build.rc"
    ) &
  fi
  local t0=$SECONDS
  for m in "${models[@]}"; do
    [ -s "$(model_path "$m")" ] && continue
    # A few threads: the random blocks are cheap, the disk is the bound, and the build wants the cores.
    "$strata" forge --preset "$m" --type Q4_K_M --threads "${FORGE_THREADS:-4}" --tokenizer-from "$work/tokenizer.gguf" \
      -o "$(model_path "$m")" \
      >"$res/forge-$m.log" 2>&1 || say "forge $m failed: $(tail -1 "$res/forge-$m.log")"
    say "forged $m: $(du -h "$(model_path "$m")" | cut -f1) at $((SECONDS - t0)) s"
  done
  wait
  say "llama.cpp build: rc $(cat "$work/llama/build.rc" 2>/dev/null || echo missing) at $((SECONDS - t0)) s"
  [ -x "$work/llama/build/bin/llama-bench" ] || tail -20 "$res/llama_build.log" "$res/llama_configure.log" 2>/dev/null
}

step_strata() {
  for m in "${models[@]}"; do
    local model
    model=$(model_path "$m")
    [ -s "$model" ] || { say "strata $m: no model (run setup)"; continue; }
    # Each budget as the plan says; the first also with every prompt miss copied (the plan's CPU share
    # of a prompt against none: COPY_ALL=0 leaves it out).
    local runs=()
    for mem in "${mems[@]}"; do runs+=("$mem"); done
    [ "${COPY_ALL:-1}" = 1 ] && runs+=("${mems[0]}-copy-all")
    for run in "${runs[@]}"; do
      grep -q "^strata $m $run .*rc=0" "$res/results.txt" 2>/dev/null && continue  # done in an earlier call
      time_for "strata $m $run" || continue
      local mem=${run%-copy-all} extra=()
      [ "$run" != "$mem" ] && extra=(--gpu-prompt-copy-share 1)
      local log=$res/strata-$m-$run.txt t0=$SECONDS
      with_vram "$res/strata-$m-$run.vram" timeout 420 "$strata" bench "$model" -p "$pp" -n "$tg" -c $((pp + tg + 1)) \
        -t "$threads" --gpu-mem "$mem" ${extra[@]+"${extra[@]}"} --fresh --stats >"$log" 2>&1
      local rc=$?
      local plan
      plan=$("$strata" plan "$model" --profile lent-h100 --gpu-mem "$mem" --mem 100G -t "$threads" -c $((pp + tg + 1)) 2>&1)
      echo "$plan" >"$res/plan-h100-$m-$mem.txt"
      python3 - "$log" "$res/plan-h100-$m-$mem.txt" "$(cat "$res/strata-$m-$run.vram" 2>/dev/null)" "$rc" "$m" "$run" \
        >>"$res/results.txt" <<'EOF'
import re, sys
log, plan, vram, rc, model, mem = sys.argv[1:]
t, p = open(log, errors="replace").read(), open(plan, errors="replace").read()
def g(pat, text, i=1):
    m = re.search(pat, text, re.M)
    return m.group(i).replace(",", "") if m else "?"
kv = {"pp": g(r"^prompt\s+\d+ tokens\s+([\d.]+)", t), "tg": g(r"^generation\s+\d+ tokens\s+([\d.]+)", t),
      "plan_tg": g(r"predicted generation ([\d.]+) tok/s \(([^)]*)\)", t),
      "plan_tg_bound": g(r"predicted generation ([\d.]+) tok/s \(([^)]*)\)", t, 2).replace(" ", "_"),
      "plan_pp": g(r"prompt ([\d.]+) tok/s \(([^)]*)\)\s*$", t),
      "plan_pp_bound": g(r"prompt ([\d.]+) tok/s \(([^)]*)\)\s*$", t, 2).replace(" ", "_"),
      "h100_tg": g(r"^generation: ([\d.]+)", p), "h100_pp": g(r"^prompt \(\d+ tokens a batch\): ([\d.]+)", p),
      "hit": g(r"VRAM hit rate (\d+%)", t), "plan_hit": g(r"VRAM hit rate \d+% \(plan (\d+%)\)", t),
      "pcie_mb": g(r"([\d.]+) MB over PCIe", t), "gpu_experts": g(r"experts ([\d.]+) GPU", t),
      "cpu_experts": g(r"/ ([\d.]+) CPU, copy", t), "cache": g(r"(\d+) cached and", t),
      "staging": g(r"and (\d+) staging slots", t), "vram_mib": vram or "?",
      "measured_mib": g(r"VRAM measured (\d+) MiB", t), "counted_mib": g(r"counted (\d+) MiB: session", t), "rc": rc}
if rc != "0":
    kv["why"] = "_".join(t.strip().splitlines()[-1].split())[:160] if t.strip() else "?"
print("strata", model, mem, " ".join(f"{k}={v}" for k, v in kv.items()))
EOF
      say "strata $m --gpu-mem $mem ${extra[*]:-}: rc $rc in $((SECONDS - t0)) s: $(grep -E '^(prompt|generation) ' "$log" | tr -s ' ' | tr '\n' ';')"
      grep -E "^gpu (experts|tier)|minimum|rror" "$log" | sed 's/^/    /' | tee -a "$res/log.txt"
    done
  done
}

llama_bench() {  # MODEL SETTING_NAME ARGS...
  local m=$1 name=$2
  shift 2
  local lb=$work/llama/build/bin/llama-bench json=$res/llama-$m-$name.json t0=$SECONDS
  [ -x "$lb" ] || { say "llama.cpp $m $name: no llama-bench (run setup)"; return; }
  grep -q "^llama.cpp $m $name .*rc=0" "$res/results.txt" 2>/dev/null && return  # done in an earlier call
  time_for "llama.cpp $m $name" || return
  with_vram "$res/llama-$m-$name.vram" timeout 400 "$lb" -m "$(model_path "$m")" -p "$pp" -n "$tg" -t "$threads" \
    -r "$reps" -o json "$@" >"$json" 2>"$res/llama-$m-$name.err"
  local rc=$?
  python3 - "$json" "$(cat "$res/llama-$m-$name.vram" 2>/dev/null)" "$rc" "$m" "$name" "$*" >>"$res/results.txt" <<'EOF'
import json, sys
path, vram, rc, model, name, args = sys.argv[1:]
kv = {"pp": "?", "tg": "?"}
try:
    for r in json.load(open(path)):
        kv["pp" if r["n_prompt"] > 0 else "tg"] = f'{r["avg_ts"]:.3f}'
except Exception:
    pass
kv.update({"vram_mib": vram or "?", "rc": rc, "args": "_".join(args.split())})
print("llama.cpp", model, name, " ".join(f"{k}={v}" for k, v in kv.items()))
EOF
  say "llama.cpp $m $* : rc $rc in $((SECONDS - t0)) s"
}

step_llama() {
  for m in "${models[@]}"; do
    [ -s "$(model_path "$m")" ] || { say "llama.cpp $m: no model (run setup)"; continue; }
    local n
    n=$(ncmoe_for_8g "$(model_path "$m")")
    say "$m: -ncmoe $n leaves ~8 GB in VRAM"
    llama_bench "$m" "ncmoe_$n" -ngl 99 -ncmoe "$n"
    llama_bench "$m" "ncmoe_${n}_no-host" -ngl 99 -ncmoe "$n" --no-host 1
    llama_bench "$m" ot_exps_CPU -ngl 99 -ot exps=CPU
  done
}

# A memory cgroup of LIMIT for COMMAND (v2, else v1); exit 125 where none can be made.
in_cgroup() {
  local limit=$1
  shift
  local cg
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    cg=/sys/fs/cgroup/strata_moe_$$
    grep -qw memory /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null ||
      echo +memory >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
    mkdir "$cg" 2>/dev/null && echo "$limit" >"$cg/memory.max" 2>/dev/null || { rmdir "$cg" 2>/dev/null; return 125; }
    echo 0 >"$cg/memory.swap.max" 2>/dev/null
  elif [ -d /sys/fs/cgroup/memory ]; then
    cg=/sys/fs/cgroup/memory/strata_moe_$$
    mkdir "$cg" 2>/dev/null && echo "$limit" >"$cg/memory.limit_in_bytes" 2>/dev/null || { rmdir "$cg" 2>/dev/null; return 125; }
  else
    return 125
  fi
  sync
  echo 3 >/proc/sys/vm/drop_caches 2>/dev/null  # cold: the model comes from the disk
  bash -c 'echo $$ >'"$cg"'/cgroup.procs && exec "$@"' _ "$@"
  local rc=$?
  cat "$cg/memory.peak" "$cg/memory.max_usage_in_bytes" 2>/dev/null | head -1 | awk '{printf "%.0f\n", $1 / 1048576}' >"$work/cgroup.peak"
  sleep 1
  rmdir "$cg" 2>/dev/null
  return $rc
}

step_cgroup() {
  local m=mixtral-8x7b model
  model=$(model_path "$m")
  [ -s "$model" ] || { say "cgroup: no $m model (run setup)"; return; }
  local limit=$((16 << 30))
  if ! in_cgroup "$limit" true; then
    say "cgroup: a 16 GB memory cgroup cannot be made on this machine (cgroup v2 memory controller not delegated, no v1 memory hierarchy): the model-on-disk case is not measured"
    record "cgroup $m 16G made=no"
    return
  fi
  say "cgroup: 16 GB memory cgroups work here"
  local n t0=$SECONDS
  n=$(ncmoe_for_8g "$model")
  # llama.cpp's best 8 GB setting under the limit: its host experts through mmap, paged from the disk.
  in_cgroup "$limit" timeout 180 "$work/llama/build/bin/llama-bench" -m "$model" -p "$pp" -n 32 -t "$threads" -r 1 \
    -o json -ngl 99 -ncmoe "$n" >"$res/cgroup-llama.json" 2>"$res/cgroup-llama.err"
  local rc=$?
  record "cgroup $m llama.cpp_ncmoe_$n rc=$rc peak_mib=$(cat "$work/cgroup.peak" 2>/dev/null) $(python3 -c '
import json, sys
try:
    print(" ".join(("pp=%.3f" if r["n_prompt"] > 0 else "tg=%.3f") % r["avg_ts"] for r in json.load(open(sys.argv[1]))))
except Exception:
    print("parse=failed")' "$res/cgroup-llama.json")"
  say "cgroup llama.cpp -ncmoe $n: rc $rc in $((SECONDS - t0)) s"
  # Strata under the same limit: the GPU tier pins every routed expert in host RAM (26 GB), which a
  # 16 GB limit cannot hold, and a GPU session does not stream experts from the SSD yet; the plan
  # says so. Strata's CPU streaming engine is what runs there today.
  t0=$SECONDS
  in_cgroup "$limit" timeout 60 "$strata" bench "$model" -p "$pp" -n 32 -c 600 -t "$threads" --gpu-mem 8G --fresh \
    >"$res/cgroup-strata-gpu.txt" 2>&1
  rc=$?
  record "cgroup $m strata_gpu-mem_8G rc=$rc peak_mib=$(cat "$work/cgroup.peak" 2>/dev/null) why=$(tail -1 "$res/cgroup-strata-gpu.txt" | tr -s ' ' '_' | cut -c1-160)"
  in_cgroup "$limit" timeout 180 "$strata" bench "$model" -p 128 -n 16 -c 200 -t "$threads" --cpu --fresh \
    >"$res/cgroup-strata-cpu.txt" 2>&1
  rc=$?
  record "cgroup $m strata_cpu_streaming rc=$rc peak_mib=$(cat "$work/cgroup.peak" 2>/dev/null) pp=$(awk '/^prompt /{print $4}' "$res/cgroup-strata-cpu.txt") tg=$(awk '/^generation /{print $4}' "$res/cgroup-strata-cpu.txt")"
  say "cgroup strata: $((SECONDS - t0)) s"
}

case "$mode" in
  setup) step_setup ;;
  strata) step_strata ;;
  llama) step_llama ;;
  cgroup) step_cgroup ;;
  all) step_setup && step_strata && step_llama && step_cgroup ;;
  *)
    echo "unknown step $mode" >&2
    exit 2
    ;;
esac
finish
