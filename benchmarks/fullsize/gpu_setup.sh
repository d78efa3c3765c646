#!/usr/bin/env bash
# Source on the GPU host (from the repository root) with the folder a device call carried:
#   source benchmarks/fullsize/gpu_setup.sh .gpurun/c1 [--numpy1]
# It installs what the image lacks (idempotent: a warm machine keeps an earlier call's installs):
#   tritonserver-py312.tar.xz  -> /tmp/site (../shared/tools/gpu-wheels builds it from the nvidia-pytriton wheel)
#   *.whl                      -> the image's Python (the Triton stub imports what that Python imports)
#   numpy-1*.whl               -> only with --numpy1 (see below)
#   small.tar.xz               -> checkpoints/small (the small tree: blocklist with WordNet, tokenizer files)
#   ffmpeg.xz                  -> /tmp/ffmpeg (imageio-ffmpeg's binary, carried apart to fit the 64 MiB limit)
#   perf_analyzer.xz, libcudart.so.12, libb64-0d_*.deb -> /tmp/pa (the tritonclient 2.51 wheel's perf_analyzer and
#                                 the two libraries it needs that the CUDA 13 image lacks; benchmarks/perf_analyzer.sh)
# Image caveats: numpy 1.x for the Triton 2.51 stub (it corrupts BYTES tensors under numpy 2); it goes in last
# (--numpy1), after the in-process work that ran on the image's numpy 2, and then the image's scikit-learn/scipy
# (built for numpy 2, imported by transformers when present) are removed.
DIR=${1:?folder}
if [ -f "$DIR/tritonserver-py312.tar.xz" ] && [ ! -x /tmp/site/pytriton/tritonserver/bin/tritonserver ]; then
  mkdir -p /tmp/site && tar -xJf "$DIR/tritonserver-py312.tar.xz" -C /tmp/site
fi
WHEELS=$(ls "$DIR"/*.whl 2>/dev/null | grep -v '/numpy-1')
# shellcheck disable=SC2086
[ -n "$WHEELS" ] && python3 -m pip install -q --no-index --no-deps --no-compile $WHEELS
if [ "${2:-}" = --numpy1 ] && ls "$DIR"/numpy-1*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile "$DIR"/numpy-1*.whl
  python3 -m pip uninstall -q -y scikit-learn scipy 2>/dev/null || true
fi
if [ -f "$DIR/small.tar.xz" ] && [ ! -d checkpoints/small/google-t5 ]; then
  mkdir -p checkpoints/small && tar -xJf "$DIR/small.tar.xz" -C checkpoints/small
fi
if [ -f "$DIR/ffmpeg.xz" ] && [ ! -x /tmp/ffmpeg ]; then
  xz -dc "$DIR/ffmpeg.xz" > /tmp/ffmpeg && chmod +x /tmp/ffmpeg
fi
if [ -f "$DIR/perf_analyzer.xz" ] && [ ! -x /tmp/pa/perf_analyzer ]; then
  mkdir -p /tmp/pa/lib /tmp/pa/deb && xz -dc "$DIR/perf_analyzer.xz" > /tmp/pa/perf_analyzer && chmod +x /tmp/pa/perf_analyzer
  cp "$DIR"/libcudart.so.12 /tmp/pa/lib/ && dpkg -x "$DIR"/libb64-0d_*.deb /tmp/pa/deb && cp /tmp/pa/deb/usr/lib/*/libb64.so* /tmp/pa/lib/
fi
[ -x /tmp/pa/perf_analyzer ] && export PERF_ANALYZER=/tmp/pa/perf_analyzer PERF_ANALYZER_LIBS=/tmp/pa/lib
[ -x /tmp/ffmpeg ] && export IMAGEIO_FFMPEG_EXE=/tmp/ffmpeg
[ -x /tmp/site/pytriton/tritonserver/bin/tritonserver ] && export COSMOS_TRITONSERVER=/tmp/site/pytriton/tritonserver/bin/tritonserver
export PYTHONUNBUFFERED=1
true
