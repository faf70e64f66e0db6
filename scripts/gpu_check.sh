#!/usr/bin/env bash
# The GPU check (scripts/gpu_check.py's docstring says what it runs; docs/benchmarks.md how to start it on a lent GPU):
#   scripts/gpu_check.sh [--dry-run] [flags of scripts/gpu_check.py]      (make gpu-check / make gpu-check-dry)
# PYTHON picks the interpreter: the GPU machine's python3 by default (it holds torch with CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
