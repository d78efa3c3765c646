"""Full-size checkpoints with random weights, in the real layouts, written on the GPU host (nothing can be
downloaded there, and cost does not depend on weight values).

    python -m benchmarks.fullsize.checkpoints --out /data/ckpt --dits 7B-Text2World 7B-Video2World

Starts from the small checkpoint tree (blocklist, tokenizer files, small upsamplers) and replaces every heavy
component with its real size: the DiTs (original `model.pt` keys, bf16), the CV8x8x8 tokenizer (diffusers'
`AutoencoderKLCosmos` default configuration traced to `encoder.jit`/`decoder.jit`, its published latent
statistics as `mean_std.pt`), the T5-11B encoder (HF layout, bf16 on disk, loaded in fp32 as served), LlamaGuard-7b
with a rank-16 Aegis LoRA, SigLIP so400m-patch14-384 with the safety head, and RetinaFace-ResNet-50. `--tiny` writes
the same layouts with small dimensions, to test this script on a CPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from cosmos_triton.deployment import ServeSettings  # noqa: E402
from cosmos_triton.guardrail.common import (  # noqa: E402
    AEGIS_ADAPTER_REPO,
    AEGIS_DIR,
    FACE_BLUR_DIR,
    LLAMAGUARD_REPO,
    SIGLIP_REPO,
    VIDEO_SAFETY_DIR,
    hub_snapshot,
)
from cosmos_triton.models.checkpoints import DIT_PRESETS, DiTArchitecture, write_dit_config  # noqa: E402
from cosmos_triton.models.dit import original_key_shapes  # noqa: E402
from cosmos_triton.request.envelope import SMALL_ENVELOPE, SMALL_V2W_ENVELOPE  # noqa: E402

STD = 0.02  # random weights: small, so activations stay finite through every layer (timing is value-independent)
_NORMS = ("to_q.1.", "to_k.1.", "affline_norm")  # RMSNorm weights: ones, as trained models keep them near 1

TINY_DIT = {"model_channels": 64, "num_blocks": 2, "num_heads": 2}


def _log(message: str) -> None:
    print(f"[fullsize {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _random(shape: tuple[int, ...], device: str, generator: torch.Generator, std: float = STD) -> torch.Tensor:
    return torch.randn(shape, device=device, generator=generator, dtype=torch.float32).mul_(std).to(torch.bfloat16)


def write_dit(out: Path, name: str, device: str, tiny: bool) -> Path:
    arch = DIT_PRESETS[f"Cosmos-1.0-Diffusion-{name}"]
    if tiny:
        arch = DiTArchitecture(**{**arch.__dict__, **TINY_DIT, "max_size": (128, 240, 240)})
    folder = out / f"Cosmos-1.0-Diffusion-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator(device=device).manual_seed(0)
    state = {}
    for key, shape in original_key_shapes(arch).items():
        if any(n in key for n in _NORMS):
            state[key] = torch.ones(shape, dtype=torch.bfloat16, device=device)
        else:
            state[key] = _random(shape, device, g)
    torch.save({k: v.cpu() for k, v in state.items()}, folder / "model.pt")
    if tiny:  # the presets are for the real sizes; a tiny stand-in states its own architecture and small sizes
        envelope = SMALL_ENVELOPE if arch.model_type == "Text2World" else SMALL_V2W_ENVELOPE
        write_dit_config(folder, arch, envelope)
    _log(f"{folder.name}: {sum(v.numel() for v in state.values()) / 1e9:.2f} B parameters")
    return folder


def build_vae(tiny: bool) -> Any:  # diffusers' AutoencoderKLCosmos
    """CV8x8x8 = diffusers' AutoencoderKLCosmos default configuration; seeded, bf16 (rebuilt identically by the
    diffusers comparison)."""
    from diffusers import AutoencoderKLCosmos

    torch.manual_seed(0)
    kwargs = {"encoder_block_out_channels": (8, 8, 8, 8), "decode_block_out_channels": (8, 8, 8, 8)} if tiny else {}
    vae = AutoencoderKLCosmos(**kwargs)
    return torch.nn.Module.to(vae, torch.bfloat16).eval().requires_grad_(False)


def write_tokenizer(out: Path, tiny: bool) -> Path:
    from export.small_tokenizer import TRACE_EXAMPLE_SHAPE, _JitDecoder, _JitEncoder, _strip_debug_info, _trace

    folder = out / ServeSettings().tokenizer_dir
    folder.mkdir(parents=True, exist_ok=True)
    vae = build_vae(tiny)
    example = (torch.rand(TRACE_EXAMPLE_SHAPE) * 2 - 1).to(torch.bfloat16)
    encoder = _trace(_JitEncoder(vae).eval(), example)
    decoder = _trace(_JitDecoder(vae).eval(), encoder(example)[0])
    for name, module in (("encoder.jit", encoder), ("decoder.jit", decoder)):
        torch.jit.save(module, str(folder / name))
        _strip_debug_info(folder / name)
    config = vae.config
    mean = torch.tensor(config.latents_mean, dtype=torch.float32)
    std = torch.tensor(config.latents_std, dtype=torch.float32)
    torch.save((mean, std), folder / "mean_std.pt")
    _log(f"tokenizer: {sum(p.numel() for p in vae.parameters()) / 1e6:.0f} M parameters")
    return folder


def _save_hf(model: Any, folder: Path) -> None:
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="5GB")
    for weights in folder.glob("*.safetensors"):
        weights.chmod(0o644)


def _write_random_hf(folder: Path, build: Callable[[], torch.nn.Module], device: str, dtype: torch.dtype) -> Any:
    """Build the model on the meta device, give it random weights, and save it in place of `folder`'s weights."""
    with torch.device("meta"):
        model = build()
    model = _materialise(model, device, dtype)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    _save_hf(model, folder)
    return model


