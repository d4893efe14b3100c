#!/usr/bin/env bash
# Python test tooling (never the product): the gguf reference package and pytest.
set -euo pipefail
python3 -c "import gguf, numpy, pytest" 2>/dev/null || pip install -q "gguf==0.19.0" numpy pytest
