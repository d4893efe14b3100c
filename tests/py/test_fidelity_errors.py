"""Error paths of the fidelity commands: exit code 1 and one `error: ...` line on stderr that names
the problem (the file, or what the text lacks)."""
import pytest

from conftest import SMOLLM2, model_path, run_strata


def expect_error(args, *words):
    proc = run_strata(*args, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1, f"exit {proc.returncode}, stderr: {err}"
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture()
def not_gguf(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not a GGUF file\n")
    return str(path)


COMMANDS = [["tokenize", "-p", "hi"], ["logits", "-p", "hi"], ["perplexity", "-f", "TEXT"]]


def with_model(command, model, text):
    return [command[0], model, *(text if a == "TEXT" else a for a in command[1:])]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_missing_model(command, tmp_path, not_gguf):
    missing = str(tmp_path / "absent.gguf")
    expect_error(with_model(command, missing, not_gguf), missing, "No such file")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_not_a_gguf(command, not_gguf):
    expect_error(with_model(command, not_gguf, not_gguf), not_gguf, "not a GGUF")


def test_missing_text_file(tmp_path):
    model = model_path(SMOLLM2)
    missing = str(tmp_path / "absent.txt")
    expect_error(["tokenize", model, "-f", missing], missing, "No such file")
    expect_error(["perplexity", model, "-f", missing], missing, "No such file")


def test_text_too_short_for_perplexity(tmp_path):
    model = model_path(SMOLLM2)
    text = tmp_path / "short.txt"
    text.write_text("Far too short a text to measure anything with.\n")
    line = expect_error(["perplexity", model, "-f", text, "-c", 128], "perplexity", "tokens")
    assert "256" in line  # what it needed: 2 * ctx


def test_tokenize_needs_text():
    model = model_path(SMOLLM2)
    expect_error(["tokenize", model], "-p", "-f")
