"""One guided denoiser evaluation: the conditional and unconditional passes and their combination as NVIDIA
writes it, x0 = cond + g (cond - uncond) (g = 7 is 8 in the usual form). See docs/MATH.md, Guidance."""

from __future__ import annotations

import torch

from cosmos_triton.diffusion.conditioning import VideoCondition
from cosmos_triton.diffusion.edm import Network, denoise


def combine(cond_x0: torch.Tensor, uncond_x0: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance on x0: cond + g (cond - uncond)."""
    return cond_x0 + guidance * (cond_x0 - uncond_x0)


@torch.no_grad()
def guided_x0(net: Network, x_t: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
              guidance: float, fps: float, condition: VideoCondition | None = None) -> torch.Tensor:
    """Two sequential batch-1 passes, like the original. With a Video2World condition, each branch sees the
    conditioned frames in its input and mask, and has their x0 replaced by the clean latent before CFG."""
    if condition is None:
        return combine(denoise(net, x_t, sigma, cond, fps), denoise(net, x_t, sigma, uncond, fps), guidance)
    x_in = condition.network_input(x_t, sigma)
    mask = condition.input_mask(x_in)
    cond_x0 = condition.replace(denoise(net, x_in, sigma, cond, fps, mask), sigma)
    uncond_x0 = condition.replace(denoise(net, x_in, sigma, uncond, fps, mask), sigma)
    return combine(cond_x0, uncond_x0, guidance)
