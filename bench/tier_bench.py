#!/usr/bin/env python3
"""Tiered weights against llama.cpp inside memory cgroups (issue 3's benchmark table).

For each case a forged model runs in a fresh cgroup v1 memory limit (page cache counts; caches
are dropped first) under `strata bench` (budget: what the cgroup has left, detected by Strata
itself) and under llama.cpp (llama-cpp-python, default mmap), same threads, same random prompt.
Prints tokens/s for prompt and generation, bytes read from the SSD per generated token, the
expert-cache hit rate, the cgroup's peak memory, and the physical bound: SSD bandwidth (measured
by `strata iobench` on the model file) / bytes that must be read per token at the observed hit
rate, or the memory-bandwidth bound where that binds.

    python3 bench/tier_bench.py --strata build/strata [--cases mixtral,qwen3,llama-2g,llama-fits]
        [--routing-source TRACE... [--routing-only | --routing-replay-only]]

Forged weights route almost uniformly: the worst case for an expert cache. With --routing-source
(real routing traces, e.g. the trained model's from `strata run --trace-routing`), each MoE case
also gets realistic routing: bench/routing_synth.py carries the traces' statistics onto the case's
shape, and the engine runs the forged model under the case's limit with its MoE layers routed as
that trace says (`strata bench --routing-override`, src/tier/trace/routing_override.h), and as a
uniform trace says: tok/s, hit rate and bytes read per token, uniform against realistic. Beside
them, bench/routing_replay.py's replay of the same traces through the engine's policy (lfu) at the
cache size `strata plan` gives (--routing-replay-only: the replay alone). Under the override the
router's look-ahead still guesses from the forged router (no better than chance), so these runs
use --expert-guess coactivation unless --routing-guess says otherwise.

Measured (2026-12-07, development machine: 2 cores shared with other work, SSD ~1.9-2.1 GB/s in
the sweep; `--cases mixtral,qwen3 --routing-source code prose chat --routing-only --n-prompt 16
--n-gen 16`, traces of /tmp/routing/traces = the trained model's full traces of closing note 15;
16 generated tokens per run, one run each: read the tok/s as +-20 %):
  case     routing  replay: slots  hit    MB/token | engine: slots  gen tok/s  cache hit  MB/token
  mixtral  uniform  62 of 256      18.0%  5996     | 66             0.142      19.3%      5525
  mixtral  code     62             31.4%  5013     | 66             0.210      32.3%      4615
  mixtral  prose    62             57.1%  3135     | 66             0.225      53.7%      3174
  mixtral  chat     62             49.2%  3713     | 66             0.156      51.3%      3339
  qwen3    uniform  1803 of 6144   26.7%  865      | 1893           0.284      28.8%      784
  qwen3    code     1803           44.3%  657      | 1893           0.676      42.7%      631
  qwen3    prose    1803           97.3%  31       | 1893           0.778      95.5%      52
  qwen3    chat     1803           77.6%  264      | 1893           1.013      78.7%      238
(The replay's cache is `strata plan --mem LIMIT`'s at its default context; the engine's, planned
inside the cgroup for the bench's small context, is a little larger.) The engine's hit rates follow
the replay's within 4 points. Realistic routing reads 1.2-1.7x less than uniform on Mixtral and
1.2-15x less on Qwen3, and runs 1.1-1.6x (Mixtral) and 2.4-3.6x (Qwen3) faster; under realistic
routing Qwen3 is no longer bound by the SSD but by 2 busy cores. The synthetic prose trace on the
Qwen3 shape is more concentrated than any real trace (97 % replayed hits): treat it as optimistic.
Needs root (cgroups, drop_caches), ~50 GB of disk for the forged models, and
scripts/setup_reference.sh for llama-cpp-python.
"""
import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.expanduser("~/.cache/strata/models")

