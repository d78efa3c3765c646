"""What a deployment serves: the checkpoint folders (the launcher's flags, the in-process pipeline's arguments).

`cosmos_triton.pipeline.catalog` turns these into per-model parameters, which the launcher renders into each
model's config.pbtxt and the in-process pipeline passes to the same stage classes: one source for both.
Standard library only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_CHECKPOINT_DIR = "checkpoints"
DEFAULT_DIT_DIR = "Cosmos-1.0-Diffusion-7B-Text2World"
DEFAULT_V2W_DIT_DIR = "Cosmos-1.0-Diffusion-7B-Video2World"
DEFAULT_TOKENIZER_DIR = "Cosmos-1.0-Tokenizer-CV8x8x8"
DEFAULT_T5_DIR = "google-t5/t5-11b"
DEFAULT_GUARDRAIL_DIR = "Cosmos-1.0-Guardrail"
DEFAULT_T2W_UPSAMPLER_DIR = "Cosmos-1.0-Prompt-Upsampler-12B-Text2World"
DEFAULT_V2W_UPSAMPLER_DIR = "Pixtral-12B"


@dataclass(frozen=True)
class ServeSettings:
    """Which checkpoints are served: `checkpoint_dir` plus one sub-folder per component (the original's layout)."""

    checkpoint_dir: str = DEFAULT_CHECKPOINT_DIR
    dit_dir: str = DEFAULT_DIT_DIR
    tokenizer_dir: str = DEFAULT_TOKENIZER_DIR
    t5_dir: str = DEFAULT_T5_DIR
    guardrail_dir: str = DEFAULT_GUARDRAIL_DIR
    v2w_dit_dir: str = DEFAULT_V2W_DIT_DIR
    t2w_upsampler_dir: str = DEFAULT_T2W_UPSAMPLER_DIR
    v2w_upsampler_dir: str = DEFAULT_V2W_UPSAMPLER_DIR
    # entry points to serve ("text2world", "video2world"); empty: each one whose DiT checkpoint exists. Leaving one
    # out leaves out the stage processes only it calls (their CUDA contexts and weights)
    entry_points: tuple[str, ...] = ()

    def resolved(self, base: str | Path | None = None) -> ServeSettings:
        """Copy with `checkpoint_dir` absolute (relative to `base`, default the current directory): the server
        runs in another working directory than the caller."""
        root = Path(self.checkpoint_dir).expanduser()
        if not root.is_absolute():
            root = Path(base or os.getcwd()) / root
        return replace(self, checkpoint_dir=str(root.resolve()))

    def _path(self, folder: str) -> Path:
        return Path(self.checkpoint_dir) / folder

    @property
    def dit_path(self) -> Path:
        return self._path(self.dit_dir)

    @property
    def v2w_dit_path(self) -> Path:
        return self._path(self.v2w_dit_dir)

    @property
    def tokenizer_path(self) -> Path:
        return self._path(self.tokenizer_dir)

    @property
    def t5_path(self) -> Path:
        return self._path(self.t5_dir)

    @property
    def guardrail_path(self) -> Path:
        return self._path(self.guardrail_dir)

    @property
    def t2w_upsampler_path(self) -> Path:
        return self._path(self.t2w_upsampler_dir)

    @property
    def v2w_upsampler_path(self) -> Path:
        return self._path(self.v2w_upsampler_dir)


@dataclass(frozen=True)
class ServingOptions:
    """How the entry points take work (rendered into their config.pbtxt). A generation runs per entry instance;
    more wait in the queue up to `max_queue_size`, each at most `queue_timeout_s` (0: no limit); beyond either a
    request is refused at once with UNAVAILABLE. Priority 1 is served before the default 2.

    Replicas (docs/parallel.md): on GPUs Triton creates the entry instances and one instance of every GPU stage
    per GPU, so N GPUs hold N pipelines and run N x `entry_instances` generations at once. `gpus` names the GPUs
    (instance groups KIND_GPU on exactly those); empty: every GPU Triton sees (KIND_AUTO, or the CPU without one).
    """

    entry_instances: int = 2  # per GPU on GPUs
    max_queue_size: int = 16
    queue_timeout_s: float = 0.0
    priority_levels: int = 2
    gpus: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(set(self.gpus)) != len(self.gpus) or any(g < 0 for g in self.gpus):
            raise ValueError(f"gpus must be distinct device ids >= 0, got {self.gpus}")


# The original's offload flags (--offload_<name>) and the stages each covers.
OFFLOAD_GROUPS: dict[str, tuple[str, ...]] = {
    "prompt_upsampler": ("prompt_upsampler", "prompt_upsampler_v2w"),
    "guardrail_models": ("text_guardrail", "video_guardrail"),
    "text_encoder_model": ("t5_encoder",),
    "tokenizer": ("tokenizer_encoder", "tokenizer_decoder"),
    "diffusion_transformer": ("dit_step", "dit_step_v2w"),
}
DIT_MODES = ("exact", "fp8")


@dataclass(frozen=True)
class ModelOptions:
    """How the stages hold and run their models (per deployment; rendered into the stages' config.pbtxt).

    offload: the original's offload groups (OFFLOAD_GROUPS): their weights live in pinned host memory and move to
        the GPU for each request; `dit_offload="blocks"` streams the DiT's blocks instead (beyond the original).
    dit_mode: exact (the original's bf16 math on the fastest exact kernels) or fp8 (FP8 GEMMs in the blocks).
    attention: auto (FlashAttention-3 when installed on Hopper, else SDPA/cuDNN) | sdpa | cudnn | fa3.
    compile: regional torch.compile of the DiT blocks, warmed at load: auto (on a GPU) | on | off; `warm` says for
        which resolutions (all, or the default one: the others then run uncompiled, never compiling in a request).
    """

    offload: frozenset[str] = frozenset()
    offload_mode: str = "stage"  # how the offload groups hold their weights: per call (stage) or streamed (blocks)
    dit_offload: str = ""
    dit_mode: str = "exact"
    attention: str = "auto"
    compile: str = "auto"
    compile_cache_dir: str = ""
    warm: str = "all"  # compile at load for every accepted resolution, or only the default one ("default")
    tensorrt_plans: str = ""  # a folder of TensorRT plans (export/tensorrt_build.py): the DiT steps run them

    def offload_for(self, stage_model: str) -> str:
        if stage_model in OFFLOAD_GROUPS["diffusion_transformer"] and self.dit_offload:
            return self.dit_offload
        groups = [g for g in self.offload if stage_model in OFFLOAD_GROUPS[g]]
        return self.offload_mode if groups else "none"
