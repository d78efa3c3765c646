"""Step caching (issue #11 "cache" mode): off is bit-identical, skips are counted, state is per (session, branch),
interleaved requests never mix, memory is bounded."""

import pytest
import torch

from cosmos_triton.diffusion.guidance import guided_x0
from cosmos_triton.diffusion.sampler import SIGMA_MAX, euler_step, initial_noise, karras_sigmas, sample
from cosmos_triton.models.dit import CosmosDiT, build_model
from cosmos_triton.models.dit_speed import DiTSpeed
from cosmos_triton.models.step_cache import TEACACHE_COSMOS_COEFFICIENTS, StepCache, relative_l1
from export.small_dit import SMALL_T2W, small_state_dict

LATENT = (1, 16, 4, 16, 24)
STEPS = 6


@pytest.fixture(scope="module")
def plain_net():
    return CosmosDiT(build_model(SMALL_T2W, small_state_dict(SMALL_T2W)), SMALL_T2W)


def contexts(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    cond = torch.randn(1, 32, 1024, generator=gen).bfloat16()
    return cond, torch.zeros_like(cond)


def fast_net(plain_net, method: str = "teacache", **kw):
    return DiTSpeed(attention="sdpa", compile=False, cache=method, **kw).apply(plain_net)


def run_sample(net, seed: int, session=None, threshold: float = 0.0, reports=None) -> torch.Tensor:
    """The sampler as the stage will drive it: one `step` scope per guided evaluation, the last one final."""
    cond, uncond = contexts(seed)
    calls = [0]

    def x0_fn(x, sigma):
        final = calls[0] == STEPS
        calls[0] += 1
        if session is None:
            return guided_x0(net, x, sigma, cond, uncond, 7.0, 24.0)
        with net.step(session, threshold, final=final) as report:
            out = guided_x0(net, x, sigma, cond, uncond, 7.0, 24.0)
        if reports is not None:
            reports.append(report)
        return out

    return sample(x0_fn, initial_noise(LATENT, seed) * SIGMA_MAX, STEPS)


def test_threshold_zero_is_bit_identical_to_no_cache(plain_net):
    reference = run_sample(plain_net, seed=1)
    net = fast_net(plain_net)
    reports = []
    off = run_sample(net, seed=1, session="a", threshold=0.0, reports=reports)
    assert torch.equal(off, reference)
    assert sum(r.skipped for r in reports) == 0
    assert net.cache.sessions == ()  # off never stores state


def test_teacache_skips_counts_and_always_computes_first_and_final(plain_net):
    net = fast_net(plain_net)
    reports = []
    cached = run_sample(net, seed=1, session="a", threshold=1.0, reports=reports)
    reference = run_sample(plain_net, seed=1)
    assert len(reports) == STEPS + 1
    assert all(r.branches == ["cond", "uncond"] for r in reports)
    assert reports[0].skipped == 0 and reports[-1].skipped == 0
    skipped = sum(r.skipped for r in reports)
    assert skipped >= 4  # 6 steps of a 2-block random DiT change a lot per step: 1.0 is a high threshold here
    stats = reports[-1].session_stats
    assert stats["total"] == {"evaluations": 2 * (STEPS + 1), "skipped": skipped}
    assert stats["cond"]["skipped"] + stats["uncond"]["skipped"] == skipped
    assert net.cache.sessions == ()  # the final step freed the session
    assert not torch.equal(cached, reference)
    rel = ((cached - reference).norm() / reference.norm()).item()
    assert rel < 0.5, rel  # lossy but the same sample, not noise


def test_cond_and_uncond_have_separate_caches(plain_net):
    net = fast_net(plain_net)
    cond, uncond = contexts(3)
    x = initial_noise(LATENT, 3)
    with net.step("s", 0.3):
        guided_x0(net, x, torch.tensor([2.0]), cond, uncond, 7.0, 24.0)
    session = net.cache._sessions["s"]
    assert set(session.branches) == {"cond", "uncond"}
    a, b = session.branches["cond"], session.branches["uncond"]
    assert a.residual is not None and b.residual is not None
    assert not torch.equal(a.residual, b.residual)  # the contexts differ, so do the blocks' residuals


def test_interleaved_sessions_do_not_mix(plain_net):
    """Request A alone, then A and B stepped alternately through one net: A's result is unchanged bit for bit."""

    def run(net, sessions):
        sigmas = karras_sigmas(STEPS)
        xs = {s: initial_noise(LATENT, seed).double() * SIGMA_MAX for s, seed in sessions.items()}
        skipped = dict.fromkeys(sessions, 0)
        for i in range(STEPS + 1):
            for session, seed in sessions.items():
                cond, uncond = contexts(seed)
                s = sigmas[i : i + 1]
                with net.step(session, 1.0, final=i == STEPS) as report:
                    x0 = guided_x0(net, xs[session].float(), s.float(), cond, uncond, 7.0, 24.0).double()
                skipped[session] += report.skipped
                xs[session] = x0 if i == STEPS else euler_step(xs[session], s, sigmas[i + 1 : i + 2], x0)
        return xs, skipped

    alone, skipped_alone = run(fast_net(plain_net), {"A": 1})
    both, skipped = run(fast_net(plain_net), {"A": 1, "B": 2})
    assert skipped["A"] > 0 and skipped["B"] > 0  # cached residuals were applied in both requests
    assert skipped["A"] == skipped_alone["A"]
    assert torch.equal(both["A"], alone["A"])
    assert not torch.equal(both["B"], alone["A"])


def test_a_third_call_in_one_step_and_nested_steps_raise(plain_net):
    net = fast_net(plain_net)
    cond, uncond = contexts(0)
    x = initial_noise(LATENT, 0)
    with pytest.raises(RuntimeError, match="one call more"), net.step("s", 0.3):
        guided_x0(net, x, torch.tensor([2.0]), cond, uncond, 7.0, 24.0)
        guided_x0(net, x, torch.tensor([2.0]), cond, uncond, 7.0, 24.0)
    with pytest.raises(RuntimeError, match="do not nest"), net.step("s", 0.3), net.step("t", 0.3):
        pass
    # a CFG-parallel rank evaluates one branch per step: its call is that branch, a second one raises
    with pytest.raises(RuntimeError, match="one call more"), net.step("u", 0.3, branches=("uncond",)) as step:
        net(x.bfloat16(), torch.tensor([0.3]).bfloat16(), uncond, 24.0)
        assert step.branches == ["uncond"] and net.cache.stats("u").keys() == {"uncond", "total"}
        net(x.bfloat16(), torch.tensor([0.3]).bfloat16(), uncond, 24.0)
    with pytest.raises(ValueError, match="branches"), net.step("v", 0.3, branches=("both",)):
        pass


def test_fbcache_skips_blocks_after_the_first(plain_net):
    net = fast_net(plain_net, method="fbcache")
    reports = []
    run_sample(net, seed=1, session="a", threshold=10.0, reports=reports)  # any first-block change passes
    assert reports[0].skipped == 0 and reports[-1].skipped == 0
    assert sum(r.skipped for r in reports) == 2 * (STEPS - 1)
    net = fast_net(plain_net, method="fbcache")
    reports = []
    run_sample(net, seed=1, session="a", threshold=1e-9, reports=reports)  # nothing passes
    assert sum(r.skipped for r in reports) == 0


def test_teacache_rule_on_a_constant_signal():
    """With no change the rescaled distance is the polynomial's constant 0.1418 per call: at threshold 0.3 two
    calls skip after each computed one (compute, skip, skip, compute, ...); the final call always computes."""
    cache = StepCache("teacache")
    signal = torch.ones(1, 8, 4)
    decisions = []
    for i in range(7):
        state = cache.branch("s", "cond", (1, 8, 4), c_noise=-float(i))
        skip = cache.teacache_skip(state, signal, 0.3, final=i == 6)
        if not skip:
            state.residual = torch.zeros(1, 8, 4)
        decisions.append(skip)
    assert decisions == [False, True, True, False, True, True, False]
    assert TEACACHE_COSMOS_COEFFICIENTS[-1] == pytest.approx(0.1418, abs=1e-4)
    assert cache.stats("s")["cond"] == {"evaluations": 7, "skipped": 4}


def test_sessions_are_bounded_evicted_and_reset():
    now = [0.0]
    cache = StepCache("teacache", max_sessions=2, ttl_s=100.0, clock=lambda: now[0])
    for name in ("a", "b", "c"):
        cache.branch(name, "cond", (1, 2), 0.0)
    assert cache.sessions == ("b", "c")  # least recently used evicted
    cache.branch("b", "cond", (1, 2), 0.0)
    now[0] = 150.0
    cache.branch("d", "cond", (1, 2), 0.0)
    assert cache.sessions == ("d",)  # idle past the TTL
    assert cache.end_session("d") is not None and cache.sessions == ()
    state = cache.branch("e", "cond", (1, 2), c_noise=0.0)
    state.residual = torch.ones(1, 2)
    assert cache.branch("e", "cond", (1, 2), c_noise=-0.5) is state  # noise goes down: the same run
    assert cache.branch("e", "cond", (1, 2), c_noise=1.0).residual is None  # up: a new run, no stale residual
    assert cache.branch("e", "cond", (1, 3), c_noise=0.5).residual is None  # another shape


def test_relative_l1():
    a = torch.tensor([1.0, -2.0, 3.0])
    assert relative_l1(a * 1.1, a) == pytest.approx(0.1, rel=1e-6)
    assert relative_l1(a, a) == 0.0
