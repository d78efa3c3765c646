"""EDM preconditioning, classifier-free guidance and the unconditional context, against hand-computed values.

A stand-in network returns a constant per context, so every expected number below follows from the formulas of
NVIDIA's DiffusionT2WModel.denoise / get_x0_fn_from_batch by hand.
"""

from __future__ import annotations

import math

import pytest
import torch

from cosmos_triton.diffusion.edm import edm_scaling
from cosmos_triton.diffusion.guidance import combine, guided_x0

BF16 = torch.bfloat16


class ConstantNet:
    """F = the first value of the context, whatever x is; records what it was called with."""

    dtype = BF16
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, x, c_noise, context, fps, condition_mask=None):
        self.calls.append(dict(x=x, c_noise=c_noise, context=context, fps=fps, mask=condition_mask))
        return torch.zeros_like(x) + context[:, 0, 0].reshape(-1, 1, 1, 1, 1)


def context(value: float) -> torch.Tensor:
    return torch.full((1, 512, 1024), value, dtype=BF16)


def test_cfg_is_cond_plus_g_times_cond_minus_uncond():
    # NVIDIA: cond_x0 + guidance * (cond_x0 - uncond_x0); 1 + 7 (1 - 0.5) = 4.5 (the usual form would give 4)
    assert combine(torch.tensor([1.0]), torch.tensor([0.5]), 7.0).item() == 4.5


def test_guided_x0_runs_cond_then_uncond_and_combines_them_the_originals_way():
    net = ConstantNet()
    x = torch.zeros(1, 16, 2, 4, 6)
    out = guided_x0(net, x, torch.tensor([80.0]), context(1.0), context(0.5), 7.0, 24.0)
    # sigma 80 in bf16: sigma^2 + 0.25 = 6400.25 rounds to 6400, so c_out = 40 / 80 = 0.5 exactly; x = 0.
    # cond x0 = 0.5 * 1 = 0.5, uncond x0 = 0.5 * 0.5 = 0.25, x0 = 0.5 + 7 (0.5 - 0.25) = 2.25
    assert out.dtype == BF16 and torch.equal(out, torch.full_like(out, 2.25))
    assert [c["context"][0, 0, 0].item() for c in net.calls] == [1.0, 0.5]  # two batch-1 passes, cond first
    assert all(c["fps"] == 24.0 and c["mask"] is None for c in net.calls)


def test_c_noise_is_a_quarter_log_of_the_bf16_sigma():
    net = ConstantNet()
    guided_x0(net, torch.zeros(1, 16, 1, 2, 2), torch.tensor([41.6]), context(1.0), context(0.0), 7.0, 24.0)
    # bf16(41.6) = 41.5; ln 41.5 = 3.72569 -> bf16 3.71875; x 0.25 = 0.9296875.
    # From the fp32 sigma it would be 0.25 ln 41.6 = 0.93193 (bf16 0.93359375).
    for call in net.calls:
        assert call["c_noise"].dtype == BF16 and call["c_noise"].tolist() == [0.9296875]


@pytest.mark.parametrize("sigma", [80.0, 1.0, 0.002])
def test_edm_coefficients_are_the_closed_forms(sigma):
    c_skip, c_out, c_in, c_noise = edm_scaling(torch.tensor([sigma], dtype=torch.float64))
    d = 0.5  # sigma_data
    assert c_skip.item() == pytest.approx(d * d / (sigma * sigma + d * d), rel=1e-14)
    assert c_out.item() == pytest.approx(sigma * d / math.sqrt(sigma * sigma + d * d), rel=1e-14)
    assert c_in.item() == pytest.approx(1 / math.sqrt(sigma * sigma + d * d), rel=1e-14)
    assert c_noise.item() == pytest.approx(0.25 * math.log(sigma), rel=1e-14, abs=1e-15)


def test_edm_reference_values():
    # sigma 80: c_in 0.0125, c_noise 1.0955; sigma 0.002: c_in ~ 2.0, c_noise -1.5537
    _, _, c_in, c_noise = edm_scaling(torch.tensor([80.0, 0.002], dtype=torch.float64))
    assert c_in.tolist() == pytest.approx([0.0125, 2.0], abs=1e-4)
    assert c_noise.tolist() == pytest.approx([1.0955, -1.5537], abs=1e-4)


def test_denoise_is_c_skip_x_plus_c_out_f_in_bf16():
    net = ConstantNet()
    x = torch.tensor([0.3, -1.7, 2.9, 40.1]).reshape(1, 1, 1, 2, 2).expand(1, 16, 1, 2, 2).contiguous()
    out = guided_x0(net, x, torch.tensor([2.2]), context(0.75), context(0.75), 0.0, 24.0)
    # every coefficient and product in bf16, as NVIDIA's denoise (x and sigma cast to bf16 first)
    xb, s = x.to(BF16), torch.tensor([2.2]).to(BF16)
    var = s * s + torch.tensor(0.25, dtype=BF16)
    c_skip, c_out, c_in = 0.25 / var, s * 0.5 / var.sqrt(), 1 / var.sqrt()
    assert torch.equal(net.calls[0]["x"], c_in * xb)
    assert out.dtype == BF16 and torch.equal(out, c_skip * xb + c_out * torch.tensor(0.75, dtype=BF16))


def _dit_contexts(model_type, negative_prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (cond, uncond) contexts the flow hands the DiT step, with T5 answering 0.25 for the prompt and -3 for
    anything else."""
    import numpy as np

    from cosmos_triton.pipeline.flow import generate

    seen: dict[str, torch.Tensor] = {}

    def call(model: str, **inputs):
        if model == "t5_encoder":
            return {"embedding": context(0.25 if inputs["prompt"] == "the prompt" else -3.0)}
        if model == model_type.dit_model:
            seen.update(cond=inputs["cond"], uncond=inputs["uncond"])
            return {"x0": inputs["x"]}
        return {"prompt": "the prompt", "condition_latent": torch.zeros(1, 16, 16, 12, 20),
                "video": np.zeros((1, 8, 8, 3), np.uint8), "mp4": b""}

    req = {"prompt": "the prompt", "negative_prompt": negative_prompt, "seed": 1, "num_steps": 1, "guidance": 7.0,
           "height": 96, "width": 160, "num_video_frames": 121, "fps": 24, "disable_prompt_upsampler": True,
           "word_limit_to_skip_upsampler": 250, "num_input_frames": 1, "last_frame": None,
           "condition_frames": None}
    generate(model_type, call, req)
    return seen["cond"], seen["uncond"]


def test_text2world_without_negative_prompt_has_an_all_zero_uncond_context():
    from cosmos_triton.pipeline.model_types import TEXT2WORLD

    cond, uncond = _dit_contexts(TEXT2WORLD, "")
    assert torch.equal(cond, context(0.25))
    assert uncond.shape == cond.shape and uncond.dtype == BF16 and not uncond.any()


def test_uncond_context_is_the_negative_prompt_when_given_and_video2world_reuses_the_prompt():
    from cosmos_triton.pipeline.model_types import TEXT2WORLD, VIDEO2WORLD

    for model_type in (TEXT2WORLD, VIDEO2WORLD):
        assert torch.equal(_dit_contexts(model_type, "ugly")[1], context(-3.0))
    cond, uncond = _dit_contexts(VIDEO2WORLD, "")
    assert torch.equal(uncond, cond) and torch.equal(cond, context(0.25))
