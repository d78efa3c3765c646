"""Original checkpoint keys -> diffusers CosmosTransformer3DModel, strictly; where we follow NVIDIA over diffusers."""

import dataclasses

import numpy as np
import pytest
import torch
from diffusers import CosmosTransformer3DModel
from diffusers.models.normalization import RMSNorm
from diffusers.models.transformers.transformer_cosmos import CosmosRotaryPosEmbed

from cosmos_triton.models.checkpoints import DIT_PRESETS
from cosmos_triton.models.dit import (
    ROPE_TABLES_KEPT,
    CheckpointKeyError,
    CosmosDiT,
    build_model,
    diffusers_config,
    diffusers_key,
    load_dit,
    original_key_shapes,
    unwrap_state_dict,
)
from cosmos_triton.request.envelope import ORIGINAL_ENVELOPE, ORIGINAL_V2W_ENVELOPE, SMALL_ENVELOPE
from export.small_dit import SMALL_T2W, SMALL_V2W, small_state_dict, write_small_dit


@pytest.mark.parametrize("name", sorted(DIT_PRESETS))
def test_original_key_set_maps_onto_diffusers_with_equal_shapes(name):
    arch = DIT_PRESETS[name]
    original = original_key_shapes(arch)
    with torch.device("meta"):
        model = CosmosTransformer3DModel(**diffusers_config(arch))
    target = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mapped = {diffusers_key(k): s for k, s in original.items() if diffusers_key(k) is not None}
    assert set(mapped) == set(target), (set(mapped) ^ set(target))
    assert mapped == target


def test_reference_shapes_for_7b_and_14b():
    s7 = original_key_shapes(DIT_PRESETS["Cosmos-1.0-Diffusion-7B-Text2World"])
    s14v = original_key_shapes(DIT_PRESETS["Cosmos-1.0-Diffusion-14B-Video2World"])
    assert s7["net.x_embedder.proj.1.weight"] == (4096, 68)
    assert s14v["net.x_embedder.proj.1.weight"] == (5120, 72)
    assert s7["net.blocks.block27.blocks.1.block.attn.to_k.0.weight"] == (4096, 1024)
    assert s7["net.blocks.block0.blocks.2.block.layer1.weight"] == (16384, 4096)
    assert s7["net.extra_pos_embedder.pos_emb_h"] == (120, 4096)
    assert s7["net.final_layer.linear.weight"] == (64, 4096)
    assert s14v["net.blocks.block35.blocks.0.adaLN_modulation.2.weight"] == (15360, 256)
    assert "net.blocks.block36.blocks.0.block.attn.to_q.0.weight" not in s14v
    params = sum(int(np.prod(s)) for k, s in s7.items() if k.startswith("net.blocks.block0."))
    assert params == pytest.approx(255.8e6, rel=1e-3)  # docs/MATH.md, Architecture presets: ~255.8M per 7B block


