"""Checkpoint selection shared by the launcher and the Triton models.

The launcher (`cosmos_triton.server`) cannot pass arguments to a Python-backend model directly, so it
exports these settings as environment variables of the tritonserver process (they reach `model.py`
through the Python stub's `os.environ`); each model reads them back with `ServeSettings.from_env()`.
Standard library only: imported by model.py files and the launcher before torch is needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_CHECKPOINT_DIR = "checkpoints"
DEFAULT_DIT_DIR = "Cosmos-1.0-Diffusion-7B-Text2World"
DEFAULT_TOKENIZER_DIR = "Cosmos-1.0-Tokenizer-CV8x8x8"
DEFAULT_T5_DIR = "google-t5/t5-11b"
DEFAULT_GUARDRAIL_DIR = "Cosmos-1.0-Guardrail"
DEFAULT_V2W_DIT_DIR = "Cosmos-1.0-Diffusion-7B-Video2World"
DEFAULT_T2W_UPSAMPLER_DIR = "Cosmos-1.0-Prompt-Upsampler-12B-Text2World"
DEFAULT_V2W_UPSAMPLER_DIR = "Pixtral-12B"

# ServeSettings field -> environment variable; the only place the variable names are spelled out
ENV_VARS: dict[str, str] = {
    "checkpoint_dir": "COSMOS_CHECKPOINT_DIR",
    "dit_dir": "COSMOS_DIT_DIR",
    "tokenizer_dir": "COSMOS_TOKENIZER_DIR",
    "t5_dir": "COSMOS_T5_DIR",
    "guardrail_dir": "COSMOS_GUARDRAIL_DIR",
    "v2w_dit_dir": "COSMOS_V2W_DIT_DIR",
    "t2w_upsampler_dir": "COSMOS_T2W_UPSAMPLER_DIR",
    "v2w_upsampler_dir": "COSMOS_V2W_UPSAMPLER_DIR",
}


@dataclass(frozen=True)
class ServeSettings:
    """Which checkpoints the served models load: `checkpoint_dir` plus one sub-folder per component."""

    checkpoint_dir: str = DEFAULT_CHECKPOINT_DIR
    dit_dir: str = DEFAULT_DIT_DIR
    tokenizer_dir: str = DEFAULT_TOKENIZER_DIR
    t5_dir: str = DEFAULT_T5_DIR
    guardrail_dir: str = DEFAULT_GUARDRAIL_DIR
    v2w_dit_dir: str = DEFAULT_V2W_DIT_DIR
    t2w_upsampler_dir: str = DEFAULT_T2W_UPSAMPLER_DIR
    v2w_upsampler_dir: str = DEFAULT_V2W_UPSAMPLER_DIR

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServeSettings:
        """Settings from `environ` (default `os.environ`); unset or empty variables keep the defaults."""
        env = os.environ if environ is None else environ
        values = {name: env[var] for name, var in ENV_VARS.items() if env.get(var)}
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment variables that make `from_env()` return these settings."""
        return {var: str(getattr(self, name)) for name, var in ENV_VARS.items()}

    def resolved(self, base: str | Path | None = None) -> ServeSettings:
        """Copy with `checkpoint_dir` made absolute (relative to `base`, default the current directory).

        The server runs in another working directory than the caller, so paths must be absolute before
        they are exported.
        """
        root = Path(self.checkpoint_dir).expanduser()
        if not root.is_absolute():
            root = Path(base or os.getcwd()) / root
        return replace(self, checkpoint_dir=str(root.resolve()))

    @property
    def dit_path(self) -> Path:
        return Path(self.checkpoint_dir) / self.dit_dir

    @property
    def tokenizer_path(self) -> Path:
        return Path(self.checkpoint_dir) / self.tokenizer_dir

    @property
    def t5_path(self) -> Path:
        return Path(self.checkpoint_dir) / self.t5_dir

    @property
    def v2w_dit_path(self) -> Path:
        return Path(self.checkpoint_dir) / self.v2w_dit_dir

    @property
    def t2w_upsampler_path(self) -> Path:
        return Path(self.checkpoint_dir) / self.t2w_upsampler_dir

    @property
    def v2w_upsampler_path(self) -> Path:
        return Path(self.checkpoint_dir) / self.v2w_upsampler_dir

    @property
    def guardrail_path(self) -> Path:
        return Path(self.checkpoint_dir) / self.guardrail_dir
