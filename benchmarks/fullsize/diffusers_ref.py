"""The alternative on the same weights and shapes: diffusers' Cosmos-1.0 transformer as shipped (its own padding
mask path, its fp32 RoPE, SDPA) run the way `CosmosTextToWorldPipeline` runs it (two sequential batch-1 passes
per step), diffusers' `AutoencoderKLCosmos` decode of the latent, and the T5 encoder in the pipeline's bf16.
Their pipeline itself needs NVIDIA's `cosmos_guardrail` package, which is not available, so its transformer loop
and VAE decode are timed and its end to end is extrapolated from them (stated in the output).

    python -m benchmarks.fullsize.diffusers_ref --checkpoint_dir /data/ckpt --model 7B --task t2w --forwards 6
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks.fullsize.checkpoints import build_vae  # noqa: E402
from cosmos_triton.models.checkpoints import latent_shape, read_dit_checkpoint  # noqa: E402
from cosmos_triton.models.dit import diffusers_config, to_diffusers_state_dict, unwrap_state_dict  # noqa: E402


def log(message: str) -> None:
    print(f"[diffusers {time.strftime('%H:%M:%S')}] {message}", flush=True)


def timed(fn: Any, device: str) -> tuple[Any, float]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def peak_gib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else 0.0


def _torchvision_shim() -> None:
    """diffusers resizes the padding mask with torchvision; without it (CPU test machines) a nearest resize of the
    all-zero mask stands in. The GPU image has torchvision: there diffusers runs untouched."""
    from types import SimpleNamespace

    import diffusers.models.transformers.transformer_cosmos as module

    if not hasattr(module, "transforms"):
        def resize(mask: torch.Tensor, size: list[int], interpolation: object = None) -> torch.Tensor:  # noqa: ARG001
            return torch.nn.functional.interpolate(mask, size=size, mode="nearest")

        module.transforms = SimpleNamespace(functional=SimpleNamespace(resize=resize),
                                            InterpolationMode=SimpleNamespace(NEAREST=None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_dir", required=True)
    parser.add_argument("--model", default="7B")
    parser.add_argument("--task", choices=["t2w", "v2w"], default="t2w")
    parser.add_argument("--forwards", type=int, default=6, help="transformer passes measured (after one warm-up)")
    parser.add_argument("--full_steps", type=int, default=35)
    parser.add_argument("--height", type=int, default=704)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--tiny", action="store_true", help="the tokenizer of a --tiny checkpoint tree")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from diffusers import CosmosTransformer3DModel
    from transformers import T5EncoderModel

    _torchvision_shim()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = "Text2World" if args.task == "t2w" else "Video2World"
    ckpt = read_dit_checkpoint(Path(args.checkpoint_dir) / f"Cosmos-1.0-Diffusion-{args.model}-{kind}")
    result: dict[str, Any] = {"model": args.model, "task": args.task, "what": "diffusers transformer loop + VAE "
                              "decode + T5 (its pipeline needs cosmos_guardrail, unavailable): extrapolated e2e"}
    path = args.out / f"diffusers_{args.model}-{args.task}.json"
    args.out.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        path.write_text(json.dumps(result, indent=1))

    config = diffusers_config(ckpt.architecture) | {"in_channels": ckpt.architecture.in_channels,
                                                    "concat_padding_mask": True}
    with torch.device("meta"):
        model = CosmosTransformer3DModel(**config)
    state = unwrap_state_dict(torch.load(ckpt.weights, map_location="cpu", weights_only=True, mmap=True))
    mapped = {k: v.to(device=device, dtype=torch.bfloat16) for k, v in to_diffusers_state_dict(state).items()}
    model.load_state_dict(mapped, strict=True, assign=True)
    model = model.to(device=device, dtype=torch.bfloat16).eval()  # keeps its fp32 modules as diffusers does
    del state, mapped
    c, t, h, w = latent_shape(121, args.height, args.width)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(1, c + (1 if kind == "Video2World" else 0), t, h, w, device=device, generator=g,
                    dtype=torch.bfloat16)
    context = torch.randn(1, 512, 1024, device=device, generator=g, dtype=torch.bfloat16)
    padding = torch.zeros(1, 1, args.height, args.width, device=device, dtype=torch.bfloat16)
    timestep = torch.tensor([0.5], device=device, dtype=torch.bfloat16)

    def forward() -> torch.Tensor:
        return model(x, timestep=timestep, encoder_hidden_states=context, fps=24, padding_mask=padding,
                     return_dict=False)[0]

    with torch.no_grad():
        _, first = timed(forward, device)
        times = [timed(forward, device)[1] for _ in range(args.forwards)]
    per_forward = sum(times) / len(times)
    result |= {"first_forward_s": round(first, 3), "forward_s": round(per_forward, 3),
               "forwards_measured": args.forwards, "dit_peak_gib": round(peak_gib(device), 2)}
    save()
    log(f"transformer forward {per_forward:.3f} s")
    model = None  # free the GPU memory before the next phase
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    vae: Any = build_vae(args.tiny).to(device)
    latent = torch.randn(1, 16, t, h, w, device=device, generator=g, dtype=torch.bfloat16)
    with torch.no_grad():
        _, decode_s = timed(lambda: vae.decode(latent, return_dict=False)[0], device)
    result |= {"decode_s": round(decode_s, 3), "decode_peak_gib": round(peak_gib(device), 2)}
    save()
    log(f"VAE decode {decode_s:.2f} s")
    vae = None
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    t5_dir = Path(args.checkpoint_dir) / "google-t5" / "t5-11b"
    text: Any = T5EncoderModel.from_pretrained(t5_dir, dtype=torch.bfloat16, local_files_only=True)
    text = text.to(device).eval()
    ids = torch.randint(0, text.config.vocab_size, (1, 512), device=device)
    with torch.no_grad():
        text(input_ids=ids)
        _, t5_s = timed(lambda: [text(input_ids=ids) for _ in range(2)], device)  # prompt and negative prompt
    result |= {"t5_s": round(t5_s, 3), "t5_peak_gib": round(peak_gib(device), 2)}
    evaluations = 2 * (args.full_steps + 1)
    result["dit_s_extrapolated"] = round(evaluations * per_forward, 1)
    result["e2e_s_extrapolated"] = round(t5_s + evaluations * per_forward + decode_s, 1)
    save()
    log(f"extrapolated e2e {result['e2e_s_extrapolated']} s ({evaluations} forwards)")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
