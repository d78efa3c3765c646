"""Cosmos-1.0-Tokenizer-CV8x8x8: TorchScript encoder/decoder plus the per-(channel, latent frame) normalisation.

See docs/MATH.md, Tokenizer and Final decode. The arithmetic mirrors the original
`BasePretrainedVideoTokenizer` / `JITVAE` pair: mean/std are stored in bf16, the normalisation runs in the dtype of
the tensor handed in (bf16 in, bf16 out), and the JIT modules always see bf16.
"""

from __future__ import annotations

from pathlib import Path

import torch

LATENT_CHANNELS = 16
SPATIAL_COMPRESSION = 8
TEMPORAL_COMPRESSION = 8
PIXEL_CHUNK_FRAMES = 121  # the tokenizer was trained on (and the original always feeds) 121-frame chunks
LATENT_CHUNK_FRAMES = 1 + (PIXEL_CHUNK_FRAMES - 1) // TEMPORAL_COMPRESSION  # 16
MAX_ENCODE_BATCH = 8  # the original's max_enc_batch_size
MAX_DECODE_BATCH = 4  # the original's max_dec_batch_size
SIGMA_DATA = 0.5
TOKENIZER_FILES = ("encoder.jit", "decoder.jit", "mean_std.pt")
WEIGHT_DTYPE = torch.bfloat16


def _chunk_count(frames: int, chunk: int, stride: int, what: str) -> int:
    """Number of `chunk`-frame chunks in `frames`; a single partial causal chunk (1 + stride*k frames) is allowed."""
    if frames > chunk:
        if frames % chunk:
            raise ValueError(f"{what}: {frames} frames is longer than one chunk but not a multiple of {chunk}")
        return frames // chunk
    if frames < 1 or (frames - 1) % stride:
        raise ValueError(f"{what}: {frames} frames is not 1 + {stride}k (k >= 0) and <= {chunk}")
    return 1


