#!/usr/bin/env bash
# The full-size runs on one lent H200, as consecutive device calls on one warm machine (what a call writes under
# /tmp, the checkpoints and the installs, stays for the next one while the machine is warm). A call carries at most
# 64 MiB with the working tree (24.6 MB, 23 MB of it the built-in small model), so the packages the image lacks
# travel in three folders of at most ~41 MB, one per call:
#
#   call 1, carry .gpurun/c1:  bash benchmarks/fullsize/run_h200.sh prepare   # checkpoints, DiT modes, memory
#   call 2, carry .gpurun/c2:  bash benchmarks/fullsize/run_h200.sh install   # Triton and the stage packages (20 s)
#   call 3, carry .gpurun/c3:  bash benchmarks/fullsize/run_h200.sh serve     # Triton at full size, diffusers
#   then, each carrying .gpurun/c3 (or nothing: the installs stay):
#                              bash benchmarks/fullsize/run_h200.sh serve2    # offloaded servers, per stage and per block
#                              bash benchmarks/fullsize/run_h200.sh serve3    # fp8 through Triton (T2W, V2W); face filter cost
#                              bash benchmarks/fullsize/run_h200.sh serve4    # the 16 GiB setting: blocks (compiled), Text2World alone
#                              bash benchmarks/fullsize/run_h200.sh perf      # perf_analyzer, concurrency 1 and 2
#                              bash benchmarks/fullsize/run_h200.sh serve14   # 14B Text2World served, exact (writes its DiT)
#                              bash benchmarks/fullsize/run_h200.sh serve14b  # 14B Text2World, every offload by blocks
#   SKIP_MEASURED=1 ... prepare writes the checkpoints only (the DiT-mode and memory rows are in RESULTS.md).
#   (dit_modes.py's torchao row needs torchao from c2: call `install` before `prepare` to measure it.)
#
# .gpurun/c1: diffusers 0.42.1, tritonclient, python-rapidjson and numpy 1.26.4 wheels (numpy goes in last, after
# the in-process steps ran on the image's numpy 2) and small.tar.xz (checkpoints/small without its DiTs);
# .gpurun/c2: tritonserver-py312.tar.xz, torchao 0.18.0, tokenizers, peft, nltk, defusedxml, better-profanity,
# confusable_homoglyphs, imageio-ffmpeg (no binary); .gpurun/c3: transformers 5.23.0, ffmpeg.xz and perf_analyzer.xz
# with libcudart.so.12 and Debian's libb64-0d .deb (tritonclient 2.51's perf_analyzer; the image is CUDA 13).
# Every step writes its JSON into $OUT as it goes; a step that fails or runs out of time does not stop the others.
set -uo pipefail
cd "$(dirname "$0")/../.."
PHASE=${1:?prepare, install, serve, serve2, serve3, serve4, perf, serve14 or serve14b}
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
OFFLOAD_ALL="--offload_prompt_upsampler --offload_guardrail_models --offload_text_encoder_model --offload_tokenizer \
  --offload_diffusion_transformer"  # the original's five offload flags
OFFLOAD_BLOCKS="$OFFLOAD_ALL --offload_mode blocks --dit_offload blocks"  # and every offloaded stage by blocks
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"
git log -1 --format=%H >> "$OUT/device.txt" 2>/dev/null || true
if [ "$PHASE" = prepare ]; then
  source benchmarks/fullsize/gpu_setup.sh .gpurun/c1
  python3 -c "import torch, diffusers, numpy; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'numpy', numpy.__version__)" | tee -a "$OUT/device.txt"
  step checkpoints "${CKPT_LIMIT_S:-200}" python3 -m benchmarks.fullsize.checkpoints --out "$CKPT" --small checkpoints/small \
    --dits 7B-Text2World 7B-Video2World
  df -h /tmp | tail -1 >> "$OUT/device.txt"
  if [ -z "${SKIP_MEASURED:-}" ]; then
    step dit_modes 215 python3 benchmarks/dit_modes.py --out "$OUT" --budget-s 190
    step memory 160 python3 benchmarks/memory.py --out "$OUT" --budget-s 135
  fi
  source benchmarks/fullsize/gpu_setup.sh .gpurun/c1 --numpy1
elif [ "$PHASE" = install ]; then
  source benchmarks/fullsize/gpu_setup.sh .gpurun/c2
elif [ "$PHASE" = serve2 ]; then
  # the memory table measured on served processes (issue 12): each scenario is server start (~45 s), a warm-up
  # request and the measured one (~75-100 s each) and the shutdown
  source benchmarks/fullsize/gpu_setup.sh .gpurun/c3
  # shellcheck disable=SC2086
  step serve_offload 260 python3 -m benchmarks.fullsize.serve --checkpoint_dir "$CKPT" --model 7B --tasks t2w \
    --steps 2 --out "$OUT" --log_dir "$LOGS" --label offload-all -- --warm default $OFFLOAD_ALL
  # shellcheck disable=SC2086
  step serve_blocks 290 python3 -m benchmarks.fullsize.serve --checkpoint_dir "$CKPT" --model 7B --tasks t2w \
    --steps 2 --out "$OUT" --log_dir "$LOGS" --label offload-blocks -- --warm default $OFFLOAD_BLOCKS
