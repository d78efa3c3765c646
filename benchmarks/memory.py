"""Peak GPU memory and time of the memory mechanisms (issue #12), full size, random weights in the real layouts.

    python benchmarks/memory.py --out "$OUT"                 # one H200, ~2-4 min; --dit 7B to skip 14B
    python benchmarks/memory.py --tiny --out /tmp/mem        # CPU, tiny shapes: every code path, no numbers

Rows, printed and written to OUT/memory.json after each one (a timeout keeps what was measured):
- cuda_context: GPU memory a fresh process holds after CUDA init + one cuBLAS and one cuDNN call, outside the
  caching allocator (what every stage process costs before any weight);
- h2d_bandwidth: pinned (cudaHostRegister, as the offloader uses) and pageable host->device copies, and D2H;
- decode/*: diffusers `AutoencoderKLCosmos` (default config = CV8x8x8) decode of a [1,16,16,88,160] latent, plain
  vs `ChunkedDecoder` (temporal chunks with causal context; optional per-frame mid attention), with the chunked
  output's deviation from the plain one (max |diff| on [-1,1], max |diff| and PSNR of the uint8 frames);
  decode/*-bmm: the same with the mid block's spatial attention computed as NVIDIA's decoder.jit does (scores
  materialised with bmm + softmax) instead of diffusers' SDPA, i.e. the peak of the module we actually serve;
- dit/{7B,14B}/*: one guided evaluation (cond + uncond pass) at 121x704x1280 with weights resident, block-streamed
  (`BlockStreamer`, 2 slots; first call and a warm call with the slots kept) and offloaded per call (`Offloader`:
  the whole model uploaded inside the call), with x0 compared to the resident x0;
- dit/{size}/compiled-*: the speed mode's compiled blocks resident, then block-streamed (the DiT stage under
  `--dit_offload blocks`): time, peak, x0 against the compiled resident x0, and whether streaming recompiled;
- t5/*: the T5-11B encoder (fp32, 512 tokens) resident, block-streamed and offloaded per call;
- table: the server's peak (sum over stage processes: contexts + resident weights + the running stage's peak) for
  each offload setting next to the original's published column, and the transfer time each setting adds per request.
  Stages not measured here (LlamaGuard, the 12B upsampler, SigLIP/RetinaFace) enter with their bf16/fp32 weight
  bytes from parameter counts and an activation allowance, flagged "est".

Peaks are the caching allocator's (`max_memory_allocated`, and `max_memory_reserved` = what the process holds);
the GPU memory of a stage process is its CUDA context plus its reserved memory.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gc
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

GB = 1e9
GIB = 2**30
LATENT_FULL = (1, 16, 16, 88, 160)  # 121 x 704 x 1280
LATENT_TINY = (1, 16, 2, 4, 6)
STEPS = 35  # guided evaluations per request (one DiT-step call each)
T5_TOKENS = 512

# The original's published peaks (GB, 7B / 14B Text2World, 121x704x1280), cumulative offload flags.
ORIGINAL = {
    "upsampler": (74.0, ">80"),
    "+guardrails": (57.1, 70.5),
    "+t5": (38.5, 51.9),
    "+tokenizer": (38.3, 51.7),
    "+dit": (24.4, 39.0),
}

# Stages not measured here: weight bytes from parameter counts (dtype as loaded), activation allowance (est).
LLAMAGUARD_7B_PARAMS = 6_738_415_616  # Llama-2-7b (LoRA adapter excluded: a few MB)
MISTRAL_NEMO_12B_PARAMS = 12_247_782_400  # 40 x 272.6 M + 2 x 671 M (embeddings, separate lm_head)
SIGLIP_SO400M_PARAMS = 877_960_000  # SiglipModel (image + text towers, loaded whole in fp32)
RETINAFACE_R50_PARAMS = 27_293_600
ESTIMATED = {
    # stage: (weight bytes, activation allowance bytes, note)
    "text_guardrail": (2 * LLAMAGUARD_7B_PARAMS, 0.5 * GB, "LlamaGuard-7b bf16; prompt + <=100 new tokens"),
    "prompt_upsampler": (2 * MISTRAL_NEMO_12B_PARAMS, 1.0 * GB, "Mistral-NeMo-12B bf16; <=1024 tokens KV"),
    "video_guardrail": (4 * (SIGLIP_SO400M_PARAMS + RETINAFACE_R50_PARAMS), 1.5 * GB,
                        "SigLIP-so400m + RetinaFace fp32, one frame per batch"),
}


# -- output -----------------------------------------------------------------------------------------------------

class Report:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.out.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        self.meta: dict[str, Any] = {}
        self.table: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        print(" | ".join(f"{k}={_fmt(v)}" for k, v in row.items()), flush=True)
        self.write()

    def write(self) -> None:
        data = {"meta": self.meta, "rows": self.rows, "table": self.table}
        tmp = self.out / "memory.json.tmp"
        tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
        tmp.replace(self.out / "memory.json")

    def get(self, name: str) -> dict[str, Any] | None:
        return next((r for r in self.rows if r.get("row") == name), None)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# -- measurement helpers ----------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def measure(device: torch.device, fn: Callable[[], Any]) -> tuple[Any, dict[str, float | None]]:
    """Run fn once: its result, wall seconds, and GB allocated before/after and at peak (None on CPU)."""
    sync(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device) / GB if cuda else None
    start = time.perf_counter()
    out = fn()
    sync(device)
    seconds = time.perf_counter() - start
    stats: dict[str, float | None] = {"s": round(seconds, 4), "alloc_before_gb": _r(before)}
    if cuda:
        stats |= {
            "alloc_after_gb": _r(torch.cuda.memory_allocated(device) / GB),
            "peak_alloc_gb": _r(torch.cuda.max_memory_allocated(device) / GB),
            "peak_reserved_gb": _r(torch.cuda.max_memory_reserved(device) / GB),
        }
    return out, stats


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """As `frames_to_uint8` (truncating), over every batch item and frame."""
    return (((1.0 + video.float()).clamp(0, 2) / 2) * 255).to(torch.uint8)


def deviation(ref: torch.Tensor, out: torch.Tensor) -> dict[str, Any]:
    if ref.shape != out.shape:
        return {"shape_mismatch": f"{tuple(ref.shape)} vs {tuple(out.shape)}"}
    a, b = ref.float(), out.float()
    finite = torch.isfinite(a) & torch.isfinite(b)
    ua, ub = to_uint8(ref).float(), to_uint8(out).float()
    mse = (ua - ub).pow(2).mean().item()
    return {
        "bit_equal": bits_equal(ref, out),
        "max_abs": _r((a - b)[finite].abs().max().item() if finite.any() else float("nan"), 6),
        "uint8_max_abs": int((ua - ub).abs().max().item()),
        "uint8_frac_diff": _r((ua != ub).float().mean().item(), 6),
        "psnr_db": None if mse == 0 else _r(10 * math.log10(255**2 / mse), 2),
    }


# -- rows -------------------------------------------------------------------------------------------------------

_CONTEXT_CHILD = """
import json, sys, torch
d = torch.device('cuda')
a = torch.randn(256, 256, device=d); (a @ a).sum().item()
x = torch.randn(1, 8, 4, 16, 16, device=d, dtype=torch.bfloat16)
w = torch.randn(8, 8, 1, 3, 3, device=d, dtype=torch.bfloat16)
torch.nn.functional.conv3d(x, w).sum().item()
torch.cuda.synchronize(); del a, x, w; torch.cuda.empty_cache()
print(json.dumps({'reserved': torch.cuda.memory_reserved(), 'torch': torch.__version__}), flush=True)
sys.stdin.readline()
"""


def row_context(report: Report, device: torch.device) -> None:
    if device.type != "cuda":
        report.add({"row": "cuda_context", "skipped": "no CUDA"})
        return
    free_memory(device)
    free_before, total = torch.cuda.mem_get_info(device)
    child = subprocess.Popen([sys.executable, "-c", _CONTEXT_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=dict(os.environ))
    try:
        assert child.stdout is not None and child.stdin is not None
        info = json.loads(child.stdout.readline())
        free_after, _ = torch.cuda.mem_get_info(device)
        child.stdin.write("\n")
        child.stdin.flush()
    finally:
        child.wait(timeout=60)
    held = free_before - free_after
    report.add({"row": "cuda_context", "process_gb": _r(held / GB), "context_gb": _r((held - info["reserved"]) / GB),
                "child_reserved_gb": _r(info["reserved"] / GB), "gpu_total_gb": _r(total / GB),
                "module_loading": os.environ.get("CUDA_MODULE_LOADING", "(default: LAZY)")})


def row_bandwidth(report: Report, device: torch.device, nbytes: int) -> None:
    from cosmos_triton.models.offload import HostBuffer

    host = HostBuffer(nbytes, pin=device.type == "cuda")
    host.tensor.fill_(1)
    host.lock()
    dst = torch.empty(nbytes, dtype=torch.uint8, device=device)
    pageable = torch.ones(nbytes, dtype=torch.uint8)

    def rate(fn: Callable[[], Any], reps: int = 5) -> float:
        fn()
        sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        sync(device)
        return nbytes * reps / (time.perf_counter() - start) / GB

    h2d = rate(lambda: dst.copy_(host.tensor, non_blocking=True))
    h2d_pageable = rate(lambda: dst.copy_(pageable), reps=2)
    d2h = rate(lambda: host.tensor.copy_(dst, non_blocking=True))
    report.add({"row": "h2d_bandwidth", "bytes": nbytes, "pinned": host.pinned, "h2d_pinned_gbps": _r(h2d, 2),
                "h2d_pageable_gbps": _r(h2d_pageable, 2), "d2h_pinned_gbps": _r(d2h, 2)})


def build_vae(tiny: bool) -> Any:  # diffusers' AutoencoderKLCosmos
    from diffusers import AutoencoderKLCosmos

    if tiny:
        from export.small_tokenizer import build_small_vae

        return build_small_vae(0)
    torch.manual_seed(0)
    vae = AutoencoderKLCosmos()  # default config = CV8x8x8 (diffusers' docstring); random init
    return torch.nn.Module.to(vae, torch.bfloat16).eval().requires_grad_(False)


class OriginalSpatialAttention:
    """NVIDIA's `CausalAttnBlock` arithmetic on diffusers' attention module: per-frame scores materialised with bmm,
    scaled, softmaxed, bmm with v (what the shipped decoder.jit computes; diffusers calls SDPA instead)."""

    def __call__(self, attn: Any, hidden_states: torch.Tensor,
                 attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        del attention_mask  # spatial attention: none
        b, c, t, h, w = hidden_states.shape
        x = attn.norm(hidden_states)

        def time2batch(y: torch.Tensor) -> torch.Tensor:
            return y.permute(0, 2, 1, 3, 4).reshape(b * t, c, h * w)

        q, k, v = time2batch(attn.to_q(x)), time2batch(attn.to_k(x)), time2batch(attn.to_v(x))
        scores = torch.bmm(q.permute(0, 2, 1), k) * (c**-0.5)
        scores = torch.softmax(scores, dim=2)
        out = torch.bmm(v, scores.permute(0, 2, 1)).reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)
        return attn.to_out[0](out) + hidden_states


def row_decode(report: Report, device: torch.device, tiny: bool, variants: list[tuple[int, int]],
               attention: str = "sdpa") -> None:
    from cosmos_triton.models.chunked_decode import ChunkedDecoder

    vae = build_vae(tiny)
    vae.encoder = None  # decode only
    if attention == "bmm":
        for module in vae.decoder.mid_block.attentions:
            module.processor = OriginalSpatialAttention()
    vae.to(device)
    weights = sum(p.numel() * p.element_size() for p in vae.parameters()) / GB
    g = torch.Generator(device="cpu").manual_seed(0)
    z = torch.randn(LATENT_TINY if tiny else LATENT_FULL, generator=g).to(device, torch.bfloat16)
    tag = "" if attention == "sdpa" else f"-{attention}"

    def plain() -> torch.Tensor:
        with torch.no_grad():
            return vae.decode(z).sample

    plain()  # warm-up (kernel selection)
    ref, stats = measure(device, plain)
    report.add({"row": f"decode/plain{tag}", "attention": attention, "latent": list(z.shape),
                "weights_gb": _r(weights), **stats})
    ref_cpu = ref.cpu()
    del ref
    free_memory(device)
    for chunk, frames in variants:
        decoder = ChunkedDecoder(vae, chunk_frames=chunk, attention_frames=frames)
        decoder(z)
        free_memory(device)
        out, stats = measure(device, functools.partial(decoder, z))
        dev = deviation(ref_cpu, out.cpu())
        del out
        report.add({"row": f"decode/chunked-{chunk}" + (f"-attn{frames}" if frames else "") + tag,
                    "attention": attention, "chunk_frames": chunk, "attention_frames": frames, **stats, **dev})
        free_memory(device)


def init_random_(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights like a trained model's scale: norms ~1, position tables 0.02, linears fan-in scaled."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                value = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
                p.copy_(value if name.endswith("weight") else value - 1.0)
            elif "pos_emb" in name:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                seed_p = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
                gp = torch.Generator(device=p.device).manual_seed(seed_p)
                p.normal_(0.0, fan_in**-0.5, generator=gp)


def dit_arch(size: str, tiny: bool):
    from cosmos_triton.models.checkpoints import DIT_PRESETS

    if tiny:
        from export.small_dit import SMALL_T2W

        return dataclasses.replace(SMALL_T2W, num_blocks=6 if size == "7B" else 5)
    return DIT_PRESETS[f"Cosmos-1.0-Diffusion-{size}-Text2World"]


def random_dit(size: str, tiny: bool, device: torch.device) -> tuple[Any, Any, tuple[int, ...]]:
    """(model, architecture, latent shape) of a DiT with random weights in the real layout."""
    from cosmos_triton.models.dit import build_model

    arch = dit_arch(size, tiny)
    model = build_model(arch, None, device=device)
    init_random_(model)
    return model, arch, LATENT_TINY if tiny else LATENT_FULL


def guided_step(net: Any, latent: tuple[int, ...], device: torch.device) -> Callable[[], torch.Tensor]:
    """One guided evaluation at sigma 80 on fixed random inputs (the same for every variant)."""
    from cosmos_triton.diffusion.guidance import guided_x0

    g = torch.Generator(device="cpu").manual_seed(1)
    x = (80.0 * torch.randn(latent, generator=g)).to(device)
    sigma = torch.tensor([80.0], device=device)
    cond = torch.randn(1, 512, 1024, generator=g).to(device, torch.bfloat16)
    uncond = torch.randn(1, 512, 1024, generator=g).to(device, torch.bfloat16)
    return lambda: guided_x0(net, x, sigma, cond, uncond, 7.0, 24.0)


def row_dit(report: Report, device: torch.device, size: str, tiny: bool, warm: bool) -> None:
    from cosmos_triton.models.block_stream import BlockStreamer
    from cosmos_triton.models.dit import CosmosDiT
    from cosmos_triton.models.offload import Offloader

    emulate = device.type != "cuda"
    start = time.perf_counter()
    model, arch, latent = random_dit(size, tiny, device)
    build_s = time.perf_counter() - start
    step = guided_step(CosmosDiT(model, arch), latent, device)
    prefix = f"dit/{size}"
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / GB
    if warm:
        step()
    ref, stats = measure(device, step)
    report.add({"row": f"{prefix}/resident", "blocks": arch.num_blocks, "weights_gb": _r(weights),
                "build_s": _r(build_s, 2), **stats, "activations_gb": _r((stats.get("peak_alloc_gb") or 0)
                                                                          - (stats["alloc_before_gb"] or 0))})
    ref_cpu = ref.cpu()
    del ref
    free_memory(device)

    start = time.perf_counter()
    streamer = BlockStreamer(model, list(model.transformer_blocks), device, emulate=emulate)
    setup_s = time.perf_counter() - start
    free_memory(device)

    def streamed(keep: bool, streamer: BlockStreamer = streamer) -> torch.Tensor:
        with streamer.on_device(keep=keep):
            return step()

    out, stats = measure(device, functools.partial(streamed, True))
    base = {"slot_gb": _r(streamer.slot_bytes / GB), "rest_gb": _r(streamer.rest.host_bytes / GB),
            "engaged_gb": _r(streamer.resident_bytes_engaged / GB),
            "h2d_per_pass_gb": _r(streamer.bytes_per_pass / GB), "setup_s": _r(setup_s, 2)}
    report.add({"row": f"{prefix}/blocks-first", **base, **stats, **_equal(ref_cpu, out)})
    del out
    out, stats = measure(device, functools.partial(streamed, False))  # warm: slots already hold blocks 0 and 1
    report.add({"row": f"{prefix}/blocks-warm", **stats, **_equal(ref_cpu, out),
                "resident_after_gb": _r(streamer.resident_bytes() / GB)})
    del out
    streamer.detach()
    del streamed, streamer  # its host buffers go once the offloader below has repacked the weights
    free_memory(device)

    start = time.perf_counter()
    offloader = Offloader(model, device=device, emulate=emulate)
    setup_s = time.perf_counter() - start
    free_memory(device)

    def offloaded(offloader: Offloader = offloader) -> torch.Tensor:
        with offloader.on_device():
            return step()

    out, stats = measure(device, offloaded)
    report.add({"row": f"{prefix}/stage-offload", "host_gb": _r(offloader.host_bytes / GB),
                "pinned": offloader.pinned, "setup_s": _r(setup_s, 2), **stats, **_equal(ref_cpu, out),
                "resident_after_gb": _r(offloader.resident_bytes() / GB)})
    del out
    _, stats = measure(device, offloader.prefetch)  # the upload alone (synchronised by measure)
    report.add({"row": f"{prefix}/upload", "bytes_gb": _r(offloader.host_bytes / GB), "s": stats["s"],
                "gbps": _r(offloader.host_bytes / GB / max(stats["s"] or 1e-9, 1e-9), 2)})
    offloader.release()


def row_dit_compiled(report: Report, device: torch.device, sizes: list[str], tiny: bool, left_s: float) -> None:
    """The DiT stage's setting under `--dit_offload blocks`: the speed mode's compiled blocks (Inductor on a GPU,
    aot_eager on CPU) with the blocks streamed, against the same compiled blocks resident; the first of `sizes`."""
    from torch._dynamo.utils import counters

    from cosmos_triton.models.block_stream import BlockStreamer
    from cosmos_triton.models.dit import CosmosDiT
    from cosmos_triton.models.dit_speed import DiTSpeed

    cuda = device.type == "cuda"
    size = sizes[0] if sizes else "7B"
    if left_s < (100 if cuda else 10):  # 7B on an H200: ~90 s (build, compile, four guided evaluations)
        report.add({"row": f"dit/{size}/compiled", "skipped": f"budget: {left_s:.0f} s left"})
        return
    model, arch, latent = random_dit(size, tiny, device)
    speed = DiTSpeed(compile=True, cache=None, compile_backend="inductor" if cuda else "aot_eager")
    net = speed.apply(CosmosDiT(model, arch))
    step = guided_step(net, latent, device)
    prefix = f"dit/{size}/compiled"
    counters.clear()
    warm = speed.warm_up(net, [latent[1:]])
    ref, stats = measure(device, step)
    report.add({"row": f"{prefix}-resident", "compile_first_call_s": warm["first_call_s"][0],
                "unique_graphs": counters["stats"]["unique_graphs"], **stats})
    ref_cpu = ref.cpu()
    del ref
    free_memory(device)
    streamer = BlockStreamer(model, list(model.transformer_blocks), device, emulate=not cuda)
    free_memory(device)

    def streamed(keep: bool, streamer: BlockStreamer = streamer) -> torch.Tensor:
        with streamer.on_device(keep=keep):
            return step()

    graphs = counters["stats"]["unique_graphs"]
    out, stats = measure(device, functools.partial(streamed, True))
    report.add({"row": f"{prefix}-blocks-first", **stats, **_equal(ref_cpu, out)})
    del out
    out, stats = measure(device, functools.partial(streamed, False))
    report.add({"row": f"{prefix}-blocks-warm", **stats, **_equal(ref_cpu, out),
                "new_graphs_when_streamed": counters["stats"]["unique_graphs"] - graphs,
                "recompiles": sum(counters["recompiles"].values())})
    del out
    streamer.detach()
    free_memory(device)


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality (NaN == NaN when the bits match)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return bool(torch.equal(a.contiguous().view(ints), b.contiguous().view(ints)))


def _equal(ref_cpu: torch.Tensor, out: torch.Tensor) -> dict[str, Any]:
    out = out.cpu()
    diff = (ref_cpu.float() - out.float()).abs()
    return {"equal_resident": bits_equal(ref_cpu, out),
            "max_abs_vs_resident": _r(diff[torch.isfinite(diff)].max().item() if diff.numel() else 0.0, 6),
            "nonfinite": int((~torch.isfinite(out.float())).sum())}


def t5_config(tiny: bool):
    from transformers import T5Config

    if tiny:
        return T5Config(vocab_size=256, d_model=32, d_kv=8, d_ff=64, num_layers=4, num_heads=4,
                        feed_forward_proj="relu", is_encoder_decoder=False, use_cache=False)
    return T5Config(vocab_size=32128, d_model=1024, d_kv=128, d_ff=65536, num_layers=24, num_heads=128,
                    relative_attention_num_buckets=32, feed_forward_proj="relu", is_encoder_decoder=False,
                    use_cache=False)  # google-t5/t5-11b


def row_t5(report: Report, device: torch.device, tiny: bool) -> None:
    from transformers import T5EncoderModel

    from cosmos_triton.models.block_stream import BlockStreamer
    from cosmos_triton.models.offload import Offloader
    from cosmos_triton.models.stage_offload import largest_block_list

    emulate = device.type != "cuda"
    config = t5_config(tiny)
    with torch.device("meta"):
        model = T5EncoderModel(config)
    model = model.to_empty(device=device).float().eval().requires_grad_(False)
    init_random_(model)
    g = torch.Generator(device="cpu").manual_seed(2)
    ids = torch.randint(0, config.vocab_size, (1, T5_TOKENS), generator=g).to(device)
    mask = torch.zeros(1, T5_TOKENS, dtype=torch.long, device=device)
    mask[:, :77] = 1

    def encode(model: torch.nn.Module = model) -> torch.Tensor:
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask).last_hidden_state

    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / GB
    encode()
    ref, stats = measure(device, encode)
    report.add({"row": "t5/resident", "weights_gb": _r(weights), **stats})
    ref_cpu = ref.cpu()
    del ref
    free_memory(device)
    blocks = list(largest_block_list(model))
    streamer = BlockStreamer(model, blocks, device, emulate=emulate)
    free_memory(device)

    def streamed(streamer: BlockStreamer = streamer) -> torch.Tensor:
        with streamer.on_device():
            return encode()

    out, stats = measure(device, streamed)
    report.add({"row": "t5/blocks", "slot_gb": _r(streamer.slot_bytes / GB),
                "engaged_gb": _r(streamer.resident_bytes_engaged / GB), **stats, **_equal(ref_cpu, out)})
    del out
    streamer.detach()
    del streamed, streamer
    free_memory(device)
    offloader = Offloader(model, device=device, emulate=emulate)
    free_memory(device)

    def offloaded(offloader: Offloader = offloader) -> torch.Tensor:
        with offloader.on_device():
            return encode()

    out, stats = measure(device, offloaded)
    report.add({"row": "t5/stage-offload", "host_gb": _r(offloader.host_bytes / GB), **stats,
                **_equal(ref_cpu, out)})


# -- the server table -------------------------------------------------------------------------------------------

@dataclasses.dataclass
class StageFigures:
    """GB and seconds for one stage process. `weights`: resident bytes; `activations`: its call's peak above the
    weights; `streamed_engaged`/`streamed_activations`: the same when block-streamed (slots + rest); `uploads`:
    weight uploads per request when offloaded per stage (back-to-back calls keep the weights); `streamed_s`: time
    block streaming adds per request; `source`: "measured", "scaled" (from the 7B rows) or "est"."""

    weights: float
    activations: float
    streamed_engaged: float | None = None
    streamed_activations: float | None = None
    uploads: int = 1
    streamed_s: float = 0.0
    source: str = "est"


SETTINGS: list[tuple[str, dict[str, str]]] = [
    ("resident", {}),
    ("upsampler", {"prompt_upsampler": "stage"}),
    ("+guardrails", {"prompt_upsampler": "stage", "text_guardrail": "stage", "video_guardrail": "stage"}),
    ("+t5", {"prompt_upsampler": "stage", "text_guardrail": "stage", "video_guardrail": "stage",
             "t5_encoder": "stage"}),
    ("+tokenizer", {"prompt_upsampler": "stage", "text_guardrail": "stage", "video_guardrail": "stage",
                    "t5_encoder": "stage", "tokenizer_decoder": "stage"}),
    ("+dit", {"prompt_upsampler": "stage", "text_guardrail": "stage", "video_guardrail": "stage",
              "t5_encoder": "stage", "tokenizer_decoder": "stage", "dit_step": "stage"}),
    ("+dit blocks, t5 blocks", {"prompt_upsampler": "stage", "text_guardrail": "stage", "video_guardrail": "stage",
                                "t5_encoder": "blocks", "tokenizer_decoder": "stage", "dit_step": "blocks"}),
    ("all blocks, upsampler off", {"prompt_upsampler": "off", "text_guardrail": "blocks", "video_guardrail": "stage",
                                   "t5_encoder": "blocks", "tokenizer_decoder": "stage", "dit_step": "blocks"}),
]
STAGES = ("text_guardrail", "prompt_upsampler", "t5_encoder", "dit_step", "tokenizer_decoder", "video_guardrail")
AEGIS_PASSES = 6  # prefill + ~5 generated tokens ("safe" / "unsafe\nO<n>") per guardrail call (est)
LLAMAGUARD_STREAMED_GB = 2 * 0.2024 + 2 * 0.2621  # 2 layers (202 M bf16) + embeddings and lm_head (131 M each)


def stage_figures(report: Report, size: str, h2d_gbps: float) -> dict[str, StageFigures]:
    """Per-stage figures from the measured rows; a missing 14B DiT is scaled from the 7B rows."""
    figures = {stage: StageFigures(w / GB, a / GB) for stage, (w, a, _note) in ESTIMATED.items()}
    guard = figures["text_guardrail"]
    guard.uploads = 2  # before and after the upsampler (released in between: the upsampler runs)
    guard.streamed_engaged = LLAMAGUARD_STREAMED_GB
    guard.streamed_activations = guard.activations
    guard.streamed_s = 2 * AEGIS_PASSES * guard.weights / h2d_gbps  # transfer-bound

    resident = report.get(f"dit/{size}/resident")
    first = report.get(f"dit/{size}/blocks-first")
    warm = report.get(f"dit/{size}/blocks-warm")
    source = "measured"
    if resident is None and size == "14B":  # 14B = 36 blocks of 786 MB + 223 MB vs 28 of 512 + 145 (7B)
        resident, first, warm = (report.get(f"dit/7B/{r}") for r in ("resident", "blocks-first", "blocks-warm"))
        source = "scaled"
    if resident is not None and "weights_gb" in resident:
        weight_scale, slot_scale = (14.27 / 7.24, 1.54) if source == "scaled" else (1.0, 1.0)
        act_scale = 1.25 if source == "scaled" else 1.0  # hidden 5120 vs 4096
        dit = StageFigures(resident["weights_gb"] * weight_scale, (resident["activations_gb"] or 0.0) * act_scale,
                           source=source)
        if first is not None and warm is not None:
            dit.streamed_engaged = first["engaged_gb"] * slot_scale
            dit.streamed_activations = _above(warm, first["engaged_gb"]) * act_scale
            dit.streamed_s = STEPS * max(0.0, warm["s"] - resident["s"])
        figures["dit_step"] = dit

    t5, t5b = report.get("t5/resident"), report.get("t5/blocks")
    if t5 is not None and "weights_gb" in t5:
        figures["t5_encoder"] = StageFigures(t5["weights_gb"], _above(t5, t5.get("alloc_before_gb")),
                                             source="measured")
        if t5b is not None:
            figures["t5_encoder"].streamed_engaged = t5b["engaged_gb"]
            figures["t5_encoder"].streamed_activations = _above(t5b, t5b["engaged_gb"])
            figures["t5_encoder"].streamed_s = 2 * max(0.0, t5b["s"] - t5["s"])  # prompt + negative prompt

    plain = report.get("decode/plain-bmm") or report.get("decode/plain")  # the shipped module's arithmetic first
    bmm = plain is report.get("decode/plain-bmm") and plain is not None
    chunked = [r for r in report.rows if r.get("row", "").startswith("decode/chunked") and "s" in r
               and r["row"].endswith("-bmm") == bmm]
    if plain is not None and "weights_gb" in plain:
        w = plain["weights_gb"]
        best = min(chunked, key=lambda r: r.get("peak_alloc_gb") or 0.0) if chunked else plain
        figures["tokenizer_decoder"] = StageFigures(w, _above(best, w), source="measured")
        figures["tokenizer_decoder"].streamed_s = max(0.0, best["s"] - plain["s"])  # chunking's cost, always on
    return figures


def _above(row: dict[str, Any], base: float | None) -> float:
    """GB of a row's peak above `base` (0 without CUDA statistics)."""
    peak = row.get("peak_alloc_gb")
    return 0.0 if peak is None else max(0.0, peak - (base or 0.0))


