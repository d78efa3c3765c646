"""Context-parallel (Ulysses) and CFG-parallel DiT on CPU: 2 and 4 processes over gloo, every rank's result against
the single-process one (`CosmosDiT`, `guided_x0`, the cached sampler). Exact: on CPU the sharded arithmetic is the
same per token and per head, so equality is asserted bit for bit, in fp32 and bf16.

Uneven layouts are covered: 45 tokens over 2 and 4 ranks, 6 heads over 4 ranks (2, 2, 1, 1)."""

from __future__ import annotations

import faulthandler
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cosmos_triton.diffusion.conditioning import VideoCondition
from cosmos_triton.diffusion.guidance import guided_x0
from cosmos_triton.diffusion.sampler import SIGMA_MAX, initial_noise, sample
from cosmos_triton.models.checkpoints import DiTArchitecture
from cosmos_triton.models.dit import CosmosDiT, build_model
from cosmos_triton.models.dit_speed import DiTSpeed, FastCosmosDiT
from cosmos_triton.models.step_cache import relative_l1
from cosmos_triton.parallel.cfg import cfg_branch, cfg_parallel_x0, parallel_groups
from cosmos_triton.parallel.context import GroupStepCache, make_context_parallel, split_sizes
from export.small_dit import small_state_dict

T2W = DiTArchitecture(model_type="Text2World", model_channels=192, num_blocks=2, num_heads=6,
                      rope_scale=(2.0, 1.0, 1.0), adaln_lora_dim=16)
V2W = replace(T2W, model_type="Video2World")
ARCHS = {"t2w": T2W, "v2w": V2W}
LATENTS = {"even": (2, 8, 8), "uneven": (3, 6, 10)}  # (T, H, W) -> 2*4*4 = 32 and 3*3*5 = 45 tokens
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SAMPLE_LATENT = (16, 3, 6, 10)
STEPS = 5
RANK_TIMEOUT_S = 120  # a rank's whole run takes < 10 s
COMPILED_CASE = "t2w-b1-uneven-fp32"
THRESHOLD = 1.0  # teacache: on this random 2-block DiT some evaluations skip, some compute (asserted)


# --- the scenarios, built identically by the reference (this process) and every rank ---------------------------
def make_net(arch: DiTArchitecture, dtype: torch.dtype) -> CosmosDiT:
    return CosmosDiT(build_model(arch, small_state_dict(arch), dtype=dtype), arch)


def fast(net: CosmosDiT, cache: bool = False) -> FastCosmosDiT:
    return DiTSpeed(attention="sdpa", compile=False, cache="teacache" if cache else None).apply(net)


def forward_inputs(arch: DiTArchitecture, batch: int, latent: tuple[int, int, int], dtype: torch.dtype) -> tuple:
    gen = torch.Generator().manual_seed(batch * 100 + sum(latent))
    x = torch.randn(batch, 16, *latent, generator=gen).to(dtype)
    context = torch.randn(batch, 32, 1024, generator=gen).to(dtype)
    c_noise = (0.25 * torch.rand(batch, generator=gen).add(0.5).log()).to(dtype)
    mask = None
    if arch.model_type == "Video2World":  # the first latent frame conditioned
        mask = torch.zeros(batch, 1, *latent, dtype=dtype).index_fill(2, torch.tensor([0]), 1.0)
    return x, c_noise, context, 24.0, mask


def forward_cases() -> list[tuple[str, DiTArchitecture, int, tuple[int, int, int], torch.dtype]]:
    return [(f"{a}-b{b}-{lat}-{d}", arch, b, shape, dtype) for a, arch in ARCHS.items() for b in (1, 2)
            for lat, shape in LATENTS.items() for d, dtype in DTYPES.items()]


def guidance_inputs(arch: DiTArchitecture) -> tuple[torch.Tensor, torch.Tensor, VideoCondition | None]:
    gen = torch.Generator().manual_seed(7)
    cond = torch.randn(1, 32, 1024, generator=gen).bfloat16()
    uncond = torch.zeros_like(cond)
    condition = None
    if arch.model_type == "Video2World":
        gt = torch.randn(1, *SAMPLE_LATENT, generator=gen).bfloat16()
        condition = VideoCondition.build(gt, 1, initial_noise((1, *SAMPLE_LATENT), 3))
    return cond, uncond, condition


