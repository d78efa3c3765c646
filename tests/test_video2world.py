"""Video2World conditioning, in process, against what docs/MATH.md, Video2World conditioning, makes exact."""

from __future__ import annotations

import io

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from cosmos_triton.diffusion.conditioning import AUGMENT_SIGMA, VideoCondition
from cosmos_triton.diffusion.edm import edm_scaling
from cosmos_triton.errors import RequestError
from cosmos_triton.media.mp4 import encode_mp4
from cosmos_triton.media.visual_input import (
    decode_visual_input,
    num_condition_latent_frames,
    prepare_condition_video,
    select_input_frames,
)
from cosmos_triton.models.checkpoints import latent_shape

PROMPT = "The robot walks towards the camera."


def gradient_image(h: int = 120, w: int = 200) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (h + w)], -1).astype(np.uint8)


def png_bytes(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    iio.imwrite(buf, frame, extension=".png")
    return buf.getvalue()


def video_bytes(num_frames: int = 20) -> bytes:
    frames = np.stack([np.roll(gradient_image(96, 160), 7 * i, axis=1) for i in range(num_frames)])
    return encode_mp4(frames, 24)


@pytest.mark.parametrize("num_input_frames", [1, 9])
def test_conditioned_latent_frames_come_out_exactly_as_the_encoded_input(v2w_pipeline, num_input_frames):
    data = video_bytes()
    pipe = v2w_pipeline
    generation = pipe(prompt=PROMPT, visual_input=data, num_input_frames=num_input_frames, seed=2)
    assert generation.frames.shape == (121, 96, 160, 3)
    tokenizer = pipe.stages.stage("tokenizer_encoder").tokenizer
    # the condition latent, encoded independently from the same bytes
    selected = select_input_frames(decode_visual_input(data), num_input_frames)
    clip = prepare_condition_video(selected, 96, 160)
    gt = tokenizer.encode(clip.to(torch.bfloat16))
    n = num_condition_latent_frames(num_input_frames)
    assert n == (1 if num_input_frames == 1 else 2)
    final = generation.latent
    assert torch.equal(final[:, :, :n], gt[:, :, :n].float())  # replaced on every call, CFG keeps them exact
    assert not torch.equal(final[:, :, n:], gt[:, :, n:].float())
    # the decoder is causal: the first 1 + 8 (n - 1) pixel frames depend only on the conditioned latent frames
    pixels = 1 + 8 * (n - 1)
    decoded_final, decoded_gt = tokenizer.decode(final), tokenizer.decode(gt.float())
    assert torch.equal(decoded_final[:, :, :pixels], decoded_gt[:, :, :pixels])


def test_empty_negative_prompt_makes_cfg_a_no_op(v2w_pipeline):
    data = png_bytes(gradient_image())
    a = v2w_pipeline(prompt=PROMPT, visual_input=data, negative_prompt="", guidance=7.0, seed=3, num_steps=4).frames
    b = v2w_pipeline(prompt=PROMPT, visual_input=data, negative_prompt="", guidance=0.0, seed=3, num_steps=4).frames
    c = v2w_pipeline(prompt=PROMPT, visual_input=data, guidance=7.0, seed=3, num_steps=4).frames  # default negative
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_video2world_requires_a_visual_input_and_accepts_only_1_or_9_frames(v2w_pipeline):
    with pytest.raises(RequestError, match="num_input_frames"):
        v2w_pipeline(prompt=PROMPT, visual_input=png_bytes(gradient_image()), num_input_frames=5, num_steps=1)
    with pytest.raises(RequestError):
        v2w_pipeline(prompt=PROMPT, num_steps=1)
    with pytest.raises(RequestError):
        v2w_pipeline(prompt=PROMPT, visual_input=b"not an image", num_steps=1)


def test_condition_network_input_is_c_in_augment_times_the_augmented_latent():
    gt = torch.randn(1, 16, 4, 2, 3).to(torch.bfloat16)
    noise = torch.randn(1, 16, 4, 2, 3)
    cond = VideoCondition.build(gt, 2, noise)
    sigma = torch.tensor([5.0])
    x_t = torch.randn(1, 16, 4, 2, 3)
    x_in = cond.network_input(x_t, sigma)
    c_in_aug = edm_scaling(torch.tensor([AUGMENT_SIGMA], dtype=torch.bfloat16))[2].float()
    expected = (gt.float() + noise * torch.tensor(AUGMENT_SIGMA, dtype=torch.bfloat16).float()) * c_in_aug
    # after the net's own c_in(sigma) the conditioned frames enter as c_in(0.001)(gt + 0.001 N) (~2 gt)
    net_sees = x_in[:, :, :2] * edm_scaling(sigma)[2]
    torch.testing.assert_close(net_sees, expected[:, :, :2], rtol=1e-6, atol=1e-6)
    assert torch.equal(x_in[:, :, 2:], x_t[:, :, 2:])
    assert torch.equal(cond.input_mask(x_in)[0, 0, :, 0, 0], torch.tensor([1, 1, 0, 0], dtype=torch.bfloat16))
    x0 = torch.randn(1, 16, 4, 2, 3).to(torch.bfloat16)
    replaced = cond.replace(x0, sigma)
    assert torch.equal(replaced[:, :, :2], gt[:, :, :2]) and torch.equal(replaced[:, :, 2:], x0[:, :, 2:])


def test_condition_noise_is_the_initial_noise():
    from cosmos_triton.pipeline.flow import seeded_normal

    shape = latent_shape(121, 96, 160)
    assert torch.equal(seeded_normal(shape, 5), torch.from_numpy(
        np.random.RandomState(5).standard_normal((1, *shape)).astype(np.float32)))


def test_condition_augment_and_input_follow_the_original_dtypes_bit_for_bit():
    g = torch.Generator().manual_seed(4)
    gt = torch.randn(1, 16, 4, 2, 3, generator=g).to(torch.bfloat16)
    noise = torch.randn(1, 16, 4, 2, 3, generator=g)
    cond = VideoCondition.build(gt, 1, noise)
    # augment sigma 0.001 as a bf16 tensor (0.00099945...), the augmented latent float32
    aug_sigma = torch.tensor([0.001], dtype=torch.bfloat16)
    augment = gt + noise * aug_sigma
    assert cond.augment_latent.dtype == torch.float32 and torch.equal(cond.augment_latent, augment)
    # c_in(0.001) in bf16: 0.001^2 + 0.25 rounds to 0.25, so exactly 1 / 0.5 = 2; c_in(sigma) from the fp32 sigma
    sigma = torch.tensor([5.0])
    x_t = torch.randn(1, 16, 4, 2, 3, generator=g)
    x_in = cond.network_input(x_t, sigma)
    c_in = 1 / (sigma * sigma + 0.25) ** 0.5
    assert torch.equal(x_in[:, :, :1], (augment * 2.0 * (1 / c_in))[:, :, :1])
    assert torch.equal(x_in[:, :, 1:], x_t[:, :, 1:])


def test_below_the_augment_sigma_every_frame_is_generated():
    gt = torch.randn(1, 16, 3, 2, 2).to(torch.bfloat16)
    cond = VideoCondition.build(gt, 2, torch.randn(1, 16, 3, 2, 2))
    x_t, x0 = torch.randn(1, 16, 3, 2, 2), torch.randn(1, 16, 3, 2, 2).to(torch.bfloat16)
    low = torch.tensor([0.0005])  # NVIDIA's inference trick: 0.001 >= sigma drops the condition
    assert torch.equal(cond.network_input(x_t, low), x_t) and torch.equal(cond.replace(x0, low), x0)
    assert torch.equal(cond.replace(x0, torch.tensor([0.002]))[:, :, :2], gt[:, :, :2])  # sigma_min keeps it


def test_condition_rebuilt_from_parts_in_the_dit_step_equals_the_built_one():
    gt = torch.randn(1, 16, 4, 2, 3).to(torch.bfloat16)
    built = VideoCondition.build(gt, 2, torch.randn(1, 16, 4, 2, 3))
    rebuilt = VideoCondition.from_parts(gt.float(), built.augment_latent, 2)
    for name in ("gt_latent", "augment_latent", "indicator"):
        a, b = getattr(built, name), getattr(rebuilt, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name
