#!/usr/bin/env python3
"""Replays a routing trace (`strata run|bench --trace-routing FILE`, format in
src/tier/trace/routing_trace.h) under expert-cache policies at any cache size.

The cache holds whole experts (one expert of one layer: its gate, up and down slices), in
`slots` of the size of one expert, and starts full (each policy's own choice, loaded for free:
the hot list of the profile for all but belady, which takes the experts first used soonest);
a forward pass needs, layer after layer, the distinct experts its tokens routed to (a batch reads each expert once). An expert not in the cache is read
(expert_bytes of its layer) and then cached or not, as the policy says; the experts the current
layer needs are never evicted for each other.

Policies (cache only: nothing read ahead):
  lru          one LRU over all layers
  lru-layer    an LRU per layer, slots split evenly
  lfu          least frequently used, with ageing (each layer's uses weigh 1/decay times the
               previous layer's; decay 0.995): the engine's expert cache with the look-ahead off,
               equal to it (tests/tier/expert_policy_test.cpp, expert_cache_test.cpp)
  two-scale    lfu plus a fast-ageing count of the same uses (decay 0.7 a layer, weight 1): a
               frequency + recency hybrid
  arc          Megiddo and Modha's adaptive replacement cache (recency and frequency lists with
               ghosts), the hot list as its frequent part
  static       a hot list pinned: the `slots` experts most used in the profile (the trace itself
               unless --profile names another); misses are read and not kept
  pinned+lru   the hot list minus a pool, plus an LRU pool (--pool slots, default max(k, slots/8)):
               the plan-pinned + small LRU pool of the old expert streamer
  belady       Belady's MIN: keeps the experts used soonest (of those cached and the one missed,
               the one used furthest away is dropped or not kept): the optimum hit rate of any
               cache-only policy of this cache size (the upper bound of the ones above)
Policies reading the trace's router guesses ahead (a hit: in memory, or read on a guess, when
routed to; every read counts in the bytes):
  lru+guess    lru, and the trace's refined guesses read into the cache before their layer runs
  lfu+router   the engine's lfu cache and streamer protocol, slot for slot (CacheModel,
               replay_engine): the early guess read while the previous layer's experts are
               wanted, the refined one after its FFN, into the victims lfu chooses (never a live
               guess); guesses are never dropped here (the engine drops a guess whose read had not
               begun when routing or the refined guess proved it wrong)
  lfu+router+protect  and a cached expert guessed for the next layer is not evicted before it
  lfu+lookahead the engine's default (ExpertCacheOptions): protect, and lfu counts a use the
               look-ahead guessed at 0.25 of an unguessed one (the cache keeps what the look-ahead
               misses; a guessed expert is read ahead anyway). Equal to the engine's cache and
               streamer on a committed trace (tests/fixtures/moe/policy-parity-lookahead.json)
  lfu+co, lfu+router+co  the older approximate replay with co-activation guesses
  belady+guess the fair bound of every policy that reads ahead the same guesses: a guessed
               access is a hit for free (read ahead, in time, without taking a slot), the cache is
               MIN over the unguessed accesses. A bound on hits, not on bytes

Also measured: each guess kind's precision and recall (early: made before the previous
layer's FFN; refined: after it), over the layers it was made for.

  python3 bench/routing_replay.py TRACE [TRACE...] [--sizes 0.1,0.25,0.5] [--profile TRACE]
      [--policies lfu,belady,...] [--json]

Measured (2026-12-07) on tests/models/strata-moe-pystd.gguf (8 layers x 32 experts, top-4), traces
of `strata run -b 1 -n 96 --greedy -c 512 --fresh --trace-routing` over 4 prompts of each kind
(code: the starts of posixpath, shlex, warnings, types.py, 2010 tokens; prose: 4 pieces of the
GPL-3's terms, 1668 tokens; chat: 4 ChatML prompts, 669 tokens), hit rate at 10 / 25 / 50 % of
the 256 experts:
            lru             lru-layer       lfu             static(own)     pinned+lru      belady
  code      0.0/42.6/70.9   22.2/45.9/72.3  23.0/47.3/73.2  18.3/39.4/67.2  15.8/35.3/67.1  44.7/70.2/88.7
  prose     0.0/55.4/87.5   30.6/59.8/87.2  35.2/65.7/88.8  41.9/70.9/92.2  37.2/67.3/91.3  52.2/80.0/95.5
  chat      0.0/46.4/78.1   23.9/51.3/78.8  28.0/53.9/79.7  31.4/56.7/81.3  27.9/52.7/79.7  47.5/74.0/91.6
(A global LRU smaller than a token's 32 experts misses every time: the layers cycle through it.)
lfu above is the first measurement's (decay 0.98 a layer, misses kept only when they score higher).
The engine's lfu (decay 0.995, every miss kept; chosen over 0.9..1 and bypass or not, per-layer
slots or one pool): code 23.0/48.5/75.3, prose 36.9/69.6/91.2, chat 28.2/56.0/81.2 -- 69 / 87 / 76 %
of Belady's hit rate at 25 %.
A hot list learned on the code traces, used on the others: prose 22.4/44.4/73.0, chat 19.6/43.0/71.5.
Guesses: early precision 0.83-0.85, recall 0.41-0.42; refined precision and recall 0.84-0.86.

Measured again (2026-12-07, 23:00) on the traces of bench/routing_traces.py (code 1730, prose 1417,
chat 479 tokens), hit rate at 10 / 25 / 50 % (MB read per token at 25 %):
            lfu             belady          lfu+router           lfu+lookahead        belady+guess
  code      22.8/49.1/76.6  43.7/70.8/89.6  80.7/87.4/94.3 (2.19) 86.1/92.5/96.7 (2.37) 92.4/96.7/98.8
  prose     37.1/69.7/91.1  52.2/80.7/95.4  80.2/91.4/97.4 (1.51) 86.9/94.5/98.3 (1.66) 93.2/97.7/99.5
  chat      36.3/68.0/90.2  52.3/81.3/96.1  80.7/90.8/96.9 (1.63) 86.9/94.2/97.9 (1.83) 93.7/97.8/99.5
Cache only, lfu is 69 / 86 / 84 % of MIN at 25 %; two-scale (48.6 on code at 25 %) and arc (42.5)
do not beat it. Reading the guesses, lfu+lookahead is 96 / 97 / 96 % of belady+guess at 25 %
(lfu+router 90 / 94 / 93 %), for 8-12 % more bytes; protect alone adds <= 0.1 point, the weight
0.25 the rest (0.5: 90.8 / 93.5 / 93.0; 0: 93.3 / 95.1 / 95.0 at +26-45 % bytes). Its cache
itself holds fewer of the routed experts (found in the cache 43.7 / 64.7 / 60.5 % against lfu+router's
47.4 / 67.5 / 65.3 %): the look-ahead brings the rest.
"""
import argparse
import collections
import json
import math
import sys