elif [ "$PHASE" = serve3 ]; then
  source benchmarks/fullsize/gpu_setup.sh .gpurun/c3
  step serve_fp8 470 python3 -m benchmarks.fullsize.serve --checkpoint_dir "$CKPT" --model 7B --tasks t2w v2w \
    --steps 2 --out "$OUT" --log_dir "$LOGS" --label fp8 -- --warm default --dit_mode fp8
  step face_filter 60 python3 benchmarks/face_filter_cost.py --guardrail_dir "$CKPT/Cosmos-1.0-Guardrail" --out "$OUT"
elif [ "$PHASE" = serve4 ]; then
  # the 16 GiB row: every offload by blocks (the streamed DiT compiled), Text2World alone, one entry instance;
  # first the streamed compiled DiT in process (time, peak, x0 against the compiled resident one)
  source benchmarks/fullsize/gpu_setup.sh .gpurun/c3
  step memory_compiled 150 python3 benchmarks/memory.py --out "$OUT" --dit 7B --budget-s 140 \
    --skip context,bandwidth,decode,decode-bmm,dit,t5
  # shellcheck disable=SC2086
  step serve_small 290 python3 -m benchmarks.fullsize.serve --checkpoint_dir "$CKPT" --model 7B --tasks t2w \
    --steps 2 --out "$OUT" --log_dir "$LOGS" --label offload-blocks-t2w-only -- --warm default $OFFLOAD_BLOCKS \
    --entry_points text2world --entry-instances 1
elif [ "$PHASE" = perf ]; then
  # perf_analyzer at real size: one step per request (~70 s, most of it the guardrails and mp4), count windows of
  # one request, concurrency 1 then 2 (does the second request's T5/decode/guardrails/mp4 overlap the first's DiT?)
  source benchmarks/fullsize/gpu_setup.sh .gpurun/c3
  step serve_perf 560 python3 -m benchmarks.fullsize.serve --checkpoint_dir "$CKPT" --model 7B --tasks t2w \
    --steps 1 --perf_analyzer 1:2 --out "$OUT" --log_dir "$LOGS" --label perf -- --warm default
elif [ "$PHASE" = serve14 ] || [ "$PHASE" = serve14b ]; then
  # 14B Text2World alone (one entry point: no Video2World DiT needed). Its DiT (28.5 GB) does not fit the 64 GB disk
  # beside the 7B tree, so it goes to /dev/shm (128 GB of RAM) and the other components are linked from $CKPT
  # (checked on CPU with the --tiny writer: the server follows the links and loads only the Text2World models)
  source benchmarks/fullsize/gpu_setup.sh .gpurun/c3
  CKPT14=/dev/shm/ckpt14
  mkdir -p "$CKPT14"
  for f in "$CKPT"/*; do case $(basename "$f") in Cosmos-1.0-Diffusion-*) ;; *) ln -sfn "$f" "$CKPT14/" ;; esac; done
  [ -f "$CKPT14/Cosmos-1.0-Diffusion-14B-Text2World/model.pt" ] || step checkpoints14 200 python3 -m \
    benchmarks.fullsize.checkpoints --out "$CKPT14" --small checkpoints/small --dits 14B-Text2World --parts dit
  if [ "$PHASE" = serve14 ]; then
    step serve_14B 360 python3 -m benchmarks.fullsize.serve --checkpoint_dir "$CKPT14" --model 14B --tasks t2w \
      --steps 2 --out "$OUT" --log_dir "$LOGS" --label exact-t2w-only -- --warm default --entry_points text2world
  else
    # shellcheck disable=SC2086
    step serve_14B_blocks 360 python3 -m benchmarks.fullsize.serve --checkpoint_dir "$CKPT14" --model 14B --tasks t2w \
      --steps 2 --out "$OUT" --log_dir "$LOGS" --label offload-blocks-t2w-only -- --warm default $OFFLOAD_BLOCKS \
    --entry_points text2world --entry-instances 1
  fi
else
  source benchmarks/fullsize/gpu_setup.sh .gpurun/c3
  python3 -c "import torch, transformers, numpy; print('torch', torch.__version__, 'transformers', transformers.__version__, 'numpy', numpy.__version__)" | tee -a "$OUT/device.txt"
  step serve_exact 330 python3 -m benchmarks.fullsize.serve --checkpoint_dir "$CKPT" --model 7B --tasks t2w v2w \
    --steps 3 --concurrent --out "$OUT" --log_dir "$LOGS" --label exact -- --warm default
  step diffusers 150 python3 -m benchmarks.fullsize.diffusers_ref --checkpoint_dir "$CKPT" --model 7B --forwards 5 \
    --out "$OUT"
fi
tar -cJf "$OUT/logs_$PHASE.tar.xz" -C /tmp logs
echo "done at $(elapsed)s"; ls -la "$OUT"
