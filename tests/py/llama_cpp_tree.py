"""The parts of llama.cpp's source tree the fidelity tests compare against: its test vocabularies
(models/ggml-vocab-*.gguf with their .inp/.out vectors), its chat templates (models/templates/*.jinja)
and tests/test-chat-template.cpp (more templates, inline), and src/llama-vocab.cpp (its pre-tokenizer names).

They come from the llama.cpp that llama-cpp-python 0.3.36 vendors (the reference the other tests
use), fetched at test time with `pip download` of its sdist into $STRATA_CACHE/pkgs (default
~/.cache/strata) and extracted once into $STRATA_CACHE/llama.cpp/. Never copied into the repo.
"""
import os
import subprocess
import sys
import tarfile

import pytest

SDIST_VERSION = "0.3.36"
SDIST = f"llama_cpp_python-{SDIST_VERSION}.tar.gz"
PREFIX = f"llama_cpp_python-{SDIST_VERSION}/vendor/llama.cpp/"
# Members taken from the sdist: (path prefix under llama.cpp/, its depth, folder under the cache's llama.cpp/).
WANTED = (("models/ggml-vocab-", 1, "models"), ("models/templates/", 2, "templates"),
          ("tests/test-chat-template.cpp", 1, "tests"), ("src/llama-vocab.cpp", 1, "src"))
MARKER = ".extracted-" + SDIST_VERSION + "-2"  # bumped when WANTED grows


def cache_dir():
    return os.path.expanduser(os.environ.get("STRATA_CACHE", "~/.cache/strata"))


def tree_dir():
    return os.path.join(cache_dir(), "llama.cpp")


def _download():
    pkgs = os.path.join(cache_dir(), "pkgs")
    path = os.path.join(pkgs, SDIST)
    if os.path.isfile(path):
        return path
    os.makedirs(pkgs, exist_ok=True)
    # Bounded: offline, pip gives up after one retry of 30 s rather than its configured minutes.
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                           "--retries", "1", "--timeout", "30", "-d", pkgs, f"llama-cpp-python=={SDIST_VERSION}"],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not os.path.isfile(path):
        return None
    return path


def fetch():
    """The extracted tree's folder; skips the calling test, saying why, when it cannot be had."""
    root = tree_dir()
    if os.path.isfile(os.path.join(root, MARKER)):
        return root
    try:
        sdist = _download()
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"llama.cpp tree unavailable: pip download of llama-cpp-python=={SDIST_VERSION} failed: {e}")
    if sdist is None:
        pytest.skip(f"llama.cpp tree unavailable: pip download of llama-cpp-python=={SDIST_VERSION} "
                    f"(sdist) failed; put {SDIST} into {os.path.join(cache_dir(), 'pkgs')} to run this test")
    n = 0
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            if not member.isfile() or not member.name.startswith(PREFIX):
                continue
            rel = member.name[len(PREFIX):]
            for prefix, depth, dest in WANTED:
                if rel.startswith(prefix) and rel.count("/") == depth:
                    out = os.path.join(root, dest, os.path.basename(rel))
                    os.makedirs(os.path.dirname(out), exist_ok=True)
                    with tar.extractfile(member) as src, open(out + ".tmp", "wb") as dst:
                        dst.write(src.read())
                    os.replace(out + ".tmp", out)
                    n += 1
    if n == 0:
        pytest.skip(f"llama.cpp tree unavailable: {sdist} holds none of the expected files")
    with open(os.path.join(root, MARKER), "w") as f:
        f.write(f"{n} files from {sdist}\n")
    return root


def gtest_binary(name):
    """A GoogleTest binary of the build (next to the strata binary, under tests/)."""
    from conftest import strata_bin

    path = os.path.join(os.path.dirname(strata_bin()), "tests", name)
    if not os.path.isfile(path):
        pytest.skip(f"{name} not built: {path}")
    return path
