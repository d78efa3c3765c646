"""EDM preconditioning as Cosmos-1.0 computes it: D(x, sigma) = c_skip x + c_out F(c_in x, c_noise), every
coefficient in the network dtype (bf16), sigma_data 0.5. See docs/MATH.md, EDM preconditioning."""

from __future__ import annotations

from typing import Protocol

import torch

SIGMA_DATA = 0.5


class Network(Protocol):
    """F(x, c_noise, context, fps, condition_mask) of a Cosmos DiT (cosmos_triton.models.dit.CosmosDiT)."""

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    def __call__(self, x: torch.Tensor, c_noise: torch.Tensor, context: torch.Tensor, fps: float,
                 condition_mask: torch.Tensor | None = None) -> torch.Tensor: ...


def edm_scaling(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """c_skip, c_out, c_in, c_noise of EDM, in the dtype of sigma (bf16 in the original)."""
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
    c_in = 1 / (sigma**2 + sigma_data**2) ** 0.5
    c_noise = 0.25 * sigma.log()
    return c_skip, c_out, c_in, c_noise


def per_sample(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample coefficient [B] broadcast against a [B, C, T, H, W] tensor."""
    return c.reshape(c.shape + (1,) * (like.ndim - c.ndim))


@torch.no_grad()
def denoise(net: Network, x_t: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor, fps: float,
            condition_mask: torch.Tensor | None = None) -> torch.Tensor:
    """D(x, sigma) = c_skip x + c_out F(c_in x, c_noise), with x and sigma cast to the net dtype first."""
    x_t = x_t.to(device=net.device, dtype=net.dtype)
    sigma = sigma.to(device=net.device, dtype=net.dtype)
    c_skip, c_out, c_in, c_noise = edm_scaling(sigma)
    out = net(per_sample(c_in, x_t) * x_t, c_noise, context.to(device=net.device, dtype=net.dtype), fps,
              condition_mask)
    return per_sample(c_skip, x_t) * x_t + per_sample(c_out, x_t) * out
