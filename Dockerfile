# The server on NVIDIA's Triton 2.51 image (24.10 = the tritonserver that nvidia-pytriton 0.7.0 bundles).
#
#   docker build -t cosmos-triton .
#   docker run --gpus=all --shm-size=16g -p 8000-8003:8000-8003 -v $PWD/checkpoints:/checkpoints:ro cosmos-triton
#   docker run ... cosmos-triton --checkpoint_dir /checkpoints --offload_prompt_upsampler   # launcher flags
#
# --shm-size: the Python backend moves tensors between stage processes through /dev/shm (Docker's 64 MB default
# is far too small). 8003 is the launcher's /health/live and /health/ready. Not built in CI (no Docker engine
# there); the GPU runs in benchmarks/ use the same launcher and tritonserver 2.51 from the pip wheel.
FROM nvcr.io/nvidia/tritonserver:24.10-py3

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /opt/cosmos-triton
# CUDA torch for the image's Python 3.10 first (a CPU constraint would not do here); numpy stays 1.x: the 24.10
# Python backend mis-reads BYTES tensors under numpy 2.
RUN python3 -m pip install "torch==2.9.1" "numpy<2"
COPY pyproject.toml README.md ./
COPY cosmos_triton cosmos_triton
RUN python3 -m pip install ".[server,client]"

EXPOSE 8000 8001 8002 8003
# the image's own tritonserver is on PATH: the launcher uses it with the image's backends
ENTRYPOINT ["cosmos-serve", "--address", "0.0.0.0"]
CMD ["--checkpoint_dir", "/checkpoints"]