def test_renamed_missing_and_misshaped_keys_fail_loudly():
    state = small_state_dict(SMALL_T2W)
    renamed = dict(state)
    renamed["net.blocks.block0.blocks.0.block.attn.to_q.0.weights"] = renamed.pop(
        "net.blocks.block0.blocks.0.block.attn.to_q.0.weight")
    missing = r"missing key\(s\): net\.blocks\.block0\.blocks\.0\.block\.attn\.to_q\.0\.weight"
    with pytest.raises(CheckpointKeyError, match=missing):
        build_model(SMALL_T2W, renamed)
    with pytest.raises(CheckpointKeyError, match=r"unexpected key\(s\): .*to_q\.0\.weights"):
        build_model(SMALL_T2W, renamed)
    bad = dict(state)
    bad["net.final_layer.linear.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointKeyError, match=r"net\.final_layer\.linear\.weight \(3, 3\) != \(64, 64\)"):
        build_model(SMALL_T2W, bad)


def test_wrappers_and_te_extra_state_are_tolerated():
    state = small_state_dict(SMALL_T2W)
    wrapped = {"model": {**state, "net.blocks.block0.blocks.0.block.attn._extra_state": torch.zeros(1)}}
    assert set(unwrap_state_dict(wrapped)) == set(state)


def test_qk_norm_eps_follows_the_original():
    model = build_model(SMALL_T2W, small_state_dict(SMALL_T2W))
    for block in model.transformer_blocks:
        for attn in (block.attn1, block.attn2):
            assert attn.norm_q.eps == 1e-6 and attn.norm_k.eps == 1e-6  # diffusers' default is 1e-5
    # and the eps is what the forward uses: RMSNorm over a tiny-variance vector depends on it
    norm = model.transformer_blocks[0].attn1.norm_q
    x = torch.full((1, 1, 1, SMALL_T2W.head_dim), 1e-3, dtype=torch.float32)
    expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight.float()
    torch.testing.assert_close(norm(x.to(torch.bfloat16)).float(), expected, atol=0.02, rtol=0.02)
    assert not torch.allclose(expected, x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight.float(),
                              atol=0.02, rtol=0.02)


def test_learnable_pos_embed_follows_the_original_bf16_arithmetic():
    model = build_model(SMALL_T2W, small_state_dict(SMALL_T2W))
    pe = model.learnable_pos_embed
    hidden = torch.zeros(1, 18, 3, 8, 6, dtype=torch.bfloat16)
    got = pe(hidden)
    # NVIDIA's LearnablePosEmbAxis + normalize(), written independently: bf16 sum, fp32 norm cast to bf16, bf16 div
    t, h, w = pe.pos_emb_t[:3], pe.pos_emb_h[:4], pe.pos_emb_w[:3]
    emb = t[:, None, None] + h[None, :, None] + w[None, None, :]
    norm = torch.linalg.vector_norm(emb, dim=-1, keepdim=True, dtype=torch.float32)
    norm = 1e-6 + norm / np.sqrt(emb.shape[-1])
    ref = (emb / norm.to(torch.bfloat16)).reshape(1, -1, emb.shape[-1])
    assert got.dtype == torch.bfloat16 and torch.equal(got, ref)


def test_small_checkpoint_loads_through_the_real_loader(tmp_path):
    write_small_dit(tmp_path / "dit", SMALL_ENVELOPE)
    net = load_dit(tmp_path / "dit")
    x = torch.randn(1, 16, 2, 4, 6, dtype=torch.bfloat16)
    out = net(x, torch.tensor([0.5], dtype=torch.bfloat16), torch.randn(1, 512, 1024, dtype=torch.bfloat16), 24.0)
    assert out.shape == x.shape and out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    # fps only rescales RoPE time positions: 24 vs 12 differ
    out12 = net(x, torch.tensor([0.5], dtype=torch.bfloat16), torch.zeros(1, 512, 1024, dtype=torch.bfloat16), 12.0)
    out24 = net(x, torch.tensor([0.5], dtype=torch.bfloat16), torch.zeros(1, 512, 1024, dtype=torch.bfloat16), 24.0)
    assert not torch.equal(out12, out24)


# --- bf16 numerics of the original (docs/MATH.md, DiT numerics): RoPE angles and TransformerEngine's RMSNorm -------

BF16 = torch.bfloat16
T2W_7B, T2W_14B = DIT_PRESETS["Cosmos-1.0-Diffusion-7B-Text2World"], DIT_PRESETS["Cosmos-1.0-Diffusion-14B-Text2World"]
ACCEPTED_RESOLUTIONS = sorted(set(ORIGINAL_ENVELOPE.resolutions) | set(ORIGINAL_V2W_ENVELOPE.resolutions))
ACCEPTED_FPS = range(ORIGINAL_ENVELOPE.fps[0], ORIGINAL_ENVELOPE.fps[1] + 1)
LATENT_FRAMES = 16  # 121 frames


def nvidia_rope_angles(head_dim: int, ratios_thw: tuple[float, float, float], t: int, h: int, w: int, fps: float,
                       dtype: torch.dtype = BF16) -> torch.Tensor:
    """VideoRopePosition3DEmb.generate_embeddings (NVIDIA/Cosmos cosmos1/models/diffusion/module/
    position_embedding.py) for a network cast with .to(dtype): its float buffers seq, dim_spatial_range and
    dim_temporal_range become `dtype`, and fps is a tensor of that dtype (inference_utils.prepare_data_batch)."""
    dim_h = head_dim // 6 * 2
    dim_t = head_dim - 2 * dim_h
    seq = torch.arange(128, dtype=torch.float).to(dtype)
    spatial = (torch.arange(0, dim_h, 2)[: dim_h // 2].float() / dim_h).to(dtype)
    temporal = (torch.arange(0, dim_t, 2)[: dim_t // 2].float() / dim_t).to(dtype)
    ratio_t, ratio_h, ratio_w = ratios_thw
    h_freqs = 1.0 / ((10000.0 * ratio_h ** (dim_h / (dim_h - 2))) ** spatial)
    w_freqs = 1.0 / ((10000.0 * ratio_w ** (dim_h / (dim_h - 2))) ** spatial)
    t_freqs = 1.0 / ((10000.0 * ratio_t ** (dim_t / (dim_t - 2))) ** temporal)
    fps_tensor = torch.tensor([fps], dtype=dtype)
    half_t = torch.outer(seq[:t] / fps_tensor[:1] * 24, t_freqs)
    half_h = torch.outer(seq[:h], h_freqs)
    half_w = torch.outer(seq[:w], w_freqs)
    emb = torch.cat([half_t[:, None, None].repeat(1, h, w, 1), half_h[None, :, None].repeat(t, 1, w, 1),
                     half_w[None, None].repeat(t, h, 1, 1)] * 2, dim=-1)
    return emb.reshape(t * h * w, head_dim).float()


def rope_of(arch):
    """The RoPE module build_model installs for `arch`'s head_dim and ratios (one narrow block: rope is per head)."""
    return build_model(dataclasses.replace(arch, model_channels=arch.head_dim, num_heads=1, num_blocks=1)).rope


@pytest.mark.parametrize("arch", [T2W_7B, T2W_14B], ids=["7B-ratios-2-1-1", "14B-ratios-2-2-2"])
def test_rope_angles_are_the_originals_bf16_table_at_every_accepted_resolution_and_fps(arch):
    rope = rope_of(arch)
    for i, (height, width) in enumerate(ACCEPTED_RESOLUTIONS):  # full grid, a different fps for each
        t, h, w = LATENT_FRAMES, height // 16, width // 16
        fps = (12, 24, 30, 37, 40)[i % 5]
        ref = nvidia_rope_angles(arch.head_dim, arch.rope_scale, t, h, w, fps)
        assert torch.equal(rope.angles(t, h, w, float(fps)), ref), (height, width, fps)
    for fps in ACCEPTED_FPS:  # fps only enters the time axis: every fps on a narrow spatial grid
        ref = nvidia_rope_angles(arch.head_dim, arch.rope_scale, LATENT_FRAMES, 3, 2, fps)
        assert torch.equal(rope.angles(LATENT_FRAMES, 3, 2, float(fps)), ref), fps


@pytest.mark.parametrize(("arch", "max_rad"), [(T2W_7B, 0.148), (T2W_14B, 0.285)], ids=["7B", "14B"])
def test_fp32_angles_are_diffusers_and_far_from_the_originals(arch, max_rad):
    """The reference above, run in fp32, is exactly diffusers' CosmosRotaryPosEmbed; in bf16 it differs by up to
    0.15 / 0.29 rad at 704x1280, so the exact-table test fails on an fp32 (diffusers) RoPE."""
    t, h, w = LATENT_FRAMES, 704 // 16, 1280 // 16
    fp32 = nvidia_rope_angles(arch.head_dim, arch.rope_scale, t, h, w, 24, dtype=torch.float32)
    diffusers_rope = CosmosRotaryPosEmbed(arch.head_dim, max_size=arch.max_size, patch_size=arch.patch_size,
                                          rope_scale=arch.rope_scale)
    cos, sin = diffusers_rope(torch.zeros(1, 17, t, 704 // 8, 1280 // 8), fps=24)
    assert torch.equal(cos, torch.cos(fp32)) and torch.equal(sin, torch.sin(fp32))
    bf16 = nvidia_rope_angles(arch.head_dim, arch.rope_scale, t, h, w, 24)
    assert (bf16 - fp32).abs().max().item() == pytest.approx(max_rad, abs=5e-4)
    ours_cos, _ = rope_of(arch)(torch.zeros(1, 17, t, 704 // 8, 1280 // 8), fps=24)
    assert not torch.equal(ours_cos, cos)


@pytest.mark.parametrize("arch", [SMALL_T2W, SMALL_V2W], ids=["Text2World", "Video2World"])
def test_model_rope_is_cos_sin_of_the_original_table_computed_once_per_shape_and_fps(arch):
    model = build_model(arch, small_state_dict(arch))
    channels = arch.in_channels + 1
    hidden = torch.zeros(1, channels, 3, 8, 6, dtype=BF16)
    cos, sin = model.rope(hidden, fps=24.0)
    ref = nvidia_rope_angles(arch.head_dim, arch.rope_scale, 3, 4, 3, 24)
    assert cos.dtype == torch.float32 and torch.equal(cos, torch.cos(ref)) and torch.equal(sin, torch.sin(ref))
    again = model.rope(hidden, fps=24)
    assert again[0] is cos and again[1] is sin  # cached: no per-step (or per-block) cost
    other = model.rope(hidden, fps=30.0)
    assert torch.equal(other[0], torch.cos(nvidia_rope_angles(arch.head_dim, arch.rope_scale, 3, 4, 3, 30)))
    for frames in range(4, 4 + ROPE_TABLES_KEPT):  # the cache stays bounded, oldest out first
        model.rope(torch.zeros(1, channels, frames, 8, 6, dtype=BF16), fps=24.0)
    assert len(model.rope._tables) == ROPE_TABLES_KEPT and model.rope(hidden, fps=24.0)[0] is not cos
    # and the forward pass goes through it, with the fps the wrapper is given
    net = CosmosDiT(model, arch)
    model.rope._tables.clear()
    x = torch.randn(1, 16, 2, 4, 6, dtype=BF16)
    mask = torch.zeros(1, 1, 2, 4, 6, dtype=BF16) if arch.model_type == "Video2World" else None
    net(x, torch.tensor([0.5], dtype=BF16), torch.zeros(1, 512, 1024, dtype=BF16), 17.0, mask)
    assert [k[:4] for k in model.rope._tables] == [(2, 2, 3, 17.0)]


def te_rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """TransformerEngine RMSNorm (rmsnorm_fwd kernel): fp32 throughout, one rounding of weight * normalised."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(BF16)


@pytest.mark.parametrize("arch", [SMALL_T2W, SMALL_V2W], ids=["Text2World", "Video2World"])
def test_every_rmsnorm_rounds_once_like_transformer_engine(arch):
    model = build_model(arch, small_state_dict(arch))
    norms = {name: m for name, m in model.named_modules() if isinstance(m, RMSNorm)}
    expected = {"time_embed.norm"} | {f"transformer_blocks.{i}.attn{a}.norm_{qk}"
                                      for i in range(arch.num_blocks) for a in (1, 2) for qk in "qk"}
    assert set(norms) == expected
    g = torch.Generator().manual_seed(0)
    for name, norm in norms.items():
        x = (3 * torch.randn(2, 2, 64, norm.weight.numel(), generator=g)).to(BF16)
        got = norm(x)
        assert got.dtype == BF16 and torch.equal(got, te_rmsnorm(x, norm.weight, 1e-6)), name
        # diffusers' RMSNorm rounds the normalised value first: different bits on this input
        xf = x.float()
        twice = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(BF16) * norm.weight
        assert not torch.equal(twice, got), name
