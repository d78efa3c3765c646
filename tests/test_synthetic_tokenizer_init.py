"""The small tokenizer's pass-through initialisation and colour-weighted loss (export.tokenizer_init,
export.train_tokenizer).

The first GPU run trained the tokenizer from diffusers' default initialisation for 420 steps: every object came back
grey (colour presence 0 on the ground-truth round trip, PSNR 20.6 dB from the background alone), so the DiTs had no
colour to learn. These tests pin what replaced it: before any training, the real exported files (traced bf16
TorchScript + mean_std.pt, loaded by CosmosVideoTokenizer) already reproduce every named colour and its motion.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmos_triton.models.tokenizer import CosmosVideoTokenizer, frames_to_uint8
from cosmos_triton.synthetic.metrics import adherence, hue_classes, psnr
from cosmos_triton.synthetic.render import render_clip, to_model_input
from cosmos_triton.synthetic.scenes import COLOURS, DIRECTIONS, SHAPES, oracle_scene
from export.small_tokenizer import _cpu_bf16_pooling, build_vae
from export.tokenizer_init import pass_through_init
from export.train_tokenizer import (
    TokenizerConfig,
    colour_check,
    colour_check_clips,
    export_tokenizer,
    latent_statistics,
    pixel_weights,
)

WIDTHS = ((32, 64, 64, 64), (64, 64, 64, 64))  # the FULL configuration's tokenizer
# 33 of the 121 frames spread over the whole clip: the full motion (direction) at a quarter of the compute (CI time);
# 4x the motion per frame blurs more in the 8-frame block averages (21.6 dB at 96x160 where 121 frames gave > 22)
SPREAD = np.linspace(0, 120, 33).round().astype(int)


def _cases():
    return [(c, SHAPES[i % len(SHAPES)], DIRECTIONS[i % len(DIRECTIONS)], 300 + i) for i, c in enumerate(COLOURS)]


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return pass_through_init(build_vae(*WIDTHS)).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pass_through_init_encodes_block_means_in_channels_0_to_2(vae, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 17, 32, 48, generator=g) * 2 - 1
    model = torch.nn.Module.to(vae, dtype) if dtype != torch.float32 else vae
    with torch.no_grad(), _cpu_bf16_pooling():
        z = model.quant_conv(model.encoder(x.to(dtype))).float()
    first, rest = x[:, :, :1], x[:, :, 1:].reshape(1, 3, 2, 8, 32, 48).mean(3)
    means = torch.nn.functional.avg_pool3d(torch.cat([first, rest], 2), (1, 8, 8))
    tol = 2e-3 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(z[:, :3], means, rtol=0, atol=tol)
    if dtype != torch.float32:
        torch.nn.Module.to(vae, torch.float32)


def test_pass_through_init_reproduces_every_colour_and_direction(vae):
    for colour, shape, direction, seed in _cases():
        truth = render_clip(oracle_scene(colour, shape, direction, seed, 80 / 48), 48, 80, SPREAD)
        with torch.no_grad():
            rec = vae.decoder(vae.post_quant_conv(vae.quant_conv(vae.encoder(to_model_input(truth[None])))))
        frames = frames_to_uint8(rec).numpy()
        a = adherence(frames, colour, direction)
        assert a.colour_ok and a.presence == 1.0 and a.direction_ok, (colour, a)
        assert psnr(truth.numpy(), frames) > 20.0  # flat 8x8 blocks at 48x80: the object is only ~2 blocks wide


def test_exported_untrained_tokenizer_round_trips_colour_through_the_served_files(vae, tmp_path):
    """encoder.jit / decoder.jit (bf16) + mean_std.pt measured on rendered clips, as a training run exports them,
    loaded by the serving class: the oracle's colour and direction survive encode -> decode at 96x160.
    ~25 s on 2 cores, nearly all of it the export's trace in a fresh interpreter (as training runs it): the only test
    of the served bf16 files for the failure this initialisation fixes (grey objects)."""
    cfg = TokenizerConfig(encoder_channels=WIDTHS[0], decoder_channels=WIDTHS[1], lr=0.0, warmup_steps=1,
                          clip_kinds=((9, 1, 48, 80, 1.0),), stats_clips=2, stats_resolution=(48, 80))
    stats = latent_statistics(vae, cfg, 0, torch.device("cpu"))
    assert torch.isfinite(stats[0]).all() and (stats[1] > 0).all()
    folder = export_tokenizer(vae, stats, cfg, tmp_path / "tok", tmp_path / "work")
    tokenizer = CosmosVideoTokenizer(folder)
    for colour, shape, direction, seed in _cases()[:2]:
        truth = render_clip(oracle_scene(colour, shape, direction, seed), 96, 160, SPREAD)
        latent = tokenizer.encode(to_model_input(truth[None]).to(torch.bfloat16))
        assert latent.shape == (1, 16, 5, 12, 20)
        frames = frames_to_uint8(tokenizer.decode(latent)).numpy()
        a = adherence(frames, colour, direction)
        assert a.colour_ok and a.direction_ok, (colour, a)
        assert psnr(truth.numpy(), frames) > 20.0  # untrained: flat 8x8x8 blocks


def test_colour_weight_marks_the_objects_not_the_backgrounds():
    truth = render_clip(oracle_scene("cyan", "circle", "left", 5, background="stripes"), 48, 80, [0, 60])
    w = pixel_weights(to_model_input(truth[None]), 3.0)[0, 0]
    obj = torch.as_tensor(hue_classes(truth) >= 0)
    assert set(w.unique().tolist()) == {1.0, 4.0}
    assert (w[obj] == 4.0).float().mean() > 0.95  # the object (its anti-aliased rim may fall under)
    assert (w[~obj] == 1.0).all()  # background stripes: low saturation, never weighted


def test_colour_check_scores_the_pass_through_tokenizer(vae):
    clips, labels = colour_check_clips(9, 48, 80, torch.device("cpu"))
    result = colour_check(vae, clips, labels)
    assert result["colour_presence"] == 1.0 and result["psnr_db"] > 20.0
    assert not np.isnan(result["psnr_db"])
