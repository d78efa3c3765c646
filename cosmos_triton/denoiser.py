"""One guided denoiser evaluation (reference §4.1, §4.4): EDM preconditioning in bf16, cond and uncond passes,
x0 = cond + g (cond - uncond). This is what the DiT-step Triton model computes per call."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from cosmos_triton.dit import CosmosDiT

if TYPE_CHECKING:
    from cosmos_triton.conditioning import VideoCondition

SIGMA_DATA = 0.5


def edm_scaling(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """c_skip, c_out, c_in, c_noise of EDM, in the dtype of sigma (bf16 in the original)."""
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
    c_in = 1 / (sigma**2 + sigma_data**2) ** 0.5
    c_noise = 0.25 * sigma.log()
    return c_skip, c_out, c_in, c_noise


def _per_sample(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return c.reshape(c.shape + (1,) * (like.ndim - c.ndim))


@torch.no_grad()
def denoise(net: CosmosDiT, x_t: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor, fps: float,
            condition_mask: torch.Tensor | None = None) -> torch.Tensor:
    """D(x, sigma) = c_skip x + c_out F(c_in x, c_noise), with x and sigma cast to the net dtype first."""
    x_t = x_t.to(device=net.device, dtype=net.dtype)
    sigma = sigma.to(device=net.device, dtype=net.dtype)
    c_skip, c_out, c_in, c_noise = edm_scaling(sigma)
    out = net(_per_sample(c_in, x_t) * x_t, c_noise, context.to(device=net.device, dtype=net.dtype), fps,
              condition_mask)
    return _per_sample(c_skip, x_t) * x_t + _per_sample(c_out, x_t) * out


@torch.no_grad()
def guided_x0(net: CosmosDiT, x_t: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
              guidance: float, fps: float, condition: VideoCondition | None = None) -> torch.Tensor:
    """Classifier-free guidance on x0 as NVIDIA writes it: cond + g (cond - uncond) (g = 7 is 8 in the usual form).
    Two sequential batch-1 passes, like the original. With a Video2World condition, each branch sees the
    conditioned frames in its input and mask, and has their x0 replaced by the clean latent before CFG."""
    if condition is None:
        cond_x0 = denoise(net, x_t, sigma, cond, fps)
        uncond_x0 = denoise(net, x_t, sigma, uncond, fps)
    else:
        x_in = condition.network_input(x_t, sigma)
        mask = condition.input_mask(x_in)
        cond_x0 = condition.replace(denoise(net, x_in, sigma, cond, fps, mask), sigma)
        uncond_x0 = condition.replace(denoise(net, x_in, sigma, uncond, fps, mask), sigma)
    return cond_x0 + guidance * (cond_x0 - uncond_x0)
