#!/usr/bin/env python3
"""Train Strata's test MoE model (qwen3moe layout) and a dense model of the same active size.

Not part of the product: it makes tests/models/strata-moe-pystd.gguf (see tests/models/README.md).

Two steps:

  prepare (here, CPU; needs llama_cpp and numpy):
      python3 scripts/train_moe.py prepare --out DIR
    Collects the corpus, tokenizes it with the SmolLM2 vocabulary (read from
    ~/.cache/strata/models/SmolLM2-135M-Instruct.Q4_1.gguf through llama.cpp, vocab only) and
    writes DIR/train.npy, DIR/heldout.npy (uint16 token ids, documents joined by <|endoftext|>),
    DIR/tokenizer.json (the GGUF tokenizer metadata, to copy into the exported model) and
    DIR/manifest.json (every file used, its split, its licence).

  train (on a GPU; needs torch, numpy and PyPI gguf):
      python3 scripts/train_moe.py train --data DIR --out DIR [--steps N] [--seconds S]
    Trains the MoE model and the dense model with the same recipe (same data order, steps,
    schedule), reports each one's held-out perplexity, and exports the MoE model (and, with
    --export-dense, the dense one) to GGUF with Q8_0 matrices.

Corpus (all redistributable; recorded in manifest.json):
  - Python 3.11's standard library as Debian ships it (/usr/lib/python3.11/**/*.py, package
    libpython3.11-minimal / libpython3.11-stdlib): PSF License v2 (see
    /usr/share/doc/libpython3.11-minimal/copyright). This includes pydoc_data/topics.py, the
    prose of Python's language reference.
  - The licence texts in /usr/share/common-licenses (each licence's text may be copied verbatim).
  Held out: every HELDOUT_EVERY-th stdlib file in path order, and GPL-3 (the text the fidelity
  fixtures' perplexity runs on).

Model (qwen3moe, as llama.cpp's LLM_ARCH_QWEN3MOE reads it): token embedding tied to the output;
per layer RMSNorm -> attention with per-head RMSNorm of q and k and NeoX rope -> RMSNorm -> a
softmax router over N_EXPERT SwiGLU experts, top-K, weights renormalised over the K. Training
adds the Switch-Transformer load-balancing loss (N_EXPERT * sum_e f_e * P_e) and a small router
z-loss, as real MoE models are trained.
"""
import argparse
import glob
import json
import math
import os
import sys
import time

import numpy as np

