"""Tokenizer wrapper (normalisation, chunking), the uint8 conversion and the small tokenizer writer.
See docs/MATH.md, Tokenizer and Final decode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cosmos_triton.models.tokenizer import CosmosVideoTokenizer, frames_to_uint8
from export.small_tokenizer import _cpu_bf16_pooling, _JitDecoder, _JitEncoder, build_small_vae, write_small_tokenizer

FILES = ("encoder.jit", "decoder.jit", "mean_std.pt")


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_tokenizer(tmp_path_factory.mktemp("small_tokenizer"), seed=0)


@pytest.fixture(scope="module")
def tok(tok_dir: Path) -> CosmosVideoTokenizer:
    return CosmosVideoTokenizer(tok_dir, "cpu")


@pytest.fixture(scope="module")
def raw(tok_dir: Path) -> dict:
    """The files read directly, bypassing the wrapper."""
    mean, std = torch.load(tok_dir / "mean_std.pt", weights_only=True)
    return {
        "enc": torch.jit.load(str(tok_dir / "encoder.jit")),
        "dec": torch.jit.load(str(tok_dir / "decoder.jit")),
        "mean": mean.flatten().tolist(),
        "std": std.flatten().tolist(),
    }


def _video(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) * 2 - 1).to(torch.bfloat16)


def _stat(values: list[float], channel: int, latent_frame: int) -> torch.Tensor:
    """Table entry for (channel, frame within the chunk): 256 channel-major values, 16 per channel."""
    return torch.tensor(values[channel * 16 + latent_frame % 16], dtype=torch.bfloat16)


def test_encoder_jit_returns_tuple_with_latent_first(raw: dict) -> None:
    out = raw["enc"](_video(1, 3, 17, 32, 48))
    assert isinstance(out, tuple) and len(out) == 2
    assert out[0].shape == (1, 16, 3, 4, 6) and out[0].dtype == torch.bfloat16
    assert all(torch.equal(t, torch.tensor([0.0])) for t in out[1])


@pytest.mark.parametrize(("b", "t", "h", "w"), [(1, 1, 16, 16), (2, 17, 32, 48), (1, 121, 48, 80), (1, 242, 16, 16)])
def test_shapes(tok: CosmosVideoTokenizer, b: int, t: int, h: int, w: int) -> None:
    latent = tok.encode(_video(b, 3, t, h, w))
    chunks = max(1, t // 121)
    want_t = 16 * chunks if chunks > 1 else 1 + (t - 1) // 8
    assert tok.latent_shape(t, h, w) == (16, want_t, h // 8, w // 8)
    assert latent.shape == (b, *tok.latent_shape(t, h, w))
    assert tok.decode(latent).shape == (b, 3, t, h, w)


def test_table_has_distinct_first_frame(raw: dict) -> None:
    # otherwise the per-frame checks below could not tell frame 0 from the others
    assert all(raw["mean"][c * 16] != raw["mean"][c * 16 + 1] for c in range(16))
    assert all(raw["std"][c * 16] != raw["std"][c * 16 + 1] for c in range(16))
    assert raw["mean"] != raw["std"]


def test_encode_normalises_per_channel_and_latent_frame(tok: CosmosVideoTokenizer, raw: dict) -> None:
    video = _video(1, 3, 242, 16, 16)  # two chunks: latent frame 16 must use column 0 again
    got = tok.encode(video)
    # chunks go through the JIT as one batch, like the wrapper does (bf16 CPU convs depend on the batch size)
    z = raw["enc"](torch.cat(video.split(121, dim=2), dim=0))[0]
    z = torch.cat(z.split(1, dim=0), dim=2)
    want = torch.empty_like(z)
    for c in range(16):
        for f in range(z.shape[2]):
            want[:, c, f] = (z[:, c, f] - _stat(raw["mean"], c, f)) / _stat(raw["std"], c, f) * 0.5
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, want)


def test_decode_denormalises_per_channel_and_latent_frame(tok: CosmosVideoTokenizer, raw: dict) -> None:
    g = torch.Generator().manual_seed(1)
    latent = (0.5 * torch.randn(1, 16, 32, 2, 2, generator=g)).to(torch.bfloat16)
    denorm = torch.empty_like(latent)
    for c in range(16):
        for f in range(latent.shape[2]):
            denorm[:, c, f] = latent[:, c, f] / 0.5 * _stat(raw["std"], c, f) + _stat(raw["mean"], c, f)
    want = raw["dec"](torch.cat(denorm.split(16, dim=2), dim=0))
    want = torch.cat(want.split(1, dim=0), dim=2)
    assert torch.equal(tok.decode(latent), want)


def test_encode_then_denormalise_gives_raw_latent(tok: CosmosVideoTokenizer, raw: dict) -> None:
    video = _video(1, 3, 17, 32, 32, seed=3)
    z = raw["enc"](video)[0].float()
    latent = tok.encode(video).float()
    mean = torch.tensor(raw["mean"]).view(16, 16)[:, :3].reshape(1, 16, 3, 1, 1)
    std = torch.tensor(raw["std"]).view(16, 16)[:, :3].reshape(1, 16, 3, 1, 1)
    torch.testing.assert_close(latent / 0.5 * std + mean, z, atol=0.02, rtol=0.02)  # bf16 rounding only


class _Recorder:
    """Stands in for a JIT module and records the batch sizes it was called with."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module, self.batches = module, []

    def __call__(self, x: torch.Tensor):
        self.batches.append(x.shape[0])
        return self.module(x)


