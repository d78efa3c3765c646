"""Video2World prompt upsampler (Pixtral-12B): mapping, preprocessing, small model.
See docs/FORMATS.md, Video2World upsampler."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cosmos_triton.upsampler.video2world import (
    INSTRUCTION,
    CheckpointKeyError,
    PixtralParams,
    Video2WorldPromptUpsampler,
    build_llava,
    image_token_text,
    interleaved_to_half_split,
    original_to_hf_llava,
    pixtral_params_from_config,
    pixtral_pixel_values,
    resize_image,
    resized_size,
    sample_top_p,
)
from export.small_video2world_upsampler import (
    SMALL_UPSAMPLED_PROMPT,
    random_state_dict,
    small_params,
    write_small_video2world_upsampler,
)

# what convert_pixtral_ckpt.py writes for Pixtral-12B-2409 (docs/FORMATS.md, Video2World upsampler)
CONVERTER_CONFIG = {
    "dim": 5120, "n_layers": 40, "head_dim": 128, "ffn_hidden_size": 14336, "n_heads": 32, "n_kv_heads": 8,
    "rope_theta": 1000000000.0, "norm_eps": 1e-05, "vocab_size": 131072, "vision_encoder": "pixtral-12b-vit",
}


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_video2world_upsampler(tmp_path_factory.mktemp("upsampler") / "Pixtral-12B")


@pytest.fixture(scope="module")
def upsampler(small_dir: Path) -> Video2WorldPromptUpsampler:
    return Video2WorldPromptUpsampler(small_dir)


# ------------------------------------------------------------------ an independent model of NVIDIA's computation


def _inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    return 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)


def _complex_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """The original's rotation: adjacent (real, imag) pairs times e^{i angle}; x [L, H, hd], angles [L, hd/2]."""
    pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles)[:, None]).flatten(-2)


def _rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * weight


def _block(x, sd, prefix, heads, kv_heads, head_dim, angles, causal):
    """TransformerBlock: pre-norm attention (GQA by repeat_interleave) and SwiGLU w2(silu(w1 x) * w3 x)."""
    n = x.shape[0]
    h = _rms(x, sd[prefix + "attention_norm.weight"])
    q = _complex_rope((h @ sd[prefix + "attention.wq.weight"].T).view(n, heads, head_dim), angles)
    k = _complex_rope((h @ sd[prefix + "attention.wk.weight"].T).view(n, kv_heads, head_dim), angles)
    v = (h @ sd[prefix + "attention.wv.weight"].T).view(n, kv_heads, head_dim)
    k, v = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))
    scores = torch.einsum("qhd,khd->hqk", q, k) / head_dim**0.5
    if causal:
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    att = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(n, -1)
    x = x + att @ sd[prefix + "attention.wo.weight"].T
    h = _rms(x, sd[prefix + "ffn_norm.weight"])
    ffn = F.silu(h @ sd[prefix + "feed_forward.w1.weight"].T) * (h @ sd[prefix + "feed_forward.w3.weight"].T)
    return x + ffn @ sd[prefix + "feed_forward.w2.weight"].T