def _fold_chunks(x: torch.Tensor, n: int) -> torch.Tensor:
    """b c (n t) h w -> (b n) c t h w"""
    b, c, t, h, w = x.shape
    return x.reshape(b, c, n, t // n, h, w).permute(0, 2, 1, 3, 4, 5).reshape(b * n, c, t // n, h, w)


def _unfold_chunks(x: torch.Tensor, b: int) -> torch.Tensor:
    """(b n) c t h w -> b c (n t) h w"""
    bn, c, t, h, w = x.shape
    n = bn // b
    return x.reshape(b, n, c, t, h, w).permute(0, 2, 1, 3, 4, 5).reshape(b, c, n * t, h, w)


def _load_stat(t: torch.Tensor) -> torch.Tensor:
    """`t.view(16, -1)[:, :16]` -> [1, 16, 16, 1, 1] (channel, latent frame in chunk), bf16."""
    stat = t.view(LATENT_CHANNELS, -1)[:, :LATENT_CHUNK_FRAMES]
    if stat.shape != (LATENT_CHANNELS, LATENT_CHUNK_FRAMES):
        raise ValueError(f"mean_std.pt entry with {t.numel()} values cannot give a 16x16 table")
    return stat.to(WEIGHT_DTYPE).reshape(1, LATENT_CHANNELS, LATENT_CHUNK_FRAMES, 1, 1)


def _load_jit(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    module = torch.jit.load(str(path), map_location=device)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module.to(WEIGHT_DTYPE)  # as the original's JITVAE.load_encoder/decoder


class CosmosVideoTokenizer:
    """Continuous causal 8x8x8 video tokenizer loaded from `<dir>/{encoder.jit, decoder.jit, mean_std.pt}`."""

    spatial_compression = SPATIAL_COMPRESSION
    temporal_compression = TEMPORAL_COMPRESSION
    latent_channels = LATENT_CHANNELS
    pixel_chunk_frames = PIXEL_CHUNK_FRAMES
    latent_chunk_frames = LATENT_CHUNK_FRAMES

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        folder = Path(path)
        missing = [name for name in TOKENIZER_FILES if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"tokenizer folder {folder} lacks {', '.join(missing)} (needs {TOKENIZER_FILES})")
        self.device = torch.device(device)
        self.encoder = _load_jit(folder / "encoder.jit", self.device)
        self.decoder = _load_jit(folder / "decoder.jit", self.device)
        mean, std = torch.load(folder / "mean_std.pt", map_location=self.device, weights_only=True)
        self.latent_mean = _load_stat(mean)
        self.latent_std = _load_stat(std)

    @staticmethod
    def latent_shape(num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, t, h, w) of the latent for a [*, 3, num_frames, height, width] video."""
        n = _chunk_count(num_frames, PIXEL_CHUNK_FRAMES, TEMPORAL_COMPRESSION, "latent_shape")
        frames = n * LATENT_CHUNK_FRAMES if n > 1 else 1 + (num_frames - 1) // TEMPORAL_COMPRESSION
        return (LATENT_CHANNELS, frames, height // SPATIAL_COMPRESSION, width // SPATIAL_COMPRESSION)

    @staticmethod
    def _check_spatial(height: int, width: int) -> None:
        if height % SPATIAL_COMPRESSION or width % SPATIAL_COMPRESSION:
            raise ValueError(f"height/width {height}x{width} must be multiples of {SPATIAL_COMPRESSION}")

    def _encode_chunks(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised latents of a batch of single chunks, computed in x's dtype like the original."""
        in_dtype = x.dtype
        raw = self.encoder(x.to(WEIGHT_DTYPE))
        raw = raw[0] if isinstance(raw, tuple) else raw  # the CV8x8x8 encoder returns (latent, (0, 0))
        t = raw.shape[2]
        mean = self.latent_mean.to(in_dtype)[:, :, :t]
        std = self.latent_std.to(in_dtype)[:, :, :t]
        return (raw.to(in_dtype) - mean) / std

    def _decode_chunks(self, z: torch.Tensor) -> torch.Tensor:
        """Pixels of a batch of single latent chunks; z is already divided by sigma_data."""
        in_dtype = z.dtype
        t = z.shape[2]
        z = z * self.latent_std.to(in_dtype)[:, :, :t] + self.latent_mean.to(in_dtype)[:, :, :t]
        return self.decoder(z.to(WEIGHT_DTYPE)).to(in_dtype)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] in [-1, 1] -> normalised latent [B, 16, t, H/8, W/8] (x sigma_data), in video's dtype."""
        b, _, frames, height, width = video.shape
        n = _chunk_count(frames, PIXEL_CHUNK_FRAMES, TEMPORAL_COMPRESSION, "encode")
        self._check_spatial(height, width)
        chunks = _fold_chunks(video.to(self.device), n)
        latent = torch.cat([self._encode_chunks(g) for g in chunks.split(MAX_ENCODE_BATCH)], dim=0)
        return SIGMA_DATA * _unfold_chunks(latent, b)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised latent [B, 16, t, h, w] -> video [B, 3, 1 + 8(t-1) per chunk, 8h, 8w], in latent's dtype."""
        b, channels, frames = latent.shape[:3]
        if channels != LATENT_CHANNELS:
            raise ValueError(f"latent has {channels} channels, expected {LATENT_CHANNELS}")
        n = _chunk_count(frames, LATENT_CHUNK_FRAMES, 1, "decode")
        chunks = _fold_chunks(latent.to(self.device) / SIGMA_DATA, n)
        video = torch.cat([self._decode_chunks(g) for g in chunks.split(MAX_DECODE_BATCH)], dim=0)
        return _unfold_chunks(video, b)


def frames_to_uint8(video: torch.Tensor) -> torch.Tensor:
    """Decoded [B, 3, T, H, W] in ~[-1, 1] -> uint8 [T, H, W, 3] of batch item 0, truncating, not rounding
    (docs/MATH.md, Final decode)."""
    video = (1.0 + video).clamp(0, 2) / 2
    return (video[0].permute(1, 2, 3, 0) * 255).to(torch.uint8).contiguous()
