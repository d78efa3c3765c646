"""Video2World conditioning: the first latent frames are given, every denoiser call sees them as
c_in(0.001)(gt + 0.001 N) and its x0 of those frames is replaced by the clean latent, in both CFG branches.
See docs/MATH.md, Video2World conditioning.

dtypes follow NVIDIA's DiffusionV2WModel: gt latent and indicator bf16, the augmented latent float32
(bf16 + f32 N x bf16 sigma), c_in(0.001) bf16, c_in(sigma) from the float32 sigma the sampler passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cosmos_triton.diffusion.edm import edm_scaling

AUGMENT_SIGMA = 0.001  # DEFAULT_AUGMENT_SIGMA, condition_video_augment_sigma_in_inference


def _per_sample(c: torch.Tensor) -> torch.Tensor:
    return c.reshape(-1, 1, 1, 1, 1)


@dataclass
class VideoCondition:
    gt_latent: torch.Tensor  # [1, 16, T, h, w] bf16, normalised encoder output of the padded input clip
    augment_latent: torch.Tensor  # gt + 0.001 N, float32
    indicator: torch.Tensor  # [1, 1, T, 1, 1] bf16, 1 on the conditioned latent frames

    @classmethod
    def build(cls, gt_latent: torch.Tensor, num_condition_frames: int, noise: torch.Tensor) -> VideoCondition:
        """`noise` is the seeded N of the initial noise (arch_invariant_rand with the same shape and seed)."""
        gt_latent = gt_latent.to(torch.bfloat16)
        sigma = torch.tensor([AUGMENT_SIGMA], dtype=torch.bfloat16, device=gt_latent.device)
        augment = gt_latent + noise.to(gt_latent.device, torch.float32) * _per_sample(sigma)
        indicator = torch.zeros(1, 1, gt_latent.shape[2], 1, 1, dtype=torch.bfloat16, device=gt_latent.device)
        indicator[:, :, :num_condition_frames] += 1.0
        return cls(gt_latent, augment, indicator)

    @classmethod
    def from_parts(cls, gt_latent: torch.Tensor, augment_latent: torch.Tensor, num_condition_frames: int
                   ) -> VideoCondition:
        """Rebuilt in the DiT-step model from what the sampler sends (the augment noise is drawn once there)."""
        indicator = torch.zeros(1, 1, gt_latent.shape[2], 1, 1, dtype=torch.bfloat16, device=gt_latent.device)
        indicator[:, :, :num_condition_frames] += 1.0
        return cls(gt_latent.to(torch.bfloat16), augment_latent.to(torch.float32), indicator)

    def active_indicator(self, sigma: torch.Tensor) -> torch.Tensor:
        # NVIDIA's inference trick: once sigma <= the augment sigma, generate every frame (never at sigma_min 0.002)
        return self.indicator * 0 if sigma.flatten()[0] <= AUGMENT_SIGMA else self.indicator

    def input_mask(self, like: torch.Tensor) -> torch.Tensor:
        """The condition-mask channel [B, 1, T, H, W]; the unconditional branch keeps it too."""
        b, _, t, h, w = like.shape
        ones = torch.ones(b, 1, t, h, w, dtype=self.indicator.dtype, device=like.device)
        return self.indicator * ones + (1 - self.indicator) * torch.zeros_like(ones)

    def network_input(self, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """ind c_in(0.001) (gt + 0.001 N) / c_in(sigma) + (1 - ind) x_t: the net's own c_in(sigma) then cancels."""
        aug_sigma = torch.tensor([AUGMENT_SIGMA], dtype=torch.bfloat16, device=x_t.device)
        c_in_aug = edm_scaling(aug_sigma)[2]
        c_in = edm_scaling(sigma)[2]
        augment_cin = self.augment_latent * _per_sample(c_in_aug) * _per_sample(1 / c_in)
        ind = self.active_indicator(sigma)
        return ind * augment_cin + (1 - ind) * x_t

    def replace(self, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x0 of the conditioned frames replaced by the clean latent (x0_pred_replaced)."""
        ind = self.active_indicator(sigma)
        return ind * self.gt_latent + (1 - ind) * x0