def compose(figures: dict[str, StageFigures], context_gb: float, h2d_gbps: float, settings: dict[str, str],
            dit_step_s: float | None) -> dict[str, Any]:
    """The server's peak over the phases of one request: in the phase of stage s, every stage process holds its
    context and (if resident) its weights; s also holds its call's peak (weights or slots + activations). The
    allocator cache is emptied after each call (StageMemory), so no process keeps an earlier call's activations.
    Time added per request: per-stage uploads at the measured pinned bandwidth, without overlap (prefetch off),
    plus the measured cost of block streaming and of the chunked decode."""
    stages = [s for s in STAGES if settings.get(s) != "off"]
    missing = [s for s in stages if s not in figures]
    if missing:
        return {"missing": missing}
    mode = {s: settings.get(s, "none") for s in stages}

    def idle(s: str) -> float:
        return figures[s].weights if mode[s] == "none" else 0.0

    def running(s: str) -> float:
        f = figures[s]
        if mode[s] == "blocks" and f.streamed_engaged is not None:
            return f.streamed_engaged + (f.activations if f.streamed_activations is None else f.streamed_activations)
        return f.weights + f.activations

    phases = {s: len(stages) * context_gb + sum(idle(o) for o in stages if o != s) + running(s) for s in stages}
    worst = max(phases, key=lambda k: phases[k])
    upload_gb = sum(figures[s].weights * figures[s].uploads for s in stages if mode[s] == "stage")
    added = upload_gb / h2d_gbps + sum(figures[s].streamed_s for s in stages if mode[s] == "blocks")
    added += figures["tokenizer_decoder"].streamed_s
    request_s = None if dit_step_s is None else STEPS * dit_step_s
    return {"peak_gb": round(phases[worst], 1), "peak_phase": worst,
            "phases_gb": {k: round(v, 1) for k, v in phases.items()}, "upload_gb_per_request": round(upload_gb, 1),
            "added_s_per_request": round(added, 2),
            "added_pct_of_dit_time": None if not request_s else round(100 * added / request_s, 2),
            "sources": {s: figures[s].source for s in stages}}