CACHE = os.path.expanduser(os.environ.get("STRATA_CACHE", "~/.cache/strata"))
VOCAB_GGUF = os.path.join(CACHE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
STDLIB = "/usr/lib/python3.11"
LICENSES = "/usr/share/common-licenses"
HELDOUT_EVERY = 25
HELDOUT_LICENSES = {"GPL-3"}
EOT = 0  # <|endoftext|> in the SmolLM2 vocabulary

# The architecture. Total parameters ~40M (under 50 MB at Q8_0); active per token ~17M.
ARCH = dict(
    n_layer=8,
    n_embd=256,
    n_head=4,
    n_head_kv=2,
    head_dim=64,
    n_expert=32,
    n_expert_used=4,
    n_ff_expert=128,
    rope_base=10000.0,
    rms_eps=1e-6,
    n_ctx=512,
)
N_FF_DENSE = ARCH["n_expert_used"] * ARCH["n_ff_expert"]  # the dense model's FFN: the same active size


# --------------------------------------------------------------------------------------------
# prepare


def corpus_files():
    """(path, kind, licence, split) for every document, in a fixed order."""
    files = []
    py = sorted(p for p in glob.glob(STDLIB + "/**/*.py", recursive=True)
                if "site-packages" not in p and "dist-packages" not in p and os.path.isfile(p))
    for i, p in enumerate(py):
        split = "heldout" if i % HELDOUT_EVERY == HELDOUT_EVERY - 1 else "train"
        files.append((p, "code", "PSF-2.0", split))
    for p in sorted(glob.glob(LICENSES + "/*")):
        if os.path.islink(p) or not os.path.isfile(p):
            continue  # GPL -> GPL-3 etc.: each text once
        name = os.path.basename(p)
        files.append((p, "licence", "verbatim copying permitted (" + name + ")",
                      "heldout" if name in HELDOUT_LICENSES else "train"))
    return files


def prepare(args):
    import llama_cpp

    os.makedirs(args.out, exist_ok=True)
    llm = llama_cpp.Llama(model_path=args.vocab, vocab_only=True, verbose=False)
    splits = {"train": [], "heldout": []}
    manifest = []
    for path, kind, licence, split in corpus_files():
        with open(path, "rb") as f:
            text = f.read()
        text = text.decode("utf-8", errors="replace").encode("utf-8")
        ids = llm.tokenize(text, add_bos=False, special=False)
        splits[split].extend(ids)
        splits[split].append(EOT)
        manifest.append({"path": path, "kind": kind, "licence": licence, "split": split,
                         "bytes": len(text), "tokens": len(ids)})
    for split, ids in splits.items():
        arr = np.array(ids, dtype=np.uint16)
        assert arr.max() < 49152
        np.save(os.path.join(args.out, split + ".npy"), arr)
        print(f"{split}: {len(arr)} tokens")
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump({"vocab_gguf": os.path.basename(args.vocab), "files": manifest}, f, indent=1)
    # The tokenizer metadata to copy into the trained model, so that it tokenizes as SmolLM2.
    import gguf
    reader = gguf.GGUFReader(args.vocab)
    tok = {}
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        t = field.types
        if t[0] == gguf.GGUFValueType.ARRAY:
            sub = t[-1]
            vals = [field.parts[i] for i in field.data]
            if sub == gguf.GGUFValueType.STRING:
                tok[name] = ["string", [bytes(v).decode("utf-8") for v in vals]]
            else:
                tok[name] = [sub.name.lower(), [v.tolist()[0] for v in vals]]
        elif t[0] == gguf.GGUFValueType.STRING:
            tok[name] = ["string1", bytes(field.parts[field.data[0]]).decode("utf-8")]
        else:
            tok[name] = [t[0].name.lower() + "1", field.parts[field.data[0]].tolist()[0]]
    with open(os.path.join(args.out, "tokenizer.json"), "w") as f:
        json.dump(tok, f)
    print("tokenizer keys:", sorted(tok))


# --------------------------------------------------------------------------------------------
# model


def build_model_classes():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class RMSNorm(nn.Module):
        def __init__(self, n, eps):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(n))
            self.eps = eps

        def forward(self, x):
            xf = x.float()
            return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight.to(x.dtype)

    def rope_tables(n_ctx, dim, base, device):
        inv = 1.0 / (base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
        t = torch.arange(n_ctx, device=device, dtype=torch.float32)
        f = torch.outer(t, inv)  # [T, dim/2]
        return f.cos(), f.sin()

    def rope_neox(x, cos, sin):  # x [B, H, T, D]; NeoX: the halves rotate together
        d = x.shape[-1] // 2
        x1, x2 = x[..., :d].float(), x[..., d:].float()
        c, s = cos[: x.shape[2]], sin[: x.shape[2]]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)

    class Attention(nn.Module):
        def __init__(self, a):
            super().__init__()
            self.a = a
            hd = a["head_dim"]
            self.wq = nn.Linear(a["n_embd"], a["n_head"] * hd, bias=False)
            self.wk = nn.Linear(a["n_embd"], a["n_head_kv"] * hd, bias=False)
            self.wv = nn.Linear(a["n_embd"], a["n_head_kv"] * hd, bias=False)
            self.wo = nn.Linear(a["n_head"] * hd, a["n_embd"], bias=False)
            self.q_norm = RMSNorm(hd, a["rms_eps"])
            self.k_norm = RMSNorm(hd, a["rms_eps"])

        def forward(self, x, cos, sin):
            B, T, _ = x.shape
            a = self.a
            hd = a["head_dim"]
            q = self.q_norm(self.wq(x).view(B, T, a["n_head"], hd)).transpose(1, 2)
            k = self.k_norm(self.wk(x).view(B, T, a["n_head_kv"], hd)).transpose(1, 2)
            v = self.wv(x).view(B, T, a["n_head_kv"], hd).transpose(1, 2)
            q, k = rope_neox(q, cos, sin), rope_neox(k, cos, sin)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            return self.wo(y.transpose(1, 2).reshape(B, T, -1))

    class DenseFfn(nn.Module):
        def __init__(self, a, n_ff):
            super().__init__()
            self.gate = nn.Linear(a["n_embd"], n_ff, bias=False)
            self.up = nn.Linear(a["n_embd"], n_ff, bias=False)
            self.down = nn.Linear(n_ff, a["n_embd"], bias=False)

        def forward(self, x):
            return self.down(F.silu(self.gate(x)) * self.up(x)), None

    class MoeFfn(nn.Module):
        """Softmax router over all experts, top-k, weights renormalised (qwen3moe, norm_topk_prob)."""

        def __init__(self, a):
            super().__init__()
            E, ff, d = a["n_expert"], a["n_ff_expert"], a["n_embd"]
            self.E, self.k = E, a["n_expert_used"]
            self.router = nn.Linear(d, E, bias=False)
            self.gate = nn.Parameter(torch.randn(E, ff, d) / math.sqrt(d))
            self.up = nn.Parameter(torch.randn(E, ff, d) / math.sqrt(d))
            self.down = nn.Parameter(torch.randn(E, d, ff) / math.sqrt(ff))

        def forward(self, x):
            B, T, d = x.shape
            xf = x.reshape(-1, d)
            N = xf.shape[0]
            logits = self.router(xf).float()
            probs = logits.softmax(-1)
            top_w, top_i = probs.topk(self.k, dim=-1)
            top_w = top_w / top_w.sum(-1, keepdim=True)
            # Load balance (Switch Transformer): E * sum_e (share of routed slots) * (mean probability).
            counts = torch.bincount(top_i.reshape(-1), minlength=self.E)
            share = counts.float() / (N * self.k)
            aux = self.E * (share * probs.mean(0)).sum() + 1e-3 * torch.logsumexp(logits, -1).pow(2).mean()
            # Gather the token slots expert by expert.
            flat = top_i.reshape(-1)
            order = torch.argsort(flat, stable=True)
            token_of = order // self.k
            xs = xf[token_of]
            out_parts = []
            for e, (start, n) in enumerate(zip(torch.cumsum(counts, 0).tolist(), counts.tolist())):
                if n == 0:
                    continue
                xe = xs[start - n : start]
                h = F.silu(xe @ self.gate[e].to(xe.dtype).t()) * (xe @ self.up[e].to(xe.dtype).t())
                out_parts.append(h @ self.down[e].to(xe.dtype).t())
            ys = torch.cat(out_parts, 0) * top_w.reshape(-1)[order].unsqueeze(1).to(xs.dtype)
            out = torch.zeros_like(xf).index_add_(0, token_of, ys)
            return out.view(B, T, d), (aux, counts)

    class Block(nn.Module):
        def __init__(self, a, moe):
            super().__init__()
            self.attn_norm = RMSNorm(a["n_embd"], a["rms_eps"])
            self.attn = Attention(a)
            self.ffn_norm = RMSNorm(a["n_embd"], a["rms_eps"])
            self.ffn = MoeFfn(a) if moe else DenseFfn(a, N_FF_DENSE)

        def forward(self, x, cos, sin):
            x = x + self.attn(self.attn_norm(x), cos, sin)
            y, aux = self.ffn(self.ffn_norm(x))
            return x + y, aux

    class Model(nn.Module):
        def __init__(self, a, moe, n_vocab):
            super().__init__()
            self.a, self.moe = a, moe
            self.embd = nn.Embedding(n_vocab, a["n_embd"])
            nn.init.normal_(self.embd.weight, std=0.02)
            self.blocks = nn.ModuleList(Block(a, moe) for _ in range(a["n_layer"]))
            self.norm = RMSNorm(a["n_embd"], a["rms_eps"])
            for blk in self.blocks:  # scaled residual projections (GPT-2)
                nn.init.normal_(blk.attn.wo.weight, std=0.02 / math.sqrt(2 * a["n_layer"]))
            self.rope = None

        def forward(self, tokens):
            T = tokens.shape[1]
            if self.rope is None or self.rope[0].shape[0] < T:
                self.rope = rope_tables(max(T, self.a["n_ctx"]), self.a["head_dim"], self.a["rope_base"], tokens.device)
            cos, sin = self.rope
            x = self.embd(tokens)
            aux_total, counts = 0.0, []
            for blk in self.blocks:
                x, aux = blk(x, cos, sin)
                if aux is not None:
                    aux_total = aux_total + aux[0]
                    counts.append(aux[1])
            h = self.norm(x)
            return h @ self.embd.weight.to(h.dtype).t(), aux_total, counts

    return Model


