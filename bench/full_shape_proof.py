#!/usr/bin/env python3
"""Issue 16's proof on the full-size shapes: forged Qwen3.5-35B-A3B and gpt-oss-20b against llama.cpp.

One command per model (or both, one after the other: one big file on the disk at a time):

    python3 bench/full_shape_proof.py --strata build/strata --case qwen3.5-35b-a3b
    python3 bench/full_shape_proof.py --strata build/strata --case gpt-oss-20b --steps logits,stream,ppl,bench

For each case it forges the model into --dir (deleted afterwards unless --keep), then:
  tokens  the text's token ids from `strata tokenize` equal llama.cpp's (llama-cpp-python 0.3.36);
  logits  `strata logits` after prefixes of the GPL-3 against llama.cpp's logits at the same
          positions (one llama.cpp evaluation of the longest prefix, logits_all), over the whole
          vocabulary: max |diff| under 2% of the row's logit range and the same top-1 wherever
          llama.cpp's top-2 margin exceeds 4% of it (tests/model/forged_test.cpp's tolerances);
  stream  the same logits with the experts streamed under the benchmark's budget (--mem LIMIT)
          equal the resident run's (--mem 1T) bit for bit;
  ppl     perplexity of the GPL-3 (llama-perplexity's method, scripts/gen_fidelity_fixtures.py) at
          --ctx over --chunks chunks: Strata resident and streamed within 0.1% of llama.cpp;
  bench   `strata bench` and llama.cpp's mmap run (bench/llamacpp_eval.py --no-repack: its repacked
          buffers crash on this llama-cpp-python build) in the same fresh memory cgroup
          (bench/in_cgroup.sh; root), generation tok/s, the ratio, and % of the bound: the SSD's
          (random reads measured by `strata iobench` / bytes that must be read per token at the
          observed hit rate) or RAM bandwidth's, whichever binds, beside the plan's prediction.

Cases: Qwen3.5-35B-A3B Q4_K_M with Qwen3.5's own vocabulary (ggml-vocab-qwen35.gguf from the
llama.cpp source in llama-cpp-python's sdist, --vocab-from; else SmolLM2's) under 6 GB, as the
issue asks; gpt-oss-20b MXFP4_MOE (SmolLM2's vocabulary: the o200k vocabulary is not in that tree)
under 16/63 of its file size: the issue's gpt-oss-120b (~63 GB) under 16 GB does not fit this
machine's disk, so the 20b shape runs under the same fraction of its size.

Results are printed and appended as JSON lines to DIR/results.jsonl.

Measured 2026-12-07 on the development machine (2 cores shared with ~7 other sessions' builds and
runs: load average 9-13 during most of it, so read every tok/s as +-30%; SSD 2.36 GB/s random 1 MB
reads; llama-cpp-python 0.3.36 on its plain CPU buffers):

Qwen3.5-35B-A3B, Q4_K_M, llama.cpp's ggml-vocab-qwen35.gguf (pre-tokenizer qwen35, 151,936 ids: the
released model's table is 248,320), 20.82 GB, random blocks:
  tokens   the GPL-3's ids equal llama.cpp's (850 in the first 4000 chars; 7,485 of the file's 7,486 with
           `strata tokenize -f`, the last differing only as that keeps the trailing newline, as
           llama-tokenize -f does too; perplexity -f drops it, as llama-perplexity does)
  logits   after 4 / 46 / 99 tokens: max |diff| 0.161 / 0.029 / 0.036 over a range of 12.4
           (1.30% / 0.23% / 0.29%, limit 2%), top-1 equal each time
  stream   --mem 6 GiB (2,554 of 10,240 expert slices resident): logits bit-identical to resident
  ppl      ctx 256, 4 chunks, 508 scored: llama.cpp 314600.97, Strata 314175.50 resident and
           streamed alike: 0.135% -- over the 0.1% target. llama.cpp against itself (ppl_self,
           batches of 64): 314470.68, 0.041% from its whole-chunk run; Strata is 0.094% from that one.
           2026-12-08, the delta-rule layers bit for bit llama.cpp's (ggml's dot order and silu):
           Strata 314988.34 resident: 0.123%, still over (running 353833.71 / 324125.83 /
           307782.09 against 354012.63 / 323583.49 / 307567.85). With the f16 attention's softmax
           also taking ggml_v_expf's exponentials in 16-grouped sums (tried, reverted: it moved
           SmolLM2's GPL-3 perplexity from 0.009% to 0.43% off llama.cpp's): 314548.35 resident and
           streamed alike (--mem 6G: 2,574/10,240 expert slices resident), 0.0167%. What else
           differs is summation order: the quantized matmuls (1 ulp in most outputs on identical
           inputs, amplified by the next layer's activation quantization) and the attention's q.k
           and p.V sums (llama.cpp: llamafile's tinyBLAS).
           Values fill (--fill values, normal weights) at full size does not fit the disk beside
           the others' files; at the full head layout in 4 layers (--case qwen3.5-layout --fill
           values, Q8_0, Qwen3.5's vocabulary; with the softmax change above): llama.cpp 233642.17,
           Strata 234028.47 resident and streamed: 0.165%, OVER the target, and llama.cpp is batch-independent there (batches of
           64: 0.0000%). Per-layer dumps (llama.cpp's eval callback) put the first difference in the
           first Q8_0 matmul on bit-identical inputs (1 ulp in 87% of outputs), which each
           following activation quantization amplifies (1.3% of the hidden state by layer 3); the
           delta-rule ops fed llama.cpp's inputs give its outputs bit for bit.
  bench    6 GiB cgroup, -p 16 -n 8: Strata 0.758 tok/s generating (prompt 3.95), llama.cpp mmap
           0.0412 (prompt 0.336; 12.6 GB read from the disk per token): 18.4x. The forged router
           sends nearly every token to the same experts (99.6% expert-cache hits while generating),
           so also under a uniform routing override (the cache's worst case, no llama.cpp
           counterpart): 1.168 tok/s, 23% hits, 473 MB read per token. Bound: `strata plan`'s
           1.749 tok/s (RAM bandwidth, 3.30 GB/s measured under this load; 1.89 tok/s for the
           1.74 GB touched per token): 43% (forged routing, during a build storm) and 67% (uniform).
gpt-oss-20b, MXFP4_MOE, SmolLM2's vocabulary (the o200k vocabulary is not in the sdist's models/),
11.17 GB, random blocks unless said, cgroup 16/63 of the file (2.64 GiB; the issue's gpt-oss-120b under
16 GB does not fit this disk):
  tokens   equal (871 ids)
  logits   (random blocks, before 2026-12-08's fixes) NOT within 2%: after 6 / 49 / 102 tokens
           19.8% / 52.7% / 35.1% of the range; ppl ctx 256 x 4: llama.cpp 92969.79, Strata 104999.80.
           Cause (2026-12-08, issue 16 helper oss16): no attention bug -- Strata's attention with
           sinks and GQA matched a float64 reference of its own inputs as closely as llama.cpp's did
           at every head count -- but last-bit differences from llama.cpp's own summation orders in
           the Q8_0 matmuls (q/k/v/o, output), the F32 router, MXFP4 experts of several tokens, rope
           (GCC's FMA contractions) and the f16 batch attention (tinyBLAS scores and P.V, ggml_v_expf
           softmax). At 2880 wide these flip the f16 rounding of cached keys / values and the 8-bit
           rounding of the next matmul's activations, so a last bit becomes ~1% of a layer's output
           and grows through 24 layers; which head counts happened to be exact was luck. Branch
           oss16 sums each of these as llama.cpp's plain CPU path does on this machine (AVX-512).
           MAIN TAKES ONLY THE F32 ROUTER AND MXFP4-OF-SEVERAL-TOKENS ORDERS. The rope contraction
           (19624d3, cce58a6) moved SmolLM2's GPL-3 perplexity from 19.2780 to 19.3230 (llama.cpp
           19.2798: 0.009% -> 0.23%) and failed the Gemma 3 logits test, so main reverts it (which
           rope variants llama.cpp's build contracts is the open question). Also left out:
           the Q8_0 order (a613997: Q8_0 prompts lose the packed VNNI tile, SmolLM2-shape Q8_0 pp512
           396 -> 241 tok/s) and the f16 batch attention (f29e1f7: SmolLM2 pp at 7,900 tokens 123 ->
           58 tok/s, 173 with attn19's kernels) cost too much speed as written; the numbers below
           were taken with both, on branch oss16. Next: the same orders in fast kernels.
  After the fixes (branch oss16, all five), --fill values (normal weights quantized; 11.17 GB, 31 min to forge at load 10+),
  2026-12-08 02:15-02:45, load 10-14:
  logits   after 6 / 49 / 102 tokens: max |diff| 0 / 0 / 0 over ranges 9.99 / 9.32 / 9.92 (top-1
           equal; 49 and 102 decisive): Strata's logits are llama.cpp's bit for bit
  ppl      ctx 256, 2 chunks (254 scored): llama.cpp 79740.0867 (681 s), Strata 79740.0870
           resident and streamed (--mem 2.84 GB, 136 of 768 expert slices resident; 88 s): equal
           to the printed digits, running [86507.6368, 79740.0870] against llama.cpp's
           [86507.6365, 79740.0867] (the binary before the last rope fix: 79707.95, 0.040%)
  Random blocks were not rerun (disk and time): they remain chaotic (llama.cpp's batch of 6 against
  its one token at a time differs by 10.4% of the range) but every op now has llama.cpp's order.
  stream   (random blocks) --mem 2.64 GiB (132 of 768 expert slices resident): logits bit-identical
           to resident
  bench    2.64 GiB cgroup, -p 16 -n 8: Strata 0.679 tok/s generating (prompt 1.91; 29% hits, 908 MB
           read per token), llama.cpp mmap 0.0808 (prompt 0.274; 7.5 GB read per token): 8.4x; 43% of
           the bound (RAM bandwidth: 1.57 tok/s for 2.1 GB touched per token at 3.30 GB/s; the SSD's,
           2.78 GB/s / 908 MB = 3.1 tok/s, binds less), 44% of the plan's 1.543. Uniform routing
           override: 0.712 tok/s, 12.5% hits, 1.11 GB per token, 45% of the bound.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, HERE)

TEXT = "/usr/share/common-licenses/GPL-3"
TOLERANCE = 0.02  # x the logit range (tests/model/forged_test.cpp)
DECISIVE = 2 * TOLERANCE
PPL_LIMIT = 1e-3
MIN_FREE = 5 << 30  # never leave the disk with less

# name: (arch, preset, type, vocabulary, memory limit ("": FRACTION of the file, "min": the plan's
# minimum), GB the file takes)
CASES = {
    "qwen3.5-35b-a3b": ("qwen35moe", "qwen3.5-35b-a3b", "Q4_K_M", "qwen35", "6G", 21),
    "gpt-oss-20b": ("gpt-oss", "gpt-oss-20b", "MXFP4_MOE", "", "", 12),
    # Seconds-long checks of this script itself (tiny shapes, the budget tiny too).
    "qwen35moe-tiny": ("qwen35moe", "tiny", "Q8_0", "qwen35", "min", 1),
    # Qwen3.5-35B-A3B's head layout in 4 layers, 8 experts (forge preset qwen3.5-layout): with
    # --fill values, the normal-weight model the full shape is too large to forge on this disk.
    "qwen3.5-layout": ("qwen35moe", "qwen3.5-layout", "Q8_0", "qwen35", "min", 1),
    "gpt-oss-tiny": ("gpt-oss", "tiny", "MXFP4_MOE", "", "min", 1),
}
FRACTION = 16 / 63  # gpt-oss-120b (~63 GB) under 16 GB, as the issue's benchmark


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def strata(args, *cmd, check=True, timeout=3600):
    t0 = time.perf_counter()
    p = subprocess.run([args.strata, *map(str, cmd)], capture_output=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"strata {' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stderr.decode()[-3000:]}")
    return p, time.perf_counter() - t0


def vocab_file(name, args):
    """The sdist's ggml-vocab-NAME.gguf, extracted into DIR (or --vocab-from)."""
    if not name:
        return ""
    if args.vocab_from:
        return args.vocab_from
    out = os.path.join(args.dir, f"ggml-vocab-{name}.gguf")
    if os.path.exists(out):
        return out
    import tarfile
    member = f"llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-{name}.gguf"
    try:
        with tarfile.open(args.sdist) as tar:
            with tar.extractfile(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return out
    except (OSError, KeyError) as e:
        log(f"no {member} in {args.sdist} ({e}): forging with strata's default vocabulary")
        return ""


def forge(args, case, path):
    arch, preset, type_, vocab, _, gb = CASES[case]
    if os.path.exists(path):
        log(f"{path} exists: reused")
        return
    free = shutil.disk_usage(args.dir).free
    if free - (gb << 30) < MIN_FREE:
        raise RuntimeError(f"{args.dir}: {free / 2**30:.1f} GiB free, a {gb} GB model would leave less than 5 GiB")
    cmd = ["forge", "--arch", arch, "--preset", preset, "--type", type_, "--seed", "1", "--fill", args.fill, "--out", path]
    tok = vocab_file(vocab, args)
    if tok:
        cmd += ["--tokenizer-from", tok]
    log(f"forging {case} ({type_}) into {path} ...")
    _, s = strata(args, *cmd)
    log(f"forged {os.path.getsize(path) / 1e9:.2f} GB in {s:.0f} s")


def llama(path, n_ctx, logits_all=True, n_batch=0):
    import llama_plain
    n_batch = n_batch or n_ctx
    return llama_plain.plain_cpu_llama(path, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_threads=2,
                                       n_threads_batch=2, flash_attn=False, verbose=False, logits_all=logits_all)


def read_text():
    with open(TEXT, encoding="utf-8") as f:
        text = f.read()
    return text[:-1] if text.endswith("\n") else text  # as llama.cpp's -f reads a file


def prefixes(text, n_words):
    """Prefixes of the text ending with its n-th word, before the space after it (so a byte-level
    BPE gives each one the longest's first tokens)."""
    ends = [m.end() for m in re.finditer(r"\S+", text)]
    return [text[:ends[n - 1]] for n in n_words]


def step_tokens(args, path, out):
    text = read_text()[:4000]
    p, _ = strata(args, "tokenize", path, "-p", text)
    ours = [int(x) for x in p.stdout.split()]
    llm = llama(path, 64, logits_all=False)
    ref = llm.tokenize(text.encode(), add_bos=True, special=True)
    ok = ours == ref
    out["tokens"] = {"n": len(ref), "equal": ok}
    log(f"tokens: {len(ref)} ids of the GPL-3's first 4000 chars, equal to llama.cpp's: {ok}")
    return ok


def step_logits(args, path, out):
    text = read_text()
    texts = prefixes(text, args.prefix_words)
    llm = llama(path, 512)
    ids = [llm.tokenize(t.encode(), add_bos=True, special=True) for t in texts]
    longest = ids[-1]
    t0 = time.perf_counter()
    llm.eval(longest)
    llama_s = time.perf_counter() - t0
    n_vocab = llm.n_vocab()
    rows = []
    ok = True
    for t, tok in zip(texts, ids):
        if longest[:len(tok)] == tok:
            ref = np.array(llm.scores[len(tok) - 1][:n_vocab], dtype=np.float32)
        else:  # not a prefix of the longest's tokens: evaluate it on its own
            llm2 = llama(path, 512)
            llm2.eval(tok)
            ref = np.array(llm2.scores[len(tok) - 1][:n_vocab], dtype=np.float32)
            del llm2
        f = os.path.join(args.dir, "logits.bin")
        _, s = strata(args, "logits", path, "-p", t, "-c", 512, "-t", 2, "--mem", "1T", "--out", f)
        ours = np.fromfile(f, dtype=np.float32)
        os.remove(f)
        rng = float(ref.max() - ref.min())
        diff = float(np.abs(ours - ref).max())
        order = np.argsort(-ref, kind="stable")
        margin = float(ref[order[0]] - ref[order[1]])
        top_ok = int(np.argmax(ours)) == int(order[0])
        decisive = margin > DECISIVE * rng
        row_ok = bool(np.all(np.isfinite(ours))) and diff < TOLERANCE * rng and (top_ok or not decisive)
        ok &= row_ok
        rows.append({"tokens": len(tok), "range": rng, "max_abs_diff": diff, "pct_of_range": 100 * diff / rng,
                     "top1_equal": top_ok, "decisive": decisive, "margin": margin, "strata_s": s, "ok": row_ok})
        log(f"logits after {len(tok)} tokens: range {rng:.3f}, max |diff| {diff:.5f} ({100 * diff / rng:.3f}% of "
            f"range, limit {100 * TOLERANCE:.0f}%), top-1 {'equal' if top_ok else 'differs'} (margin {margin:.4f}"
            f"{', decisive' if decisive else ''}); strata {s:.1f} s")
    out["logits"] = {"rows": rows, "llama_eval_s": llama_s, "ok": ok}
    return ok


def limit_bytes(case, path, strata_bin):
    limit = CASES[case][4]
    if limit == "min":  # the plan's smallest budget
        plan = json.loads(subprocess.run([strata_bin, "plan", path, "--mem", "1T", "-c", "512", "--json"],
                                         capture_output=True, text=True, check=True).stdout)
        return int(plan["memory"]["minimum_bytes"])
    if limit:
        return int(subprocess.run(["numfmt", "--from=iec", limit], capture_output=True, text=True).stdout)
    return int(os.path.getsize(path) * FRACTION)


def assert_streams(stderr):
    m = re.search(rb"(\d+)/(\d+) expert slices resident", stderr)
    return bool(m and int(m.group(1)) < int(m.group(2))), (m.group(0).decode() if m else "no streaming line")


def step_stream(args, case, path, out):
    t = prefixes(read_text(), args.prefix_words)[-1]
    got = {}
    for mode, mem in (("resident", "1T"), ("streamed", str(limit_bytes(case, path, args.strata)))):
        f = os.path.join(args.dir, f"logits-{mode}.bin")
        p, s = strata(args, "logits", path, "-p", t, "-c", 512, "-t", 2, "--mem", mem, "--out", f)
        got[mode] = open(f, "rb").read()
        os.remove(f)
        if mode == "streamed":
            streams, line = assert_streams(p.stderr)
            log(f"streamed under --mem {mem}: {line}")
        log(f"{mode} logits: {s:.1f} s")
    equal = got["resident"] == got["streamed"] and len(got["resident"]) > 0
    out["stream"] = {"equal": equal, "streams": streams, "line": line}
    log(f"streamed logits == resident, bit for bit: {equal}")
    return equal and streams


def step_ppl(args, case, path, out):
    import gen_fidelity_fixtures as fidelity
    text = read_text()
    llm = llama(path, args.ctx)
    t0 = time.perf_counter()
    ref = fidelity.perplexity_fixture(llm, text.encode(), args.ctx, args.chunks)
    llama_s = time.perf_counter() - t0
    del llm
    log(f"llama.cpp perplexity {ref['ppl']:.4f} ({ref['chunks']} chunks of {args.ctx}, {ref['n_scored']} scored; "
        f"{llama_s:.0f} s)")
    res = {"llama": ref["ppl"], "llama_running": ref["running_ppl"], "llama_s": llama_s, "ctx": args.ctx, "chunks": ref["chunks"], "n_scored": ref["n_scored"]}
    ok = True
    for mode, mem in (("resident", "1T"), ("streamed", str(limit_bytes(case, path, args.strata)))):
        p, s = strata(args, "perplexity", path, "-f", TEXT, "-c", args.ctx, "--chunks", args.chunks, "-t", 2, "--mem",
                      mem)
        m = re.search(r"Final estimate: PPL = ([0-9.]+)", p.stdout.decode())
        ppl = float(m.group(1)) if m else float("nan")
        rel = abs(ppl - ref["ppl"]) / ref["ppl"]
        running = [float(x) for x in re.findall(r"\[\d+\]([0-9.]+),", p.stdout.decode())]
        res[mode] = {"ppl": ppl, "rel": rel, "running": running, "s": s}
        if mode == "streamed":
            res[mode]["streams"], res[mode]["line"] = assert_streams(p.stderr)
        ok &= rel <= PPL_LIMIT
        log(f"strata {mode} perplexity {ppl:.4f}: {100 * rel:.4f}% from llama.cpp (limit 0.1%); running {running} "
            f"against llama.cpp's {ref['running_ppl']}; {s:.0f} s")
    res["ok"] = ok
    out["ppl"] = res
    return ok


def step_ppl_self(args, path, out):
    """llama.cpp against itself: the same perplexity in batches of --self-batch tokens instead of
    whole chunks (other kernels, other summation orders): the reference's own spread."""
    import gen_fidelity_fixtures as fidelity
    t0 = time.perf_counter()
    ref = fidelity.perplexity_fixture(llama(path, args.ctx, n_batch=args.self_batch), read_text().encode(), args.ctx,
                                      args.chunks)
    s = time.perf_counter() - t0
    whole = (out.get("ppl") or {}).get("llama")
    rel = abs(ref["ppl"] - whole) / whole if whole else float("nan")
    out["ppl_self"] = {"batch": args.self_batch, "llama": ref["ppl"], "running": ref["running_ppl"], "rel_to_whole": rel,
                       "s": s}
    log(f"llama.cpp perplexity in batches of {args.self_batch}: {ref['ppl']:.4f} (running {ref['running_ppl']}), "
        f"{100 * rel:.4f}% from its whole-chunk batches; {s:.0f} s")
    return True


def step_bench(args, case, path, out):
    import tier_bench
    limit = str(limit_bytes(case, path, args.strata))
    bw = tier_bench.ssd_gbps(args.strata, path, "1M")
    ctx = str(args.n_prompt + args.n_gen + 16)
    cmd = [args.strata, "bench", path, "-p", str(args.n_prompt), "-n", str(args.n_gen), "-t", "2", "-c", ctx, "--json",
           "--fresh", "--stats"]
    sout, serr, speak, sooms, src = tier_bench.in_cgroup(limit, cmd, 3600)
    s = tier_bench.last_json(sout)
    log(f"strata in {int(limit) / 2**30:.2f} GiB: {s}\n{serr.strip()[-1500:]}")
    plan = json.loads(subprocess.run([args.strata, "plan", path, "--mem", limit, "-c", ctx, "--json"],
                                     capture_output=True, text=True).stdout or "{}")
    lout, lerr, lpeak, looms, lrc = tier_bench.in_cgroup(
        limit, [sys.executable, os.path.join(HERE, "llamacpp_eval.py"), path, str(args.n_prompt), str(args.n_gen), "2",
                "--json", "--no-repack"], args.llamacpp_timeout)
    l = tier_bench.last_json(lout)
    log(f"llama.cpp mmap in {int(limit) / 2**30:.2f} GiB: exit {lrc}, {l}\n{lerr.strip()[-800:]}")
    res = {"limit": int(limit), "ssd_gbps": bw, "strata": s, "strata_peak": speak, "strata_ooms": sooms,
           "llamacpp": l, "llamacpp_peak": lpeak, "llamacpp_ooms": looms, "llamacpp_rc": lrc,
           "plan_tok_s": (plan.get("per_token") or {}).get("tokens_per_second"),
           "plan_limit": (plan.get("per_token") or {}).get("limit"),
           "plan_ssd_bytes_per_token": (plan.get("per_token") or {}).get("ssd_bytes")}
    if s:
        must = s.get("ssd_must_read_per_token", 0.0)
        ssd_bound = bw * 1e9 / must if must > 0 else float("inf")
        # Streaming sessions measure no RAM bandwidth: they report the plan's (older builds: 0).
        ram_gbps = s["read_bandwidth_gb_s"] or (plan.get("inputs") or {}).get("ram_gbps") or 0.0
        ram_bound = ram_gbps * 1e9 / s["weight_bytes_per_token"] if ram_gbps > 0 else float("inf")
        res["ram_gbps"] = ram_gbps
        res["bound"] = min(ssd_bound, ram_bound)
        res["bound_by"] = "SSD" if ssd_bound < ram_bound else "RAM bandwidth"
        res["pct_of_bound"] = 100 * s["tg_tok_s"] / res["bound"]
        res["predicted_tok_s"] = s.get("predicted_tok_s")
        if res.get("plan_tok_s"):
            res["pct_of_plan"] = 100 * s["tg_tok_s"] / res["plan_tok_s"]
    if s and l and l["tg_tok_s"] > 0:
        res["ratio"] = s["tg_tok_s"] / l["tg_tok_s"]
    out["bench"] = res
    log(f"bench: {json.dumps(res)}")
    return True


def step_uniform(args, case, path, out):
    """`strata bench` in the same cgroup with its MoE layers routed uniformly at random (a routing
    override, src/tier/trace/routing_override.h): a forged router routes far from uniformly, often
    to the same few experts, which flatters any cache; uniform routing is the expert cache's worst
    case. llama.cpp has no such override: this row has no llama.cpp counterpart."""
    import random
    import routing_synth
    import tier_bench
    limit = str(limit_bytes(case, path, args.strata))
    ctx = str(args.n_prompt + args.n_gen + 16)
    plan = json.loads(subprocess.run([args.strata, "plan", path, "--mem", limit, "-c", ctx, "--json"],
                                     capture_output=True, text=True, check=True).stdout)
    m = plan["model"]
    n_layer, n_expert, k = m["n_layer"], m["n_expert"], m["n_expert_used"]
    rng = random.Random(1)
    tokens = [[rng.sample(range(n_expert), k) for _ in range(n_layer)] for _ in range(args.n_prompt + args.n_gen + 8)]
    trace = os.path.join(args.dir, "uniform.trace")
    routing_synth.write_trace(trace, case, n_layer, n_expert, k, plan["streaming"]["expert_slot_bytes"], tokens)
    cmd = [args.strata, "bench", path, "-p", str(args.n_prompt), "-n", str(args.n_gen), "-t", "2", "-c", ctx, "--json",
           "--fresh", "--stats", "--routing-override", trace, "--expert-guess", "coactivation"]
    sout, serr, speak, sooms, src = tier_bench.in_cgroup(limit, cmd, 3600)
    os.remove(trace)
    s = tier_bench.last_json(sout)
    log(f"strata, uniform routing, in {int(limit) / 2**30:.2f} GiB: {s}\n{serr.strip()[-1500:]}")
    res = {"limit": int(limit), "strata": s, "peak": speak, "ooms": sooms, "rc": src}
    if s:
        ram_gbps = (plan.get("inputs") or {}).get("ram_gbps") or 0.0
        ssd_gbps = (plan.get("inputs") or {}).get("ssd_gbps") or 0.0
        must = s.get("ssd_must_read_per_token", 0.0)
        ssd_bound = ssd_gbps * 1e9 / must if must > 0 else float("inf")
        ram_bound = ram_gbps * 1e9 / s["weight_bytes_per_token"] if ram_gbps > 0 else float("inf")
        res.update({"bound": min(ssd_bound, ram_bound), "bound_by": "SSD" if ssd_bound < ram_bound else "RAM bandwidth",
                    "plan_tok_s": plan["per_token"]["tokens_per_second"]})
        res["pct_of_bound"] = 100 * s["tg_tok_s"] / res["bound"]
        res["pct_of_plan"] = 100 * s["tg_tok_s"] / res["plan_tok_s"]
    out["uniform"] = res
    log(f"uniform: {json.dumps(res)}")
    return s is not None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strata", default="build/strata")
    ap.add_argument("--case", default="all", help="qwen3.5-35b-a3b, gpt-oss-20b or all")
    ap.add_argument("--steps", default="tokens,logits,stream,ppl,bench", help="also: ppl_self (after ppl), uniform")
    ap.add_argument("--dir", default="/tmp/arch16", help="where the forged model goes (one at a time)")
    ap.add_argument("--keep", action="store_true", help="keep the forged model afterwards")
    ap.add_argument("--fill", default="auto", choices=["auto", "values", "blocks"],
                    help="forge --fill: auto = random blocks at these sizes; values = normal weights quantized "
                         "(slow: minutes per GB), the kind the tiny fixtures use")
    ap.add_argument("--sdist", default="/work/.notes/llama_cpp_python-0.3.36.tar.gz")
    ap.add_argument("--vocab-from", default="", help="a vocabulary GGUF instead of the sdist's")
    ap.add_argument("--prefix-words", type=int, nargs="+", default=[3, 20, 60])
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--chunks", type=int, default=2)
    ap.add_argument("--self-batch", type=int, default=32, help="ppl_self: llama.cpp's batch")
    ap.add_argument("--n-prompt", type=int, default=16)
    ap.add_argument("--n-gen", type=int, default=8)
    ap.add_argument("--llamacpp-timeout", type=int, default=1800)
    args = ap.parse_args()
    args.strata = os.path.abspath(args.strata)
    os.makedirs(args.dir, exist_ok=True)
    cases = ["qwen3.5-35b-a3b", "gpt-oss-20b"] if args.case == "all" else args.case.split(",")
    steps = args.steps.split(",")
    failed = 0
    for case in cases:
        fill = "" if args.fill == "auto" else f"-{args.fill}"
        path = os.path.join(args.dir, f"forged-{case}-{CASES[case][2]}{fill}.gguf")
        out = {"case": case, "file": path, "when": time.strftime("%Y-%m-%d %H:%M:%S"),
               "load": os.getloadavg()}
        try:
            forge(args, case, path)
            out["bytes"] = os.path.getsize(path)
            for step in steps:
                ok = {"tokens": lambda: step_tokens(args, path, out),
                      "logits": lambda: step_logits(args, path, out),
                      "stream": lambda: step_stream(args, case, path, out),
                      "ppl": lambda: step_ppl(args, case, path, out),
                      "ppl_self": lambda: step_ppl_self(args, path, out),
                      "bench": lambda: step_bench(args, case, path, out),
                      "uniform": lambda: step_uniform(args, case, path, out)}[step]()
                if not ok:
                    failed += 1
                    log(f"{case}: {step} FAILED")
                with open(os.path.join(args.dir, "results.jsonl"), "a") as f:
                    f.write(json.dumps({"case": case, "step": step, "ok": ok, **{k: out.get(k) for k in (step,)}}) + "\n")
        finally:
            if not args.keep and os.path.exists(path):
                os.remove(path)
                log(f"removed {path}")
        print(json.dumps(out, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
