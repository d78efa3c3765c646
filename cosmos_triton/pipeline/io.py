"""The named inputs and outputs of every stage and entry point, as Triton sees them (one description that the
config generator, the Triton adapters and the BLS caller all read)."""

from __future__ import annotations

from dataclasses import dataclass

LATENT = (1, 16, -1, -1, -1)  # [B, C, T, H, W] of the CV8x8x8 tokenizer
CONTEXT = (1, 512, 1024)  # T5-11B: 512 tokens x d_model
FRAMES = (-1, -1, -1, 3)  # uint8 [T, H, W, 3]


@dataclass(frozen=True)
class Io:
    """One tensor. `dtype` is the Triton TYPE_* suffix. Values cross as Python objects: STRING as str (bytes when
    `binary`), a dims-(1,) tensor as a Python scalar unless `scalar` is False, every other tensor as a torch tensor
    (numpy arrays are accepted where a value is produced)."""

    name: str
    dtype: str
    dims: tuple[int, ...] = (1,)
    optional: bool = False
    binary: bool = False
    scalar: bool = True

    @property
    def is_scalar(self) -> bool:
        return self.scalar and self.dims == (1,) and self.dtype != "STRING"
