"""Train a small Cosmos-1.0 DiT (Text2World or Video2World) with the EDM objective and save it as an original
`model.pt` (NVIDIA's key names, bf16) + `config.json`.

The network is the one serving uses: diffusers' CosmosTransformer3DModel configured by
`cosmos_triton.models.dit.diffusers_config`, with the original's corrections (`_follow_original`), called through
`CosmosDiT` (which appends the zero padding-mask channel). Objective, as EDM (Karras et al. 2022) with Cosmos's
preconditioning (NVIDIA Cosmos `cosmos1/models/diffusion/diffusion/modules/denoiser_scaling.py`; here
`cosmos_triton.diffusion.edm.edm_scaling`, sigma_data 0.5):

    sigma ~ LogNormal(P_mean, P_std),  x_t = x0 + sigma n,
    F = net(c_in x_t, c_noise, T5 context, fps),  loss = || F - (x0 - c_skip x_t) / c_out ||^2,

which is EDM's lambda(sigma)-weighted x0 loss, so the served sampler (x0 = c_skip x_t + c_out F) is the matching
one. Caption dropout: a caption is replaced by the all-zero context (what Text2World's unconditional branch uses
with an empty negative prompt) or by the default negative prompt's embedding (the served default uncond), so
classifier-free guidance has an unconditional model to contrast with.

Video2World (`cosmos1/models/diffusion/model/model_v2w.py`; here `cosmos_triton.diffusion.conditioning`): the
first 1 or 2 latent frames (1 or 9 input frames) are given. They enter the network as c_in(0.001)(x0 + 0.001 n)
with the condition-mask channel set, exactly what `VideoCondition` feeds at inference, and the loss covers only
the generated frames (the sampler replaces the given frames' x0 anyway).
It starts from the Text2World weights; the new mask input columns of the patch embedding start at zero.

Initialisation: AdaLN-Zero (the modulation outputs and the final projection start at zero, so every block starts
as the identity) and random learnable position tables (diffusers zeroes them, where their RMS normalisation has
an infinite gradient).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cosmos_triton.diffusion.conditioning import AUGMENT_SIGMA
from cosmos_triton.diffusion.edm import edm_scaling
from cosmos_triton.models.checkpoints import DIT_WEIGHTS, DiTArchitecture, write_dit_config
from cosmos_triton.models.dit import (
    CosmosDiT,
    _follow_original,
    check_keys,
    diffusers_config,
    diffusers_key,
    load_dit,
    original_key_shapes,
)
from cosmos_triton.request.envelope import Envelope
from export.train_tokenizer import lr_at
from export.training_data import LatentPool, full_context

DEFAULT_FPS = 24
SIGMA_BIN_EDGES = (0.05, 0.3, 1.5, 8.0)


@dataclass
class DiTTrainConfig:
    batch: int
    lr: float
    warmup_steps: int
    ema_decay: float
    p_mean: float  # EDM log-normal training noise levels: ln sigma ~ N(p_mean, p_std^2)
    p_std: float
    drop_to_zero: float  # caption dropout to the all-zero context
    drop_to_negative: float  # caption dropout to the default negative prompt's embedding
    random_fps: float  # fraction of steps at a random fps in [12, 40] (it rescales the RoPE time positions)
    refresh_per_step: int  # clips of the pool replaced by new ones every step
    resolutions: tuple[tuple[int, int, float], ...]  # (height, width, weight)
    condition_frames: tuple[int, ...] = (1, 2)  # Video2World: latent frames given (1 or 9 input frames)


def build_trainable(arch: DiTArchitecture, seed: int, device: torch.device) -> torch.nn.Module:
    """fp32 CosmosTransformer3DModel with the original's corrections, AdaLN-Zero, in train mode."""
    from diffusers import CosmosTransformer3DModel

    torch.manual_seed(seed)
    model = CosmosTransformer3DModel(**diffusers_config(arch))
    _follow_original(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("learnable_pos_embed."):
                p.normal_(0.0, 1.0)
            elif name.endswith("linear_2.weight") or name == "proj_out.weight":
                p.zero_()  # norm{1,2,3}.linear_2, norm_out.linear_2, time_embed.t_embedder.linear_2, proj_out
    return model.to(device).train().requires_grad_(True)


def video2world_from_text2world(t2w_state: dict[str, torch.Tensor], v2w: torch.nn.Module) -> None:
    """Copy Text2World weights into a Video2World model. Patch-embedding input features are channel-major
    ([16 latent, padding mask] x 4 -> [16 latent, condition mask, padding mask] x 4): the mask's 4 start at 0."""
    target = dict(v2w.named_parameters())
    with torch.no_grad():
        for name, value in t2w_state.items():
            p = target[name]
            if name == "patch_embed.proj.weight":
                latent = value.shape[1] - 4
                p.zero_()
                p[:, :latent] = value[:, :latent]
                p[:, latent + 4:] = value[:, latent:]
            else:
                p.copy_(value)


def load_trainable(folder: Path, arch: DiTArchitecture, device: torch.device) -> torch.nn.Module:
    """Continue from a checkpoint folder this module wrote: the served loader's network (same key mapping and
    original numerics), in fp32 and train mode. Refuses a folder of another architecture than `arch`."""
    net = load_dit(folder, device, dtype=torch.float32)
    if net.arch != arch:
        raise ValueError(f"{folder} holds {net.arch}, not the {arch} this run trains")
    return net.model.train().requires_grad_(True)


def to_original_state_dict(state: dict[str, torch.Tensor], arch: DiTArchitecture, seed: int = 0,
                           unused: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """diffusers names -> NVIDIA's model.pt keys (the loader's mapping, inverted), bf16; checked with the loader's
    own strict key/shape check. Keys the network does not use get the values an original checkpoint holds: the
    RoPE position buffer arange(N) and a seeded `logvar` head (unused in sampling), or those of `unused` (an
    earlier export of the same network: a continuation keeps them, so an untrained DiT re-exports byte-equal)."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    used = set()
    for key, shape in sorted(original_key_shapes(arch).items()):
        name = diffusers_key(key)
        if name is None and unused is not None and key in unused and tuple(unused[key].shape) == tuple(shape):
            value = unused[key].float()
        elif name is None:
            if key.endswith("pos_embedder.seq"):
                value = torch.arange(shape[0], dtype=torch.float32)
            elif key == "logvar.0.freqs":
                value = 2 * np.pi * torch.randn(shape, generator=gen)
            elif key == "logvar.0.phases":
                value = 2 * np.pi * torch.rand(shape, generator=gen)
            else:
                value = torch.randn(shape, generator=gen) / shape[-1] ** 0.5
        else:
            value = state[name].detach().float().cpu()
            used.add(name)
        out[key] = value.to(torch.bfloat16).contiguous()
    unmapped = sorted(set(state) - used)
    if unmapped:
        raise KeyError(f"weights with no original key: {unmapped[:8]}")
    check_keys(out, arch)
    return out


def write_dit(out_dir: Path, state: dict[str, torch.Tensor], arch: DiTArchitecture, envelope: Envelope,
              seed: int = 0, keep_unused: bool = False) -> Path:
    """model.pt (original keys, bf16) + config.json (architecture and envelope), as export.small_dit writes them;
    keep_unused: the keys the network does not use keep their values in the model.pt being replaced."""
    out_dir.mkdir(parents=True, exist_ok=True)
    earlier = out_dir / DIT_WEIGHTS
    unused = torch.load(earlier, map_location="cpu", weights_only=True) if keep_unused and earlier.is_file() else None
    torch.save(to_original_state_dict(state, arch, seed, unused), earlier)
    write_dit_config(out_dir, arch, envelope)
    return out_dir


def _choose(weights: np.ndarray, rng: np.random.RandomState) -> int:
    return int(rng.choice(len(weights), p=weights / weights.sum()))


def train_dit(model: torch.nn.Module, arch: DiTArchitecture, cfg: DiTTrainConfig, pools: dict[tuple[int, int],
              LatentPool], refresh: Callable[[LatentPool, int], None], negative: torch.Tensor, seed: int,
              deadline: float, max_steps: int | None, log: Callable[[dict], None],
              checkpoint: Callable[[dict[str, torch.Tensor]], None] | None = None, checkpoint_every_s: float = 60.0
              ) -> tuple[dict[str, torch.Tensor], dict]:
    """Train until `deadline` (time.monotonic()) or `max_steps`. `refresh(pool, n)` replaces n clips of a pool;
    `negative` is the default negative prompt's [1, 512, D] bf16 embedding. Returns the EMA weights (diffusers
    names) and a summary with the loss curve."""
    video2world = arch.model_type == "Video2World"
    device = next(model.parameters()).device
    net = CosmosDiT(model, arch)
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    rng = np.random.RandomState([seed % 2**32, 21 if video2world else 20])
    gen = torch.Generator(device=device).manual_seed(seed)
    res_weights = np.array([r[2] for r in cfg.resolutions], dtype=np.float64)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    c_in_aug = float(edm_scaling(torch.tensor(AUGMENT_SIGMA))[2])
    start = last_ckpt = time.monotonic()
    step, curve = 0, []
    window = torch.zeros(2, device=device)  # loss sum, steps (summed on the device: no sync per step)
    bin_edges = torch.tensor(SIGMA_BIN_EDGES, device=device)
    bins = torch.zeros(2, len(SIGMA_BIN_EDGES) + 1, dtype=torch.float64, device=device)  # loss sum, count

    def ema_state() -> dict[str, torch.Tensor]:
        return dict(zip(names, ema, strict=True))

    while time.monotonic() < deadline and (max_steps is None or step < max_steps):
        height, width, _ = cfg.resolutions[_choose(res_weights, rng)]
        pool = pools[(height, width)]
        if cfg.refresh_per_step:
            refresh(pool, cfg.refresh_per_step)
        latents, stored = pool.batch(cfg.batch, gen)
        b = latents.shape[0]
        x0 = latents.float()
        context = full_context(stored)
        u = torch.rand(b, generator=gen, device=device)
        to_zero = (u < cfg.drop_to_zero).view(-1, 1, 1)
        to_negative = ((u >= cfg.drop_to_zero) & (u < cfg.drop_to_zero + cfg.drop_to_negative)).view(-1, 1, 1)
        context = torch.where(to_zero, torch.zeros_like(context), context)
        context = torch.where(to_negative, negative.to(context.dtype), context)
        sigma = torch.exp(cfg.p_mean + cfg.p_std * torch.randn(b, generator=gen, device=device))
        x_t = x0 + sigma.view(-1, 1, 1, 1, 1) * torch.randn(x0.shape, generator=gen, device=device)
        c_skip, c_out, c_in, c_noise = (c.view(-1, 1, 1, 1, 1) for c in edm_scaling(sigma))
        net_in = c_in * x_t
        mask = None
        if video2world:
            frames = torch.from_numpy(rng.choice(cfg.condition_frames, size=b)).to(device)
            t = torch.arange(x0.shape[2], device=device)
            indicator = (t[None, :] < frames[:, None]).float().view(b, 1, -1, 1, 1)
            augmented = x0 + AUGMENT_SIGMA * torch.randn(x0.shape, generator=gen, device=device)
            net_in = indicator * (c_in_aug * augmented) + (1 - indicator) * net_in
            mask = indicator.expand(b, 1, *x0.shape[2:])
        fps = float(rng.randint(12, 41)) if rng.uniform() < cfg.random_fps else float(DEFAULT_FPS)
        progress = (time.monotonic() - start) / max(deadline - start, 1e-6)
        for group in opt.param_groups:
            group["lr"] = lr_at(progress, step, cfg.lr, cfg.warmup_steps)
        with autocast:
            out = net(net_in, c_noise.flatten(), context.float(), fps, mask)
        target = (x0 - c_skip * x_t) / c_out
        err = (out.float() - target).pow(2)
        if video2world:
            keep = (1 - indicator).expand_as(err)
            per_sample = (err * keep).flatten(1).sum(1) / keep.flatten(1).sum(1)
        else:
            per_sample = err.flatten(1).mean(1)
        loss = per_sample.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
            window += torch.stack([loss.detach(), torch.ones((), device=device)])
            if progress >= 0.5:  # loss by noise level over the second half of training
                idx = torch.bucketize(sigma, bin_edges, right=True)
                bins[0].index_add_(0, idx, per_sample.detach().double())
                bins[1].index_add_(0, idx, torch.ones_like(per_sample, dtype=torch.float64))
        step += 1
        if step % 25 == 0 or step == 1:
            total, n = window.tolist()
            window.zero_()
            point = {"step": step, "seconds": round(time.monotonic() - start, 1), "loss": round(total / n, 5),
                     "lr": float(f"{opt.param_groups[0]['lr']:.3g}")}
            curve.append(point)
            log({arch.model_type: point})
        if checkpoint is not None and time.monotonic() - last_ckpt > checkpoint_every_s:
            checkpoint(ema_state())
            last_ckpt = time.monotonic()
    sums, counts = bins.tolist()
    pairs = itertools.pairwise(SIGMA_BIN_EDGES)
    labels = [f"<{SIGMA_BIN_EDGES[0]}", *(f"{a}-{b}" for a, b in pairs), f">={SIGMA_BIN_EDGES[-1]}"]
    summary = {"steps": step, "seconds": round(time.monotonic() - start, 1), "curve": curve,
               "samples_seen": step * cfg.batch,
               "loss_by_sigma_second_half": {k: (round(s / c, 5) if c else None)
                                             for k, s, c in zip(labels, sums, counts, strict=True)}}
    return ema_state(), summary
