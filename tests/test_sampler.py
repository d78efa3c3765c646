"""The sampler against closed-form oracles: Gaussian data has an exact denoiser and an exact PF-ODE solution."""

import itertools
import math

import numpy as np
import pytest
import torch

from cosmos_triton.diffusion.sampler import initial_noise, karras_sigmas, res2ab_step, sample

MU, S = 0.3, 0.7  # data ~ N(MU, S^2) per element


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The ideal x0 predictor for N(MU, S^2) data: E[x0 | x_sigma] = MU + S^2/(S^2+sigma^2) (x - MU)."""
    sigma = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return MU + S**2 / (S**2 + sigma**2) * (x - MU)


def exact_final_x0(x_T: torch.Tensor, sigma_max: float, sigma_min: float) -> torch.Tensor:
    """PF-ODE dx/dsigma = (x - D)/sigma keeps (x - MU)/sqrt(S^2 + sigma^2) constant; then one clean D call."""
    x_min = MU + (x_T - MU) * math.sqrt((S**2 + sigma_min**2) / (S**2 + sigma_max**2))
    return gaussian_denoiser(x_min, torch.tensor([sigma_min], dtype=torch.float64))


def test_karras_sigmas_match_reference_values():
    sigmas = karras_sigmas(35)
    assert sigmas.dtype == torch.float64 and len(sigmas) == 36
    # docs/MATH.md, Sigma schedule: 80, 68.33, 58.14, 49.29, 41.62, 34.99, ..., 0.0216, 0.0128, 0.0073, 0.0039, 0.002
    np.testing.assert_allclose(sigmas[:6].numpy(), [80, 68.33, 58.14, 49.29, 41.62, 34.99], atol=5e-3)
    np.testing.assert_allclose(sigmas[-5:].numpy(), [0.0216, 0.0128, 0.0073, 0.0039, 0.002], atol=5e-5)
    assert sigmas[0].item() == 80.0 and math.isclose(sigmas[-1].item(), 0.002, rel_tol=1e-12)
    # independent formula, element by element in plain Python floats
    for i in (0, 7, 20, 35):
        expected = (80 ** (1 / 7) + i / 35 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
        assert math.isclose(sigmas[i].item(), expected, rel_tol=1e-14)


def _error(num_steps: int) -> float:
    x_T = initial_noise((1, 4, 3, 2, 2), seed=3).double() * 80
    out = sample(gaussian_denoiser, x_T, num_steps)
    return (out - exact_final_x0(x_T, 80.0, 0.002)).abs().max().item()


def test_res2ab_converges_to_the_exact_pf_ode_solution_at_second_order():
    errors = [_error(n) for n in (20, 40, 80, 160)]
    ratios = [a / b for a, b in itertools.pairwise(errors)]
    assert errors[-1] < 2e-3, errors
    # second order: halving the step size divides the error by ~4 (first-order Euler would give ~2)
    assert all(3.5 < r < 5.5 for r in ratios), (errors, ratios)
    assert ratios[-1] == pytest.approx(4.0, rel=0.1)


def test_first_step_is_euler_and_later_steps_use_history():
    calls: list[float] = []

    def recording(x, sigma):
        calls.append(sigma.item())
        return gaussian_denoiser(x, sigma)

    x_T = torch.ones(1, 1, 1, 1, 1, dtype=torch.float64) * 80
    sample(recording, x_T, 3)
    sig = karras_sigmas(3)
    assert calls == pytest.approx([sig[0].item(), sig[1].item(), sig[2].item(), 0.002], rel=1e-15)
    # hand-computed reference of two steps
    x = x_T.clone()
    x0 = gaussian_denoiser(x, sig[0:1])
    x1 = (sig[0] - sig[1]) / sig[0] * x0 + sig[1] / sig[0] * x
    x0_1 = gaussian_denoiser(x1, sig[1:2])
    h = math.log(sig[1] / sig[2])
    c2 = (-math.log(sig[0]) + math.log(sig[1])) / h
    p1 = math.expm1(-h) / -h
    p2 = (p1 - 1) / -h
    b2 = p2 / c2
    x2 = math.exp(-h) * x1 + h * ((p1 - b2) * x0_1 + b2 * x0)
    ours = res2ab_step(x1, sig[1:2], sig[2:3], x0_1, sig[0:1], x0)
    assert ours.item() == pytest.approx(x2.item(), rel=1e-12)


def test_float32_state_promotes_to_float64_and_x0_fn_sees_float32():
    seen = []

    def fn(x, sigma):
        seen.append((x.dtype, sigma.dtype))
        return gaussian_denoiser(x, sigma).float()

    out = sample(fn, initial_noise((1, 2, 2, 2, 2), seed=1) * 80, 4)
    assert out.dtype == torch.float32
    assert set(seen) == {(torch.float32, torch.float32)}


def test_initial_noise_is_numpy_randomstate_standard_normal():
    n = initial_noise((1, 16, 2, 3, 4), seed=7)
    ref = np.random.RandomState(7).standard_normal((1, 16, 2, 3, 4)).astype(np.float32)
    assert n.dtype == torch.float32 and np.array_equal(n.numpy(), ref)
    assert not torch.equal(n, initial_noise((1, 16, 2, 3, 4), seed=8))


def test_solver_state_is_float64_from_the_first_step():
    """NVIDIA's solver keeps x in fp64 even though x_T is float32: every x the denoiser sees is float32 of an
    fp64 recurrence (here written with the step functions, each checked against hand formulas above)."""
    seen = []

    def fn(x, sigma):
        seen.append(x.clone())
        return gaussian_denoiser(x, sigma)  # float32 in, float32 out

    x_T = initial_noise((1, 16, 4, 8, 8), seed=11) * 80
    sample(fn, x_T, 4)
    sig = karras_sigmas(4)
    x, history = x_T.double(), None
    for i in range(4):
        assert torch.equal(seen[i], x.float()), i
        x0 = gaussian_denoiser(x.float(), sig[i : i + 1].float()).double()
        s, t = sig[i : i + 1], sig[i + 1 : i + 2]
        x = ((s - t) / s * x0 + t / s * x) if history is None else res2ab_step(x, s, t, x0, *history)
        history = (s, x0)
    assert torch.equal(seen[4], x.float())


def test_progress_callback_counts_every_denoiser_evaluation():
    steps = []
    x_T = torch.ones(1, 1, 1, 1, 1, dtype=torch.float64)
    sample(gaussian_denoiser, x_T, 3, callback=lambda i, n: steps.append((i, n)))
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]  # 3 solver steps + the final clean x0
