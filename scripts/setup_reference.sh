#!/usr/bin/env bash
# llama.cpp through llama-cpp-python: only for regenerating fixtures and for benchmarks.
# The wheel is built once (about 10 minutes on 2 cores) and cached outside the repo.
set -euo pipefail
CACHE="${STRATA_CACHE:-$HOME/.cache/strata}"
python3 -c "import llama_cpp" 2>/dev/null && exit 0
mkdir -p "$CACHE/wheels"
if ! ls "$CACHE"/wheels/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1; then
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) pip wheel --no-deps llama-cpp-python==0.3.36 -w "$CACHE/wheels"
fi
pip install -q "$CACHE"/wheels/llama_cpp_python-0.3.36-*.whl numpy diskcache jinja2 typing-extensions
