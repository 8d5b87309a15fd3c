#!/usr/bin/env bash
# GPU readiness in one prepared script (<= 10 min on one GPU; ~2 min on an H200): the CUDA paths
# against CPU float64 on a small grid, then seed-batch and paired-step throughput at widths 2048
# and 8192 (benchmarks/gpu_check.py). Run from the repository root, weakcorr importable:
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# Writes OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.log; exits 1 if a float64 check fails.
set -uo pipefail
out=${1:-${OUT:-out}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
timeout -k 20 540 "${PYTHON:-python3}" benchmarks/gpu_check.py --device "${DEVICE:-cuda}" \
    --json "$out/gpu_check.json" ${GPU_CHECK_ARGS:-} 2>&1 | tee "$out/gpu_check.log"
