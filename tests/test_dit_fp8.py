"""FP8 mode on CPU: which layers are quantized, the row-wise GEMM's arithmetic (torch._scaled_mm runs on CPU), the
whole small DiT in FP8 against bf16, the torchao path's layer selection, FP8 attention inputs."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cosmos_triton.models.dit import CosmosDiT, build_model
from cosmos_triton.models.dit_fp8 import (
    E4M3,
    Float8RowwiseLinear,
    apply_fp8,
    fp8_linear_names,
    fp8_supported,
    smooth_and_quantize_attention,
)
from cosmos_triton.models.dit_speed import DiTSpeed
from export.small_dit import SMALL_T2W, small_state_dict

BLOCK_LINEARS = {"attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
                 "attn2.to_out.0", "ff.net.0.proj", "ff.net.2", "norm1.linear_1", "norm1.linear_2", "norm2.linear_1",
                 "norm2.linear_2", "norm3.linear_1", "norm3.linear_2"}


def small_model():
    return build_model(SMALL_T2W, small_state_dict(SMALL_T2W))


def local_names(names, block=0):
    prefix = f"transformer_blocks.{block}."
    return {n.removeprefix(prefix) for n in names if n.startswith(prefix)}


def test_layer_selection_policies():
    model = small_model()
    assert {n.split(".", 2)[2] for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and n.startswith("transformer_blocks.0.")} == BLOCK_LINEARS
    default = fp8_linear_names(model)
    assert local_names(default) == {"attn1.to_v", "attn1.to_out.0", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2"}
    assert local_names(fp8_linear_names(model, "all")) == local_names(default) | {"attn1.to_q", "attn1.to_k",
                                                                                   "attn2.to_q"}
    assert len(default) == 5 * SMALL_T2W.num_blocks
    assert all(n.startswith("transformer_blocks.") for n in default)  # never patch/time embedding or output
    with pytest.raises(ValueError, match="policy"):
        fp8_linear_names(model, "some")


def test_fp8_needs_sm89_unless_told_otherwise():
    assert not fp8_supported("cpu")
    with pytest.raises(RuntimeError, match="compute capability"):
        apply_fp8(small_model())


def test_rowwise_linear_matches_its_definition():
    gen = torch.Generator().manual_seed(0)
    linear = nn.Linear(64, 48, bias=False).bfloat16()
    linear.weight.data = torch.randn(48, 64, generator=gen).bfloat16()
    fp8 = Float8RowwiseLinear(linear)
    assert fp8.weight_fp8.dtype == E4M3 and fp8.weight_scale.shape == (1, 48)
    for rows in (32, 37):  # 37: padded to a multiple of 16 and cut back
        x = torch.randn(1, rows, 64, generator=gen).bfloat16()
        y = fp8(x)
        assert y.shape == (1, rows, 48) and y.dtype == torch.bfloat16
        amax = x.float().abs().amax(-1, keepdim=True) / 448
        xq = (x.float() / amax).to(E4M3).float() * amax
        wq = fp8.weight_fp8.float() * fp8.weight_scale.t()
        assert torch.allclose(y.float(), (xq @ wq.t()).bfloat16().float(), rtol=0.02, atol=0.02)
        rel = ((y.float() - F.linear(x, linear.weight).float()).norm() / F.linear(x, linear.weight).float().norm())
        assert 0 < rel < 0.08  # e4m3 has a 3-bit mantissa: a few percent per GEMM
    with pytest.raises(ValueError, match="bias"):
        Float8RowwiseLinear(nn.Linear(64, 48))


@torch.no_grad()
def test_small_dit_in_fp8_stays_close_to_bf16():
    model = small_model()
    net = CosmosDiT(model, SMALL_T2W)
    gen = torch.Generator().manual_seed(0)
    args = (torch.randn(1, 16, 4, 16, 24, generator=gen).bfloat16(), torch.tensor([0.3]).bfloat16(),
            torch.randn(1, 32, 1024, generator=gen).bfloat16(), 24.0)
    ref = net(*args)
    names = apply_fp8(model, "scaled_mm", "qk_bf16", require_hardware=False)
    modules = dict(model.named_modules())
    assert all(isinstance(modules[n], Float8RowwiseLinear) for n in names)
    assert isinstance(modules["transformer_blocks.0.attn1.to_q"], nn.Linear)
    assert isinstance(modules["transformer_blocks.0.norm1.linear_1"], nn.Linear)
    out = DiTSpeed(attention="sdpa", compile=False, cache=None).apply(net)(*args)
    rel = ((out.double() - ref.double()).norm() / ref.double().norm()).item()
    assert 0 < rel < 0.15, rel  # random weights: says nothing about real-weight quality


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao not installed")
def test_torchao_quantizes_exactly_the_selected_layers(monkeypatch):
    import torchao.quantization.quant_api as quant_api

    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda *_a, **_k: None)  # sm_89 check, CPU here
    model = small_model()
    names = set(apply_fp8(model, "torchao", "qk_bf16", require_hardware=False))
    quantized = {n for n, m in model.named_modules()
                 if isinstance(m, nn.Linear) and type(m.weight).__name__ != "Parameter"}
    assert quantized == names


def test_fp8_attention_inputs_dequantize_and_smoothing_helps():
    gen = torch.Generator().manual_seed(0)
    b, length, h, d = 1, 256, 2, 32
    q, k, v = (torch.randn(b, length, h, d, generator=gen).bfloat16() for _ in range(3))
    k = k + 8.0  # a common key offset, as real keys often have: softmax ignores it, FP8 range would not
    q8, k8, v8, qs, ks, vs = smooth_and_quantize_attention(q, k, v)
    assert {t.dtype for t in (q8, k8, v8)} == {E4M3} and qs.shape == ks.shape == vs.shape == (b, h)
    deq = [t.float() * s[:, None, :, None] for t, s in ((q8, qs), (k8, ks), (v8, vs))]
    assert torch.allclose(deq[0], q.float(), rtol=0.07, atol=0.02)

    def attention(q_, k_, v_):
        return F.scaled_dot_product_attention(*(t.transpose(1, 2).float() for t in (q_, k_, v_))).transpose(1, 2)

    exact = attention(q, k, v)
    smoothed = attention(*deq)
    kf = k.float()
    plain_k = (kf / (kf.abs().amax(dim=(1, 3)) / 448)[:, None, :, None]).to(E4M3).float() * (
        kf.abs().amax(dim=(1, 3)) / 448)[:, None, :, None]
    unsmoothed = attention(deq[0], plain_k, deq[2])

    def rel(a):
        return ((a - exact).norm() / exact.norm()).item()

    assert rel(smoothed) < 0.06  # 4.9 % here; 24 % without the smoothing
    assert rel(smoothed) < rel(unsmoothed) / 2
