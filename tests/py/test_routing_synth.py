"""bench/routing_synth.py: synthetic routing traces carry the trained model's routing statistics
onto other shapes, in a format the replayer reads."""
import importlib.util
import os
import sys

from conftest import ROOT, fixtures_dir

sys.path.insert(0, os.path.join(ROOT, "bench"))
_spec = importlib.util.spec_from_file_location("routing_synth", os.path.join(ROOT, "bench", "routing_synth.py"))
rs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rs)
rr = rs.rr

SOURCE = os.path.join(fixtures_dir(), "moe", "trace-chat.txt")


def synth(tmp_path, shape, tokens, seed=1):
    L, E, K = shape
    path = tmp_path / f"syn-{L}-{E}-{K}-{seed}.txt"
    rs.write_trace(str(path), "syn", L, E, K, 1000, rs.generate([SOURCE], L, E, K, tokens, seed))
    return path


def test_same_shape_keeps_the_statistics(tmp_path):
    src = rs.describe(rr.parse(SOURCE))
    syn = rs.describe(rr.parse(str(synth(tmp_path, (8, 32, 4), 300))))
    assert syn["shape"] == (8, 32, 4)
    assert abs(syn["top_quarter_share"] - src["top_quarter_share"]) < 0.08
    assert abs(syn["repeat"] - src["repeat"]) < 0.06
    assert syn["transition_strength"] > 0.1  # uniform routing gives about 0
    assert syn["repeat"] > syn["repeat_by_chance"] + 0.02


def test_other_shapes_are_skewed_like_the_source_and_uniform_is_not(tmp_path):
    t = rr.parse(str(synth(tmp_path, (32, 8, 2), 150)))
    assert (t.n_layer, t.n_expert, t.k, t.n_tokens) == (32, 8, 2, 150)
    d = rs.describe(t)
    assert d["repeat"] > d["repeat_by_chance"]  # temporal locality beyond popularity
    # Belady's bound at a quarter of the experts is well above a quarter, as on the real trace
    h, a, _ = rr.replay_belady(t, 64)
    assert h / a > 0.35


def test_seeded(tmp_path):
    a = synth(tmp_path, (4, 16, 2), 50, seed=3).read_text()
    b = synth(tmp_path, (4, 16, 2), 50, seed=3).read_text()
    c = synth(tmp_path, (4, 16, 2), 50, seed=4).read_text()
    assert a == b and a != c
