"""Chunked decode of the CV8x8x8 tokenizer (issue #12) on the small tokenizer: exact against the whole-clip decode.

The small `decoder.jit` is traced from diffusers' `AutoencoderKLCosmos` with the real structure (causal factorised
resnets, hybrid temporal/spatial upsampler, mid-block spatial + causal temporal attention, haar unpatcher), so the
causality argument of `chunked_decode` is tested on the same module graph the real checkpoint has.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from cosmos_triton.models.chunked_decode import (
    ChunkedDecoder,
    StreamingUnsupported,
    decoder_plan,
    enable_chunked_decode,
    temporal_reach,
)
from cosmos_triton.models.tokenizer import CosmosVideoTokenizer, frames_to_uint8


@pytest.fixture(scope="module")
def tok_dir(small_settings) -> Path:
    from cosmos_triton.models.checkpoints import TOKENIZER_DIR

    return Path(small_settings.checkpoint_dir) / TOKENIZER_DIR


@pytest.fixture(scope="module")
def decoder(tmp_path_factory) -> torch.jit.ScriptModule:
    """A seeded random-weight `decoder.jit`: the deviations below are properties of the graph, which a trained
    tokenizer can hide (the built-in one decodes mostly frame-locally, so naive chunks deviate by 2/255 only)."""
    from export.small_tokenizer import write_small_tokenizer

    return CosmosVideoTokenizer(write_small_tokenizer(tmp_path_factory.mktemp("random_tokenizer"))).decoder


def latent(frames: int, batch: int = 1, h: int = 4, w: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 16, frames, h, w, generator=g).bfloat16()


def uint8_deviation(ref: torch.Tensor, out: torch.Tensor) -> tuple[int, float]:
    a, b = ((1 + ref.float()).clamp(0, 2) / 2 * 255).to(torch.uint8), ((1 + out.float()).clamp(0, 2) / 2 * 255).to(
        torch.uint8)
    diff = (a.float() - b.float())
    mse = diff.pow(2).mean().item()
    return int(diff.abs().max()), math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def test_the_plan_reads_the_causal_structure(decoder: torch.jit.ScriptModule) -> None:
    plan = decoder_plan(decoder)
    reaches = [(s.reach, s.rate) for s in plan.stages]
    # up_blocks.0: 3 resnets; up_blocks.1: 3 resnets + temporal/spatial upsampler; up_blocks.2: 3 resnets; out conv;
    # unpatcher (4 frames per frame)
    assert reaches == [(4, 1)] * 6 + [(1, 2)] + [(4, 1)] * 3 + [(2, 1), (1, 4)]
    assert plan.temporal_rate == 8
    assert temporal_reach(torch.nn.Conv3d(2, 2, (3, 1, 1))) == 2


@pytest.mark.parametrize(("frames", "chunks"), [(1, (1,)), (2, (1,)), (5, (2, 3)), (16, (7,))])
def test_chunked_decode_is_bit_identical(decoder: torch.jit.ScriptModule, frames: int, chunks: tuple[int, ...]) -> None:
    z = latent(frames, batch=2 if frames == 5 else 1)
    with torch.no_grad():
        ref = decoder(z)
    for chunk in chunks:
        out = ChunkedDecoder(decoder, chunk_frames=chunk, attention_frames=0)(z)
        assert out.shape == ref.shape == (z.shape[0], 3, 1 + 8 * (frames - 1), 32, 48)
        assert torch.equal(out, ref), chunk


def test_eager_diffusers_model_decodes_identically() -> None:
    """The same plan on the eager `AutoencoderKLCosmos` (what the GPU benchmark runs at full size)."""
    from export.small_tokenizer import build_small_vae

    vae = build_small_vae(0)
    z = latent(5)
    with torch.no_grad():
        ref = vae.decode(z).sample
    assert torch.equal(ChunkedDecoder(vae, chunk_frames=2, attention_frames=0)(z), ref)


def test_per_frame_mid_attention_deviation_is_rounding_level(decoder: torch.jit.ScriptModule) -> None:
    """Splitting the mid block's spatial attention by frames is exact math (the attention is per frame) but on CPU
    the SDPA kernel may round differently for another batch size (it does at this size); the deviation stays at
    bf16 rounding level."""
    z = latent(5, batch=2, h=12, w=20, seed=1)
    with torch.no_grad():
        ref = decoder(z)
    out = ChunkedDecoder(decoder, chunk_frames=5, attention_frames=1)(z)
    worst, psnr = uint8_deviation(ref, out)
    assert 0 < worst <= 12 and psnr >= 40.0, (worst, psnr)


def test_independent_chunks_would_not_be_exact(decoder: torch.jit.ScriptModule) -> None:
    """Why the context is needed: decoding latent chunks on their own pads each chunk with its own first frame,
    cuts the causal temporal attention and repeats the first-frame drops (1 + 8k frames per chunk)."""
    z = latent(8, seed=2)
    with torch.no_grad():
        ref = decoder(z)
        parts = [decoder(z[:, :, :4]), decoder(z[:, :, 4:])]
    assert sum(p.shape[2] for p in parts) == ref.shape[2] - 7  # 25 + 25 frames instead of 57
    worst, _ = uint8_deviation(ref[:, :, :25], parts[0])
    assert worst == 0  # the first chunk is a causal prefix: exact
    naive = parts[1][:, :, -24:]
    worst, psnr = uint8_deviation(ref[:, :, -24:], naive)
    assert worst > 20 and psnr < 35


def test_tokenizer_uses_the_chunked_decoder(tok_dir: Path) -> None:
    tok = CosmosVideoTokenizer(tok_dir)
    z = latent(9, seed=3) * 0.5
    ref = frames_to_uint8(tok.decode(z))
    chunked = enable_chunked_decode(tok, chunk_frames=4, attention_frames=0)
    assert tok.decoder is chunked and isinstance(chunked.module, torch.jit.ScriptModule)
    assert torch.equal(frames_to_uint8(tok.decode(z)), ref)
    assert enable_chunked_decode(tok, chunk_frames=2).module is chunked.module  # re-wrapping keeps the module


def test_unknown_layouts_are_refused() -> None:
    with pytest.raises(StreamingUnsupported, match="unknown decoder layout"):
        ChunkedDecoder(torch.nn.Sequential(torch.nn.Identity()))
    with pytest.raises(ValueError, match="chunk_frames"):
        ChunkedDecoder(torch.nn.Identity(), chunk_frames=0)