def _materialise(model: torch.nn.Module, device: str, dtype: torch.dtype) -> Any:
    """Weights of a meta-built model made real on `device` in `dtype`, random N(0, STD) (norms: ones)."""
    model = model.to_empty(device=device).to(dtype)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1 and ("norm" in name or "layer_norm" in name):
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, device=device, generator=g) * STD)
        for name, buffer in model.named_buffers():
            if buffer.is_floating_point():
                buffer.zero_()
            if "position_ids" in name:
                buffer.copy_(torch.arange(buffer.shape[-1], device=device).expand_as(buffer))
    return model


def write_t5(out: Path, device: str, tiny: bool) -> Path:
    from transformers import T5Config, T5EncoderModel

    folder = out / ServeSettings().t5_dir
    config = json.loads((folder / "config.json").read_text())  # the small T5's tokenizer stays; ids < 32128
    if not tiny:  # google-t5/t5-11b
        config |= {"d_model": 1024, "d_kv": 128, "d_ff": 65536, "num_layers": 24, "num_decoder_layers": 24,
                   "num_heads": 128, "vocab_size": 32128, "feed_forward_proj": "relu"}
    t5_config = T5Config(**{k: v for k, v in config.items() if not k.startswith("_")})
    model = _write_random_hf(folder, lambda: T5EncoderModel(t5_config), device, torch.bfloat16)
    _log(f"T5 encoder: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters")
    return folder


def write_aegis(guardrail: Path, device: str, tiny: bool) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    base = hub_snapshot(guardrail / AEGIS_DIR, LLAMAGUARD_REPO)
    adapter = hub_snapshot(guardrail / AEGIS_DIR, AEGIS_ADAPTER_REPO)
    small = json.loads((base / "config.json").read_text())
    if not tiny:  # meta-llama/LlamaGuard-7b = Llama-2-7B; head_dim derives from the width (the small one states 2)
        small.pop("head_dim", None)
        small |= {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
                  "num_key_value_heads": 32, "vocab_size": 32000}
    config = LlamaConfig(**small)
    model = _write_random_hf(base, lambda: LlamaForCausalLM(config), device, torch.bfloat16)
    targets = json.loads((adapter / "adapter_config.json").read_text())["target_modules"]
    lora = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets, task_type="CAUSAL_LM"))
    for weights in adapter.glob("*.safetensors"):
        weights.unlink()
    lora.save_pretrained(adapter, safe_serialization=True, save_embedding_layers=False)
    (adapter / "README.md").unlink(missing_ok=True)
    _log(f"LlamaGuard: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters + LoRA r16")


