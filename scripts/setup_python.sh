#!/usr/bin/env bash
# Python test tooling (never the product): the gguf reference package, pytest, the official
# ollama, openai and anthropic clients and langchain-openai the API tests drive the server with;
# websockets drives headless Chromium (tests/py/test_web_page.py).
set -euo pipefail
python3 -c "import gguf, numpy, pytest, ollama, openai, anthropic, langchain_openai, websockets" 2>/dev/null ||
  pip install -q "gguf==0.19.0" numpy pytest ollama openai anthropic langchain-openai websockets
