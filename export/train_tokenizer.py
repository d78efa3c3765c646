"""Train the small CV8x8x8-design tokenizer (diffusers AutoencoderKLCosmos, small widths) on the procedural clips,
measure its per-(channel, latent frame) latent statistics, and export it through `export.small_tokenizer` (traced
TorchScript encoder/decoder + mean_std.pt, the real files and interface).

Objective: a plain autoencoder, as the original (formulation AE): L1 + MSE on pixels in [-1, 1], with a little
Gaussian noise on the latent while training (so the decoder tolerates the diffusion model's small latent errors)
and a tiny latent L2 term that keeps its scale bounded.
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
from cosmos_triton.synthetic.scenes import sample_scene, scene_rng
from export.small_tokenizer import build_vae, write_trained_tokenizer

LATENT_NOISE = 0.05  # x the latent's std, added while training
LATENT_L2 = 1e-4
LATENT_FRAMES = 16


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


def train_tokenizer(cfg: TokenizerConfig, seed: int, device: torch.device, deadline: float,
                    max_steps: int | None, log: Callable[[dict], None]) -> tuple[torch.nn.Module, dict]:
    """Train until `deadline` (time.monotonic()) or `max_steps`; returns the fp32 model and a summary."""
    torch.manual_seed(seed)
    vae = build_vae(cfg.encoder_channels, cfg.decoder_channels).to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
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
        l1 = F.l1_loss(rec, video)
        mse = F.mse_loss(rec, video)
        loss = l1 + mse + LATENT_L2 * zf.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
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
    return vae.eval(), {"steps": step, "seconds": round(time.monotonic() - start, 1), "clips_seen": clip_index,
                        "curve": curve}


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