def write_video_safety(guardrail: Path, device: str, tiny: bool) -> None:
    from transformers import SiglipConfig, SiglipModel

    from cosmos_triton.guardrail.video_safety import CHECKPOINT_FILE
    from export.small_video_safety import build_classifier

    snapshot = hub_snapshot(guardrail / VIDEO_SAFETY_DIR, SIGLIP_REPO)
    small: Any = SiglipConfig.from_pretrained(snapshot)
    text, vision = small.text_config.to_dict(), small.vision_config.to_dict()
    if not tiny:  # google/siglip-so400m-patch14-384
        common = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16}
        vision |= common | {"image_size": 384, "patch_size": 14}
        text |= common | {"vocab_size": 32000, "max_position_embeddings": 64, "projection_size": 1152}
    config: Any = SiglipConfig(text_config=text, vision_config=vision)
    model = _write_random_hf(snapshot, lambda: SiglipModel(config), device, torch.float32)
    if not tiny:  # the processor resizes to the model's input size
        processor = json.loads((snapshot / "preprocessor_config.json").read_text())
        processor["size"] = {"height": 384, "width": 384}
        (snapshot / "preprocessor_config.json").write_text(json.dumps(processor, indent=2, sort_keys=True) + "\n")
    head = build_classifier(config.vision_config.hidden_size, seed=0)  # votes "Safe": the video passes
    torch.save({"model": head.state_dict()}, guardrail / VIDEO_SAFETY_DIR / CHECKPOINT_FILE)
    _log(f"SigLIP: {sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters")


def write_face_blur(guardrail: Path, tiny: bool) -> None:
    from cosmos_triton.guardrail.face_blur import CHECKPOINT_NAME
    from cosmos_triton.guardrail.retinaface import RetinaFace, RetinaFaceDims
    from export.small_face_blur import SMALL_DIMS

    torch.manual_seed(0)
    model = RetinaFace(SMALL_DIMS if tiny else RetinaFaceDims())
    torch.save(model.state_dict(), guardrail / FACE_BLUR_DIR / CHECKPOINT_NAME)
    _log(f"RetinaFace: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")


def write_fullsize(out: Path, small: Path, dits: list[str], device: str, tiny: bool = False,
                   parts: tuple[str, ...] = ("dit", "tokenizer", "t5", "guardrail")) -> Path:
    """The small tree copied to `out` (once), then the heavy components replaced by their real sizes."""
    if not (out / "google-t5").is_dir():
        shutil.copytree(small, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("Cosmos-1.0-Diffusion-*"))
    with torch.no_grad():
        if "dit" in parts:
            for name in dits:
                write_dit(out, name, device, tiny)
        if "tokenizer" in parts:
            write_tokenizer(out, tiny)
        if "t5" in parts:
            write_t5(out, device, tiny)
        if "guardrail" in parts:
            guardrail = out / ServeSettings().guardrail_dir
            write_aegis(guardrail, device, tiny)
            write_video_safety(guardrail, device, tiny)
            write_face_blur(guardrail, tiny)
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--small", type=Path, default=REPO / "checkpoints" / "small")
    parser.add_argument("--dits", nargs="*", default=["7B-Text2World", "7B-Video2World"],
                        help="preset names without the Cosmos-1.0-Diffusion- prefix")
    parser.add_argument("--parts", nargs="*", default=["dit", "tokenizer", "t5", "guardrail"])
    parser.add_argument("--tiny", action="store_true", help="small dimensions, same layouts (CPU test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    start = time.monotonic()
    write_fullsize(args.out, args.small, args.dits, args.device, args.tiny, tuple(args.parts))
    _log(f"done in {time.monotonic() - start:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
