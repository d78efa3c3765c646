"""Original checkpoint keys -> diffusers CosmosTransformer3DModel, strictly; where we follow NVIDIA over diffusers."""

import numpy as np
import pytest
import torch
from diffusers import CosmosTransformer3DModel

from cosmos_triton.models.checkpoints import DIT_PRESETS
from cosmos_triton.models.dit import (
    CheckpointKeyError,
    build_model,
    diffusers_config,
    diffusers_key,
    load_dit,
    original_key_shapes,
    unwrap_state_dict,
)
from cosmos_triton.request.envelope import SMALL_ENVELOPE
from export.small_dit import SMALL_T2W, small_state_dict, write_small_dit


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
    assert params == pytest.approx(255.8e6, rel=1e-3)  # reference §1.1: ~255.8M per 7B block


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
