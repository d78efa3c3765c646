"""The Cosmos-1.0 sampler: Karras sigmas, RES-2ab multistep in fp64, final clean x0 (docs/MATH.md, Sigma schedule,
Sampler, Seeding).

Written as equations over an abstract denoiser `x0_fn(x, sigma) -> x0`, so the same loop runs in-process and in
the Triton BLS model (where x0_fn is a call to the DiT-step model). Operation order follows NVIDIA's code so
that fp64 results are bitwise identical to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

SIGMA_MIN = 0.002  # the Sampler default; EDMSDE's 0.0002 never reaches it
SIGMA_MAX = 80.0
RHO = 7.0

X0Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, int], None]


def karras_sigmas(num_steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                  rho: float = RHO) -> torch.Tensor:
    """sigma_i = (sigma_max^(1/rho) + i/N (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, i = 0..N (fp64)."""
    i = torch.arange(num_steps + 1, dtype=torch.float64)
    return (sigma_max ** (1 / rho) + i / num_steps * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def initial_noise(shape: Sequence[int], seed: int) -> torch.Tensor:
    """N ~ numpy.RandomState(seed).standard_normal(shape) as float32: architecture-invariant seeding
    (docs/MATH.md, Seeding)."""
    return torch.from_numpy(np.random.RandomState(seed).standard_normal(tuple(shape)).astype(np.float32))


def euler_step(x_s: torch.Tensor, s: torch.Tensor, t: torch.Tensor, x0_s: torch.Tensor) -> torch.Tensor:
    """First-order step from sigma s to t: x_t = (s - t)/s * x0_s + t/s * x_s."""
    return (s - t) / s * x0_s + t / s * x_s


def phi1(z: torch.Tensor) -> torch.Tensor:
    return torch.expm1(z) / z


def phi2(z: torch.Tensor) -> torch.Tensor:
    return (phi1(z) - 1.0) / z


def res2ab_step(x_s: torch.Tensor, s: torch.Tensor, t: torch.Tensor, x0_s: torch.Tensor,
                s_prev: torch.Tensor, x0_prev: torch.Tensor) -> torch.Tensor:
    """RES second-order Adams-Bashforth step in lambda = -ln(sigma), using the previous x0 prediction.

    h = lambda_t - lambda_s,  c2 = (lambda_prev - lambda_s) / h,
    b2 = phi2(-h) / c2,  b1 = phi1(-h) - b2,
    x_t = e^(-h) x_s + h (b1 x0_s + b2 x0_prev).
    """
    lam_s, lam_t, lam_prev = -torch.log(s), -torch.log(t), -torch.log(s_prev)
    h = lam_t - lam_s
    c2 = (lam_prev - lam_s) / h
    p1, p2 = phi1(-h), phi2(-h)
    b1 = torch.nan_to_num(p1 - 1.0 / c2 * p2, nan=0.0)
    b2 = torch.nan_to_num(1.0 / c2 * p2, nan=0.0)
    return torch.exp(-h) * x_s + h * (b1 * x0_s + b2 * x0_prev)


def sample(x0_fn: X0Fn, x_T: torch.Tensor, num_steps: int, callback: StepCallback | None = None) -> torch.Tensor:
    """35 RES-2ab steps (first one Euler) from sigma_max to sigma_min, then x0 = D(x_N, sigma_min).

    x0_fn sees float32 inputs (NVIDIA's wrapper casts fp64 -> input dtype); its result is promoted to fp64 and all
    solver arithmetic is fp64. Returns the final clean x0 in float32. Batch size 1, as the original.
    """
    in_dtype = x_T.dtype
    sigmas = karras_sigmas(num_steps).to(x_T.device)

    def x0_fp64(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x0_fn(x.to(in_dtype), sigma.to(in_dtype)).to(torch.float64)

    x, history = x_T, None
    for i in range(num_steps):
        # [1]-shaped (not 0-d) so that products with the float32 x_T promote to fp64, as in NVIDIA's batch_mul
        s, t = sigmas[i : i + 1], sigmas[i + 1 : i + 2]
        x0 = x0_fp64(x, s)
        x = euler_step(x, s, t, x0) if history is None else res2ab_step(x, s, t, x0, *history)
        history = (s, x0)
        if callback is not None:
            callback(i + 1, num_steps + 1)
    x0 = x0_fp64(x, sigmas[-1:])
    if callback is not None:
        callback(num_steps + 1, num_steps + 1)
    return x0.to(in_dtype)
