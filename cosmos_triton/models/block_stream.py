"""Block-granular offload: transformer blocks streamed from pinned host memory through a few device slots.

The blocks of a transformer run one after another, so only the block being computed needs its weights on the
device. `BlockStreamer` keeps every block's parameters and buffers packed in one page-locked host buffer per block
and `slots` (default 2) device buffers the size of the largest block. Block i always lives in slot i % slots, at
the same addresses, so each of its tensors can point at its slot permanently while streaming is engaged; what
changes is which block's bytes the slot holds. Per block:

    before block i (forward pre-hook):  if slot s = i % slots does not hold block i, copy it now;
                                        the compute stream waits for the slot's copy event
    after block i (forward hook):       record the slot's compute event on the compute stream;
                                        the side stream waits for it, then copies the next block that
                                        runs in slot s (i + slots, cyclically) and records the copy event

so the copy of block i+1 overlaps the compute of block i (double buffering with 2 slots) and a slot is never
overwritten before the kernels that read it have run. The order is cyclic: after the last block the first ones are
loaded again, which is what the next pass needs (the unconditional pass after the conditional one, the next
denoising step, the next generated token).

Memory on the device: slots * max_block_bytes + the non-block weights (`rest`, resident while engaged) + the
activations. Transfer per forward pass: sum of all block bytes (every block is copied once per pass when the model
has more blocks than slots). For the 7B DiT (28 blocks of 0.51 GB bf16, rest 0.2 GB): 1.2 GB resident instead of
14.3 GB, 14.3 GB per pass, 28.6 GB per guided step; at 25-50 GB/s that is 10-20 ms per block against ~150 ms of
compute per block, so the copies hide behind compute (see `benchmarks/memory.py` for the measurement).

torch.compile: the hooks are `torch.compiler.disable`d and only issue copies and event waits; regional compile
(`block.compile()` or `torch.compile(block)` per block, the speed mode) composes: the hooks run eagerly around the
compiled block body, whose weights are graph inputs (their addresses change per slot, which plain compile allows).
Excluded: `fullgraph=True` compile of the whole model (the hooks are graph breaks) and CUDA graphs
(`mode="reduce-overhead"`), which would capture one slot's contents.

On a CPU device with `emulate=True` the slots are CPU buffers and copies are deferred until waited on
(`offload.CopyStream`), so a missing wait shows up as wrong numbers in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cosmos_triton.models.offload import (
    DEFAULT_LEASE_S,
    CopyStream,
    HostBuffer,
    Lease,
    Offloader,
    PackedTensors,
    release_cached_memory,
    unique_tensors,
)


class BlockStreamer(Lease):
    """Stream `blocks` (called in order, any number of passes) through `slots` device buffers; the other tensors
    of `model` (`rest`) are uploaded whole while streaming is engaged.

    Same protocol as `Offloader`: `on_device(keep)` around a call, `prefetch()`, `release()`. Between calls with
    keep=True the slots stay allocated and already hold the first blocks of the next pass.
    `trace`: record ("copy"|"wait"|"done", block, slot) events, for tests.
    """

    def __init__(self, model: nn.Module, blocks: Sequence[nn.Module], device: str | torch.device, *,
                 slots: int = 2, pin: bool | None = None, emulate: bool = False, empty_cache: bool = True,
                 lease_s: float = DEFAULT_LEASE_S, trace: bool = False) -> None:
        super().__init__(lease_s)
        if slots < 2:
            raise ValueError("block streaming needs at least 2 slots (one computing, one loading)")
        self.blocks = list(blocks)
        if not self.blocks:
            raise ValueError("no blocks to stream")
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.active = self.device.type == "cuda" or emulate
        self.slots = min(slots, len(self.blocks))
        self.empty_cache = empty_cache
        self.trace: list[tuple[str, int, int]] | None = [] if trace else None
        self.rest = Offloader(model, device=device, exclude=self.blocks, pin=pin, emulate=emulate,
                              empty_cache=False, lease_s=0)
        self.packs = [PackedTensors(unique_tensors([b])) for b in self.blocks]
        self.block_bytes = [p.nbytes for p in self.packs]
        self.slot_bytes = max(self.block_bytes)
        self._hooks: list = []
        self._slot_buffers: list[torch.Tensor] | None = None
        if not self.active:
            return
        pin = self.device.type == "cuda" if pin is None else pin
        self._copier = CopyStream(self.device)
        self._host: list[HostBuffer] = []
        self._host_views: list[list[torch.Tensor]] = []
        for pack in self.packs:
            host = HostBuffer(pack.nbytes, pin=pin)
            pack.pack(host.tensor)
            host.lock()
            views = pack.views(host.tensor)
            pack.point(views)
            self._host.append(host)
            self._host_views.append(views)
        release_cached_memory(self.device)
        self._holds: list[int | None] = [None] * self.slots  # which block each slot holds (or is loading)
        self._copied = [self._copier.new_event() for _ in range(self.slots)]
        self._computed: list[torch.cuda.Event | None] = [None] * self.slots
        for i, block in enumerate(self.blocks):
            self._hooks.append(block.register_forward_pre_hook(self._make_pre_hook(i)))
            self._hooks.append(block.register_forward_hook(self._make_post_hook(i)))

    # -- numbers ------------------------------------------------------------------------------------------------
    @property
    def host_bytes(self) -> int:
        return sum(self.block_bytes) + self.rest.host_bytes

    @property
    def resident_bytes_engaged(self) -> int:
        """Device bytes while streaming: the slots plus the non-block weights."""
        return self.slots * self.slot_bytes + self.rest.host_bytes

    @property
    def bytes_per_pass(self) -> int:
        """Host->device bytes per forward pass once warm: every block that shares its slot with another."""
        shared = [i for i in range(len(self.blocks)) if self._next_in_slot(i) != i]
        return sum(self.block_bytes[i] for i in shared)

    def resident_bytes(self) -> int:
        slots = 0 if self._slot_buffers is None else sum(b.numel() for b in self._slot_buffers)
        return slots + self.rest.resident_bytes()

    def slot_of(self, i: int) -> int:
        return i % self.slots

    def detach(self) -> None:
        """Remove the hooks and leave every block's weights on the host (the model then runs only on the host)."""
        self.release()
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    # -- Lease --------------------------------------------------------------------------------------------------
    def _fetch(self) -> None:
        self.rest._fetch()
        if self._slot_buffers is not None:
            return
        self._slot_buffers = [
            torch.empty(self.slot_bytes, dtype=torch.uint8, device=self.device) for _ in range(self.slots)
        ]
        for i, pack in enumerate(self.packs):
            pack.point(pack.views(self._slot_buffers[self.slot_of(i)]))
        self._holds = [None] * self.slots
        self._computed = [None] * self.slots
        for i in range(self.slots):  # the first blocks of the next pass
            self._load(i)
        self.uploads += 1

    def _ready(self) -> None:
        self.rest._ready()

    def _drop(self) -> None:
        if self._slot_buffers is None and self.rest.resident_bytes() == 0:
            return
        self._copier.synchronize()
        if self._slot_buffers is not None:
            for pack, views in zip(self.packs, self._host_views, strict=True):
                pack.point(views)
            self._slot_buffers = None
            self._holds = [None] * self.slots
            self._copied = [self._copier.new_event() for _ in range(self.slots)]
            self._computed = [None] * self.slots
        self.rest._drop()
        if self.empty_cache:
            release_cached_memory(self.device)

    # -- streaming ----------------------------------------------------------------------------------------------
    def _record(self, what: str, block: int, slot: int) -> None:
        if self.trace is not None:
            self.trace.append((what, block, slot))

    def _load(self, j: int) -> None:
        """Issue the copy of block j into its slot, after the slot's last reader has run."""
        s = self.slot_of(j)
        assert self._slot_buffers is not None
        dst = self._slot_buffers[s][: self.block_bytes[j]]
        self._copied[s] = self._copier.new_event()
        self._copier.copy(dst, self._host[j].tensor, self._copied[s], after=self._computed[s])
        self._holds[s] = j
        self._record("copy", j, s)

    def _next_in_slot(self, i: int) -> int:
        """The block that will next run in block i's slot, in the cyclic order."""
        n = len(self.blocks)
        s = self.slot_of(i)
        for step in range(1, n + 1):
            j = (i + step) % n
            if self.slot_of(j) == s:
                return j
        return i

    def _make_pre_hook(self, i: int):
        @torch.compiler.disable
        def pre_hook(_module: nn.Module, _args: object) -> None:
            if not self.active:
                return
            with self._lock:
                if self._slot_buffers is None:  # called outside on_device(): engage (stays until release())
                    self._cancel_timer()
                    self._fetch()
                    self._ready()
                s = self.slot_of(i)
                if self._holds[s] != i:  # out of the expected order (first call, an aborted pass): load now
                    self._load(i)
                self._copier.wait(self._copied[s])
                self._record("wait", i, s)

        return pre_hook

    def _make_post_hook(self, i: int):
        @torch.compiler.disable
        def post_hook(_module: nn.Module, _args: object, _output: object) -> None:
            if not self.active:
                return
            with self._lock:
                if self._slot_buffers is None:
                    return
                s = self.slot_of(i)
                if self._copier.cuda:
                    event = torch.cuda.Event()
                    event.record(torch.cuda.current_stream(self.device))
                    self._computed[s] = event
                self._record("done", i, s)
                j = self._next_in_slot(i)
                if j != i:  # a slot of its own stays loaded
                    self._load(j)

        return post_hook


def stream_blocks(model: nn.Module, blocks: Sequence[nn.Module], device: str | torch.device,
                  **kwargs: object) -> BlockStreamer:
    """`BlockStreamer(model, blocks, device, **kwargs)`; see its docstring."""
    return BlockStreamer(model, blocks, device, **kwargs)  # type: ignore[arg-type]
