# The same server on NVIDIA's Triton 2.51 image (24.10 = the tritonserver bundled by nvidia-pytriton 0.7.0).
#   docker build -t cosmos-triton .
#   docker run --gpus=all --shm-size=8g -p8000:8000 -p8001:8001 -p8002:8002 \
#       -v $PWD/checkpoints:/checkpoints cosmos-triton --checkpoint_dir /checkpoints
# Not built in this repository's CI (no Docker engine there); the H100 smoke run uses the same server binary.
FROM nvcr.io/nvidia/tritonserver:24.10-py3

WORKDIR /opt/cosmos-triton
COPY pyproject.toml README.md ./
COPY cosmos_triton cosmos_triton
COPY export export
COPY client client
COPY model_repository model_repository
# The stub imports what the image's python3 imports: install into it. numpy stays 1.x: the 24.10 Python
# backend mis-reads BYTES tensors under numpy 2 (seen on the H100 image).
RUN python3 -m pip install --no-cache-dir torch==2.13.0 && \
    python3 -m pip install --no-cache-dir . && \
    python3 -m pip uninstall -y nvidia-pytriton

EXPOSE 8000 8001 8002
ENTRYPOINT ["python3", "-m", "cosmos_triton.server"]
CMD ["--checkpoint_dir", "/checkpoints"]
