#!/usr/bin/env bash
# perf_analyzer (from the tritonclient wheel) against a running server, e.g. `make serve` in another shell.
#   bash benchmarks/perf_analyzer.sh [URL] [INPUT_JSON] [MODEL]
# It needs Debian's libb64-0d and libcudart.so.12 (PyPI nvidia-cuda-runtime-cu12) on LD_LIBRARY_PATH; this script
# fetches the latter into a cache folder on first use. The input file fixes every field (small-checkpoint sizes);
# edit height/width for real checkpoints. Latencies are per generated video.
set -euo pipefail
cd "$(dirname "$0")/.."
URL=${1:-localhost:8001}
INPUT=${2:-benchmarks/perf_analyzer/text2world.json}
MODEL=${3:-text2world}
PY=${PY:-$PWD/.venv/bin/python}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/cosmos-triton/cudart
if [ ! -f "$CACHE/nvidia/cuda_runtime/lib/libcudart.so.12" ]; then
  mkdir -p "$CACHE"
  "$PY" -m pip download -q --no-deps -d "$CACHE" nvidia-cuda-runtime-cu12
  (cd "$CACHE" && "$PY" -m zipfile -e nvidia_cuda_runtime_cu12-*.whl . >/dev/null)
fi
[ -f /usr/lib/x86_64-linux-gnu/libb64.so.0d ] || { echo "install Debian's libb64-0d first" >&2; exit 2; }
export LD_LIBRARY_PATH="$CACHE/nvidia/cuda_runtime/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# One video per request, so: concurrency 1, a few requests per window, long timeouts, stable windows of 3.
exec "$(dirname "$PY")/perf_analyzer" -m "$MODEL" -u "$URL" -i grpc --input-data "$INPUT" \
  --concurrency-range 1 --measurement-mode count_windows --measurement-request-count 3 \
  --stability-percentage 100 --max-trials 5 --percentile 95
