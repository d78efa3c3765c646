"""A small DiT checkpoint in the original Cosmos-1.0 key layout (`net.` prefix, `blocks.block{i}.blocks.{0,1,2}`).

The weights are seeded random tensors with fan-in scaling, written by key from the same key/shape specification
the loader checks against (docs/MATH.md, Checkpoint keys), so the real loader serves it unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cosmos_triton.models.checkpoints import DIT_WEIGHTS, DiTArchitecture, write_dit_config
from cosmos_triton.models.dit import original_key_shapes
from cosmos_triton.request.envelope import Envelope

SMALL_T2W = DiTArchitecture(
    model_type="Text2World", model_channels=64, num_blocks=2, num_heads=2, rope_scale=(2.0, 1.0, 1.0),
    adaln_lora_dim=16,
)
SMALL_V2W = DiTArchitecture(
    model_type="Video2World", model_channels=64, num_blocks=2, num_heads=2, rope_scale=(2.0, 1.0, 1.0),
    adaln_lora_dim=16,
)
SMALL_DIT_DIR = "Cosmos-1.0-Diffusion-Small-Text2World"
SMALL_V2W_DIT_DIR = "Cosmos-1.0-Diffusion-Small-Video2World"


def small_state_dict(arch: DiTArchitecture, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in sorted(original_key_shapes(arch).items()):
        if key.endswith("pos_embedder.seq"):
            state[key] = torch.arange(shape[0], dtype=torch.float32)
        elif len(shape) == 1:  # norm weights and logvar features: around 1, not all-equal
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif "pos_emb" in key:
            state[key] = 0.02 * torch.randn(shape, generator=gen)
        else:  # Linear weights [out, in]: fan-in scaled so activations keep unit scale through the blocks
            state[key] = torch.randn(shape, generator=gen) / shape[1] ** 0.5
    return {k: v.to(torch.bfloat16) for k, v in state.items()}


def write_small_dit(out_dir: Path, envelope: Envelope, arch: DiTArchitecture = SMALL_T2W, seed: int = 0) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(small_state_dict(arch, seed), out_dir / DIT_WEIGHTS)
    write_dit_config(out_dir, arch, envelope)
    return out_dir
