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
    request is refused at once with UNAVAILABLE. Priority 1 is served before the default 2."""

    entry_instances: int = 2
    max_queue_size: int = 16
    queue_timeout_s: float = 0.0
    priority_levels: int = 2
