#!/usr/bin/env bash
# Runs a command inside a fresh memory cgroup (v1) with a hard limit, so page cache counts
# against the budget too, then prints the cgroup's peak usage.
# Usage: bench/in_cgroup.sh LIMIT_BYTES_OR_SIZE COMMAND...   (e.g. 2G)
set -euo pipefail
limit=$1; shift
root=/sys/fs/cgroup/memory
[[ -d $root ]] || { echo "no cgroup v1 memory controller at $root" >&2; exit 1; }
cg=$root/strata_bench_$$
mkdir "$cg"
trap 'sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; rmdir "$cg" 2>/dev/null || true' EXIT
echo "$(numfmt --from=iec "$limit")" > "$cg/memory.limit_in_bytes"
echo 0 > "$cg/memory.swappiness" 2>/dev/null || true
sync; echo 3 > /proc/sys/vm/drop_caches  # start cold: nothing of the model in the page cache
set +e
bash -c 'echo $$ > '"$cg"'/cgroup.procs; exec "$@"' _ "$@"
rc=$?
set -e
oom_kills=$(awk '/^oom_kill /{print $2}' "$cg/memory.oom_control")
echo "cgroup limit $(numfmt --to=iec "$(cat "$cg/memory.limit_in_bytes")"), peak $(numfmt --to=iec "$(cat "$cg/memory.max_usage_in_bytes")"), oom kills ${oom_kills:-?}, exit $rc" >&2
exit $rc
