#!/usr/bin/env bash
# Generation speed of a streamed model while `strata serve` hashes the model folder at start
# (the digests of /api/tags), for one or more Strata builds, alternating, each in a fresh cgroup.
# Usage: bench/serve_while_hashing.sh LIMIT MODELS_DIR MODEL_NAME STRATA_BINARY...
#   e.g. bench/serve_while_hashing.sh 6G /tmp/twodir qwen3 build/strata /tmp/strata-old
# MODELS_DIR should hold the streamed model and others large enough to keep the hashing busy.
set -euo pipefail
limit=$1 dir=$2 name=$3; shift 3
here=$(cd "$(dirname "$0")" && pwd)
port=18557
for round in 1 2; do
  for bin in "$@"; do
    bin=$(realpath "$bin")
    "$here/in_cgroup.sh" "$limit" "$bin" serve --models "$dir" --host 127.0.0.1:$port -c 256 >/dev/null 2>&1 &
    python3 - "$bin" "$name" "$port" <<'PY'
import sys, time
import ollama
bin, name, port = sys.argv[1:]
client = ollama.Client(host=f"http://127.0.0.1:{port}", timeout=600)
for _ in range(100):  # until the server listens
    try:
        r = client.generate(model=name, prompt="Hello", raw=True, options={"num_predict": 24, "temperature": 0})
        break
    except Exception:
        time.sleep(0.2)
print(f"{bin}: {r.eval_count / (r.eval_duration / 1e9):.3f} tok/s generating, load {r.load_duration / 1e9:.1f} s")
PY
    pkill -f "$bin serve --models $dir" || true
    wait || true
  done
done
