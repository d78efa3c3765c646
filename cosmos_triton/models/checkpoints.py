"""Checkpoint folders, DiT architecture presets and the request envelope each checkpoint accepts.

Numpy/stdlib only: the request-validation stage and the tests import this without torch.
The real checkpoints' own config.json is never read by NVIDIA's code (docs/MATH.md, Architecture presets), so the 7B/14B
architecture and envelope come from the presets below; our small checkpoints write theirs into config.json.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cosmos_triton.request.envelope import (
    ORIGINAL_ENVELOPE,
    ORIGINAL_V2W_ENVELOPE,
    Envelope,
)

TOKENIZER_DIR = "Cosmos-1.0-Tokenizer-CV8x8x8"
T5_DIR = "google-t5/t5-11b"
DIT_WEIGHTS = "model.pt"
CONFIG_JSON = "config.json"

@dataclass(frozen=True)
class DiTArchitecture:
    """The GeneralDIT hyperparameters that change between checkpoints (docs/MATH.md, Architecture presets)."""

    model_type: str  # "Text2World" or "Video2World"
    model_channels: int
    num_blocks: int
    num_heads: int
    rope_scale: tuple[float, float, float]  # (t, h, w) NTK extrapolation ratios
    latent_channels: int = 16
    crossattn_emb_channels: int = 1024
    adaln_lora_dim: int = 256
    mlp_ratio: float = 4.0
    max_size: tuple[int, int, int] = (128, 240, 240)  # latent (T, H, W) caps of the position tables
    patch_size: tuple[int, int, int] = (1, 2, 2)

    @property
    def head_dim(self) -> int:
        return self.model_channels // self.num_heads

    @property
    def in_channels(self) -> int:
        """Latent channels plus the Video2World condition-mask channel (the padding mask is added on top)."""
        return self.latent_channels + (1 if self.model_type == "Video2World" else 0)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiTArchitecture:
        d = dict(d)
        for key in ("rope_scale", "max_size", "patch_size"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


_7B: dict[str, Any] = dict(model_channels=4096, num_blocks=28, num_heads=32, rope_scale=(2.0, 1.0, 1.0))
_14B: dict[str, Any] = dict(model_channels=5120, num_blocks=36, num_heads=40, rope_scale=(2.0, 2.0, 2.0))
DIT_PRESETS: dict[str, DiTArchitecture] = {
    f"Cosmos-1.0-Diffusion-{size}-{kind}": DiTArchitecture(model_type=kind, **arch)
    for size, arch in (("7B", _7B), ("14B", _14B))
    for kind in ("Text2World", "Video2World")
}


@dataclass(frozen=True)
class DiTCheckpoint:
    path: Path
    architecture: DiTArchitecture
    envelope: Envelope

    @property
    def weights(self) -> Path:
        return self.path / DIT_WEIGHTS


def latent_shape(num_video_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """Latent (C, T, H, W) of the CV8x8x8 tokenizer: 16 channels, causal 8x temporal, 8x spatial
    (docs/MATH.md, Tokenizer)."""
    return (16, 1 + (num_video_frames - 1) // 8, height // 8, width // 8)


def read_dit_checkpoint(path: Path | str) -> DiTCheckpoint:
    """Architecture and envelope from config.json when it states them, else the preset named by the folder."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"DiT checkpoint folder not found: {path}")
    config: dict[str, Any] = {}
    if (path / CONFIG_JSON).is_file():
        config = json.loads((path / CONFIG_JSON).read_text())
    if "architecture" in config:
        arch = DiTArchitecture.from_dict(config["architecture"])
    elif path.name in DIT_PRESETS:
        arch = DIT_PRESETS[path.name]
    else:
        raise ValueError(
            f"{path / CONFIG_JSON} has no 'architecture' and the folder name is not one of {sorted(DIT_PRESETS)}"
        )
    preset_envelope = ORIGINAL_ENVELOPE if arch.model_type == "Text2World" else ORIGINAL_V2W_ENVELOPE
    envelope = Envelope.from_dict(config["envelope"]) if "envelope" in config else preset_envelope
    return DiTCheckpoint(path=path, architecture=arch, envelope=envelope)


def write_dit_config(path: Path, arch: DiTArchitecture, envelope: Envelope) -> None:
    config = {"model_type": arch.model_type, "architecture": asdict(arch), "envelope": envelope.to_dict()}
    (path / CONFIG_JSON).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


