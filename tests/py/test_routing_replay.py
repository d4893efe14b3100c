"""bench/routing_replay.py: the cache policies on hand-made traces whose optimum is known, and a
routing trace written by `strata run --trace-routing` read back."""
import importlib.util
import itertools
import math
import os

import pytest

from conftest import ROOT, run_strata

_spec = importlib.util.spec_from_file_location("routing_replay", os.path.join(ROOT, "bench", "routing_replay.py"))
rr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rr)

# The reference string of Silberschatz's Operating System Concepts (ch. 9, page replacement):
# with 3 frames, OPT (Belady, every miss cached) takes 9 faults, LRU 12.
TEXTBOOK = [7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1]


def one_layer_trace(refs, n_expert=8, k=1, expert_bytes=1000):
    """A single-layer trace, one token per forward pass routed to refs[i] (k=1) or refs[i] (tuples)."""
    requests = []
    for r in refs:
        experts = list(r) if isinstance(r, (tuple, list)) else [r]
        requests.append((0, experts, None, None, 1))
    return rr.Trace(1, n_expert, k, [expert_bytes], requests)


def misses(result):
    hits, accesses, _ = result
    return accesses - hits


def test_belady_demand_fetching_is_the_textbook_optimum():
    t = one_layer_trace(TEXTBOOK)
    assert misses(rr.replay_belady(t, 3, bypass=False, preload=False)) == 9
    assert misses(rr.replay_lru(t, 3)) == 12
    # bytes read: one expert's bytes per miss
    assert rr.replay_belady(t, 3, bypass=False, preload=False)[2] == 9 * 1000


def brute_force_min_misses(refs, slots):
    """The fewest misses any policy can have: exhaustive search over what to keep after every
    access (bypass allowed), starting from the best initial content."""
    keys = sorted(set(refs))
    best = math.inf
    # dynamic programming over cache states after each access
    states = {frozenset(c): 0 for c in itertools.combinations(keys, min(slots, len(keys)))}
    for r in refs:
        nxt = {}
        for cache, cost in states.items():
            cost2 = cost + (0 if r in cache else 1)
            pool = set(cache) | {r}
            for keep in itertools.combinations(sorted(pool), min(slots, len(pool))):
                s = frozenset(keep)
                if cost2 < nxt.get(s, math.inf):
                    nxt[s] = cost2
        states = nxt
    best = min(states.values())
    return best


@pytest.mark.parametrize("refs,slots", [
    (TEXTBOOK, 3),
    (TEXTBOOK, 2),
    ([1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5], 3),
    ([0, 1, 2, 0, 3, 1, 4, 0, 2, 5, 1, 0, 3, 2, 4], 2),
])
def test_belady_equals_the_exhaustive_optimum(refs, slots):
    t = one_layer_trace(refs)
    assert misses(rr.replay_belady(t, slots)) == brute_force_min_misses(refs, slots)


def test_no_policy_beats_belady():
    # a two-layer trace with skew and repeats; two experts a token
    refs = [(0, 1), (0, 2), (3, 1), (0, 1), (4, 5), (0, 1), (2, 3), (0, 2), (1, 5), (0, 1)] * 3
    requests = []
    for a, b in refs:
        requests.append((0, [a, b], None, None, 1))
        requests.append((1, [b, a], None, [b, a], 1))
    t = rr.Trace(2, 6, 2, [100, 200], requests)
    for slots in (2, 3, 4, 6):
        res = rr.run_policies(t, slots)
        best = res["belady"][0]
        for name, (hits, _, _) in res.items():
            if name in rr.CACHE_ONLY:  # no guesses read ahead
                assert hits <= best, (name, slots)


def test_guess_quality():
    requests = [(0, [1, 2], None, None, 1), (1, [3, 4], [3, 5], [3, 4], 1), (1, [0, 4], [1, 2], [4, 0], 1)]
    t = rr.Trace(2, 6, 2, [1, 1], requests)
    q = rr.guess_quality(t)
    assert q["early"] == {"layers_guessed": 2, "precision": 0.25, "recall": 0.25}
    assert q["refined"] == {"layers_guessed": 2, "precision": 1.0, "recall": 1.0}


