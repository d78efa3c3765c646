#!/usr/bin/env bash
# The full-size runs on one lent H200, as two consecutive device calls on one warm machine (each call carries at
# most 64 MiB, so the packages the image lacks are split in two folders; the checkpoints written by the first call
# stay on the machine's disk for the second):
#
#   call 1, carry .gpurun/c1:  bash benchmarks/fullsize/run_h200.sh prepare   # checkpoints, DiT modes, memory
#   call 2, carry .gpurun/c2:  bash benchmarks/fullsize/run_h200.sh serve     # Triton at full size, diffusers
#   or, once those are measured (RESULTS.md), the rows still missing:
#   call 1, carry .gpurun/c1:  SKIP_MEASURED=1 bash benchmarks/fullsize/run_h200.sh prepare   # checkpoints only
#   call 2, carry .gpurun/c2:  bash benchmarks/fullsize/run_h200.sh serve2    # offloaded servers, fp8 + V2W
#
# .gpurun/c1: tritonserver-py312.tar.xz, tritonclient, python-rapidjson, diffusers 0.42.1, torchao 0.18.0 wheels and
# small.tar.xz (checkpoints/small without its DiTs); .gpurun/c2: numpy 1.26.4, transformers 5.23.0, tokenizers,
# peft, nltk, defusedxml, better-profanity, confusable_homoglyphs, imageio-ffmpeg (no binary) and ffmpeg.xz.
# Every step writes its JSON into $OUT as it goes; a step that fails or runs out of time does not stop the others.
set -uo pipefail
cd "$(dirname "$0")/../.."
PHASE=${1:?prepare, serve or serve2}
OUT=${OUT:-/tmp/out}
CKPT=${CKPT:-/tmp/ckpt}
LOGS=/tmp/logs  # logs are packed into one file at the end: a call brings back at most 8 files
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
step() {  # step NAME SECONDS COMMAND...: bounded, logged, never fatal
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s, at $(elapsed)s)"
  timeout --signal=INT --kill-after=20 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  echo "=== $name exit $? at $(elapsed)s"; tail -n 4 "$LOGS/$name.log"
}
mkdir -p "$OUT" "$LOGS"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"
git log -1 --format=%H >> "$OUT/device.txt" 2>/dev/null || true
if [ "$PHASE" = prepare ]; then
  source benchmarks/fullsize/gpu_setup.sh .gpurun/c1
  python3 -c "import torch, diffusers, numpy; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'numpy', numpy.__version__)" | tee -a "$OUT/device.txt"
  step checkpoints 200 python3 -m benchmarks.fullsize.checkpoints --out "$CKPT" --small checkpoints/small \
    --dits 7B-Text2World 7B-Video2World
  df -h /tmp | tail -1 >> "$OUT/device.txt"
  if [ -z "${SKIP_MEASURED:-}" ]; then
    step dit_modes 215 python3 benchmarks/dit_modes.py --out "$OUT" --budget-s 190
    step memory 160 python3 benchmarks/memory.py --out "$OUT" --budget-s 135
  fi
elif [ "$PHASE" = serve2 ]; then
  # the memory table measured on served processes (issue 12), Video2World end to end and fp8 through Triton
  source benchmarks/fullsize/gpu_setup.sh .gpurun/c2
  OFFLOAD_ALL="--offload_prompt_upsampler --offload_guardrail_models --offload_text_encoder_model --offload_tokenizer \
    --offload_diffusion_transformer"
  # shellcheck disable=SC2086
  step serve_offload 170 python3 -m benchmarks.fullsize.serve --checkpoint_dir "$CKPT" --model 7B --tasks t2w \
    --steps 2 --out "$OUT" --log_dir "$LOGS" --label offload-all -- --warm default $OFFLOAD_ALL
  # shellcheck disable=SC2086
  step serve_blocks 170 python3 -m benchmarks.fullsize.serve --checkpoint_dir "$CKPT" --model 7B --tasks t2w \
    --steps 2 --out "$OUT" --log_dir "$LOGS" --label offload-blocks -- --warm default $OFFLOAD_ALL \
    --offload_mode blocks --dit_offload blocks
  step serve_fp8 230 python3 -m benchmarks.fullsize.serve --checkpoint_dir "$CKPT" --model 7B --tasks v2w t2w \
    --steps 2 --out "$OUT" --log_dir "$LOGS" --label fp8 -- --warm default --dit_mode fp8
else
  source benchmarks/fullsize/gpu_setup.sh .gpurun/c2
  python3 -c "import torch, transformers, numpy; print('torch', torch.__version__, 'transformers', transformers.__version__, 'numpy', numpy.__version__)" | tee -a "$OUT/device.txt"
  step serve_exact 330 python3 -m benchmarks.fullsize.serve --checkpoint_dir "$CKPT" --model 7B --tasks t2w v2w \
    --steps 3 --concurrent --out "$OUT" --log_dir "$LOGS" --label exact -- --warm default
  step diffusers 150 python3 -m benchmarks.fullsize.diffusers_ref --checkpoint_dir "$CKPT" --model 7B --forwards 5 \
    --out "$OUT"
  if [ "$(elapsed)" -lt 380 ]; then
    step serve_offload 170 python3 -m benchmarks.fullsize.serve --checkpoint_dir "$CKPT" --model 7B --tasks t2w \
      --steps 2 --out "$OUT" --log_dir "$LOGS" --label offload-all -- --warm default --offload_prompt_upsampler \
      --offload_guardrail_models --offload_text_encoder_model --offload_tokenizer --offload_diffusion_transformer
  fi
fi
tar -cJf "$OUT/logs_$PHASE.tar.xz" -C /tmp logs
echo "done at $(elapsed)s"; ls -la "$OUT"
