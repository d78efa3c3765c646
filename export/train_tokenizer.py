"""Train the small CV8x8x8-design tokenizer (diffusers AutoencoderKLCosmos, small widths) on the procedural clips,
measure its per-(channel, latent frame) latent statistics, and export it through `export.small_tokenizer` (traced
TorchScript encoder/decoder + mean_std.pt, the real files and interface).

Objective: a plain autoencoder, as the original (formulation AE): L1 + MSE on pixels in [-1, 1], with a little
Gaussian noise on the latent while training (so the decoder tolerates the diffusion model's small latent errors)
and a tiny latent L2 term that keeps its scale bounded. Saturated pixels (the objects: a few % of a frame) weigh
1 + `colour_weight` in both terms, so that the objects' colour is not traded for the backgrounds.

Initialisation: `export.tokenizer_init.pass_through_init` (block-average colour in latent channels 0-2 from step 0)
unless `init="default"`. From diffusers' default initialisation the first GPU run (420 steps) never left the
"grey objects" solution: colour presence 0 on the ground-truth round trip. The weights exported are an EMA of the
trained ones; `check_every` steps the EMA model's colour presence and PSNR on the six oracle colours are logged.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cosmos_triton.synthetic.render import NUM_FRAMES, render_clip, to_model_input
from cosmos_triton.synthetic.scenes import COLOURS, DIRECTIONS, SHAPES, oracle_scene, sample_scene, scene_rng
from export.small_tokenizer import build_vae, write_trained_tokenizer
from export.tokenizer_init import pass_through_init

LATENT_NOISE = 0.05  # x the latent's std, added while training
LATENT_L2 = 1e-4
LATENT_FRAMES = 16
CHECK_SEED = 900  # colour-check scenes: oracle-style clips with seeds the oracle does not use (100-205)
SATURATED_CHROMA = 0.6  # max - min over RGB in [-1, 1] units: objects ~1.5, backgrounds < 0.25


@dataclass
class TokenizerConfig:
    encoder_channels: tuple[int, ...]
    decoder_channels: tuple[int, ...]
    lr: float
    warmup_steps: int
    # (frames, batch, height, width, weight) of each training clip kind
    clip_kinds: tuple[tuple[int, int, int, int, float], ...]
    stats_clips: int  # 121-frame clips encoded to measure the latent statistics
    stats_resolution: tuple[int, int]
    init: str = "pass_through"  # or "default" (diffusers' initialisation)
    colour_weight: float = 3.0  # extra loss weight of saturated pixels
    ema_decay: float = 0.99  # of the exported weights
    check_every: int = 100  # steps between colour checks of the EMA model (0: never)
    check_shape: tuple[int, int, int] = (33, 96, 160)  # frames, height, width of the colour-check clips


def lr_at(progress: float, step: int, base: float, warmup: int, floor: float = 0.1) -> float:
    """Linear warm-up, then cosine decay over the wall-clock budget (progress 0 -> 1) to `floor` x base."""
    warm = min(1.0, (step + 1) / max(warmup, 1))
    cos = floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * min(max(progress, 0.0), 1.0)))
    return base * warm * cos


def _clips(seed: int, start: int, count: int, frames: int, height: int, width: int, rng: np.random.RandomState,
           device: torch.device) -> torch.Tensor:
    """A [count, 3, frames, H, W] float batch in [-1, 1): `frames` consecutive frames of each 121-frame clip,
    from frame 0 half of the time (the causal first frame matters for Video2World), else a random offset."""
    videos = []
    for k in range(count):
        scene = sample_scene(scene_rng(seed, start + k), "train", width / height)
        offset = 0 if rng.uniform() < 0.5 else int(rng.randint(0, NUM_FRAMES - frames + 1))
        videos.append(render_clip(scene, height, width, np.arange(offset, offset + frames), device))
    return to_model_input(torch.stack(videos))


def pixel_weights(video: torch.Tensor, colour_weight: float) -> torch.Tensor:
    """[B, 1, T, H, W]: 1 + colour_weight on saturated pixels (chroma max - min over RGB >= SATURATED_CHROMA)."""
    chroma = video.amax(1, keepdim=True) - video.amin(1, keepdim=True)
    return 1.0 + colour_weight * (chroma >= SATURATED_CHROMA).to(video.dtype)


def colour_check_clips(frames: int, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, list]:
    """One oracle clip per colour (first `frames` frames, model input) and their (colour, direction) labels."""
    cases = [(c, SHAPES[i % len(SHAPES)], DIRECTIONS[i % len(DIRECTIONS)]) for i, c in enumerate(COLOURS)]
    clips = [render_clip(oracle_scene(c, s, d, CHECK_SEED + i, width / height), height, width, np.arange(frames),
                         device) for i, (c, s, d) in enumerate(cases)]
    return to_model_input(torch.stack(clips)), [(c, d) for c, _, d in cases]


@torch.no_grad()
def colour_check(vae: torch.nn.Module, clips: torch.Tensor, labels: list) -> dict:
    """Round trip of the check clips through `vae` (eval mode, the device's training precision): mean colour
    presence of the named colour and PSNR, as the oracle measures them."""
    from cosmos_triton.models.tokenizer import frames_to_uint8
    from cosmos_triton.synthetic.metrics import presence_fraction, psnr

    autocast = torch.autocast(clips.device.type, dtype=torch.bfloat16, enabled=clips.device.type == "cuda")
    with autocast:
        rec = vae.decoder(vae.post_quant_conv(vae.quant_conv(vae.encoder(clips)))).float()
    presence, db = [], []
    for i, (colour, _) in enumerate(labels):
        got = frames_to_uint8(rec[i : i + 1]).cpu().numpy()
        want = ((clips[i] + 1) * 128).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()
        presence.append(presence_fraction(got, colour))
        db.append(psnr(want, got))
    return {"colour_presence": round(float(np.mean(presence)), 3), "psnr_db": round(float(np.mean(db)), 2)}


def train_tokenizer(cfg: TokenizerConfig, seed: int, device: torch.device, deadline: float,
                    max_steps: int | None, log: Callable[[dict], None]) -> tuple[torch.nn.Module, dict]:
    """Train until `deadline` (time.monotonic()) or `max_steps`; returns the fp32 EMA model and a summary."""
    torch.manual_seed(seed)
    vae = build_vae(cfg.encoder_channels, cfg.decoder_channels)
    if cfg.init == "pass_through":
        pass_through_init(vae)
    elif cfg.init != "default":
        raise ValueError(f"unknown tokenizer init {cfg.init!r}")
    vae = vae.to(device).train()
    ema = copy.deepcopy(vae).eval().requires_grad_(False)
    params, ema_params = list(vae.parameters()), list(ema.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    checks: list[dict] = []
    check_clips = colour_check_clips(*cfg.check_shape, device) if cfg.check_every else None

    best: dict = {}

    def check(step: int) -> None:
        point = {"step": step, **colour_check(ema, *check_clips)}
        checks.append(point)
        log({"tokenizer_check": point})
        score = (round(point["colour_presence"] * 20), point["psnr_db"])  # presence to 0.05, then PSNR
        if not best or score >= best["score"]:
            best.update(score=score, step=step, state={k: v.detach().clone() for k, v in ema.state_dict().items()})

    if check_clips is not None:
        check(0)
    rng = np.random.RandomState([seed % 2**32, 11])
    weights = np.array([k[4] for k in cfg.clip_kinds], dtype=np.float64)
    start, step, clip_index = time.monotonic(), 0, 0
    curve: list[dict] = []
    window = torch.zeros(3, device=device)  # l1 sum, mse sum, steps: summed on the device, read every 25 steps
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    while time.monotonic() < deadline and (max_steps is None or step < max_steps):
        frames, batch, height, width, _ = cfg.clip_kinds[rng.choice(len(weights), p=weights / weights.sum())]
        video = _clips(seed, clip_index, batch, frames, height, width, rng, device)
        clip_index += batch
        progress = (time.monotonic() - start) / max(deadline - start, 1e-6)
        for group in opt.param_groups:
            group["lr"] = lr_at(progress, step, cfg.lr, cfg.warmup_steps)
        with autocast:
            z = vae.quant_conv(vae.encoder(video))
            noisy = z + LATENT_NOISE * z.detach().float().std() * torch.randn_like(z)
            rec = vae.decoder(vae.post_quant_conv(noisy))
        rec, zf = rec.float(), z.float()
        l1 = F.l1_loss(rec, video)  # logged unweighted (comparable across runs)
        mse = F.mse_loss(rec, video)
        weight = pixel_weights(video, cfg.colour_weight)
        err = rec - video
        loss = (err.abs() * weight).mean() + (err.pow(2) * weight).mean() + LATENT_L2 * zf.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1 - decay)
        step += 1
        window += torch.stack([l1.detach(), mse.detach(), torch.ones((), device=device)])
        if step % 25 == 0 or step == 1:
            l1_sum, mse_sum, n = window.tolist()
            window.zero_()
            l1m, msem = l1_sum / n, mse_sum / n
            psnr = 10 * np.log10(4.0 / max(msem, 1e-12))  # range [-1, 1]: peak-to-peak 2
            point = {"step": step, "seconds": round(time.monotonic() - start, 1), "l1": round(float(l1m), 5),
                     "mse": round(float(msem), 6), "psnr_db": round(float(psnr), 2)}
            curve.append(point)
            log({"tokenizer": point})
        if check_clips is not None and step % cfg.check_every == 0:
            check(step)
    if check_clips is not None and (not checks or checks[-1]["step"] != step):
        check(step)
    exported = step
    if best and best["step"] != step:  # training lost colour or sharpness since an earlier check: keep that one
        ema.load_state_dict(best["state"])
        exported = best["step"]
    return ema, {"steps": step, "seconds": round(time.monotonic() - start, 1), "clips_seen": clip_index,
                 "init": cfg.init, "exported_step": exported, "curve": curve, "colour_checks": checks}


@torch.no_grad()
def latent_statistics(vae: torch.nn.Module, cfg: TokenizerConfig, seed: int, device: torch.device
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the raw bf16 latent per (channel, latent frame) over `stats_clips` full clips, flattened
    channel-major to 256 values each (the layout of the original mean_std.pt)."""
    model = torch.nn.Module.to(copy.deepcopy(vae), torch.bfloat16)
    height, width = cfg.stats_resolution
    rng = np.random.RandomState([seed % 2**32, 12])
    total = torch.zeros(16, LATENT_FRAMES, dtype=torch.float64, device=device)
    total_sq = torch.zeros_like(total)
    count = 0
    for start in range(0, cfg.stats_clips, 8):
        n = min(8, cfg.stats_clips - start)
        video = _clips(seed + 1, start, n, NUM_FRAMES, height, width, rng, device).to(torch.bfloat16)
        if device.type == "cpu":  # no bf16 avg_pool3d on CPU: what export.small_tokenizer's trace records
            from export.small_tokenizer import _cpu_bf16_pooling

            with _cpu_bf16_pooling():
                z = model.quant_conv(model.encoder(video)).double()
        else:
            z = model.quant_conv(model.encoder(video)).double()
        total += z.sum(dim=(0, 3, 4))
        total_sq += z.pow(2).sum(dim=(0, 3, 4))
        count += z.shape[0] * z.shape[3] * z.shape[4]
    mean = total / count
    std = (total_sq / count - mean.pow(2)).clamp_min(0).sqrt()
    std = std.clamp_min(0.1 * float(std.median()))  # a dead channel must not amplify rounding noise
    return mean.float().reshape(-1).cpu(), std.float().reshape(-1).cpu()


def export_tokenizer(vae: torch.nn.Module, stats: tuple[torch.Tensor, torch.Tensor], cfg: TokenizerConfig,
                     out_dir: Path, work: Path) -> Path:
    """Trace and write encoder.jit, decoder.jit, mean_std.pt into out_dir (through export.small_tokenizer)."""
    work.mkdir(parents=True, exist_ok=True)
    weights, mean_std = work / "vae_state.pt", work / "vae_mean_std.pt"
    torch.save({k: v.detach().float().cpu() for k, v in vae.state_dict().items()}, weights)
    torch.save(stats, mean_std)
    return write_trained_tokenizer(out_dir, weights, mean_std, cfg.encoder_channels, cfg.decoder_channels)
