#!/usr/bin/env python3
"""Realistic routing for models we cannot train: routing traces of any MoE shape (layers, experts,
top-k) generated from the statistics of real routing traces (the trained model's, from
`strata run --trace-routing`), in the same format (src/tier/trace/routing_trace.h), so that
bench/routing_replay.py replays them like real ones.

What is carried over, layer by layer (a target layer takes the statistics of the source layer at
the same depth), all by popularity rank so that any expert count maps onto any other:
  popularity  the share of routings each expert takes, sorted: the source curve resampled onto the
              target's experts (a quarter of the experts takes what a quarter took);
  repeats     how often an expert chosen for a token is chosen again for the next token in the
              same layer, beyond what popularity alone gives (temporal locality);
  transitions how the rank of an expert chosen in layer l+1 depends on the ranks chosen in layer l
              in the same token (the source's rank-to-rank matrix, bucketed onto the target's ranks).
Each token's k experts at a layer are drawn one after another: a repeat of the previous token's
(with the layer's excess repeat probability), else a follower of one of this token's experts in
the layer above (with the share of routings the transitions explain beyond popularity), else by
popularity; never twice the same. The generator is seeded: the same arguments give the same trace.

  python3 bench/routing_synth.py --source T1 [T2 ...] --shape mixtral|qwen3|L,E,K \
      [--tokens 512] [--seed 1] [--expert-bytes N] --out TRACE
  python3 bench/routing_synth.py --source T1 ... --describe TRACE...   # the statistics, side by side

Shapes: mixtral = Mixtral 8x7B (32 layers, 8 experts, top-2), qwen3 = Qwen3 30B-A3B (48 layers,
128 experts, top-8); expert bytes of their Q4_K_M files (forged: strata forge --type Q4_K_M).
"""
import argparse
import bisect
import collections
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import routing_replay as rr  # noqa: E402

# name: (n_layer, n_expert, k, bytes of one expert's gate+up+down in the forged Q4_K_M file)
SHAPES = {
    "mixtral": (32, 8, 2, 0),
    "qwen3": (48, 128, 8, 0),
}
MAX_TOKENS = 100_000  # a bound on the trace generated


def sequences(trace):
    """The trace's tokens as sequences of per-layer expert lists (b=1 traces: one request per
    token and layer; a forward pass that starts at a layer not above the previous one)."""
    seqs, cur, token, last = [], [], None, None
    for layer, experts, _, _, n_tok in trace.requests:
        if n_tok != 1:
            continue  # a batch's distinct experts are not one token's
        if last is not None and layer <= last:
            cur.append(token)
            token = None
        if token is None:
            token = {}
        token[layer] = list(experts)
        last = layer
    if token:
        cur.append(token)
    seqs.append(cur)
    return seqs


class Stats:
    """Rank statistics of one or more traces of the same shape."""

    def __init__(self, traces):
        t0 = traces[0]
        self.n_layer, self.n_expert, self.k = t0.n_layer, t0.n_expert, t0.k
        L, E = self.n_layer, self.n_expert
        count = [[0] * E for _ in range(L)]
        tokens = []
        for t in traces:
            if (t.n_layer, t.n_expert, t.k) != (L, E, self.k):
                raise ValueError(f"{t.name}: another shape than {t0.name}")
            for seq in sequences(t):
                tokens.append(seq)
                for tok in seq:
                    for l, ex in tok.items():
                        for e in ex:
                            count[l][e] += 1
        # rank[l][e]: 0 = the most used expert of layer l
        self.rank = []
        self.popularity = []  # [l][r]: share of layer l's routings the rank-r expert takes
        for l in range(L):
            order = sorted(range(E), key=lambda e: (-count[l][e], e))
            r = [0] * E
            for i, e in enumerate(order):
                r[e] = i
            self.rank.append(r)
            total = sum(count[l]) or 1
            self.popularity.append([count[l][e] / total for e in order])
        # repeats and transitions
        rep = [0] * L
        rep_n = [0] * L
        trans = [[[0] * E for _ in range(E)] for _ in range(max(0, L - 1))]
        for seq in tokens:
            prev = None
            for tok in seq:
                for l, ex in tok.items():
                    if prev is not None and l in prev:
                        rep[l] += sum(1 for e in ex if e in prev[l])
                        rep_n[l] += len(ex)
                    if l + 1 in tok:
                        for a in ex:
                            for b in tok[l + 1]:
                                trans[l][self.rank[l][a]][self.rank[l + 1][b]] += 1
                prev = tok
        self.repeat = [rep[l] / rep_n[l] if rep_n[l] else 0.0 for l in range(L)]
        self.trans = trans  # [l][rank in l][rank in l+1]

    def chance_repeat(self, l):
        """The repeat rate popularity alone gives: P(an expert of the next token's k was among the
        previous token's k) with independent draws."""
        p = self.popularity[l]
        return min(1.0, self.k * sum(x * x for x in p))

    def excess_repeat(self, l):
        c = self.chance_repeat(l)
        return max(0.0, (self.repeat[l] - c) / (1 - c)) if c < 1 else 0.0

    def transition_strength(self, l):
        """How much of layer l+1's routing its rank-to-rank transitions explain beyond popularity:
        1 - (expected probability of the actual follower under popularity) / (under the
        transition row), clipped to [0, 1]; 0 for uniform transitions."""
        T = self.trans[l]
        pop = self.popularity[l + 1]
        under_t = under_p = 0.0
        n = 0
        for row in T:
            tot = sum(row)
            if not tot:
                continue
            for r, c in enumerate(row):
                under_t += c * (c / tot)
                under_p += c * pop[r]
                n += c
        if not n or under_t <= 0:
            return 0.0
        return max(0.0, min(1.0, 1 - under_p / under_t))


