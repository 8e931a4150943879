#!/usr/bin/env bash
# CUDA check of the diffusion editor, in one go (under 5 minutes on an H100/H200); the output is
# recorded to a log file. No download and no model files: the pipeline is Stable Diffusion 1.5's
# architecture with random weights, built in code (benchmarks/bench_diffusion.py --scale full).
#   * the editor's throughput against the raw diffusers pipeline at the same batch (InstructPix2Pix,
#     512 px, 20 steps, batch 8), fp16 and fp32; target ratio >= 0.9 (--check fails on a miss);
#   * fp16 against fp32;
#   * the engine's CUDA out-of-memory back-off at a deliberately large batch (1024 faces in one call).
# Record the printed table and the card in docs/EDITORS.md ("Diffusion editors").
#
#   benchmarks/gpu_diffusion.sh [log file]
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${1:-gpu_diffusion_$(date +%Y%m%d-%H%M%S).log}
export FACECF_OFFLINE=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
{
  echo "# gpu_diffusion $(date -u +%FT%TZ) git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  timeout 280 "$PY" benchmarks/bench_diffusion.py --scale full --device cuda --batch 8 --size 512 --steps 20 \
    --repeats 2 --dtypes fp16 fp32 --oom-batch 1024 --check
} 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
echo "log: $LOG (exit $status)"
exit "$status"
