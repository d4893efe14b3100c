#!/usr/bin/env python3
"""Two or more Strata binaries on one tier_bench case, interleaved (A B B A A B ...).

This machine's disk changes speed from minute to minute, so a single run of one binary against a
single run of another says little. Each round measures the disk (`strata iobench`, the case's read
size), then runs every binary once in a fresh cgroup with caches dropped. Per run it prints
generation tok/s, bytes read and that must be read per token, and the share of the bound reached
at the round's disk speed (the faster of iobench and the run's own). At the end it prints medians.
For the case that fits (llama-fits), each round also runs the first binary plainly: no cgroup and
an unlimited budget (--mem 1T), the run the budgeted one must match.

    python3 bench/ab_bench.py --case qwen3 --rounds 3 build/strata /tmp/strata-old
"""
import argparse
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tier_bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--case", default="qwen3", choices=sorted(tier_bench.CASES))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-prompt", type=int, default=16)
    ap.add_argument("--n-gen", type=int, default=8)
    ap.add_argument("--extra", default="", help="more arguments for `strata bench`, space-separated")
    a = ap.parse_args()
    arch, preset, file, limit, kind, block = tier_bench.CASES[a.case]
    model = os.path.join(tier_bench.MODELS, file)
    tier_bench.forge(os.path.abspath(a.binaries[0]), arch, preset, model)
    ctx = str(a.n_prompt + a.n_gen + 16)
    plain = "plain " + a.binaries[0]
    runs = [(b, b) for b in a.binaries] + ([(plain, a.binaries[0])] if kind == "fits" else [])
    results = {name: [] for name, _ in runs}
    for r in range(a.rounds):
        bw = tier_bench.ssd_gbps(os.path.abspath(a.binaries[0]), model, block)
        for b, binary in (runs if r % 2 == 0 else runs[::-1]):  # no binary always goes first
            cmd = [os.path.abspath(binary), "bench", model, "-p", str(a.n_prompt), "-n", str(a.n_gen), "-t",
                   str(a.threads), "-c", ctx, "--json", "--fresh", "--stats"] + a.extra.split()
            if b == plain:
                subprocess.run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"], check=False)
                p = subprocess.run(cmd + ["--mem", "1T"], capture_output=True, text=True)
                out, err, peak, ooms, rc = p.stdout, p.stderr, 0, "-", p.returncode
            else:
                out, err, peak, ooms, rc = tier_bench.in_cgroup(limit, cmd, 1800)
            s = tier_bench.last_json(out)
            if s is None:
                print(f"round {r} {b}: failed (exit {rc}, oom kills {ooms}):\n{err[-1500:]}", file=sys.stderr)
                continue
            tg, per, must = s["tg_tok_s"], s["ssd_bytes_per_token"], s.get("ssd_must_read_per_token", 0.0)
            run_gbps = per * tg / 1e9
            # Nothing streamed: the bound is memory bandwidth over the weights read per token.
            pct = (100 * tg * must / (max(bw, run_gbps) * 1e9) if must > 0
                   else 100 * tg / s["tg_bound_tok_s"] if s.get("tg_bound_tok_s") else float("nan"))
            results[b].append((tg, pct))
            print(f"round {r} {b}: gen {tg:.3f} tok/s, prompt {s['pp_tok_s']:.2f}, read {per / 1e6:.0f} MB/token "
                  f"(must {must / 1e6:.0f}), iobench {bw:.2f} GB/s, run {run_gbps:.2f} GB/s, {pct:.0f}% of bound, "
                  f"peak {peak / (1 << 30):.2f} GiB, oom kills {ooms}", flush=True)
            if "tg_disk_idle_s" in s:
                print(f"    generation {a.n_gen / tg:.2f} s: compute waited {s['tg_io_wait_s']:.2f} s for reads, "
                      f"the disk idled {s['tg_disk_idle_s']:.2f} s", flush=True)
            for line in err.splitlines():
                if line.startswith(("experts:", "prefetch:", "SSD:")):
                    print("    " + line, flush=True)
    print(f"\n{a.case} under {limit}, {a.rounds} interleaved rounds: median gen tok/s, median % of bound")
    for b, rs in results.items():
        if rs:
            print(f"  {b}: {statistics.median(x[0] for x in rs):.3f} tok/s, "
                  f"{statistics.median(x[1] for x in rs):.0f}% ({', '.join(f'{x[0]:.3f}' for x in rs)})")
    if results.get(plain) and results[a.binaries[0]]:
        ratios = [x[0] / y[0] for x, y in zip(results[a.binaries[0]], results[plain])]
        print(f"  budgeted / plain, round by round: {', '.join(f'{q:.3f}' for q in ratios)}; "
              f"median {statistics.median(ratios):.3f}; ratio of medians "
              f"{statistics.median(x[0] for x in results[a.binaries[0]]) / statistics.median(x[0] for x in results[plain]):.3f}")


if __name__ == "__main__":
    main()
