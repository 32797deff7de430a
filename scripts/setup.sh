#!/usr/bin/env bash
# Set up hf_prefs on a fresh machine: PyTorch (if none is installed), the package and its extras, and the
# offline assets (GPT-2 tokenizer, SmolLM2-135M, Austen novels) in ~/.cache/hf_prefs (or $HF_PREFS_CACHE).
#   bash scripts/setup.sh          # to run the recipes
#   bash scripts/setup.sh --test   # also the test extras and Debian's chromium for the browser test
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras="offline"
if [ "${1:-}" = "--test" ]; then extras="test,offline,label"; fi

if ! "$PY" -c "import torch" 2>/dev/null; then
  # torch 2.13.0; override with HF_PREFS_TORCH_SPEC (e.g. a CUDA index URL's pin) on GPU machines.
  "$PY" -m pip install --quiet "${HF_PREFS_TORCH_SPEC:-torch==2.13.0}"
fi
"$PY" -m pip install --quiet -e ".[$extras]"

if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: install Debian's chromium for the browser test (sudo apt-get install chromium)" >&2
  fi
fi
"$PY" -m hf_prefs.cli assets fetch
