#!/usr/bin/env bash
# The GPU check of issue 20 part 2, in one command, in well under 10 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh                 # on a CUDA machine, from anywhere
#   bash benchmarks/gpu_check.sh --cpu-dry-run   # the smoke/pickle/speed parts on the CPU
#   OUT=/some/folder bash benchmarks/gpu_check.sh   # also writes $OUT/gpu_check.json
#
# Runs benchmarks/gpu_check.py (see its docstring for the sections) under a time limit,
# prints a compact report and exits non-zero when any check fails or time runs out.
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT="${GPU_CHECK_LIMIT_S:-540}"
PYTHON="${PYTHON:-python}"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available())"
args=("$@")
if [[ -n "${OUT:-}" ]]; then
    args+=(--json "$OUT/gpu_check.json")
fi
status=0
timeout --signal=INT --kill-after=20 "$LIMIT" "$PYTHON" benchmarks/gpu_check.py "${args[@]}" \
    || status=$?
if [[ $status -eq 124 ]]; then
    echo "gpu_check: stopped after ${LIMIT} s" >&2
fi
exit "$status"