def resample(curve, n):
    """A decreasing share curve over len(curve) ranks resampled onto n ranks (cumulative shares
    interpolated at the same quantiles), summing to 1."""
    m = len(curve)
    cum = [0.0]
    for x in curve:
        cum.append(cum[-1] + x)

    def at(q):  # cumulative share at quantile q in [0, 1]
        pos = q * m
        i = min(int(pos), m - 1)
        return cum[i] + (pos - i) * curve[i]

    out = [max(0.0, at((j + 1) / n) - at(j / n)) for j in range(n)]
    s = sum(out) or 1.0
    return [x / s for x in out]


def bucket(rank, n_from, n_to):
    """Target ranks that correspond to source rank `rank` (n_from ranks onto n_to)."""
    lo = rank * n_to // n_from
    hi = max(lo + 1, (rank + 1) * n_to // n_from)
    return range(lo, min(hi, n_to))


class Generator:
    def __init__(self, stats, n_layer, n_expert, k, seed):
        self.s, self.L, self.E, self.k = stats, n_layer, n_expert, k
        self.rng = random.Random(seed)
        self.src = [min(stats.n_layer - 1, l * stats.n_layer // n_layer) for l in range(n_layer)]
        self.pop = [resample(stats.popularity[self.src[l]], n_expert) for l in range(n_layer)]
        self.cum = []
        for p in self.pop:
            c, acc = [], 0.0
            for x in p:
                acc += x
                c.append(acc)
            self.cum.append(c)
        # Experts keep their rank labels shuffled per layer, so that expert ids carry no order.
        self.perm = []
        for _ in range(n_layer):
            ids = list(range(n_expert))
            self.rng.shuffle(ids)
            self.perm.append(ids)  # perm[l][rank] = expert id
        self.rank_of = [{e: r for r, e in enumerate(p)} for p in self.perm]
        self.repeat = [stats.excess_repeat(self.src[l]) for l in range(n_layer)]
        self.follow = [1.0 if self.src[l] + 1 < stats.n_layer else 0.0
                       for l in range(n_layer)]
        # a target layer follows the source transition of its source layer (to the next source layer)
        self.trans_rows = {}

    def by_popularity(self, l):
        return self.perm[l][min(self.E - 1, bisect.bisect_left(self.cum[l], self.rng.random() * self.cum[l][-1]))]

    def follower_weights(self, l, above):
        """Weights over layer l's ranks given this token's experts `above` in layer l - 1: the
        popularity times, for each expert above, how much more (or less) often the source saw
        that rank follow it than popularity alone says (the experts above taken as independent
        evidence; counts smoothed by half an observation)."""
        sl = self.src[l - 1]
        pop = self.pop[l]
        if sl + 1 >= self.s.n_layer:
            return pop
        T = self.s.trans[sl]
        Es = self.s.n_expert
        col = self.s.popularity[sl + 1]
        ratio = [1.0] * Es
        for a in above:
            row = T[self.source_rank(l - 1, a)]
            tot = sum(row) + 0.5 * Es
            for r in range(Es):
                ratio[r] *= ((row[r] + 0.5) / tot) / max(col[r], 1e-9)
        return [pop[j] * ratio[j * Es // self.E] for j in range(self.E)]

    def source_rank(self, l, e):
        return min(self.s.n_expert - 1, self.rank_of[l][e] * self.s.n_expert // self.E)

    def token(self, prev):
        out = []
        for l in range(self.L):
            chosen = []
            tries = 0
            weights = self.follower_weights(l, out[l - 1]) if l > 0 and self.follow[l - 1] else None
            while len(chosen) < self.k and tries < 64 * self.k:
                tries += 1
                u = self.rng.random()
                if prev is not None and u < self.repeat[l]:
                    e = self.rng.choice(prev[l])
                elif weights is not None:
                    e = self.perm[l][self.rng.choices(range(self.E), weights=weights)[0]]
                else:
                    e = self.by_popularity(l)
                if e not in chosen:
                    chosen.append(e)
            for e in self.perm[l]:  # a degenerate distribution: fill with the most popular
                if len(chosen) >= self.k:
                    break
                if e not in chosen:
                    chosen.append(e)
            out.append(chosen)
        return out


def write_trace(path, name, n_layer, n_expert, k, expert_bytes, tokens):
    with open(path, "w") as f:
        f.write(f"strata-routing-trace 1\nmodel {name}\nn_layer {n_layer} n_expert {n_expert} n_expert_used {k}\n")
        f.write("expert_bytes " + " ".join(str(expert_bytes) for _ in range(n_layer)) + "\n")
        for pos, tok in enumerate(tokens):
            for l, ex in enumerate(tok):
                f.write(f"r {l} {pos} " + " ".join(map(str, ex)) + "\n")


def generate(sources, n_layer, n_expert, k, n_tokens, seed):
    stats = Stats([rr.parse(p) for p in sources])
    gen = Generator(stats, n_layer, n_expert, k, seed)
    tokens, prev = [], None
    for _ in range(n_tokens):
        prev = gen.token(prev)
        tokens.append(prev)
    return tokens


def describe(trace):
    s = Stats([trace])
    top = [sum(p[: max(1, len(p) // 4)]) for p in s.popularity]
    chance = [s.chance_repeat(l) for l in range(s.n_layer)]
    return {"shape": (s.n_layer, s.n_expert, s.k),
            "repeat": sum(s.repeat) / s.n_layer,
            "repeat_by_chance": sum(chance) / s.n_layer,
            "top_quarter_share": sum(top) / s.n_layer,
            "transition_strength": (sum(s.transition_strength(l) for l in range(s.n_layer - 1)) / (s.n_layer - 1)
                                    if s.n_layer > 1 else 0.0)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", nargs="+", required=True, help="real routing traces of one shape")
    ap.add_argument("--shape", help="mixtral, qwen3 or L,E,K")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--expert-bytes", type=int, default=0, help="bytes of one expert (all layers)")
    ap.add_argument("--uniform", action="store_true", help="uniform routing instead (the forged models' case)")
    ap.add_argument("--out")
    ap.add_argument("--describe", nargs="*", help="print the statistics of the sources and these traces")
    args = ap.parse_args()
    if args.describe is not None:
        for p in list(args.source) + list(args.describe):
            d = describe(rr.parse(p))
            print(f"{p}: {d['shape']} repeat {d['repeat']:.3f} (chance {d['repeat_by_chance']:.3f}), "
                  f"top quarter {d['top_quarter_share']:.3f}, transitions {d['transition_strength']:.3f}")
        return
    if not args.shape or not args.out:
        ap.error("--shape and --out are needed to generate")
    if args.shape in SHAPES:
        L, E, K, eb = SHAPES[args.shape]
    else:
        L, E, K = (int(x) for x in args.shape.split(","))
        eb = 0
    eb = args.expert_bytes or eb
    if not 0 < args.tokens <= MAX_TOKENS:
        ap.error(f"--tokens must be in 1..{MAX_TOKENS}")
    if args.uniform:
        rng = random.Random(args.seed)
        tokens = [[rng.sample(range(E), K) for _ in range(L)] for _ in range(args.tokens)]
    else:
        tokens = generate(args.source, L, E, K, args.tokens, args.seed)
    write_trace(args.out, f"synthetic-{args.shape}", L, E, K, eb, tokens)


if __name__ == "__main__":
    main()
