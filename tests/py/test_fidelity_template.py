"""`strata template` prints exactly what Debian's python3-jinja2 renders from the model's own chat
template (expected outputs: tests/fixtures/templates/expected.json, scripts/gen_template_fixtures.py).

The real SmolLM2 GGUF carries its template; every conversation of the fixture set is rendered
through the CLI, with and without the generation prompt, and compared byte for byte. Cases where
jinja2 raises must fail with a clear error.
"""
import json
import os
import subprocess
import sys

import pytest

import llama_cpp_tree
from conftest import ROOT, SMOLLM2, fixtures_dir, model_path, report, run_strata


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


# --- every chat template of llama.cpp's tree, against Debian's python3-jinja2 ---

def reference_python():
    """Debian's python3 with its python3-jinja2 when there is one, else this interpreter's jinja2."""
    for python in ("/usr/bin/python3", sys.executable):
        if os.path.exists(python) and subprocess.run([python, "-c", "import jinja2"], capture_output=True).returncode == 0:
            return python
    pytest.skip("no python with jinja2 to render the reference")


def test_llama_cpp_templates(tmp_path):
    """models/templates/*.jinja and test-chat-template.cpp's templates x conversations.json x
    add_generation_prompt: Strata's output equals jinja2's byte for byte, or both raise."""
    tree = llama_cpp_tree.fetch()
    binary = llama_cpp_tree.gtest_binary("test_template")
    reference = tmp_path / "template-reference.json"
    python = reference_python()
    gen = subprocess.run([python, os.path.join(ROOT, "scripts", "gen_template_fixtures.py"), "--tree", tree,
                          "--out", str(reference)], capture_output=True, text=True, timeout=600)
    assert gen.returncode == 0, gen.stderr
    env = dict(os.environ, STRATA_TEMPLATE_REFERENCE=str(reference), STRATA_FIXTURES=fixtures_dir())
    proc = subprocess.run([binary, "--gtest_filter=LlamaCppTemplates.*"], env=env, capture_output=True, text=True,
                          timeout=600)
    lines = [line[len("[ template ] "):] for line in proc.stdout.splitlines() if line.startswith("[ template ] ")]
    report(f"templates ({python}): {gen.stdout.strip()}")
    for line in lines:
        if not line.startswith(tuple("0123456789")) and "pass" not in line:
            report("template " + line)
    if lines:
        report("template " + lines[-1])
    assert proc.returncode == 0, proc.stdout[-4000:]