CASES = {
    # name: (arch, preset, file, cgroup limit, kind, size of one streamed read)
    "mixtral": ("llama", "mixtral-8x7b", "forged-mixtral-8x7b-Q4_K_M.gguf", "8G", "MoE over budget", "4M"),
    # An expert's gate, up and down slices lie in three tensors: reads of about 1 MB each.
    "qwen3": ("qwen3moe", "qwen3-30b-a3b", "forged-qwen3-30b-a3b-Q4_K_M.gguf", "6G", "MoE over budget", "1M"),
    "llama-2g": ("llama", "llama-3-8b", "forged-llama-3-8b-Q4_K_M.gguf", "2G", "dense over budget", "4M"),
    "llama-fits": ("llama", "llama-3-8b", "forged-llama-3-8b-Q4_K_M.gguf", "8G", "fits", "4M"),
}


def forge(strata, arch, preset, path):
    if os.path.exists(path):
        return
    print(f"forging {path} ...", file=sys.stderr, flush=True)
    subprocess.run([strata, "forge", "--arch", arch, "--preset", preset, "--type", "Q4_K_M", "--out", path], check=True)


def in_cgroup(limit, cmd, timeout):
    """Runs cmd in a fresh cgroup; returns (stdout, peak bytes, oom kills, exit code)."""
    try:
        p = subprocess.run([os.path.join(HERE, "in_cgroup.sh"), limit] + cmd, capture_output=True, text=True,
                           timeout=timeout)
        out, err, rc = p.stdout, p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = (e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")) + "\ntimeout"
        rc = 124
    m = re.search(r"peak (\S+), oom kills (\S+), exit", err)
    peak = int(subprocess.run(["numfmt", "--from=iec", m.group(1)], capture_output=True, text=True).stdout) if m else 0
    ooms = m.group(2) if m else "?"
    return out, err, peak, ooms, rc


def last_json(text):
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    return None


def ssd_gbps(strata, model, block):
    """Random O_DIRECT reads of the case's read size: the best of two queue depths, since this
    disk's throughput moves a lot from one second to the next."""
    subprocess.run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"], check=False)
    out = subprocess.run([strata, "iobench", model, "--depths", "8,32", "--block-sizes", block, "--patterns", "rand",
                          "--seconds", "3"], capture_output=True, text=True).stdout
    m = re.search(r"best: .*: (\d+) MB/s", out)
    return float(m.group(1)) / 1000 if m else 1.7


SHAPES = {"mixtral": "mixtral", "qwen3": "qwen3"}  # case -> routing_synth.py shape


def routing_rows(strata, name, model, limit, sources, tokens, bw, run=None):
    """Uniform against realistic routing for a MoE case: replayed at the plan's expert cache and,
    with `run` (a function of the override trace's path giving the engine's bench JSON or None),
    run by the engine with its routing overridden. The trace's first tokens route the prompt."""
    import routing_replay as rr
    import routing_synth as rs
    plan = json.loads(subprocess.run([strata, "plan", model, "--mem", limit, "--json"], capture_output=True,
                                     text=True, check=True).stdout)
    slots = plan["counts"]["experts_resident"] + plan["streaming"]["expert_slots"]
    slot_bytes = plan["streaming"]["expert_slot_bytes"]
    L, E, K, _ = rs.SHAPES[SHAPES[name]]
    rows = []
    for kind in ["uniform"] + [os.path.basename(p) for p in sources]:
        if kind == "uniform":
            import random
            rng = random.Random(1)
            toks = [[rng.sample(range(E), K) for _ in range(L)] for _ in range(tokens)]
        else:
            toks = rs.generate([p for p in sources if os.path.basename(p) == kind], L, E, K, tokens, 1)
        path = f"/tmp/tier_bench_routing_{name}_{kind}"
        rs.write_trace(path, name, L, E, K, slot_bytes, toks)
        try:
            t = rr.parse(path)
            hits, acc, read = rr.replay_lfu(t, slots)
            engine = run(path) if run else None
        finally:
            os.remove(path)
        per_token = read / t.n_tokens
        rows.append({"case": name, "routing": kind, "slots": slots, "of": L * E, "hit_rate": hits / acc,
                     "bytes_per_token": per_token, "ssd_bound": bw * 1e9 / per_token if per_token else float("inf"),
                     "engine": engine})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--strata", default="build/strata")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-prompt", type=int, default=16)
    ap.add_argument("--n-gen", type=int, default=8)
    ap.add_argument("--cases", default="mixtral,qwen3,llama-2g,llama-fits")
    ap.add_argument("--skip-llamacpp", action="store_true")
    ap.add_argument("--llamacpp-timeout", type=int, default=900)
    ap.add_argument("--mmap-only", action="store_true",
                    help="over budget, run llama.cpp only on its plain mmap (as shipped it is OOM-killed there)")
    ap.add_argument("--routing-source", nargs="*", default=[], help="real routing traces (see above)")
    ap.add_argument("--routing-only", action="store_true",
                    help="only the routing comparison (replay and engine runs under the override)")
    ap.add_argument("--routing-replay-only", action="store_true", help="only the routing replay, no engine runs")
    ap.add_argument("--routing-tokens", type=int, default=256, help="tokens of each replayed trace")
    ap.add_argument("--routing-guess", default="coactivation",
                    help="--expert-guess for the runs under a routing override (both, router, coactivation, none)")
    a = ap.parse_args()
    strata = os.path.abspath(a.strata)
    rows = []
    routing = []
    sys.path.insert(0, HERE)
    for name in a.cases.split(","):
        arch, preset, file, limit, kind, block = CASES[name]
        model = os.path.join(MODELS, file)
        forge(strata, arch, preset, model)
        bw = ssd_gbps(strata, model, block)
        ctx = str(a.n_prompt + a.n_gen + 16)
        cmd = [strata, "bench", model, "-p", str(a.n_prompt), "-n", str(a.n_gen), "-t", str(a.threads), "-c", ctx,
               "--json", "--fresh", "--stats"]
        if a.routing_source and name in SHAPES:
            def run_overridden(trace):
                out, err, peak, ooms, rc = in_cgroup(
                    limit, cmd + ["--routing-override", trace, "--expert-guess", a.routing_guess], 1800)
                s = last_json(out)
                if s is None:
                    print(f"{name}: strata under {trace} failed (exit {rc}):\n{err[-2000:]}", file=sys.stderr)
                    return None
                s["peak"] = peak
                print(f"--- {name}: strata, routing {os.path.basename(trace)}\n{err.strip()}", file=sys.stderr,
                      flush=True)
                return s

            routing += routing_rows(strata, name, model, limit, a.routing_source,
                                    max(a.routing_tokens, a.n_prompt + a.n_gen), bw,
                                    None if a.routing_replay_only else run_overridden)
        if a.routing_only or a.routing_replay_only:
            continue
        out, err, peak, ooms, rc = in_cgroup(limit, cmd, 1800)
        s = last_json(out)
        if s is None:
            print(f"{name}: strata failed (exit {rc}):\n{err[-2000:]}", file=sys.stderr)
            continue
        print(f"--- {name}: strata\n{err.strip()}", file=sys.stderr, flush=True)
        row = {"case": name, "kind": kind, "limit": limit, "ssd_gbps": bw, "strata": s, "strata_peak": peak,
               "strata_ooms": ooms}
        if kind == "fits":  # the plain run: no cgroup, no budget
            plain = subprocess.run(cmd[:-1] + ["--mem", "1T"], capture_output=True, text=True)
            row["plain"] = last_json(plain.stdout)
        must = s.get("ssd_must_read_per_token", 0.0)
        ssd_bound = bw * 1e9 / must if must > 0 else float("inf")
        ram_bound = s["tg_bound_tok_s"] or float("inf")  # 0: not measured (streaming)
        row["bound"] = min(ssd_bound, ram_bound)
        row["bound_by"] = "SSD" if ssd_bound < ram_bound else "RAM bandwidth"
        row["observed_gbps"] = s["ssd_bytes_per_token"] * s["tg_tok_s"] / 1e9
        # The disk may run faster during the run than in the sweep: the bound at that speed too.
        fastest = max(bw, row["observed_gbps"])
        row["bound_observed"] = min(fastest * 1e9 / must if must > 0 else float("inf"), ram_bound)
        if not a.skip_llamacpp:
            # llama.cpp as it comes (repacked weights in anonymous memory), then on its plain mmap.
            variants = [("llama.cpp", []), ("llama.cpp mmap, no repack", ["--no-repack"])]
            if a.mmap_only and kind != "fits":
                variants = variants[1:]
            for variant, extra in variants:
                lout, lerr, lpeak, looms, lrc = in_cgroup(
                    limit, [sys.executable, os.path.join(HERE, "llamacpp_eval.py"), model, str(a.n_prompt),
                            str(a.n_gen), str(a.threads), "--json"] + extra, a.llamacpp_timeout)
                row.setdefault("llamacpp_runs", []).append(
                    {"variant": variant, "result": last_json(lout), "peak": lpeak, "ooms": looms, "rc": lrc})
                print(f"--- {name}: {variant} exit {lrc}, oom kills {looms}: {lout.strip()[-300:]}", file=sys.stderr,
                      flush=True)
        rows.append(row)

    if routing:
        print("| case | routing | expert cache (slots of experts) | replay: hit rate (lfu) | SSD MB/token | SSD bound "
              "tok/s | engine: gen tok/s | cache hit | SSD MB/token | peak |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in routing:
            e = r["engine"]
            run = (f"{e['tg_tok_s']:.3f} | {100 * e['expert_cache_hit_rate']:.1f}% | "
                   f"{e['ssd_bytes_per_token'] / 1e6:.0f} | {e['peak'] / (1 << 30):.2f} GiB" if e else "- | - | - | -")
            print(f"| {r['case']} | {r['routing']} | {r['slots']} of {r['of']} | {100 * r['hit_rate']:.1f}% | "
                  f"{r['bytes_per_token'] / 1e6:.0f} | {r['ssd_bound']:.3f} | {run} |")
        if a.routing_only or a.routing_replay_only:
            return
    gib = 1 << 30
    print("| case | limit | engine | prompt tok/s | gen tok/s | strata gen ratio | SSD MB/token (must read) | cache hit | peak | "
          "bound tok/s | % of bound | % of bound at the run's disk speed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["strata"]
        runs = [x for x in r.get("llamacpp_runs", []) if x["result"]]
        l = max((x["result"] for x in runs), key=lambda x: x["tg_tok_s"], default=None)  # llama.cpp's best
        ratio = f"{s['tg_tok_s'] / l['tg_tok_s']:.2f}x" if l and l["tg_tok_s"] > 0 else "-"
        hit = f"{100 * s['expert_cache_hit_rate']:.0f}%" if "MoE" in r["kind"] else "-"
        bound = r["bound"]
        print(f"| {r['case']} ({r['kind']}) | {r['limit']} | strata | {s['pp_tok_s']:.2f} | {s['tg_tok_s']:.3f} | {ratio} | "
              f"{s['ssd_bytes_per_token'] / 1e6:.0f} ({s['ssd_must_read_per_token'] / 1e6:.0f}) | {hit} | "
              f"{r['strata_peak'] / gib:.2f} GiB | {bound:.3f} ({r['bound_by']}, SSD {r['ssd_gbps']:.2f} GB/s; run "
              f"{r['observed_gbps']:.2f}) | {100 * s['tg_tok_s'] / bound:.0f}% | "
              f"{100 * s['tg_tok_s'] / r['bound_observed']:.0f}% |")
        if "plain" in r and r["plain"]:
            p = r["plain"]
            print(f"| {r['case']} | none | strata plain | {p['pp_tok_s']:.2f} | {p['tg_tok_s']:.3f} | "
                  f"{s['tg_tok_s'] / p['tg_tok_s']:.2f}x of plain | 0 | - | - | - | - | - |")
        for x in r.get("llamacpp_runs", []):
            lr = x["result"]
            if lr:
                print(f"| {r['case']} | {r['limit']} | {x['variant']} | {lr['pp_tok_s']:.2f} | {lr['tg_tok_s']:.3f} | "
                      f"{s['tg_tok_s'] / lr['tg_tok_s']:.2f}x | {lr['read_bytes_per_token'] / 1e6:.0f} | - | "
                      f"{x['peak'] / gib:.2f} GiB | - | - | - |")
            else:
                print(f"| {r['case']} | {r['limit']} | {x['variant']} | failed: exit {x['rc']}, oom kills {x['ooms']} "
                      f"| - | - | - | - | {x['peak'] / gib:.2f} GiB | - | - | - |")


if __name__ == "__main__":
    main()
