"""CFG-parallel guidance: the conditional and unconditional passes of one guided evaluation at the same time on the
two ranks of a process group (rank 0 cond, rank 1 uncond), combined into exactly `guided_x0`'s result.

    cfg_group, context_group = parallel_groups(context=2)       # 4 ranks: 2 branches x 2 sequence shards
    net = make_context_parallel(DiTSpeed(...).apply(dit), context_group)   # or the plain net when context == 1
    with net.step(session, threshold, final, branches=(cfg_branch(cfg_group),)):
        x0 = cfg_parallel_x0(net, x, sigma, cond, uncond, guidance, fps, condition, cfg_group)   # every rank

Each rank computes its branch with `branch_x0` (the same call `guided_x0` makes for it), the two x0 are
all-gathered and `combine`d in the same order on every rank: the same operations on the same values, so the result
is bit-identical to one process running both branches (tests/test_parallel.py), and every rank holds it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from cosmos_triton.diffusion.conditioning import VideoCondition
from cosmos_triton.diffusion.edm import Network
from cosmos_triton.diffusion.guidance import branch_x0, combine
from cosmos_triton.models.step_cache import BRANCHES


def cfg_branch(group: Any = None) -> str:
    """The branch this rank evaluates: "cond" on rank 0 of the CFG group, "uncond" on rank 1."""
    world = dist.get_world_size(group)
    if world != len(BRANCHES):
        raise ValueError(f"a CFG group has {len(BRANCHES)} ranks (one per branch), got {world}")
    return BRANCHES[dist.get_rank(group)]


@torch.no_grad()
def cfg_parallel_x0(net: Network, x_t: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
                    guidance: float, fps: float, condition: VideoCondition | None = None, group: Any = None
                    ) -> torch.Tensor:
    """`guided_x0` with its two branches on the two ranks of `group` (default: the world). Every rank passes the
    same arguments and gets the whole result."""
    context = cond if cfg_branch(group) == "cond" else uncond
    mine = branch_x0(net, x_t, sigma, context, fps, condition).contiguous()
    both = [torch.empty_like(mine) for _ in BRANCHES]
    dist.all_gather(both, mine, group=group)
    return combine(both[0], both[1], guidance)


def parallel_groups(context: int) -> tuple[Any, Any]:
    """Split the world into CFG x context ranks: `context` ranks per sequence (consecutive ranks, the fastest
    links), world / context (1 or 2) branches. Returns this rank's (CFG group, context group), None where that
    dimension is 1. Every rank must call it (new_group is collective)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    if context < 1 or world % context or world // context > len(BRANCHES):
        raise ValueError(f"{world} ranks cannot be split into 1 or 2 branches of {context} context ranks")
    branches = world // context
    context_group = cfg_group = None
    if context > 1:
        for b in range(branches):
            g = dist.new_group(list(range(b * context, (b + 1) * context)))
            if rank // context == b:
                context_group = g
    if branches > 1:
        for c in range(context):
            g = dist.new_group([c + b * context for b in range(branches)])
            if rank % context == c:
                cfg_group = g
    return cfg_group, context_group