def build_table(report: Report) -> None:
    context_gb = (report.get("cuda_context") or {}).get("process_gb") or 0.5
    h2d = (report.get("h2d_bandwidth") or {}).get("h2d_pinned_gbps") or 25.0
    if report.meta.get("tiny"):
        h2d = 25.0  # CPU memcpy numbers mean nothing here
    table = []
    for size in ("7B", "14B"):
        figures = stage_figures(report, size, h2d)
        resident = report.get(f"dit/{size}/resident") or report.get("dit/7B/resident") or {}
        step_s = resident.get("s")
        if size == "14B" and not report.get("dit/14B/resident") and step_s:
            step_s *= 1.7  # 7.20 s vs 4.24 s per forward (acceleration reference, H200)
        for name, settings in SETTINGS:
            original = ORIGINAL.get(name, (None, None))[0 if size == "7B" else 1]
            table.append({"model": size, "setting": name, "original_gb": original,
                          **compose(figures, context_gb, h2d, settings, step_s)})
    report.table = table
    report.write()
    print(f"\nserver peak = sum over stage processes (context {context_gb} GB each, H2D {h2d} GB/s), GB:")
    for row in table:
        print(f"  {row['model']:>3} {row['setting']:<27} ours {row.get('peak_gb')!s:>5} ({row.get('peak_phase')})"
              f"  original {row['original_gb']!s:>5}  +{row.get('added_s_per_request')} s/request"
              f" = {row.get('added_pct_of_dit_time')}% of the DiT time")


