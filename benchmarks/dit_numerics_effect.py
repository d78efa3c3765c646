"""How much the DiT's two bf16 corrections (RoPE angles in bf16, RMSNorm rounded once) change its output, on CPU.

    python benchmarks/dit_numerics_effect.py [--blocks 4] [--latent 16 4 160] [--fps 12] [--steps 35]

"before" is diffusers' arithmetic for both (fp32 RoPE angles, RMSNorm rounded twice) with every other correction
in place, i.e. the DiT as it was before the change; "after" is the original's (the shipped model). Each row
swaps the module classes of the same model, so the weights and inputs are identical.

1. One forward of a 7B-shaped DiT (width 4096, 32 heads of 128, the 7B RoPE ratios 2/1/1) with seeded random
   weights (fan-in scaled, as the small checkpoints) and `--blocks` blocks, in bf16. The latent grid spans every
   latent frame (16) and the widest token row of 1280 px (80 tokens), and fps 12 doubles the time positions.
2. A small end-to-end Text2World sample (the built-in small checkpoints: DiT, T5, tokenizer), RES-2ab with CFG 7,
   default negative prompt, seed 1, 96x160, 121 frames: the final latent and the decoded uint8 video.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from diffusers.models.normalization import RMSNorm
from diffusers.models.transformers.transformer_cosmos import CosmosRotaryPosEmbed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package, not an installed one

from cosmos_triton.models.checkpoints import DIT_PRESETS
from cosmos_triton.models.dit import (
    CosmosDiT,
    OriginalRMSNorm,
    OriginalRotaryPosEmbed,
    build_model,
)

BF16 = torch.bfloat16
PROMPT = "The robot walks towards the camera."


def set_numerics(model: Any, rope: str, rmsnorm: str) -> None:
    """'original' or 'diffusers' arithmetic for the RoPE table and for every RMSNorm of a built model."""
    model.rope.__class__ = OriginalRotaryPosEmbed if rope == "original" else CosmosRotaryPosEmbed
    if rope == "original":
        model.rope._tables.clear()
    for module in model.modules():
        if isinstance(module, RMSNorm):
            module.__class__ = OriginalRMSNorm if rmsnorm == "original" else RMSNorm


def diff_row(label: str, a: torch.Tensor, b: torch.Tensor) -> tuple[str, ...]:
    """max |a - b|, RMS(a - b), RMS(a - b) / RMS(a), and the share of elements that differ."""
    d = a.double() - b.double()
    rms = d.square().mean().sqrt().item()
    rel = rms / a.double().square().mean().sqrt().item()
    return label, f"{d.abs().max().item():.4g}", f"{rms:.4g}", f"{rel:.3%}", f"{(d != 0).double().mean().item():.1%}"


def random_state_dict(arch, seed: int = 0) -> dict[str, torch.Tensor]:
    from export.small_dit import small_state_dict  # same recipe as the small checkpoints

    return small_state_dict(arch, seed)


def forward_effect(blocks: int, latent: tuple[int, int, int], fps: float) -> list[tuple[str, ...]]:
    arch = dataclasses.replace(DIT_PRESETS["Cosmos-1.0-Diffusion-7B-Text2World"], num_blocks=blocks)
    model = build_model(arch, random_state_dict(arch))
    net = CosmosDiT(model, arch)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, *latent, generator=g).to(BF16)
    context = torch.randn(1, 512, 1024, generator=g).to(BF16)
    c_noise = torch.tensor([0.25 * torch.log(torch.tensor(20.0)).item()], dtype=BF16)
    outputs = {}
    for rope, norm in (("diffusers", "diffusers"), ("original", "diffusers"), ("diffusers", "original"),
                       ("original", "original")):
        set_numerics(model, rope, norm)
        start = time.perf_counter()
        outputs[rope, norm] = net(x, c_noise, context, fps)
        print(f"  forward rope={rope} rmsnorm={norm}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    before = outputs["diffusers", "diffusers"]
    rows = []
    for label, key in (("RoPE angles only", ("original", "diffusers")), ("RMSNorm only", ("diffusers", "original")),
                       ("both (shipped)", ("original", "original"))):
        rows.append(diff_row(f"7B-shaped forward, {blocks} blocks: {label}", outputs[key], before))
    return rows


def sample_effect(steps: int, fps: float) -> list[tuple[str, ...]]:
    from cosmos_triton.deployment import ServeSettings
    from cosmos_triton.diffusion.guidance import guided_x0
    from cosmos_triton.diffusion.sampler import SIGMA_MAX, sample
    from cosmos_triton.models.checkpoints import latent_shape
    from cosmos_triton.models.dit import load_dit
    from cosmos_triton.models.tokenizer import CosmosVideoTokenizer, frames_to_uint8
    from cosmos_triton.pipeline.flow import seeded_normal
    from cosmos_triton.pipeline.stages import TextEncoderStage
    from cosmos_triton.request.envelope import DEFAULT_NEGATIVE_PROMPT
    from export.make_small_checkpoints import make_small_checkpoints
    from export.small_dit import SMALL_DIT_DIR

    settings = ServeSettings(checkpoint_dir=str(make_small_checkpoints()), dit_dir=SMALL_DIT_DIR)
    net = load_dit(settings.dit_path)
    tokenizer = CosmosVideoTokenizer(settings.tokenizer_path)
    t5 = TextEncoderStage({"t5_dir": str(settings.t5_path)}, "cpu")  # the served stage: bf16 embeddings
    cond, uncond = (t5(prompt=p)["embedding"] for p in (PROMPT, DEFAULT_NEGATIVE_PROMPT))
    noise = seeded_normal(latent_shape(121, 96, 160), seed=1)

    def x0_fn(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return guided_x0(net, x, sigma, cond, uncond, 7.0, fps)

    results = {}
    for numerics in ("diffusers", "original"):
        set_numerics(net.model, numerics, numerics)
        latent = sample(x0_fn, noise * SIGMA_MAX, steps)
        results[numerics] = latent, frames_to_uint8(tokenizer.decode(latent))
    (lat_b, vid_b), (lat_a, vid_a) = results["diffusers"], results["original"]
    return [diff_row(f"small T2W sample, {steps} steps, fps {fps:g}: final latent", lat_a, lat_b),
            diff_row("small T2W sample: decoded uint8 video (0-255)", vid_a, vid_b)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--latent", type=int, nargs=3, default=(16, 4, 160), metavar=("T", "H", "W"))
    parser.add_argument("--fps", type=float, default=12.0, help="fps of the 7B-shaped forward")
    parser.add_argument("--steps", type=int, default=35)
    parser.add_argument("--sample-fps", type=float, default=24.0)
    parser.add_argument("--skip-sample", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = forward_effect(args.blocks, tuple(args.latent), args.fps)
    if not args.skip_sample:
        rows += sample_effect(args.steps, args.sample_fps)
    t, h, w = args.latent
    given = sys.argv[1:] if argv is None else argv
    print("command:", shlex.join(["python", "benchmarks/dit_numerics_effect.py", *given]))
    print(f"7B-shaped forward: width 4096, 32 heads x 128, RoPE ratios 2/1/1, {args.blocks} blocks, latent "
          f"{t}x{h}x{w} ({t * (h // 2) * (w // 2)} tokens), fps {args.fps:g}, c_noise of sigma 20, random bf16 "
          f"weights/inputs, torch {torch.__version__} CPU")
    print()
    print("| what (after vs before) | max abs diff | RMS diff | RMS diff / RMS of after | elements that differ |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
