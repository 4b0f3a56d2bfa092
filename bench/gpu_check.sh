#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): environment, kd vs sentence-transformers' trainer, and a
# fixed-length run of the GPU recipe, into one JSON file. Usage:
#   bash bench/gpu_check.sh [OUT.json] [--dry-run] [more gpu_check.py options]
# On the device machine: bash bench/gpu_check.sh "$OUT/gpu_check.json"
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_check.json}"
[[ $# -gt 0 ]] && shift
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >&2 || true
fi
exec python bench/gpu_check.py --out "$out" "$@"