X0 = Callable[..., torch.Tensor]


def run_sample(net: FastCosmosDiT, arch: DiTArchitecture, x0: X0, branches: tuple[str, ...] = ("cond", "uncond")
               ) -> tuple[torch.Tensor, list[int]]:
    """The served sampler: one step scope per guided evaluation (the last final), the cache on. Returns the clean
    x0 and the evaluations skipped per step."""
    cond, uncond, condition = guidance_inputs(arch)
    skipped: list[int] = []

    def x0_fn(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        with net.step("s", THRESHOLD, final=len(skipped) == STEPS, branches=branches) as step:
            out = x0(net, x, sigma, cond, uncond, 7.0, 24.0, condition)
        skipped.append(step.skipped)
        return out

    return sample(x0_fn, initial_noise((1, *SAMPLE_LATENT), 1) * SIGMA_MAX, STEPS), skipped


# --- the ranks -----------------------------------------------------------------------------------------------------
def _context_parallel_forwards(group: object) -> dict[str, object]:
    out: dict[str, object] = {}
    nets: dict[tuple, FastCosmosDiT] = {}
    for name, arch, batch, latent, dtype in forward_cases():
        key = (arch.model_type, dtype)
        if key not in nets:
            nets[key] = make_context_parallel(fast(make_net(arch, dtype)), group)
        out[f"forward/{name}"] = nets[key](*forward_inputs(arch, batch, latent, dtype))
    return out


def _compiled_forward() -> torch.Tensor:
    """The blocks compiled whole (fullgraph: the all-to-alls trace without a graph break), with aot_eager's eager
    kernels so the bits stay comparable."""
    _, arch, batch, latent, dtype = next(c for c in forward_cases() if c[0] == COMPILED_CASE)
    speed = DiTSpeed(attention="sdpa", compile=True, cache=None, fullgraph=True, compile_backend="aot_eager")
    return make_context_parallel(speed.apply(make_net(arch, dtype)))(*forward_inputs(arch, batch, latent, dtype))


def _group_distance(group: object) -> dict[str, object]:
    """GroupStepCache.distance on this rank's token shard, for the whole-tensor relative_l1."""
    gen = torch.Generator().manual_seed(5)
    new, old = torch.randn(1, 45, 192, generator=gen), torch.randn(1, 45, 192, generator=gen)
    sizes = split_sizes(45, dist.get_world_size(group))
    start = sum(sizes[:dist.get_rank(group)])
    shard = slice(start, start + sizes[dist.get_rank(group)])
    return {"distance": GroupStepCache(group).distance(new[:, shard], old[:, shard]), "whole": relative_l1(new, old)}


def _sampling(arch: DiTArchitecture, cfg_group: object, context_group: object) -> tuple[torch.Tensor, list[int]]:
    net = fast(make_net(arch, torch.bfloat16), cache=True)
    if context_group is not None:
        net = make_context_parallel(net, context_group)
    if cfg_group is None:
        return run_sample(net, arch, guided_x0)
    x0, skipped = run_sample(net, arch, lambda *a: cfg_parallel_x0(*a, group=cfg_group), (cfg_branch(cfg_group),))
    both = torch.tensor(skipped)
    dist.all_reduce(both, group=cfg_group)  # each rank skips in its own branch; one process counts both
    return x0, both.tolist()


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)  # P ranks share this machine's cores
    # ranks that diverge (e.g. different cache decisions) wait in mismatched collectives: fail, not hang
    faulthandler.dump_traceback_later(RANK_TIMEOUT_S, exit=True)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_grad_enabled(False)  # inference, as the reference
    try:
        results = _context_parallel_forwards(None) | _group_distance(None)
        cfg_group, context_group = parallel_groups(context=world // 2)  # 2 branches of world / 2 context ranks
        for a, arch in ARCHS.items():
            results[f"cfg/{a}"] = _sampling(arch, cfg_group, context_group)
        if world > 2:  # context-parallel with the cache, no CFG split: the group-reduced decisions
            results["context/t2w"] = _sampling(T2W, None, dist.group.WORLD)
        else:
            from torch._dynamo.utils import counters

            results[f"compiled/{COMPILED_CASE}"] = _compiled_forward()
            results["graphs"] = (counters["stats"]["unique_graphs"], sum(counters["graph_break"].values()))
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def spawn(world: int, tmp_path: Path) -> list[dict]:
    """The ranks forked from a server process that imported this module once (torch, diffusers: ~8 s per import on
    a loaded 2-core machine) and never ran an OpenMP region, so forking it is safe."""
    mp.set_forkserver_preload([__name__])
    mp.start_processes(_worker, (world, str(tmp_path / "store"), str(tmp_path)), nprocs=world, join=True,
                       start_method="forkserver")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]


