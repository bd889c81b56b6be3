#!/usr/bin/env bash
# The GPU check (docs/training.md, "GPU check"): random weights of the real architectures, nothing downloaded;
# writes one JSON of every check's pass/fail and speed. --cpu: the same steps at tiny size on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" scripts/gpu_check.py "$@"