def _reference_logits(sd, p: PixtralParams, input_ids: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Cosmos VisionTransformer + MultimodalProjector + Transformer, on the converted (interleaved) weights."""
    vit = p.vision_encoder
    patches = F.conv2d(pixels, sd["vision_encoder.patch_conv.weight"], stride=vit.patch_size)[0]
    hp, wp = patches.shape[-2:]
    x = _rms(patches.flatten(1).T, sd["vision_encoder.ln_pre.weight"])
    rows, cols = torch.meshgrid(torch.arange(hp), torch.arange(wp), indexing="ij")
    f = _inv_freq(vit.head_dim, vit.rope_theta)
    angles = torch.cat([rows.reshape(-1, 1) * f[::2], cols.reshape(-1, 1) * f[1::2]], dim=-1)
    for i in range(vit.n_layers):
        x = _block(x, sd, f"vision_encoder.transformer.layers.{i}.", vit.n_heads, vit.n_heads, vit.head_dim,
                   angles, causal=False)
    image = F.gelu(x @ sd["mm_projector.projector.0.weight"].T + sd["mm_projector.projector.0.bias"])
    image = image @ sd["mm_projector.projector.2.weight"].T + sd["mm_projector.projector.2.bias"]
    h = sd["model.tok_embeddings.weight"][input_ids].clone()
    h[input_ids == vit.image_token_id] = image
    angles = torch.arange(len(input_ids), dtype=torch.float64)[:, None] * _inv_freq(p.head_dim, p.rope_theta)
    for i in range(p.n_layers):
        h = _block(h, sd, f"model.layers.{i}.", p.n_heads, p.n_kv_heads, p.head_dim, angles, causal=True)
    return _rms(h, sd["model.norm.weight"]) @ sd["model.output.weight"].T


# ----------------------------------------------------------------------------------------------- key mapping


def test_lm_qk_permutation_matches_the_interleaved_rotation() -> None:
    """Attention scores q_m . k_n under HF's half-split RoPE on permuted weights equal the original's."""
    from transformers import MistralConfig
    from transformers.models.mistral.modeling_mistral import MistralRotaryEmbedding, apply_rotary_pos_emb

    heads, kv_heads, head_dim, dim, theta = 8, 2, 128, 48, 1e9  # Pixtral's head_dim and theta, 4:1 GQA
    gen = torch.Generator().manual_seed(0)
    wq, wk = torch.randn(heads * head_dim, dim, generator=gen), torch.randn(kv_heads * head_dim, dim, generator=gen)
    positions = torch.tensor([0, 1, 2, 7, 100, 1024, 4299])
    x = torch.randn(len(positions), dim, generator=gen, dtype=torch.float64)

    angles = positions[:, None].double() * _inv_freq(head_dim, theta)
    q_ref = _complex_rope((x @ wq.double().T).view(-1, heads, head_dim), angles)
    k_ref = _complex_rope((x @ wk.double().T).view(-1, kv_heads, head_dim), angles)

    config = MistralConfig(hidden_size=dim, num_attention_heads=heads, num_key_value_heads=kv_heads,
                           head_dim=head_dim, rope_parameters={"rope_type": "default", "rope_theta": theta})
    cos, sin = MistralRotaryEmbedding(config)(x, positions[None])
    q = (x @ interleaved_to_half_split(wq, heads).double().T).view(1, -1, heads, head_dim).transpose(1, 2)
    k = (x @ interleaved_to_half_split(wk, kv_heads).double().T).view(1, -1, kv_heads, head_dim).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos.double(), sin.double())

    group = heads // kv_heads
    ref = torch.einsum("qhd,khd->hqk", q_ref, k_ref.repeat_interleave(group, dim=1))
    hf = torch.einsum("hqd,hkd->hqk", q[0], k[0].repeat_interleave(group, dim=0))
    # HF builds its angles in fp32 (about 3e-4 rad off at position 4299): compare relative to the scores' scale
    assert (hf - ref).norm() / ref.norm() < 1e-4
    q_raw = (x @ wq.double().T).view(1, -1, heads, head_dim).transpose(1, 2)
    k_raw = (x @ wk.double().T).view(1, -1, kv_heads, head_dim).transpose(1, 2)
    q_raw, k_raw = apply_rotary_pos_emb(q_raw, k_raw, cos.double(), sin.double())
    unpermuted = torch.einsum("hqd,hkd->hqk", q_raw[0], k_raw[0].repeat_interleave(group, dim=0))
    assert (unpermuted - ref).norm() / ref.norm() > 0.1  # the permutation is what makes them agree


def test_whole_model_matches_an_independent_reference() -> None:
    """LM + ViT (2-D RoPE) + projector through the mapping equal NVIDIA's computation, in fp32."""
    params = dataclasses.replace(small_params(vocab_size=40), rope_theta=1e4)  # a theta that rotates a lot
    sd = {k: v.float() for k, v in random_state_dict(params, seed=3).items()}
    model = build_llava(params, original_to_hf_llava(sd, params), dtype=torch.float32)
    ids = torch.tensor([1, 3, *([10] * 4 + [12]) * 2, *[10] * 4, 13, 20, 21, 22, 4])  # a 3x4-patch image
    pixels = torch.randn(1, 3, 48, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        hf = model(input_ids=ids[None], pixel_values=pixels, image_sizes=torch.tensor([[48, 64]])).logits[0]
        ref = _reference_logits({k: v.double() for k, v in sd.items()}, params, ids, pixels.double())
    torch.testing.assert_close(hf.double(), ref, rtol=1e-4, atol=1e-4)


def test_kv_cache_step_matches_a_full_forward() -> None:
    """The decode path: image only at prefill, then one token on the cache, equals recomputing everything."""
    params = small_params(vocab_size=40)
    model = build_llava(params, original_to_hf_llava(random_state_dict(params, seed=5), params), dtype=torch.float32)
    ids = torch.tensor([[1, 3, 10, 10, 12, 10, 10, 13, 20, 21, 4, 30]])
    image = dict(pixel_values=torch.randn(1, 3, 32, 32), image_sizes=torch.tensor([[32, 32]]))
    with torch.no_grad():
        full = model(input_ids=ids, **image).logits[0, -1]
        prefill = model(input_ids=ids[:, :-1], **image, use_cache=True)
        step = model(input_ids=ids[:, -1:], past_key_values=prefill.past_key_values, use_cache=True).logits[0, -1]
    torch.testing.assert_close(step, full, rtol=1e-5, atol=1e-5)


def test_renamed_or_missing_key_fails_naming_it() -> None:
    params = small_params(vocab_size=40)
    sd = random_state_dict(params, seed=0)
    renamed = dict(sd)
    renamed["model.layers.1.attention.query.weight"] = renamed.pop("model.layers.1.attention.wq.weight")
    with pytest.raises(CheckpointKeyError, match=r"missing key\(s\): model\.layers\.1\.attention\.wq\.weight.*"
                                                 r"unexpected key\(s\): model\.layers\.1\.attention\.query\.weight"):
        original_to_hf_llava(renamed, params)
    missing = {k: v for k, v in sd.items() if k != "vision_encoder.ln_pre.weight"}
    with pytest.raises(CheckpointKeyError, match=r"missing key\(s\): vision_encoder\.ln_pre\.weight"):
        original_to_hf_llava(missing, params)
    wrong = dict(sd, **{"mm_projector.projector.0.bias": torch.zeros(3)})
    with pytest.raises(CheckpointKeyError, match=r"mm_projector\.projector\.0\.bias \(3,\) != \(64,\)"):
        original_to_hf_llava(wrong, params)


def test_renamed_key_in_model_pt_fails_the_loader(small_dir: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(small_dir, tmp_path / "Pixtral-12B")
    ckpt = torch.load(broken / "model.pt", weights_only=True)
    ckpt["model"]["model.norm.scale"] = ckpt["model"].pop("model.norm.weight")
    torch.save(ckpt, broken / "model.pt")
    with pytest.raises(CheckpointKeyError, match=r"model\.norm\.weight.*model\.norm\.scale"):
        Video2WorldPromptUpsampler(broken)


def test_config_rule() -> None:
    assert pixtral_params_from_config(CONVERTER_CONFIG) == PixtralParams()  # the real file: the preset
    preset = PixtralParams()
    assert (preset.rope_theta, preset.vision_encoder.dim, preset.vision_encoder.n_layers) == (1e9, 1024, 24)
    with pytest.raises(ValueError, match="rope_theta"):  # the original would ignore it: refuse, don't diverge
        pixtral_params_from_config(dict(CONVERTER_CONFIG, rope_theta=1e6))
    with pytest.raises(ValueError, match="unknown"):
        pixtral_params_from_config(dict(CONVERTER_CONFIG, hidden_dim=14336))
    small = small_params(vocab_size=40)
    config = json.loads(json.dumps(dataclasses.asdict(small)))
    assert pixtral_params_from_config(config) == small


# ------------------------------------------------------------------------------------------ image and prompt


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((160, 96), (160, 96)),  # small images are never upscaled
        ((1024, 1024), (1024, 1024)),
        ((2048, 1024), (1024, 512)),
        ((1280, 704), (1024, 564)),  # 563.2 rounds up
        ((1000, 3000), (342, 1024)),  # 341.33 rounds up
        ((1025, 7), (1024, 7)),  # 6.99 rounds up
    ],
)
def test_resize_rule(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert resized_size(*size) == expected
    image = Image.new("RGB", size)
    assert resize_image(image).size == expected


def test_pixel_values_match_transformers_pil_pixtral_processor() -> None:
    from transformers.models.pixtral.image_processing_pil_pixtral import PixtralImageProcessorPil

    processor = PixtralImageProcessorPil(size={"longest_edge": 1024}, patch_size={"height": 16, "width": 16})
    rng = np.random.default_rng(0)
    for height, width in [(96, 160), (100, 150), (33, 17)]:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        expected = np.asarray(processor(image, return_tensors="np")["pixel_values"])
        np.testing.assert_allclose(pixtral_pixel_values(image, 16), expected, atol=1e-6)


def test_image_token_layout() -> None:
    assert image_token_text(32, 48, 16) == "[IMG][IMG][IMG][IMG_BREAK][IMG][IMG][IMG][IMG_END]"
    assert image_token_text(16, 16, 16) == "[IMG][IMG_END]"


def test_prompt_layout_and_last_frame(upsampler: Video2WorldPromptUpsampler) -> None:
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (3, 96, 160, 3), dtype=np.uint8)
    inputs = upsampler.prepare(frames)
    text = upsampler.tokenizer.decode(inputs.input_ids[0])
    assert text == "<s>[INST]" + image_token_text(96, 160, 16) + "\n" + INSTRUCTION + "[/INST]"
    assert inputs.input_ids[0, 0] == 1 and (inputs.input_ids == 10).sum() == 6 * 10
    last = upsampler.prepare(frames[-1:]).pixel_values
    assert torch.equal(inputs.pixel_values, last)
    assert not torch.equal(inputs.pixel_values, upsampler.prepare(frames[:1]).pixel_values)
    wide = upsampler.prepare(np.zeros((1, 300, 1100, 3), np.uint8))  # -> 1024x280 -> 1024x288
    assert tuple(wide.pixel_values.shape) == (1, 3, 288, 1024) and (wide.input_ids == 10).sum() == 18 * 64
    with pytest.raises(ValueError, match="uint8"):
        upsampler.prepare(frames.astype(np.float32))


# -------------------------------------------------------------------------------------------------- sampling


def test_sampler_keeps_the_nucleus_and_follows_the_seed() -> None:
    logits = torch.tensor([[0.0, 0.3, 0.3005, -1.0]])  # at T = 0.01: about 0 / 49% / 51% / 0
    draws = {int(sample_top_p(logits, 0.01, 0.9, torch.Generator().manual_seed(s))) for s in range(40)}
    assert draws == {1, 2}
    first = [int(sample_top_p(logits, 0.01, 0.9, torch.Generator().manual_seed(7))) for _ in range(3)]
    assert len(set(first)) == 1
    peaked = torch.tensor([[0.0, 0.3, 0.35, -1.0]])  # 0.05 / 0.01 apart: the runner-up is outside top-p 0.9
    assert {int(sample_top_p(peaked, 0.01, 0.9, torch.Generator().manual_seed(s))) for s in range(20)} == {2}


# ------------------------------------------------------------------------------------------------ small model


def test_small_checkpoint_layout(small_dir: Path) -> None:
    ckpt = torch.load(small_dir / "model.pt", weights_only=True)
    assert set(ckpt) == {"model", "mm_projector", "vision_encoder"}
    assert set(ckpt["mm_projector"]) == {"projector.0.weight", "projector.0.bias", "projector.2.weight",
                                         "projector.2.bias"}
    assert ckpt["model"]["vision_encoder.patch_conv.weight"].data_ptr() == \
        ckpt["vision_encoder"]["patch_conv.weight"].data_ptr()  # stored once, under both names
    assert all(v.dtype == torch.bfloat16 for v in ckpt["model"].values())
    assert json.loads((small_dir / "config.json").read_text())["vision_encoder"]["image_token_id"] == 10


def test_small_model_emits_the_expected_text(upsampler: Video2WorldPromptUpsampler) -> None:
    frames = np.random.default_rng(2).integers(0, 256, (2, 96, 160, 3), dtype=np.uint8)
    assert upsampler.upsample(frames, seed=0) == SMALL_UPSAMPLED_PROMPT
    assert upsampler.upsample(frames[:1], seed=12345) == SMALL_UPSAMPLED_PROMPT


def test_small_files_are_deterministic(small_dir: Path, tmp_path: Path) -> None:
    again = write_small_video2world_upsampler(tmp_path / "again")
    names = sorted(p.name for p in small_dir.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (small_dir / name).read_bytes() == (again / name).read_bytes(), name