# --- the single-process references, computed once --------------------------------------------------------------
@pytest.fixture(scope="module")
def reference() -> Iterator[dict[str, object]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these tiny ops only wait for each other's threads on a shared machine (10x slower)
    try:
        with torch.no_grad():
            out = references()
    finally:
        torch.set_num_threads(threads)
    yield out


def references() -> dict[str, object]:
    out: dict[str, object] = {}
    nets: dict[tuple, CosmosDiT] = {}
    for name, arch, batch, latent, dtype in forward_cases():
        net = nets.setdefault((arch.model_type, dtype), make_net(arch, dtype))
        out[f"forward/{name}"] = net(*forward_inputs(arch, batch, latent, dtype))  # diffusers' forward
    for a, arch in ARCHS.items():
        out[f"cfg/{a}"] = run_sample(fast(make_net(arch, torch.bfloat16), cache=True), arch, guided_x0)
    out["context/t2w"] = out["cfg/t2w"]
    out[f"compiled/{COMPILED_CASE}"] = out[f"forward/{COMPILED_CASE}"]
    return out


def check(ranks: list[dict], reference: dict[str, object]) -> None:
    for key, expected in reference.items():
        if key not in ranks[0]:
            continue
        for rank, results in enumerate(ranks):
            got = results[key]
            if isinstance(expected, tuple):  # (x0, skipped per step) of a sampling run
                assert got[1] == expected[1], f"{key}: rank {rank} skipped {got[1]}, one process {expected[1]}"
                got, expected_x0 = got[0], expected[0]
            else:
                expected_x0 = expected
            same = torch.equal(got, expected_x0)
            assert same, f"{key}: rank {rank} max |diff| {(got.double() - expected_x0.double()).abs().max().item():.3g}"


def test_split_sizes():
    assert split_sizes(45, 4) == (12, 11, 11, 11)
    assert split_sizes(6, 4) == (2, 2, 1, 1)
    with pytest.raises(ValueError):
        split_sizes(3, 4)


def test_the_reference_sampling_both_skips_and_computes(reference):
    for key in ("cfg/t2w", "cfg/v2w"):
        skipped = reference[key][1]
        assert skipped[0] == 0 and skipped[-1] == 0 and sum(skipped) > 0 and 0 in skipped[1:-1], skipped


@pytest.mark.parametrize("world", [2, 4])
def test_parallel_equals_one_process(world, tmp_path, reference):
    """world 2: Ulysses over 2 ranks (3 heads each), eager and compiled; CFG over 2 ranks. world 4: Ulysses over
    4 ranks (uneven heads), CFG x 2 context ranks, and 4-way context with the step cache."""
    ranks = spawn(world, tmp_path)
    check(ranks, reference)
    assert len(ranks[0]) == len(forward_cases()) + 2 + len(ARCHS) + 1 + (world == 2)  # every result compared
    if world == 2:
        assert ranks[0]["graphs"] == (1, 0)  # one block graph, all-to-alls inside it
    for results in ranks:
        assert results["distance"] == pytest.approx(results["whole"], rel=1e-5)  # fp32 sums, other order
