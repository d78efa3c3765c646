"""Context parallelism for one DiT evaluation: the token sequence split over the ranks of a process group, the
self-attention made whole again by DeepSpeed-Ulysses all-to-alls (arXiv 2309.14509).

    net = DiTSpeed(attention="auto", compile=True).apply(load_dit(path, device=f"cuda:{rank}"))
    net = make_context_parallel(net, group)        # before warm_up: the compiled blocks trace the all-to-alls
    x0 = net(x, c_noise, context, fps, mask)       # every rank: the full output, equal to one GPU's

Every rank holds all weights. After the patch embedding the L tokens are cut into P contiguous shards
(`split_sizes`: L // P each, the first L % P ranks one more), and the RoPE cos/sin table and the learnable position
embedding are sliced the same way, so each rank runs the blocks on its L_r tokens:

- self-attention: Q, K, V are projected, QK-normalised and rotated on the local tokens (the same calls as
  `CosmosSpeedAttnProcessor`), then one all-to-all turns [B, L_r, 3, H, D] (sequence-sharded) into
  [B, L, 3, H_r, D] (head-sharded): each rank attends over the whole sequence with its H_r heads, through the
  chosen kernel (`CosmosSpeedAttnProcessor.attend`, so FA3/cuDNN/FP8 routing is unchanged); a second all-to-all
  brings the [B, L, H_r, D] output back to [B, L_r, H, D] before the output projection. Heads are split like
  tokens (`split_sizes(H, P)`): H % P == 0 balances them (32 heads of 7B and 40 of 14B over 2, 4, 8 ranks), any
  P <= H works (one rank may carry one head more).
- cross-attention on the 512 T5 tokens (replicated), the MLP and the AdaLN modulations are per token: local.
- the final layer runs on the local tokens and its [B, L_r, 64] output (64x smaller than the token stream) is
  all-gathered.

Per head the attention sees the same Q, K, V as on one GPU, so the only arithmetic differences are the GEMMs on
L_r rows instead of L (a library may pick another kernel) - within bf16 kernel noise; on CPU they are identical
(tests/test_parallel.py). The all-to-alls are `torch.distributed._functional_collectives`, which torch.compile traces
into the regional block graph (no graph break); the step cache composes: its distance is reduced over the group so
every rank skips the same evaluations (`GroupStepCache`). Ring attention is not implemented: uneven head shards
already cover P not dividing H on one host, and P > H (past 32/40 GPUs) is served by replicas (docs/parallel.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from diffusers.models.embeddings import apply_rotary_emb

from cosmos_triton.models.dit_speed import CosmosSpeedAttnProcessor, FastCosmosDiT
from cosmos_triton.models.step_cache import StepCache

CONTEXT_ATTENTION = ("ulysses",)
# torch 2.13 renamed all_gather_tensor (deprecated there) to all_gather_single; the project supports torch >= 2.4
_all_gather = getattr(funcol, "all_gather_single", None) or funcol.all_gather_tensor


def split_sizes(n: int, parts: int) -> tuple[int, ...]:
    """n split into `parts` contiguous pieces: n // parts each, the first n % parts one more."""
    if parts < 1 or n < parts:
        raise ValueError(f"cannot split {n} into {parts} non-empty parts")
    return tuple(n // parts + (1 if i < n % parts else 0) for i in range(parts))


def offsets(sizes: Sequence[int]) -> tuple[int, ...]:
    out = [0]
    for s in sizes:
        out.append(out[-1] + s)
    return tuple(out)


@dataclass(frozen=True, eq=False)
class SequencePlan:
    """How one sequence length is laid out over the group: tokens and heads per rank. Cached per (L, H) so that
    compiled blocks see the same object (one Dynamo guard) on every call of a shape."""

    group: Any  # dist.ProcessGroup
    rank: int
    world: int
    tokens: tuple[int, ...]
    heads: tuple[int, ...]

    @property
    def start(self) -> int:
        return offsets(self.tokens)[self.rank]

    @property
    def stop(self) -> int:
        return offsets(self.tokens)[self.rank + 1]

    @property
    def local_tokens(self) -> int:
        return self.tokens[self.rank]

    @property
    def local_heads(self) -> int:
        return self.heads[self.rank]


def sequence_to_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: SequencePlan
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ulysses forward all-to-all. q, k, v: [B, H, L_r, D] (the processor's layout) on this rank's tokens ->
    [B, H_r, L, D] on this rank's heads, every token. One collective for the three."""
    b, _, lr, d = q.shape
    head_off = offsets(plan.heads)
    send_sizes = [b * lr * 3 * h * d for h in plan.heads]
    send = q.new_empty(sum(send_sizes))
    pos = 0
    for j, n in enumerate(send_sizes):  # chunk for rank j: [B, L_r, 3, H_j, D], contiguous
        chunk = send[pos:pos + n].view(b, lr, 3, plan.heads[j], d)
        for i, t in enumerate((q, k, v)):
            chunk[:, :, i].copy_(t[:, head_off[j]:head_off[j + 1]].transpose(1, 2))
        pos += n
    hr = plan.local_heads
    recv_sizes = [b * li * 3 * hr * d for li in plan.tokens]
    recv = funcol.all_to_all_single(send, recv_sizes, send_sizes, plan.group)
    recv = funcol.wait_tensor(recv)
    length = sum(plan.tokens)
    if b == 1:  # the chunks from ranks 0..P-1 are the sequence in order
        full = recv.view(1, length, 3, hr, d)
    else:
        parts = torch.split(recv, recv_sizes)
        full = torch.cat([p.view(b, li, 3, hr, d) for p, li in zip(parts, plan.tokens, strict=True)], dim=1)
    return tuple(full[:, :, i].transpose(1, 2) for i in range(3))  # type: ignore[return-value]


def heads_to_sequence(out: torch.Tensor, plan: SequencePlan) -> torch.Tensor:
    """Ulysses backward all-to-all: attention output [B, L, H_r, D] on this rank's heads -> [B, L_r, H, D] on this
    rank's tokens."""
    b, _, hr, d = out.shape
    lr = plan.local_tokens
    if b == 1:  # contiguous [1, L, H_r, D]: rank j's tokens are one contiguous run
        send = out.contiguous().view(-1)
    else:
        send = torch.cat([c.reshape(-1) for c in torch.split(out, list(plan.tokens), dim=1)])
    send_sizes = [b * li * hr * d for li in plan.tokens]
    recv_sizes = [b * lr * h * d for h in plan.heads]
    recv = funcol.wait_tensor(funcol.all_to_all_single(send, recv_sizes, send_sizes, plan.group))
    parts = torch.split(recv, recv_sizes)
    return torch.cat([p.view(b, lr, h, d) for p, h in zip(parts, plan.heads, strict=True)], dim=2)


class UlyssesAttnProcessor(CosmosSpeedAttnProcessor):
    """Self-attention of a sequence shard: `CosmosSpeedAttnProcessor`'s projections, QK norm and RoPE on the local
    tokens, the attention product over the whole sequence on this rank's heads (all-to-all around the same kernel
    call). Outside a context-parallel forward (`plan` None, e.g. the eager reference path) it is the plain
    processor."""

    def __init__(self, backend: str, fp8: bool = False) -> None:
        super().__init__(backend, fp8=fp8)
        self.plan: SequencePlan | None = None

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb: Any = None) -> torch.Tensor:
        plan = self.plan
        if plan is None or encoder_hidden_states is not None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        if attention_mask is not None:
            raise ValueError("the Cosmos-1.0 DiT attends without a mask")
        query = attn.norm_q(attn.to_q(hidden_states).unflatten(2, (attn.heads, -1)).transpose(1, 2))
        key = attn.norm_k(attn.to_k(hidden_states).unflatten(2, (attn.heads, -1)).transpose(1, 2))
        value = attn.to_v(hidden_states).unflatten(2, (attn.heads, -1)).transpose(1, 2)
        if image_rotary_emb is not None:  # the table rows of this rank's tokens (ContextParallelDiT slices it)
            query = apply_rotary_emb(query, image_rotary_emb, use_real=True, use_real_unbind_dim=-2)
            key = apply_rotary_emb(key, image_rotary_emb, use_real=True, use_real_unbind_dim=-2)
        q, k, v = sequence_to_heads(query, key, value, plan)
        out = heads_to_sequence(self.attend(q, k, v), plan)  # [B, L_r, H, D]
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


class GroupStepCache(StepCache):
    """The step cache of a context-parallel DiT: each rank keeps the state of its own shard (memory / P), and the
    distance's two L1 sums are all-reduced over the group, so every rank takes the single-GPU decision."""

    def __init__(self, group: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group

    def distance(self, new: torch.Tensor, old: torch.Tensor) -> float:
        sums = torch.stack([torch.linalg.vector_norm(new - old, ord=1, dtype=torch.float32),
                            torch.linalg.vector_norm(old, ord=1, dtype=torch.float32)])
        dist.all_reduce(sums, group=self.group)
        return float(sums[0] / sums[1].clamp_min(torch.finfo(torch.float32).tiny))


class ContextParallelDiT(FastCosmosDiT):
    """A `FastCosmosDiT` whose blocks run on this rank's shard of the tokens (see the module docstring). Same call
    signature and result on every rank of `group`; every rank must make the same calls (collectives inside)."""

    def __init__(self, fast: FastCosmosDiT, group: Any = None, attention: str = "ulysses") -> None:
        if attention not in CONTEXT_ATTENTION:
            raise ValueError(f"context attention must be one of {CONTEXT_ATTENTION}, got {attention!r}")
        if isinstance(fast, ContextParallelDiT):
            raise TypeError("already context-parallel")
        if fast.warm_shapes:
            raise RuntimeError("make the DiT context-parallel before warm_up: the compiled blocks must trace the "
                               "all-to-alls (call make_context_parallel right after DiTSpeed.apply)")
        group = group if group is not None else dist.group.WORLD
        cache = fast.cache
        if cache is not None:
            cache = GroupStepCache(group, cache.method, max_sessions=cache.max_sessions, ttl_s=cache.ttl_s,
                                   clock=cache.clock)
            cache.rescale = fast.cache.rescale  # type: ignore[union-attr]
        world = dist.get_world_size(group)
        heads = fast.model.config.num_attention_heads
        if world > heads:
            raise ValueError(f"Ulysses splits the {heads} attention heads: at most {heads} ranks, got {world}")
        settings = dict(fast.settings, context_parallel=world, context_attention=attention)
        super().__init__(fast.reference, fast._blocks, cache, settings)
        self.group = group
        self.world = world
        self.rank = dist.get_rank(group)
        self._plans: dict[int, SequencePlan] = {}
        self.processors: list[UlyssesAttnProcessor] = []
        for block in self.model.transformer_blocks:
            processor = UlyssesAttnProcessor(settings["attention"], fp8=bool(settings.get("fp8_attention")))
            block.attn1.set_processor(processor)
            self.processors.append(processor)

    def plan(self, length: int) -> SequencePlan:
        """The layout of `length` tokens, one object per length (a handful of shapes per deployment)."""
        plan = self._plans.get(length)
        if plan is None:
            if length < self.world:
                raise ValueError(f"{length} tokens cannot be split over {self.world} ranks")
            heads = self.model.config.num_attention_heads
            plan = self._plans[length] = SequencePlan(self.group, self.rank, self.world,
                                                      split_sizes(length, self.world), split_sizes(heads, self.world))
        return plan

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, context: torch.Tensor, fps: float,
                condition_mask: torch.Tensor | None = None) -> torch.Tensor:
        try:
            return super().forward(x, c_noise, context, fps, condition_mask)
        finally:
            for processor in self.processors:
                processor.plan = None

    def _shard_sequence(self, tokens: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], pos: torch.Tensor
                        ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        plan = self.plan(tokens.shape[1])
        for processor in self.processors:
            processor.plan = plan
        s = slice(plan.start, plan.stop)
        # fresh copies: block 0 then sees the strides the other blocks see; a slice keeps stride L * D on the batch
        # dim (.contiguous() keeps it too when B = 1) and Dynamo would compile a second graph for it
        fresh = torch.contiguous_format
        return tokens[:, s].clone(memory_format=fresh), (rope[0][s], rope[1][s]), pos[:, s].clone(memory_format=fresh)

    def _gather_sequence(self, out: torch.Tensor) -> torch.Tensor:
        plan = self.processors[0].plan
        assert plan is not None
        longest = max(plan.tokens)
        if out.shape[1] < longest:  # uneven shards: pad to equal size for the all-gather, cut after
            out = torch.nn.functional.pad(out, (0, 0, 0, longest - out.shape[1]))
        # gathered along dim 0, the one every torch version's all-gather concatenates without a copy of its own
        gathered = funcol.wait_tensor(_all_gather(out.transpose(0, 1).contiguous(), 0, plan.group)).transpose(0, 1)
        if all(n == longest for n in plan.tokens):
            return gathered
        parts = torch.split(gathered, longest, dim=1)
        return torch.cat([p[:, :n] for p, n in zip(parts, plan.tokens, strict=True)], dim=1)


def make_context_parallel(net: FastCosmosDiT, group: Any = None, attention: str = "ulysses") -> ContextParallelDiT:
    """`net` (from `DiTSpeed.apply`, not yet warmed) split over `group` (default: the world). Installs the Ulysses
    processor on every self-attention of the shared model; `net.reference` still runs the whole sequence."""
    return ContextParallelDiT(net, group, attention)