MAX_TRACE_LINES = 50_000_000  # a bound on input: ~1M tokens of a 48-layer model


class Trace:
    def __init__(self, n_layer, n_expert, k, expert_bytes, requests, name=""):
        self.n_layer, self.n_expert, self.k = n_layer, n_expert, k
        self.expert_bytes = expert_bytes
        # One request per (forward pass, MoE layer): (layer, experts needed (ordered, distinct),
        # early guess or None, refined guess or None, n_tokens of the pass).
        self.requests = requests
        self.name = name

    @property
    def n_tokens(self):
        return sum(r[4] for r in self.requests if r[0] == self.first_layer)

    @property
    def first_layer(self):
        return min(r[0] for r in self.requests) if self.requests else 0

    def key(self, layer, e):
        return layer * self.n_expert + e


def parse(path):
    """Reads a trace file into a Trace; raises ValueError naming the line on malformed input."""
    n_layer = n_expert = k = None
    expert_bytes = None
    requests = []
    cur = None  # the request being filled: [layer, experts(list), early, refined, n_tokens]
    guesses = {}  # layer -> {0: [...], 1: [...]}, for the next request of that layer
    prev_layer = None
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if lineno > MAX_TRACE_LINES:
                raise ValueError(f"{path}: more than {MAX_TRACE_LINES} lines")
            parts = line.split()
            if not parts:
                continue
            tag = parts[0]
            try:
                if lineno == 1:
                    if parts != ["strata-routing-trace", "1"]:
                        raise ValueError("not a strata routing trace (version 1)")
                elif tag == "model":
                    pass
                elif tag == "n_layer":
                    n_layer, n_expert, k = int(parts[1]), int(parts[3]), int(parts[5])
                elif tag == "expert_bytes":
                    expert_bytes = [int(x) for x in parts[1:]]
                    if len(expert_bytes) != n_layer:
                        raise ValueError(f"{len(expert_bytes)} expert_bytes for {n_layer} layers")
                elif tag == "r":
                    layer = int(parts[1])
                    experts = [int(x) for x in parts[3:]]
                    if len(experts) != k or not 0 <= layer < n_layer or any(not 0 <= e < n_expert for e in experts):
                        raise ValueError("routing record out of range")
                    if cur is None or layer != prev_layer:
                        g = guesses.pop(layer, {})
                        cur = [layer, [], g.get(0), g.get(1), 0]
                        requests.append(cur)
                        prev_layer = layer
                    cur[4] += 1
                    for e in experts:
                        if e not in cur[1]:
                            cur[1].append(e)
                elif tag == "g":
                    layer, refined = int(parts[1]), int(parts[2])
                    if not 0 <= layer < n_layer or refined not in (0, 1):
                        raise ValueError("guess record out of range")
                    guesses.setdefault(layer, {})[refined] = [int(x) for x in parts[3:]]
                    cur = None  # the next r line starts a new request
                    prev_layer = None
                else:
                    raise ValueError(f"unknown record '{tag}'")
            except (ValueError, IndexError) as err:
                raise ValueError(f"{path}:{lineno}: {err}") from None
    if n_layer is None or expert_bytes is None:
        raise ValueError(f"{path}: no header")
    return Trace(n_layer, n_expert, k, expert_bytes, [tuple(r) for r in requests], name=path)