def test_chunks_are_batched_in_groups_of_8_and_4(tok_dir: Path) -> None:
    tok = CosmosVideoTokenizer(tok_dir)
    tok.encoder, tok.decoder = _Recorder(tok.encoder), _Recorder(tok.decoder)
    video = _video(1, 3, 9 * 121, 8, 8)
    latent = tok.encode(video)
    assert tok.encoder.batches == [8, 1]
    # chunk 1 alone lands at latent frames 16..31 (batch size changes bf16 rounding, hence the tolerance)
    one = CosmosVideoTokenizer(tok_dir)
    torch.testing.assert_close(latent[:, :, 16:32], one.encode(video[:, :, 121:242]), atol=0.05, rtol=0)
    tok.decode(latent)
    assert tok.decoder.batches == [4, 4, 1]


@pytest.mark.parametrize("frames", [0, 2, 120, 122, 250])
def test_bad_frame_counts_are_rejected(tok: CosmosVideoTokenizer, frames: int) -> None:
    with pytest.raises(ValueError):
        tok.encode(torch.zeros(1, 3, frames, 16, 16, dtype=torch.bfloat16))


def test_missing_files_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        CosmosVideoTokenizer(tmp_path)


def test_frames_to_uint8_truncates_clamps_and_permutes() -> None:
    x = torch.zeros(2, 3, 2, 1, 2)  # [B, C, T, H, W]
    x[0, 0, 0, 0, 0] = 2 * 254.9 / 255 - 1  # 254.9 -> 254, not 255
    x[0, 1, 0, 0, 0] = 1.5  # clamped to 255
    x[0, 2, 0, 0, 0] = -3.0  # clamped to 0
    x[0, 0, 1, 0, 1] = 0.0  # 127.5 -> 127
    x[1] = 1.0  # batch item 1 is ignored
    u = frames_to_uint8(x)
    assert u.shape == (2, 1, 2, 3) and u.dtype == torch.uint8 and u.is_contiguous()
    assert u[0, 0, 0].tolist() == [254, 255, 0]
    assert u[1, 0, 1, 0].item() == 127
    assert u[0, 0, 1].tolist() == [127, 127, 127]


@pytest.mark.parametrize("frames", [1, 9])  # 1 frame: the traced decoder froze its temporal upsample factor
def test_jit_matches_diffusers_model_off_the_trace_shape(raw: dict, frames: int) -> None:
    vae = build_small_vae(seed=0)
    video = _video(2, 3, frames, 24, 40, seed=5)
    with torch.no_grad(), _cpu_bf16_pooling():
        latent = _JitEncoder(vae)(video)[0]
        pixels = _JitDecoder(vae)(latent)
    assert torch.equal(raw["enc"](video)[0], latent)
    assert torch.equal(raw["dec"](latent), pixels)


def test_written_files_are_byte_identical_on_rerun(tok_dir: Path, tmp_path: Path) -> None:
    again = write_small_tokenizer(tmp_path / "again", seed=0)
    for name in FILES:
        assert (again / name).read_bytes() == (tok_dir / name).read_bytes(), name
    other = CosmosVideoTokenizer(again)
    video = _video(1, 3, 9, 16, 16)
    torch.testing.assert_close(other.encode(video), CosmosVideoTokenizer(tok_dir).encode(video), atol=0, rtol=0)


def test_decode_of_a_float32_latent_uses_the_bf16_table_and_returns_float32(tok: CosmosVideoTokenizer,
                                                                             raw: dict) -> None:
    # the sampler hands the decoder a float32 latent: the (bf16-stored) table is applied in float32, the JIT runs
    # in bf16 and its output comes back as float32 (JITVAE.decode: .to(in_dtype)), before the uint8 conversion
    g = torch.Generator().manual_seed(2)
    latent = 0.5 * torch.randn(1, 16, 3, 2, 2, generator=g)
    denorm = torch.empty_like(latent)
    for c in range(16):
        for f in range(3):
            denorm[:, c, f] = latent[:, c, f] / 0.5 * _stat(raw["std"], c, f).float() + _stat(raw["mean"], c, f).float()
    assert not torch.equal(denorm, denorm.to(torch.bfloat16).float())  # the float32 arithmetic is visible
    got = tok.decode(latent)
    assert got.dtype == torch.float32 and torch.equal(got, raw["dec"](denorm.to(torch.bfloat16)).float())