# -- main -------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/memory_bench")))
    parser.add_argument("--tiny", action="store_true", help="CPU, tiny shapes (a test of the script)")
    parser.add_argument("--dit", default=None, help="DiT sizes, in order (default 7B,14B; --tiny: 7B); 14B runs "
                        "only if the budget allows")
    parser.add_argument("--skip", default="", help="comma list of sections to skip: "
                        "context,bandwidth,decode,decode-bmm,dit,dit-compiled,t5")
    parser.add_argument("--budget-s", type=float, default=210.0, help="stop starting sections after this")
    parser.add_argument("--strict", action="store_true", help="stop at the first failing section (tests)")
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    report = Report(args.out)
    report.meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                   "torch": torch.__version__, "tiny": args.tiny, "argv": sys.argv[1:]}
    with contextlib.suppress(ImportError):
        import diffusers

        report.meta["diffusers"] = diffusers.__version__
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    t0 = time.perf_counter()

    def left() -> float:
        return args.budget_s - (time.perf_counter() - t0)

    def section(name: str, fn: Callable[[], Any]) -> None:
        """One failing section (an OOM, a missing package) is recorded and the run goes on."""
        if name in skip:
            return
        try:
            fn()
        except Exception as err:  # recorded in the report; the other sections still run
            report.add({"row": name, "error": f"{type(err).__name__}: {err}"[:500]})
            free_memory(device)
        if args.strict and report.rows and "error" in report.rows[-1]:
            raise RuntimeError(report.rows[-1]["error"])

    sizes = [x.strip() for x in (args.dit or ("7B" if args.tiny else "7B,14B")).split(",") if x.strip()]
    spent: dict[str, float] = {}

    def dit(size: str) -> None:
        if "dit" in skip:
            return
        predicted = spent.get("7B", 60.0) * (1.8 if size == "14B" else 1.0)
        if left() < predicted:
            report.add({"row": f"dit/{size}", "skipped": f"budget: {left():.0f} s left, ~{predicted:.0f} s needed"})
            return
        start = time.perf_counter()
        section(f"dit/{size}", functools.partial(row_dit, report, device, size, args.tiny, warm=size == sizes[0]))
        spent[size] = time.perf_counter() - start

    # most important first: a timeout keeps what was measured
    section("context", lambda: row_context(report, device))
    section("bandwidth", lambda: row_bandwidth(report, device, 2**24 if args.tiny else GIB))
    variants = [(4, 0), (2, 0), (4, 2)] if not args.tiny else [(1, 0), (1, 1)]
    section("decode", lambda: row_decode(report, device, args.tiny, variants))
    if sizes:
        dit(sizes[0])
    # the shipped decoder.jit's attention arithmetic (materialised scores)
    section("decode-bmm", lambda: row_decode(report, device, args.tiny, [(4, 0), (4, 2)] if not args.tiny
                                             else [(1, 1)], attention="bmm"))
    section("dit-compiled", lambda: row_dit_compiled(report, device, sizes, args.tiny, left()))
    if left() > 30:
        section("t5", lambda: row_t5(report, device, args.tiny))
    for size in sizes[1:]:
        dit(size)
    build_table(report)
    report.meta["wall_s"] = round(time.perf_counter() - t0, 1)
    report.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