# --------------------------------------------------------------------------------------------
# policies: each returns (hits, accesses, bytes_read)


def frequencies(trace):
    count = collections.Counter()
    for layer, experts, *_ in trace.requests:
        for e in experts:
            count[trace.key(layer, e)] += 1
    return count


def hot_list(profile, n):
    """The n most used experts of a profile trace, most used first (ties: lower key)."""
    count = frequencies(profile)
    return [key for key, _ in sorted(count.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def replay_lru(trace, slots, initial=(), per_layer=False, guesses=False):
    caches = collections.defaultdict(collections.OrderedDict)
    cap = {}
    for layer in range(trace.n_layer):
        cap[layer] = (slots // trace.n_layer + (1 if layer < slots % trace.n_layer else 0)) if per_layer else slots
    for key in reversed(list(initial)):  # the hottest is the most recently used
        layer = key // trace.n_expert
        cache = caches[layer if per_layer else 0]
        if len(cache) < cap[layer]:
            cache[key] = True
    hits = accesses = 0
    read = 0
    for layer, experts, early, refined, _ in trace.requests:
        cache = caches[layer if per_layer else 0]
        c = cap[layer]
        eb = trace.expert_bytes[layer]
        needed = {trace.key(layer, e) for e in experts}

        def admit(key, protect):
            if key in cache:
                cache.move_to_end(key)
                return
            if len(cache) >= c:
                victim = next((v for v in cache if v not in protect), None)
                if victim is None:
                    return  # no room: read, used, not kept
                del cache[victim]
            cache[key] = True

        if guesses and refined:
            for e in refined:
                key = trace.key(layer, e)
                if key not in cache:
                    read += eb
                    admit(key, needed & set(cache))  # keep what this layer will hit anyway
        for e in experts:
            key = trace.key(layer, e)
            accesses += 1
            if key in cache:
                hits += 1
                cache.move_to_end(key)
            else:
                read += eb
                admit(key, needed)
    return hits, accesses, read


LFU_DECAY = 0.995  # the engine's default (ExpertCacheOptions::lfu_decay)
# The engine's look-ahead aware lfu (ExpertCacheOptions::guessed_use_weight, protect_guesses).
GUESSED_USE_WEIGHT = 0.25
PROTECT_GUESSES = True


def replay_lfu(trace, slots, initial=(), decay=LFU_DECAY, bypass=False):
    """LFU with ageing, as the engine's expert cache (ExpertCachePolicy::lfu) runs it: every miss
    is kept, in place of the cached expert of the lowest score not needed by the current layer
    (ties: lower layer, then lower expert). bypass: a miss whose score is not above that
    expert's is read and not kept (an engine would need a spare slot to read it into)."""
    score = {}
    cache = set(list(initial)[:slots])
    for key in cache:
        score[key] = 0.0
    weight = 1.0
    hits = accesses = read = 0
    for layer, experts, *_ in trace.requests:
        needed = {trace.key(layer, e) for e in experts}
        for e in experts:
            key = trace.key(layer, e)
            accesses += 1
            score[key] = score.get(key, 0.0) + weight
            if key in cache:
                hits += 1
                continue
            read += trace.expert_bytes[layer]
            if len(cache) < slots:
                cache.add(key)
                continue
            victim = min((v for v in cache if v not in needed), key=lambda v: (score[v], v), default=None)
            if victim is not None and (not bypass or score[victim] < score[key]):
                cache.remove(victim)
                cache.add(key)
        weight /= decay  # ageing: later uses weigh more (rescaled to stay finite)
        if weight > 1e100:
            for key in score:
                score[key] /= weight
            weight = 1.0
    return hits, accesses, read


class CoActivation:
    """The engine's second predictor (src/tier/stream/routing_stats.cpp): counts, per layer, how
    often expert `to` of layer + 1 followed expert `from` of layer in the same token, and guesses
    the next layer's experts that followed the current ones in at least half of the tokens."""

    MIN_SEEN = 32  # co-activations from a layer before they predict anything
    MIN_PROBABILITY = 0.5

    def __init__(self, n_layer, n_expert, k):
        self.n_expert, self.k = n_expert, k
        self.co = [[[0] * n_expert for _ in range(n_expert)] for _ in range(max(0, n_layer - 1))]
        self.seen = [0] * n_layer
        self.prev = None  # (layer, chosen rows) of the previous record

    def record(self, layer, rows):
        if self.prev is not None and self.prev[0] == layer - 1 and len(self.prev[1]) == len(rows) and layer > 0:
            co = self.co[layer - 1]
            for before, now in zip(self.prev[1], rows):
                for a in before:
                    for b in now:
                        co[a][b] += 1
            self.seen[layer - 1] += len(rows)
        self.prev = (layer, rows)

    def predict_next(self, layer, now, count):
        if layer + 1 >= len(self.seen) or self.seen[layer] < self.MIN_SEEN or count <= 0:
            return []
        co = self.co[layer]
        score = [0] * self.n_expert
        chosen = 0
        for a in now:
            for e in range(self.n_expert):
                score[e] += co[a][e]
                chosen += co[a][e]
        chosen //= self.k
        min_score = max(1.0, self.MIN_PROBABILITY * chosen)
        ranked = sorted((e for e in range(self.n_expert) if score[e] >= min_score), key=lambda e: (-score[e], e))
        return sorted(ranked[:count])


def replay_lfu_guess(trace, slots, kinds, initial=(), decay=LFU_DECAY):
    """lfu with guesses read ahead, as the engine's expert streamer does: before a layer runs, its
    guesses (kinds: "router" = the trace's early and refined look-ahead guesses, "co" = the
    co-activation predictor fed with the routing seen so far) not in the cache are read into it,
    in place of the expert of the lowest score that the current layer does not need and that is
    not itself a guess for the layer to come. A hit is an expert in memory when routed to
    (cached or guessed); bytes count every read (a guess the engine drops before the disk read it
    whole counts whole here: an upper bound). Returns (hits, accesses, bytes_read, guess_stats)."""
    score = {key: 0.0 for key in list(initial)[:slots]}
    cache = set(score)
    weight = 1.0
    hits = accesses = read = 0
    g_issued = g_used = 0
    co = CoActivation(trace.n_layer, trace.n_expert, trace.k) if "co" in kinds else None
    reqs = trace.requests
    prev = None  # the previous request of the same forward pass
    for i, (layer, experts, early, refined, n_tok) in enumerate(reqs):
        eb = trace.expert_bytes[layer]
        guess = []
        if "router" in kinds:
            for g in (early, refined):
                for e in g or ():
                    if e not in guess:
                        guess.append(e)
        if co is not None and prev is not None and prev[0] == layer - 1:
            for e in co.predict_next(layer - 1, prev[1], (trace.k + 1) // 2):
                if e not in guess:
                    guess.append(e)
        guessed = {trace.key(layer, e) for e in guess}
        protect = set()
        if n_tok <= 4:  # the engine guesses for small batches only (ExpertGuesser::kMaxTokens)
            for key in (trace.key(layer, e) for e in guess):
                if key in cache:
                    protect.add(key)
                    continue
                victim = min((v for v in cache if v not in protect), key=lambda v: (score[v], v), default=None)
                if len(cache) >= slots:
                    if victim is None:
                        break
                    cache.remove(victim)
                read += eb
                g_issued += 1
                cache.add(key)
                score.setdefault(key, 0.0)
                protect.add(key)
        needed = {trace.key(layer, e) for e in experts}
        g_used += len(needed & guessed)
        for e in experts:
            key = trace.key(layer, e)
            accesses += 1
            score[key] = score.get(key, 0.0) + weight
            if key in cache:
                hits += 1
                continue
            read += eb
            if len(cache) < slots:
                cache.add(key)
                continue
            victim = min((v for v in cache if v not in needed), key=lambda v: (score[v], v), default=None)
            if victim is not None:
                cache.remove(victim)
                cache.add(key)
        if co is not None:
            # one row per token; the trace keeps the distinct experts of a pass, so a batch of
            # n_tok tokens is recorded as one row (exact for the b=1 traces)
            co.record(layer, [list(experts)] if n_tok == 1 else [])
        prev = (layer, list(experts))
        weight /= decay
        if weight > 1e100:
            for key in score:
                score[key] /= weight
            weight = 1.0
    return hits, accesses, read, {"issued": g_issued, "used": g_used}


class CacheModel:
    """The engine's expert cache (src/tier/stream/expert_cache.{h,cpp}, policy lfu, slots of
    one size) slot for slot, driven as ExpertStreamer drives it: the same victims, so the same
    hits. protect: a guess for the next layer that is already cached protects its expert from
    eviction until that layer runs (ExpertCacheOptions::protect_guesses). unpredicted_weight:
    lfu counts a use the look-ahead guessed at this fraction of an unguessed one (1: plain lfu)."""

    def __init__(self, n_expert, slots, decay=None, protect=False, predicted_weight=1.0):
        self.n_expert = n_expert
        self.decay = LFU_DECAY if decay is None else decay
        self.protect = protect
        self.predicted_weight = predicted_weight
        self.key = [None] * slots       # the expert each slot holds
        self.guess = [False] * slots    # put on a guess, not routed to yet
        self.wanted = [False] * slots   # routed to by the current layer, not handed out yet
        self.guarded = [False] * slots  # cached, and guessed for the next layer (protect)
        self.index = {}
        self.score = collections.defaultdict(float)
        self.weight = 1.0
        self.layer = -1

    def begin_layer(self, layer):
        self.wanted = [False] * len(self.key)
        self.guarded = [False] * len(self.key)
        self.layer = layer

    def victim(self, for_guess):
        """ExpertCache::victim: the first empty slot, else the lowest (score, key) of the cached
        experts and the guesses for layers already past, else (not for a guess) a live guess."""
        best = best_rank = None
        for i, key in enumerate(self.key):
            if self.wanted[i] or self.guarded[i]:
                continue
            if key is None:
                return i
            live = self.guess[i] and key // self.n_expert > self.layer
            if live and for_guess:
                continue
            rank = (1 if live else 0, self.score[key], key)
            if best is None or rank < best_rank:
                best, best_rank = i, rank
        return best

    def put(self, i, key, guess=False, wanted=False):
        old = self.key[i]
        if old is not None:
            del self.index[old]
        self.key[i], self.guess[i], self.wanted[i], self.guarded[i] = key, guess, wanted, False
        self.index[key] = i

    def use(self, key, predicted=False):
        self.score[key] += self.weight * (self.predicted_weight if predicted else 1.0)

    def age(self):
        self.weight /= self.decay
        if self.weight > 1e100:
            for key in self.score:
                self.score[key] /= self.weight
            self.weight = 1.0

    def prefetch(self, keys):
        """ExpertStreamer::prefetch of the next layer's guesses: each not cached takes a victim
        (never a wanted expert or another live guess); none left: the rest are not read."""
        issued = 0
        for key in keys:
            i = self.index.get(key)
            if i is not None:
                if self.protect:
                    self.guarded[i] = True
                continue
            v = self.victim(True)
            if v is None:
                break
            self.put(v, key, guess=True)
            issued += 1
        return issued


def replay_engine(trace, slots, guesses=False, initial=(), decay=None, protect=False, predicted_weight=1.0):
    """The engine's expert cache and streamer protocol (CacheModel) over a trace: per layer, the
    router's guesses for it read ahead while the layer before runs (early guess while that
    layer's experts are still wanted, the refined one after its FFN; `guesses` on), then its
    routing: hits confirmed, each miss read into a victim's slot (none free: read, used, not kept).
    Guesses are never dropped (the trained model's reads land long before the refined guess).
    A hit is an expert in memory when routed to. Returns (hits, accesses, bytes_read,
    {"issued", "used"})."""
    c = CacheModel(trace.n_expert, slots, decay, protect, predicted_weight)
    for j, key in enumerate(list(initial)[:slots]):
        c.put(j, key)
    hits = accesses = read = issued = used = 0
    prev_needed = None
    for layer, experts, early, refined, n_tok in trace.requests:
        eb = trace.expert_bytes[layer]
        guessed = set()
        if guesses and n_tok <= 4 and (early or refined):
            # made while the previous layer ran: the early guess sees its experts wanted, and is
            # not read while one of them still waits for a slot
            waiting = False
            for key in prev_needed or ():
                i = c.index.get(key)
                if i is None:
                    waiting = True
                else:
                    c.wanted[i] = True
            for g in (early, refined):
                keys = [trace.key(layer, e) for e in g or ()]
                guessed.update(keys)
                if not waiting:
                    n = c.prefetch(keys)
                    issued += n
                    read += n * eb
                c.wanted = [False] * slots  # the previous layer's experts handed out and done
                waiting = False
        c.begin_layer(layer)
        keys = [trace.key(layer, e) for e in experts]
        missed = []
        for key in keys:
            accesses += 1
            i = c.index.get(key)
            if i is not None:
                hits += 1
                used += c.guess[i]
                c.guess[i] = False
                c.wanted[i] = True
            else:
                missed.append(key)
            c.use(key, key in guessed)
        for key in missed:
            read += eb
            v = c.victim(False)
            if v is not None:
                c.put(v, key, wanted=True)
        c.age()
        prev_needed = keys
    return hits, accesses, read, {"issued": issued, "used": used}


def replay_belady_guess(trace, slots):
    """The fair bound for a cache that reads the router's guesses ahead: an access the trace's
    guesses for its layer named (early or refined) is a hit for free (read ahead in time, into
    memory the cache does not count, if it is not cached), and the cache is Belady's MIN over the
    remaining accesses (their next uses decide what stays). No policy that reads ahead only these
    guesses can have more experts in memory when routed to: MIN is optimal on the unguessed
    accesses, and the guessed ones cost it nothing here. Bytes: MIN's misses plus every guessed
    access not cached at the time (a guess read ahead), so a bound on hits, not on bytes."""
    guessed_at = []
    kept = []
    for layer, experts, early, refined, n_tok in trace.requests:
        guessed = set(early or ()) | set(refined or ()) if n_tok <= 4 else set()
        guessed_at.append([e for e in experts if e in guessed])
        kept.append((layer, [e for e in experts if e not in guessed], None, None, n_tok))
    sub = Trace(trace.n_layer, trace.n_expert, trace.k, trace.expert_bytes, kept)
    free = [[trace.key(r[0], e) for e in g] for r, g in zip(trace.requests, guessed_at)]
    return replay_belady(sub, slots, free=free)


def replay_two_scale(trace, slots, initial=(), slow=LFU_DECAY, fast=0.7, recent_weight=1.0):
    """A frequency + recency hybrid: lfu whose score adds to the slow-aged count of uses a fast-aged
    one (weight recent_weight; fast: the per-layer decay of the recent part). recent_weight 0 is
    lfu. Every miss kept, in place of the lowest score not needed by the current layer."""
    slow_s = collections.defaultdict(float)
    fast_s = collections.defaultdict(float)
    ws = wf = 1.0
    cache = set(list(initial)[:slots])
    hits = accesses = read = 0

    def score(key):
        return slow_s[key] / ws + recent_weight * fast_s[key] / wf

    for layer, experts, *_ in trace.requests:
        needed = {trace.key(layer, e) for e in experts}
        for e in experts:
            key = trace.key(layer, e)
            accesses += 1
            slow_s[key] += ws
            fast_s[key] += wf
            if key in cache:
                hits += 1
                continue
            read += trace.expert_bytes[layer]
            if len(cache) < slots:
                cache.add(key)
                continue
            victim = min((v for v in cache if v not in needed), key=lambda v: (score(v), v), default=None)
            if victim is not None:
                cache.remove(victim)
                cache.add(key)
        ws /= slow
        wf /= fast
        if wf > 1e100 or ws > 1e100:
            for d, w in ((slow_s, ws), (fast_s, wf)):
                for key in d:
                    d[key] /= w
            ws = wf = 1.0
    return hits, accesses, read


def replay_arc(trace, slots, initial=()):
    """ARC (Megiddo and Modha's adaptive replacement cache) over all layers: a recency list and a
    frequency list, each with a ghost list of what it evicted, the split between them adapted by
    ghost hits. The experts the current layer needs are never evicted (its next-oldest goes)."""
    t1, t2 = collections.OrderedDict(), collections.OrderedDict()
    b1, b2 = collections.OrderedDict(), collections.OrderedDict()
    for key in reversed(list(initial)[:slots]):
        t2[key] = True  # a hot list: known frequent
    p = 0.0
    hits = accesses = read = 0

    def replace(in_b2, needed):
        def oldest(lst):
            return next((k for k in lst if k not in needed), None)
        v1, v2 = oldest(t1), oldest(t2)
        if v1 is not None and (len(t1) > p or (in_b2 and len(t1) == p) or v2 is None):
            del t1[v1]
            b1[v1] = True
            return True
        if v2 is not None:
            del t2[v2]
            b2[v2] = True
            return True
        return False

    for layer, experts, *_ in trace.requests:
        needed = {trace.key(layer, e) for e in experts}
        for e in experts:
            key = trace.key(layer, e)
            accesses += 1
            if key in t1 or key in t2:
                hits += 1
                (t1 if key in t1 else t2).pop(key)
                t2[key] = True
                continue
            read += trace.expert_bytes[layer]
            if key in b1:
                p = min(float(slots), p + max(1.0, len(b2) / max(1, len(b1))))
                del b1[key]
                if len(t1) + len(t2) >= slots and not replace(False, needed):
                    continue
                t2[key] = True
                continue
            if key in b2:
                p = max(0.0, p - max(1.0, len(b1) / max(1, len(b2))))
                del b2[key]
                if len(t1) + len(t2) >= slots and not replace(True, needed):
                    continue
                t2[key] = True
                continue
            if len(t1) + len(b1) >= slots:
                if len(t1) < slots:
                    if b1:
                        b1.popitem(last=False)
                    if len(t1) + len(t2) >= slots and not replace(False, needed):
                        continue
                else:
                    v = next((k for k in t1 if k not in needed), None)
                    if v is None:
                        continue
                    del t1[v]
            elif len(t1) + len(t2) + len(b1) + len(b2) >= slots:
                if len(t1) + len(t2) + len(b1) + len(b2) >= 2 * slots and b2:
                    b2.popitem(last=False)
                if len(t1) + len(t2) >= slots and not replace(False, needed):
                    continue
            t1[key] = True
    return hits, accesses, read


def replay_static(trace, slots, hot, pool=0):
    pinned = set(hot[: max(0, slots - pool)])
    lru = collections.OrderedDict()
    hits = accesses = read = 0
    for layer, experts, *_ in trace.requests:
        needed = {trace.key(layer, e) for e in experts}
        for e in experts:
            key = trace.key(layer, e)
            accesses += 1
            if key in pinned:
                hits += 1
            elif key in lru:
                hits += 1
                lru.move_to_end(key)
            else:
                read += trace.expert_bytes[layer]
                if pool > 0:
                    if len(lru) >= pool:
                        victim = next((v for v in lru if v not in needed), None)
                        if victim is None:
                            continue
                        del lru[victim]
                    lru[key] = True
    return hits, accesses, read


def replay_belady(trace, slots, bypass=True, preload=True, free=None):
    """Belady's MIN: on a miss with a full cache, of the cached experts not needed by the current
    layer and (bypass) the missed one, the one whose next use is furthest away is not kept.
    With bypass this is the optimum of every policy here (all may leave a miss uncached); without
    it, the optimum of demand-fetching caches (every miss is cached). free[i]: more keys request i
    uses that are hits whatever is cached (read if not cached) and leave the cache as it is."""
    seq = [[trace.key(layer, e) for e in experts] for layer, experts, *_ in trace.requests]
    # next_use[i][j]: index of the next request after i that needs seq[i][j]
    next_use = [None] * len(seq)
    last = {}
    for i in range(len(seq) - 1, -1, -1):
        next_use[i] = [last.get(key, math.inf) for key in seq[i]]
        for key in seq[i]:
            last[key] = i
    # Starts full, with the experts first used soonest: the best initial content (every other
    # policy starts with its own choice, the hot list, loaded for free as well).
    nxt = {}  # key -> its next use, for keys in the cache
    first_use = sorted(last.items(), key=lambda kv: (kv[1], kv[0]))[:slots] if preload else []
    cache = {key for key, _ in first_use}
    nxt.update(first_use)
    hits = accesses = read = 0
    for i, keys in enumerate(seq):
        layer = trace.requests[i][0]
        for key in free[i] if free else ():
            accesses += 1
            hits += 1
            if key not in cache:
                read += trace.expert_bytes[layer]
        needed = set(keys)
        for key, nu in zip(keys, next_use[i]):
            accesses += 1
            if key in cache:
                hits += 1
                nxt[key] = nu
                continue
            read += trace.expert_bytes[layer]
            if len(cache) >= slots:
                victim = max((v for v in cache if v not in needed), key=lambda v: (nxt[v], v), default=None)
                if victim is None or (bypass and nu >= nxt[victim]):
                    continue
                cache.remove(victim)
                del nxt[victim]
            cache.add(key)
            nxt[key] = nu
    return hits, accesses, read


def guess_quality(trace):
    """Precision and recall of each kind of guess, over the requests it was made for."""
    out = {}
    for kind, idx in (("early", 2), ("refined", 3)):
        right = guessed = actual = n = 0
        for req in trace.requests:
            g = req[idx]
            if g is None:
                continue
            n += 1
            a = set(req[1])
            right += len(a & set(g))
            guessed += len(g)
            actual += len(a)
        out[kind] = {"layers_guessed": n, "precision": right / guessed if guessed else None,
                     "recall": right / actual if actual else None}
    return out


# Cache only (nothing read ahead): no policy here beats belady.
CACHE_ONLY = ("lru", "lru-layer", "lfu", "two-scale", "arc", "static", "pinned+lru")
# Reading the router's guesses ahead (those of the trace): none beats belady+guess.
WITH_GUESSES = ("lru+guess", "lfu+router", "lfu+router+protect", "lfu+lookahead")


def run_policies(trace, slots, profile=None, pool=None, names=None):
    if pool is None:
        pool = max(trace.k, slots // 8)
    hot_self = hot_list(trace, slots)
    hot = hot_list(profile, slots) if profile is not None else hot_self
    policies = {
        "lru": lambda: replay_lru(trace, slots, hot),
        "lru-layer": lambda: replay_lru(trace, slots, hot_list(profile or trace, trace.n_layer * trace.n_expert),
                                        per_layer=True),
        "lfu": lambda: replay_lfu(trace, slots, hot),
        "two-scale": lambda: replay_two_scale(trace, slots, hot),
        "arc": lambda: replay_arc(trace, slots, hot),
        "static": lambda: replay_static(trace, slots, hot_self),
        "pinned+lru": lambda: replay_static(trace, slots, hot_self, pool=min(pool, slots)),
        "lru+guess": lambda: replay_lru(trace, slots, hot, guesses=True),
        "lfu+router": lambda: replay_engine(trace, slots, True, hot)[:3],
        "lfu+router+protect": lambda: replay_engine(trace, slots, True, hot, protect=True)[:3],
        "lfu+lookahead": lambda: replay_engine(trace, slots, True, hot, protect=PROTECT_GUESSES,
                                               predicted_weight=GUESSED_USE_WEIGHT)[:3],
        "lfu+co": lambda: replay_lfu_guess(trace, slots, ("co",), hot)[:3],
        "lfu+router+co": lambda: replay_lfu_guess(trace, slots, ("router", "co"), hot)[:3],
        "belady": lambda: replay_belady(trace, slots),
        "belady+guess": lambda: replay_belady_guess(trace, slots),
    }
    if profile is not None:
        policies["static(profile)"] = lambda: replay_static(trace, slots, hot)
        policies["pinned+lru(profile)"] = lambda: replay_static(trace, slots, hot, pool=min(pool, slots))
    unknown = set(names or ()) - set(policies)
    if unknown:
        raise ValueError(f"unknown policies: {', '.join(sorted(unknown))}")
    return {name: run() for name, run in policies.items() if names is None or name in names}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--sizes", default="0.1,0.25,0.5",
                    help="cache sizes: fractions of all experts (< 1) or slot counts (>= 1)")
    ap.add_argument("--profile", help="a trace whose hot list the static policies also use")
    ap.add_argument("--pool", type=int, help="pinned+lru: LRU pool slots (default max(k, slots/8))")
    ap.add_argument("--policies", help="comma-separated names (default: all)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    names = args.policies.split(",") if args.policies else None
    profile = parse(args.profile) if args.profile else None
    report = []
    for path in args.traces:
        trace = parse(path)
        total = trace.n_layer * trace.n_expert
        entry = {"trace": path, "tokens": trace.n_tokens, "requests": len(trace.requests),
                 "guesses": guess_quality(trace), "sizes": []}
        for s in (float(x) for x in args.sizes.split(",")):
            slots = int(round(s * total)) if s < 1 else int(s)
            res = run_policies(trace, slots, profile, args.pool, names)
            entry["sizes"].append({
                "slots": slots, "fraction": slots / total,
                "policies": {name: {"hit_rate": h / a if a else 0.0, "bytes_read": b,
                                    "bytes_per_token": b / max(1, trace.n_tokens)}
                             for name, (h, a, b) in res.items()}})
        report.append(entry)
        if not args.json:
            g = entry["guesses"]
            print(f"{path}: {entry['tokens']} tokens, {entry['requests']} layer requests, "
                  f"{trace.n_layer}x{trace.n_expert} experts, top-{trace.k}")
            for kind in ("early", "refined"):
                q = g[kind]
                if q["layers_guessed"]:
                    print(f"  {kind} guess: precision {q['precision']:.3f} recall {q['recall']:.3f} "
                          f"over {q['layers_guessed']} layers")
            names = list(entry["sizes"][0]["policies"])
            print("  " + "cache".ljust(12) + "".join(n.rjust(20) for n in names))
            for sz in entry["sizes"]:
                row = f"  {sz['slots']:4d} ({sz['fraction'] * 100:3.0f}%)"
                for n in names:
                    p = sz["policies"][n]
                    row += f"{p['hit_rate'] * 100:7.1f}% {p['bytes_per_token'] / 1e6:7.2f}MB/t".rjust(20)
                print(row)
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        print()


if __name__ == "__main__":
    main()