def test_parse_rejects_bad_input(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text("strata-routing-trace 1\nn_layer 1 n_expert 4 n_expert_used 1\nexpert_bytes 10\nr 0 0 7\n")
    with pytest.raises(ValueError, match="bad.txt:4"):
        rr.parse(str(p))
    p.write_text("something else\n")
    with pytest.raises(ValueError, match="not a strata routing trace"):
        rr.parse(str(p))


def test_real_trace_belady_is_the_upper_bound():
    """The trained model's trace (tests/fixtures/moe/trace-chat.txt): no policy beats Belady at 10,
    25 and 50% of the experts, and the routing is far from uniform."""
    from conftest import fixtures_dir

    t = rr.parse(os.path.join(fixtures_dir(), "moe", "trace-chat.txt"))
    assert (t.n_layer, t.n_expert, t.k) == (8, 32, 4)
    total = t.n_layer * t.n_expert
    for frac in (0.1, 0.25, 0.5):
        slots = round(frac * total)
        res = rr.run_policies(t, slots)
        best = res["belady"][0]
        for name, (hits, accesses, _) in res.items():
            if name in rr.CACHE_ONLY:  # no guesses read ahead
                assert hits <= best, (name, slots)
            if name in rr.WITH_GUESSES:
                assert hits <= res["belady+guess"][0], (name, slots)
        # uniform routing would give every policy about frac; Belady does much better on real routing
        assert best / res["belady"][1] > frac + 0.15
    q = rr.guess_quality(t)
    assert q["refined"]["recall"] > 0.5 and q["early"]["precision"] > 0.5


def test_policy_parity_fixture_is_the_replayers():
    """tests/fixtures/moe/policy-parity.json (which tests/tier/expert_policy_test.cpp holds the
    engine's expert cache to) is what the replayer's lfu gives on its trace, from an empty cache."""
    import json

    from conftest import fixtures_dir

    with open(os.path.join(fixtures_dir(), "moe", "policy-parity.json")) as f:
        expected = json.load(f)
    assert expected["policy"] == "lfu" and expected["start"] == "empty"
    assert expected["decay"] == rr.LFU_DECAY
    t = rr.parse(os.path.join(fixtures_dir(), "moe", expected["trace"]))
    assert t.n_tokens == 96
    for size in expected["sizes"]:
        hits, accesses, _ = rr.replay_lfu(t, size["slots"])
        assert (hits, accesses) == (size["hits"], size["accesses"]), size["slots"]
    # the sizes span a cache barely above one token's experts to half of them
    assert [s["slots"] for s in expected["sizes"]] == [6, 26, 64, 128]


def test_lfu_model_fixture_is_the_replayers():
    """tests/fixtures/moe/lfu-model.json (which tests/tier/lfu_model_test.cpp holds the planner's
    model of the expert cache to) is what the replayer's lfu gives on the committed traces from a
    warm cache (the trace's own most used experts, as a plan from earlier statistics starts)."""
    import json

    from conftest import fixtures_dir

    with open(os.path.join(fixtures_dir(), "moe", "lfu-model.json")) as f:
        expected = json.load(f)
    assert expected["policy"] == "lfu" and expected["start"] == "hot"
    assert expected["decay"] == rr.LFU_DECAY
    for trace in expected["traces"]:
        t = rr.parse(os.path.join(fixtures_dir(), "moe", trace["trace"]))
        assert trace["k"] == t.k
        total = t.n_layer * t.n_expert
        assert [s["slots"] for s in trace["sizes"]] == [round(x * total) for x in (0.1, 0.25, 0.5)]
        for size in trace["sizes"]:
            hits, accesses, _ = rr.replay_lfu(t, size["slots"], rr.hot_list(t, size["slots"]))
            assert abs(hits / accesses - size["lfu_hit_rate"]) < 1e-12, (trace["trace"], size["slots"])


def test_engine_model_without_guesses_is_lfu():
    """replay_engine (the engine's ExpertCache and streamer protocol, slot for slot) reading
    nothing ahead is replay_lfu, on the committed traces at every size, cold and warm."""
    from conftest import fixtures_dir

    for name in ("trace-code.txt", "trace-chat.txt"):
        t = rr.parse(os.path.join(fixtures_dir(), "moe", name))
        for slots in (6, 26, 64, 128):
            for initial in ((), rr.hot_list(t, slots)):
                assert rr.replay_engine(t, slots, initial=initial)[:3] == rr.replay_lfu(t, slots, initial), (name, slots)


def test_belady_guess_on_a_hand_made_trace():
    """Two slots; layer 0 always routes to expert 0, layer 1 to 1, 2, 1, 2, 3, 1, and the
    refined guesses name 2 and 3 exactly where they are routed. MIN alone, starting with the
    experts used first (0 and 1), keeps them and misses 2, 2 and 3 (caching either would cost a
    hit of 0 or 1); with the guesses read ahead for free nothing misses."""
    seq = [1, 2, 1, 2, 3, 1]
    guess = {2: [2], 3: [3]}
    requests = []
    for e in seq:
        requests.append((0, [0], None, None, 1))
        requests.append((1, [e], None, guess.get(e), 1))
    t = rr.Trace(2, 4, 1, [10, 10], requests)
    assert rr.replay_belady(t, 2)[:2] == (12 - 3, 12)
    assert rr.replay_belady_guess(t, 2)[:2] == (12, 12)
    # from an empty cache MIN also misses the first 0 and 1
    assert rr.replay_belady(t, 2, preload=False)[0] == 12 - 5


def test_no_guessing_policy_beats_belady_guess():
    """On the committed chat trace, at 10, 25 and 50 % of the experts, neither the engine's
    lfu reading the router's guesses ahead (protected or not) nor MIN alone beats the bound."""
    from conftest import fixtures_dir

    t = rr.parse(os.path.join(fixtures_dir(), "moe", "trace-chat.txt"))
    for frac in (0.1, 0.25, 0.5):
        slots = round(frac * t.n_layer * t.n_expert)
        bound = rr.replay_belady_guess(t, slots)[0]
        assert rr.replay_belady(t, slots)[0] <= bound
        for protect in (False, True):
            assert rr.replay_engine(t, slots, guesses=True, protect=protect)[0] <= bound, (slots, protect)


def test_policy_parity_lookahead_fixture_is_the_replayers():
    """tests/fixtures/moe/policy-parity-lookahead.json (which tests/tier/expert_cache_test.cpp and
    expert_policy_test.cpp hold the engine's cache and streamer to) is what the replayer's
    lfu+lookahead gives on its trace with the trace's guesses, from an empty cache."""
    import json

    from conftest import fixtures_dir

    with open(os.path.join(fixtures_dir(), "moe", "policy-parity-lookahead.json")) as f:
        expected = json.load(f)
    assert expected["policy"] == "lfu" and expected["start"] == "empty"
    assert expected["decay"] == rr.LFU_DECAY
    assert expected["guessed_use_weight"] == rr.GUESSED_USE_WEIGHT
    assert expected["protect_guesses"] == rr.PROTECT_GUESSES
    t = rr.parse(os.path.join(fixtures_dir(), "moe", expected["trace"]))
    for size in expected["sizes"]:
        hits, accesses, _, g = rr.replay_engine(t, size["slots"], True, protect=rr.PROTECT_GUESSES,
                                                predicted_weight=rr.GUESSED_USE_WEIGHT)
        assert (hits, accesses, g["issued"]) == (size["hits"], size["accesses"], size["issued"]), size["slots"]
    assert [s["slots"] for s in expected["sizes"]] == [6, 26, 64, 128]
