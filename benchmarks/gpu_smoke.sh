#!/usr/bin/env bash
# Run on the GPU machine from the repository root, with .gpuwheels (../shared/tools/gpu-wheels, plus numpy 1.26.4)
# and checkpoints/small carried. The NGC-like image has CUDA torch and transformers; this adds the rest.
set -euo pipefail
# Several wheel folders because one carry is limited to 64 MiB; a warm machine keeps what an earlier call
# installed, so they can arrive in consecutive calls (.gpuwheels, then .gpuwheels2, then .gpuwheels3 + the run).
if [ -d .gpuwheels ]; then
  mkdir -p /tmp/site && tar -xJf .gpuwheels/tritonserver-py312.tar.xz -C /tmp/site
  python3 -m pip install -q --no-index --no-deps --no-compile .gpuwheels/*.whl
fi
# numpy stays 1.x (the 24.10 Python backend mis-reads BYTES tensors under numpy 2); the image's scikit-learn and
# scipy are built for numpy 2 and transformers/diffusers import them when present, so take them out of the way.
python3 -m pip uninstall -q -y scikit-learn scipy 2>/dev/null || true
for d in .gpuwheels2 .gpuwheels3; do
  if ls $d/*.whl >/dev/null 2>&1; then python3 -m pip install -q --no-index --no-deps --no-compile $d/*.whl; fi
done
# the small checkpoints travel compressed (their WordNet data is 35 MB as text)
if [ -f .gpuwheels3/small_ckpt.tar.xz ]; then mkdir -p checkpoints && tar -xJf .gpuwheels3/small_ckpt.tar.xz -C checkpoints; fi
[ "${INSTALL_ONLY:-0}" = 1 ] && exit 0
export COSMOS_TRITONSERVER=/tmp/site/pytriton/tritonserver/bin/tritonserver
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, transformers, diffusers, numpy; print('torch', torch.__version__, 'transformers', transformers.__version__, 'diffusers', diffusers.__version__, 'numpy', numpy.__version__)"
python3 benchmarks/gpu_smoke.py --out "${OUT:-/tmp/gpu_smoke}" --runs 3