# --------------------------------------------------------------------------------------------
# train


def batches(data, n_ctx, batch, rng):
    """Random windows of n_ctx + 1 tokens (inputs and targets)."""
    starts = rng.integers(0, len(data) - n_ctx - 1, size=batch)
    return np.stack([data[s : s + n_ctx + 1] for s in starts]).astype(np.int64)


def evaluate(model, data, n_ctx, device, max_windows=400):
    """Mean next-token NLL over consecutive non-overlapping windows of held-out text."""
    import torch

    model.eval()
    n = min((len(data) - 1) // n_ctx, max_windows)
    total, count = 0.0, 0
    with torch.no_grad(), torch.autocast("cuda" if device.type == "cuda" else "cpu", dtype=torch.bfloat16):
        for i in range(0, n, 16):
            idx = range(i, min(n, i + 16))
            w = np.stack([data[j * n_ctx : j * n_ctx + n_ctx + 1] for j in idx]).astype(np.int64)
            w = torch.from_numpy(w).to(device)
            logits, _, _ = model(w[:, :-1])
            nll = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1),
                                                    reduction="sum")
            total += float(nll)
            count += w[:, 1:].numel()
    model.train()
    return total / max(count, 1)


def train_one(name, moe, args, train_data, held, n_vocab, device, log):
    import torch

    Model = build_model_classes()
    torch.manual_seed(args.seed)
    model = Model(ARCH, moe, n_vocab).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), fused=device.type == "cuda")
    rng = np.random.default_rng(args.seed)
    n_ctx = ARCH["n_ctx"]
    warmup = max(1, args.steps // 20)
    t0 = time.time()
    log(f"[{name}] params {n_params / 1e6:.2f}M, steps {args.steps}, batch {args.batch}x{n_ctx}")
    step = 0
    for step in range(args.steps):
        # Progress by steps or by the time limit, whichever is further: the schedule anneals fully
        # either way.
        progress = max(step / args.steps, (time.time() - t0) / args.seconds if args.seconds else 0.0)
        if progress >= 1.0:
            log(f"[{name}] stopped at step {step} by the time limit")
            break
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for g in opt.param_groups:
            g["lr"] = lr
        w = torch.from_numpy(batches(train_data, n_ctx, args.batch, rng)).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits, aux, counts = model(w[:, :-1])
            ce = torch.nn.functional.cross_entropy(logits.float().reshape(-1, n_vocab), w[:, 1:].reshape(-1))
            loss = ce + args.aux_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % args.log_every == 0 or step == args.steps - 1:
            msg = f"[{name}] step {step} ce {float(ce):.3f} lr {lr:.2e} {time.time() - t0:.0f}s"
            if counts:
                c = torch.stack(counts).float()
                msg += f" aux {float(aux) / len(counts):.3f} max/mean load {float((c.max(1).values / c.mean(1)).mean()):.2f}"
            log(msg)
    else:
        step = args.steps
    nll = evaluate(model, held, n_ctx, device, args.eval_windows)
    log(f"[{name}] held-out ppl {math.exp(nll):.3f} (nll {nll:.4f}) after {time.time() - t0:.0f}s")
    return model, {"params": n_params, "heldout_nll": nll, "heldout_ppl": math.exp(nll), "steps": step,
                   "seconds": time.time() - t0}


def export_gguf(model, moe, tokenizer, path, train_info):
    """Writes the model in llama.cpp's qwen3moe (or qwen3, dense) layout: matrices Q8_0, vectors F32."""
    import gguf
    import torch

    a = ARCH
    arch = "qwen3moe" if moe else "qwen3"
    w = gguf.GGUFWriter(path, arch)
    w.add_name("strata-moe-pystd" if moe else "strata-dense-pystd")
    w.add_string("general.license", "PSF-2.0")
    w.add_string("general.source.url", "scripts/train_moe.py (Strata)")
    w.add_block_count(a["n_layer"])
    w.add_context_length(a["n_ctx"])
    w.add_embedding_length(a["n_embd"])
    w.add_head_count(a["n_head"])
    w.add_head_count_kv(a["n_head_kv"])
    w.add_key_length(a["head_dim"])
    w.add_value_length(a["head_dim"])
    w.add_rope_freq_base(a["rope_base"])
    w.add_layer_norm_rms_eps(a["rms_eps"])
    if moe:
        w.add_feed_forward_length(N_FF_DENSE)
        w.add_expert_count(a["n_expert"])
        w.add_expert_used_count(a["n_expert_used"])
        w.add_expert_feed_forward_length(a["n_ff_expert"])
    else:
        w.add_feed_forward_length(N_FF_DENSE)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    for key, (kind, value) in tokenizer.items():
        if kind == "string1":
            w.add_string(key, value)
        elif kind == "string":
            w.add_array(key, value)
        elif kind.endswith("1"):
            k = kind[:-1]
            if k == "bool":
                w.add_bool(key, bool(value))
            elif k.startswith("int") or k.startswith("uint"):
                w.add_uint32(key, int(value))
            else:
                w.add_float32(key, float(value))
        else:
            w.add_array(key, value)

    def q8(name, t):
        arr = t.detach().float().cpu().numpy()
        data = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    def f32(name, t):
        w.add_tensor(name, t.detach().float().cpu().numpy().astype(np.float32))

    q8("token_embd.weight", model.embd.weight)
    f32("output_norm.weight", model.norm.weight)
    for i, blk in enumerate(model.blocks):
        p = f"blk.{i}."
        f32(p + "attn_norm.weight", blk.attn_norm.weight)
        q8(p + "attn_q.weight", blk.attn.wq.weight)
        q8(p + "attn_k.weight", blk.attn.wk.weight)
        q8(p + "attn_v.weight", blk.attn.wv.weight)
        q8(p + "attn_output.weight", blk.attn.wo.weight)
        f32(p + "attn_q_norm.weight", blk.attn.q_norm.weight)
        f32(p + "attn_k_norm.weight", blk.attn.k_norm.weight)
        f32(p + "ffn_norm.weight", blk.ffn_norm.weight)
        if moe:
            # router [n_expert, n_embd]; experts [n_expert, n_ff, n_embd] and [n_expert, n_embd, n_ff]
            f32(p + "ffn_gate_inp.weight", blk.ffn.router.weight)
            q8(p + "ffn_gate_exps.weight", blk.ffn.gate)
            q8(p + "ffn_up_exps.weight", blk.ffn.up)
            q8(p + "ffn_down_exps.weight", blk.ffn.down)
        else:
            q8(p + "ffn_gate.weight", blk.ffn.gate.weight)
            q8(p + "ffn_up.weight", blk.ffn.up.weight)
            q8(p + "ffn_down.weight", blk.ffn.down.weight)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def apply_arch_overrides(args):
    """--arch KEY=VALUE,...: a smaller model where no GPU is at hand (ARCH and N_FF_DENSE follow)."""
    global N_FF_DENSE
    for item in filter(None, (args.arch or "").split(",")):
        key, value = item.split("=")
        if key not in ARCH:
            sys.exit(f"--arch: unknown key {key} (one of {', '.join(ARCH)})")
        ARCH[key] = type(ARCH[key])(value)
    N_FF_DENSE = ARCH["n_expert_used"] * ARCH["n_ff_expert"]


def train(args):
    import torch

    apply_arch_overrides(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    os.makedirs(args.out, exist_ok=True)
    train_data = np.load(os.path.join(args.data, "train.npy"))
    held = np.load(os.path.join(args.data, "heldout.npy"))
    with open(os.path.join(args.data, "tokenizer.json")) as f:
        tokenizer = json.load(f)
    n_vocab = len(tokenizer["tokenizer.ggml.tokens"][1])
    log_file = open(os.path.join(args.out, "train_log.txt"), "a")

    def log(msg):
        print(msg, flush=True)
        log_file.write(msg + "\n")
        log_file.flush()

    log(f"device {device} torch {torch.__version__}; train {len(train_data)} tokens, held-out {len(held)} tokens; "
        f"arch {ARCH}")
    results = {"arch": ARCH, "n_ff_dense": N_FF_DENSE, "train_tokens": int(len(train_data)),
               "heldout_tokens": int(len(held)), "args": vars(args)}
    kinds = [("moe", True), ("dense", False)]
    if args.only:
        kinds = [k for k in kinds if k[0] == args.only]
    for name, moe in kinds:
        model, info = train_one(name, moe, args, train_data, held, n_vocab, device, log)
        if moe and info["steps"] < args.steps:
            # the dense model trains on exactly the MoE model's tokens, the same schedule
            args.steps, args.seconds = info["steps"], 0
        results[name] = info
        if moe or args.export_dense:
            path = os.path.join(args.out, ("strata-moe-pystd" if moe else "strata-dense-pystd") + ".gguf")
            export_gguf(model, moe, tokenizer, path, info)
            log(f"[{name}] wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    with open(os.path.join(args.out, "train_results.json"), "w") as f:
        json.dump(results, f, indent=1)
    log(json.dumps({k: results[k] for k in ("moe", "dense") if k in results}))


def check(args):
    """The exported file read back into the PyTorch model (dequantized) gives llama.cpp's logits:
    proves the GGUF layout (rope, QK-norm, router, expert order) is the one trained."""
    import gguf
    import torch

    reader = gguf.GGUFReader(args.model)
    arch = reader.fields["general.architecture"].contents()
    moe = arch == "qwen3moe"

    def meta(key):
        return int(reader.fields[f"{arch}.{key}"].contents())

    ARCH.update(n_layer=meta("block_count"), n_embd=meta("embedding_length"), n_head=meta("attention.head_count"),
                n_head_kv=meta("attention.head_count_kv"), head_dim=meta("attention.key_length"))
    if moe:
        ARCH.update(n_expert=meta("expert_count"), n_expert_used=meta("expert_used_count"),
                    n_ff_expert=meta("expert_feed_forward_length"))
    global N_FF_DENSE
    N_FF_DENSE = meta("feed_forward_length")
    tensors = {t.name: torch.from_numpy(np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32))
               for t in reader.tensors}
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    model = build_model_classes()(ARCH, moe, n_vocab)
    sd = {"embd.weight": "token_embd.weight", "norm.weight": "output_norm.weight"}
    for i in range(ARCH["n_layer"]):
        p, q = f"blocks.{i}.", f"blk.{i}."
        sd.update({p + "attn_norm.weight": q + "attn_norm.weight", p + "attn.wq.weight": q + "attn_q.weight",
                   p + "attn.wk.weight": q + "attn_k.weight", p + "attn.wv.weight": q + "attn_v.weight",
                   p + "attn.wo.weight": q + "attn_output.weight", p + "attn.q_norm.weight": q + "attn_q_norm.weight",
                   p + "attn.k_norm.weight": q + "attn_k_norm.weight", p + "ffn_norm.weight": q + "ffn_norm.weight"})
        if moe:
            sd.update({p + "ffn.router.weight": q + "ffn_gate_inp.weight", p + "ffn.gate": q + "ffn_gate_exps.weight",
                       p + "ffn.up": q + "ffn_up_exps.weight", p + "ffn.down": q + "ffn_down_exps.weight"})
        else:
            sd.update({p + "ffn.gate.weight": q + "ffn_gate.weight", p + "ffn.up.weight": q + "ffn_up.weight",
                       p + "ffn.down.weight": q + "ffn_down.weight"})
    model.load_state_dict({k: tensors[v] for k, v in sd.items()})
    model.eval()

    llm = plain_cpu_llama(args.model, n_ctx=256, n_batch=256, logits_all=True, verbose=False)
    tokens = llm.tokenize(args.prompt.encode(), add_bos=False, special=False)
    llm.eval(tokens)
    ref = np.array(llm.scores[len(tokens) - 1], dtype=np.float32)
    with torch.no_grad():
        ours = model(torch.tensor([tokens]))[0][0, -1].numpy()
    err = float(np.abs(ours - ref).max() / (np.abs(ref).max() + 1e-9))
    print(f"top-5 llama.cpp {np.argsort(-ref)[:5].tolist()} torch {np.argsort(-ours)[:5].tolist()}; "
          f"max |diff| / max |logit| = {err:.4f}")
    if err > 0.1:
        sys.exit("the exported model does not compute what was trained")


# --------------------------------------------------------------------------------------------
# fixtures

# Prompts of the three kinds of text the routing traces cover: code, prose, a chat.
PROMPTS = {
    "code": "import os\nimport sys\n\n\ndef main(argv):\n    \"\"\"",
    "prose": "This License applies to any program or other work which contains a notice placed by the",
    "chat": "<|im_start|>user\nHow do I read a file line by line in Python?<|im_end|>\n<|im_start|>assistant\n",
}
N_GREEDY = 32
FIXTURE_PPL_TEXT = "/usr/share/common-licenses/GPL-3"  # held out of training; the fidelity tests' text
FIXTURE_PPL_CTX = 256
FIXTURE_PPL_CHUNKS = 4


def plain_cpu_llama(path, **kw):
    """llama.cpp without its extra buffer types (scripts/llama_plain.py says why)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import llama_plain

    return llama_plain.plain_cpu_llama(path, **kw)


def fixtures(args):
    """llama.cpp's greedy continuations and perplexity of the trained model, for
    tests/py/test_fidelity_moe.py (same method as scripts/gen_fidelity_fixtures.py)."""
    import llama_cpp

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import gen_fidelity_fixtures as gf

    llm = plain_cpu_llama(args.model, n_ctx=512, n_batch=512, n_threads=2, logits_all=True, flash_attn=False,
                          verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    greedy = {}
    for kind, prompt in PROMPTS.items():
        tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
        llm.reset()
        llm.eval(tokens)
        generated, margins = [], []
        for _ in range(N_GREEDY):
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            best2 = np.sort(row)[-2:]
            tok = int(np.argmax(row))
            if llama_cpp.llama_vocab_is_eog(vocab, tok):
                break
            generated.append(tok)
            margins.append(float(best2[1] - best2[0]))
            llm.eval([tok])
        greedy[kind] = {"prompt": prompt, "tokens": [int(t) for t in tokens], "greedy": generated,
                        "greedy_margins": margins,
                        # each token's bytes (hex), to compare a prefix of the text
                        "greedy_pieces": [llm.detokenize([t]).hex() for t in generated],
                        "greedy_text": llm.detokenize(generated).decode("utf-8", errors="replace")}
        print(f"{kind}: {greedy[kind]['greedy_text']!r}", file=sys.stderr)
    with open(FIXTURE_PPL_TEXT, "rb") as f:
        text = f.read()
    if text.endswith(b"\n"):
        text = text[:-1]
    gf.PERPLEXITY_TEXT = FIXTURE_PPL_TEXT
    ppl = gf.perplexity_fixture(llm, text, FIXTURE_PPL_CTX, FIXTURE_PPL_CHUNKS)
    print(f"PPL {ppl['ppl']:.4f} +/- {ppl['ppl_error']:.4f}", file=sys.stderr)
    data = {"model": os.path.basename(args.model), "llama_cpp_python": llama_cpp.__version__,
            "greedy": greedy, "perplexity": ppl}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", required=True)
    p.add_argument("--vocab", default=VOCAB_GGUF)
    t = sub.add_parser("train")
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--seconds", type=float, default=0, help="stop each model's training after this long (0: no limit)")
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--aux-coef", type=float, default=0.01)
    t.add_argument("--seed", type=int, default=1234)
    t.add_argument("--log-every", type=int, default=100)
    t.add_argument("--only", choices=["moe", "dense"])
    t.add_argument("--export-dense", action="store_true")
    t.add_argument("--arch", help="overrides of ARCH, e.g. n_embd=128,n_ff_expert=64")
    t.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    t.add_argument("--eval-windows", type=int, default=400, help="held-out windows of n_ctx tokens to score")
    c = sub.add_parser("check")
    c.add_argument("model")
    c.add_argument("--prompt", default="import os\nimport sys\n\n\ndef main(argv):\n    ")
    x = sub.add_parser("fixtures")
    x.add_argument("model")
    x.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                                                 "moe", "strata-moe-pystd.json"))
    args = ap.parse_args()
    {"prepare": prepare, "train": train, "check": check, "fixtures": fixtures}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
