"""`strata template` prints exactly what Debian's python3-jinja2 renders from the model's own chat
template (expected outputs: tests/fixtures/templates/expected.json, scripts/gen_template_fixtures.py).

The real SmolLM2 GGUF carries its template; every conversation of the fixture set is rendered
through the CLI, with and without the generation prompt, and compared byte for byte. Cases where
jinja2 raises must fail with a clear error.
"""
import json
import os

import pytest

from conftest import SMOLLM2, fixtures_dir, model_path, run_strata


def _cases():
    with open(os.path.join(fixtures_dir(), "templates", "expected.json"), encoding="utf-8") as f:
        expected = json.load(f)["cases"]
    return [c for c in expected if c["template"] == "smollm2"]


def _conversations():
    with open(os.path.join(fixtures_dir(), "templates", "conversations.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("case", _cases(), ids=lambda c: f"{c['conversation']}-gen{int(c['add_generation_prompt'])}")
def test_template_matches_jinja2(case, tmp_path):
    model = model_path(SMOLLM2)
    convs = _conversations()
    conv = convs["conversations"][case["conversation"]]
    messages = tmp_path / "messages.json"
    messages.write_text(json.dumps(conv["messages"], ensure_ascii=False), encoding="utf-8")
    args = ["template", model, "--messages", messages]
    if conv.get("tools"):
        tools = tmp_path / "tools.json"
        tools.write_text(json.dumps(convs["tools"], ensure_ascii=False), encoding="utf-8")
        args += ["--tools", tools]
    if not case["add_generation_prompt"]:
        args.append("--no-generation-prompt")
    proc = run_strata(*args, check=False)
    if "error" in case:
        assert proc.returncode == 1
        assert b"error:" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        assert proc.stdout.decode("utf-8") == case["output"]


def test_template_of_a_model_without_one_is_a_clear_error(tmp_path):
    model = model_path("gemma-3-270m-q4_k_m.gguf")  # this GGUF ships no chat template
    messages = tmp_path / "m.json"
    messages.write_text('[{"role": "user", "content": "hi"}]')
    proc = run_strata("template", model, "--messages", messages, check=False)
    assert proc.returncode == 1
    assert b"template" in proc.stderr
