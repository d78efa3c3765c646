#!/usr/bin/env bash
# perf_analyzer against a running server (`make serve` in another shell), in one command: `make perf`.
#   bash benchmarks/perf_analyzer.sh [MODEL] [URL] [CONCURRENCY]     MODEL: text2world (default) or video2world
# perf_analyzer comes with the tritonclient wheel; this script installs what it needs when missing: Debian's
# libb64-0d (apt) and libcudart.so.12 (the nvidia-cuda-runtime-cu12 wheel, unpacked into ~/.cache). Inputs fix every
# field for the small checkpoints (benchmarks/perf_analyzer/<model>.json; edit height/width for real ones).
# One video per request: count-based windows of REQUESTS (3) requests, at most TRIALS (5) windows per concurrency
# (stable when within STABILITY (100) % of each other), long timeouts. Streaming twins: add --streaming. INPUT
# overrides the input file (e.g. real-size fields), COMPOSING the stage models reported; PERF_ANALYZER and
# PERF_ANALYZER_LIBS name a carried binary and its libraries (a host without internet: fullsize/gpu_setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-text2world}
URL=${2:-localhost:8001}
CONCURRENCY=${3:-1}
PY=${PY:-$PWD/.venv/bin/python}
INPUT=${INPUT:-benchmarks/perf_analyzer/$MODEL.json}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/cosmos-triton/cudart
LIBS=${PERF_ANALYZER_LIBS:-$CACHE/nvidia/cuda_runtime/lib}
if [ -z "${PERF_ANALYZER_LIBS:-}" ] && [ ! -f /usr/lib/x86_64-linux-gnu/libb64.so.0d ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends libb64-0d
fi
if [ ! -f "$LIBS/libcudart.so.12" ]; then
  mkdir -p "$CACHE"
  "$PY" -m pip download -q --no-deps -d "$CACHE" nvidia-cuda-runtime-cu12
  (cd "$CACHE" && "$PY" -m zipfile -e nvidia_cuda_runtime_cu12-*.whl . >/dev/null)
fi
# the stage models the entry point calls; each must show a finished call in every window (perf_analyzer stops with
# "failed to find the requested model version" otherwise): COMPOSING without the upsampler when the input disables
# it, and none with one-request windows (the last stage's statistics can land after the window closes)
case "$MODEL" in
  text2world*) DEFAULT=text_guardrail,prompt_upsampler,t5_encoder,dit_step,tokenizer_decoder,video_guardrail,mp4_encoder ;;
  *) DEFAULT=prompt_upsampler_v2w,text_guardrail,t5_encoder,tokenizer_encoder,dit_step_v2w,tokenizer_decoder,video_guardrail,mp4_encoder ;;
esac
COMPOSING=${COMPOSING-$DEFAULT}  # set but empty: no per-stage report
export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "${PERF_ANALYZER:-$(dirname "$PY")/perf_analyzer}" -m "$MODEL" -u "$URL" -i grpc --input-data "$INPUT" \
  --concurrency-range "$CONCURRENCY" --measurement-mode count_windows --measurement-request-count "${REQUESTS:-3}" \
  --stability-percentage "${STABILITY:-100}" --max-trials "${TRIALS:-5}" --percentile 95 \
  ${COMPOSING:+--bls-composing-models "$COMPOSING"} "${@:4}"
