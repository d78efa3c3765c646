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
def branch_x0(net: Network, x_t: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor, fps: float,
              condition: VideoCondition | None = None) -> torch.Tensor:
    """One branch (batch-1 pass) of the guided evaluation. With a Video2World condition the branch sees the
    conditioned frames in its input and mask, and has their x0 replaced by the clean latent."""
    if condition is None:
        return denoise(net, x_t, sigma, context, fps)
    x_in = condition.network_input(x_t, sigma)
    return condition.replace(denoise(net, x_in, sigma, context, fps, condition.input_mask(x_in)), sigma)


@torch.no_grad()
def guided_x0(net: Network, x_t: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
              guidance: float, fps: float, condition: VideoCondition | None = None) -> torch.Tensor:
    """Two sequential batch-1 passes, cond then uncond, like the original (cosmos_triton/parallel/cfg.py runs
    them on two GPUs at once)."""
    cond_x0 = branch_x0(net, x_t, sigma, cond, fps, condition)
    return combine(cond_x0, branch_x0(net, x_t, sigma, uncond, fps, condition), guidance)
