"""GPU memory of one stage process: weights kept in (pinned) host memory, on the device only around a call.

Each stage of the server is its own process with its own CUDA context and caching allocator, so memory one stage
does not use is only available to the others once it is returned to the driver. `Offloader` does that for any set of
torch modules (plain `nn.Module`s, TorchScript modules, transformers/peft models, diffusers models):

- at construction every parameter and buffer is packed, byte for byte, into one host buffer (page-locked on CUDA
  hosts with `cudaHostRegister`, so the copy runs at full PCIe/C2C speed without the power-of-two rounding of
  `pin_memory()`), and each module tensor's `.data` is pointed at its place in that buffer: the weights are read from
  disk once, at load, and never again;
- `on_device()` copies the buffer to the device in one transfer on a side stream, points every tensor at its place in
  the device copy, makes the caller's stream wait for the copy, runs the call, then points the tensors back at the
  host buffer, frees the device copy and empties the allocator cache (`torch.cuda.empty_cache()`), so another
  process can use the memory;
- `prefetch()` starts that copy and returns at once: a stage told early that its call is coming overlaps the upload
  with whatever runs before it. Correctness never depends on it: `on_device()` uploads what is missing itself.

The copy is a byte copy of each tensor's storage, so dtypes, values, strides and aliasing (tied weights, views) are
preserved exactly and outputs are bit-identical to a resident model. Tensors held in plain attributes (not registered
parameters/buffers) are not seen; the stage adapters in `cosmos_triton.models.stage_offload` relocate those.

On a host without CUDA the offloader is inactive (every method returns at once, weights stay where they are) unless
`emulate=True`, which uses a second CPU buffer as the "device" so the bookkeeping and the outputs can be tested.

`BlockStreamer` in `cosmos_triton.models.block_stream` is the finer-grained variant for transformer blocks.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

ALIGN = 256  # bytes: every tensor starts at this alignment in the packed buffers (kernels want >= 16)
DEFAULT_LEASE_S = 120.0  # weights uploaded by prefetch()/keep=True are dropped if no call comes within this time

# What a caller may tell a stage besides "run" (see `Lease.hint`).
HINT_NONE = ""  # run the call, release the weights afterwards (unless a keep lease is running)
HINT_PREFETCH = "prefetch"  # no call: start uploading now, return at once
HINT_KEEP = "keep"  # run the call and keep the weights for the next one (e.g. the DiT steps of one request)
HINT_RELEASE = "release"  # no call: drop the weights now
HINTS = (HINT_NONE, HINT_PREFETCH, HINT_KEEP, HINT_RELEASE)


def cuda_device(device: str | torch.device) -> bool:
    return torch.device(device).type == "cuda"


def release_cached_memory(device: str | torch.device) -> None:
    """Give the caching allocator's free blocks back to the driver, so other processes can allocate them."""
    if cuda_device(device) and torch.cuda.is_available():
        torch.cuda.empty_cache()


def unique_tensors(modules: Iterable[nn.Module], exclude: Iterable[nn.Module] = ()) -> list[torch.Tensor]:
    """Every parameter and buffer of `modules` once (tied weights once), minus those of `exclude`."""
    skip: set[int] = set()
    for module in exclude:
        skip.update(id(t) for t in module.parameters())
        skip.update(id(t) for t in module.buffers())
    seen: set[int] = set()
    out: list[torch.Tensor] = []
    for module in modules:
        for t in (*module.parameters(), *module.buffers()):
            if id(t) in seen or id(t) in skip:
                continue
            seen.add(id(t))
            out.append(t)
    return out


def stray_tensors(modules: Iterable[nn.Module]) -> list[str]:
    """Tensors held as plain module attributes (not parameters or buffers): an offloader cannot move them."""
    found = []
    for top in modules:
        for name, module in top.named_modules():
            for attr, value in vars(module).items():
                if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
                    found.append(f"{type(top).__name__}.{name + '.' if name else ''}{attr}")
    return found


def _extent(t: torch.Tensor) -> tuple[int, int]:
    """Byte range [lo, hi) of t's storage that t reads."""
    size = t.element_size()
    lo = int(t.storage_offset()) * size
    if t.numel() == 0:
        return lo, lo
    last = sum((int(n) - 1) * int(s) for n, s in zip(t.shape, t.stride(), strict=True))
    return lo, lo + (last + 1) * size


def _byte_view(t: torch.Tensor) -> torch.Tensor:
    """The whole storage of t as a flat uint8 tensor (same memory)."""
    storage = t.untyped_storage()
    return torch.empty(0, dtype=torch.uint8, device=t.device).set_(storage, 0, (storage.nbytes(),), (1,))


def _aliasing_groups(tensors: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Tensors grouped so that those sharing bytes (tied weights, views) are in one group: per storage, extents
    merged while they overlap. Tensors that merely live in one big storage (e.g. an earlier packed buffer) stay
    separate, so each group copies only the bytes its tensors use."""
    by_storage: dict[tuple[str, int], list[torch.Tensor]] = {}
    for t in tensors:
        by_storage.setdefault((str(t.device), t.untyped_storage().data_ptr()), []).append(t)
    groups: list[list[torch.Tensor]] = []
    for members in by_storage.values():
        members.sort(key=lambda t: _extent(t)[0])
        current: list[torch.Tensor] = []
        current_hi = -1
        for t in members:
            lo, hi = _extent(t)
            if current and lo < current_hi:
                current.append(t)
                current_hi = max(current_hi, hi)
            else:
                if current:
                    groups.append(current)
                current, current_hi = [t], hi
        if current:
            groups.append(current)
    return groups


@dataclass
class _Entry:
    tensor: torch.Tensor  # the module's own Parameter/buffer object: its .data is what gets swapped
    offset: int  # element offset (in tensor dtype units) into the packed buffer
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype


class PackedTensors:
    """A set of tensors laid out in one flat byte buffer: `pack()` copies them into a host buffer, `views(buf)`
    rebuilds each tensor on any buffer of that layout, `point(buf)` makes every tensor use it."""

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        self.entries: list[_Entry] = []
        self._copies: list[tuple[torch.Tensor, int, int, int]] = []  # (any member, src lo, dst base, nbytes)
        nbytes = 0
        for members in _aliasing_groups(tensors):
            lo = min(_extent(t)[0] for t in members) // 16 * 16  # so every member's offset stays a whole element
            hi = max(_extent(t)[1] for t in members)
            base = nbytes
            self._copies.append((members[0], lo, base, hi - lo))
            for t in members:
                byte_offset = base + t.storage_offset() * t.element_size() - lo
                self.entries.append(
                    _Entry(t, byte_offset // t.element_size(), tuple(t.shape), tuple(t.stride()), t.dtype)
                )
            nbytes = -(-(base + hi - lo) // ALIGN) * ALIGN
        self.nbytes = nbytes

    def pack(self, out: torch.Tensor) -> None:
        """Copy every tensor's bytes into `out` (flat uint8, at least nbytes long)."""
        for member, lo, base, n in self._copies:
            if n:
                out[base : base + n].copy_(_byte_view(member)[lo : lo + n])

    def views(self, buffer: torch.Tensor) -> list[torch.Tensor]:
        storage = buffer.untyped_storage()
        base = buffer.storage_offset()  # uint8: bytes
        out = []
        for e in self.entries:
            size = torch.empty(0, dtype=e.dtype).element_size()
            if base % size:
                raise ValueError("buffer is not aligned for the packed tensors")
            out.append(
                torch.empty(0, dtype=e.dtype, device=buffer.device).set_(storage, base // size + e.offset, e.size,
                                                                         e.stride)
            )
        return out

    def point(self, views: Sequence[torch.Tensor]) -> None:
        for e, v in zip(self.entries, views, strict=True):
            e.tensor.data = v


class HostBuffer:
    """A flat uint8 host buffer, page-locked on CUDA hosts via cudaHostRegister (exact size, no rounding)."""

    def __init__(self, nbytes: int, pin: bool) -> None:
        self.tensor = torch.empty(nbytes, dtype=torch.uint8)
        self.pin = pin
        self._registered = False

    @property
    def pinned(self) -> bool:
        return self._registered or self.tensor.is_pinned()

    def lock(self) -> None:
        """Page-lock after filling (registering first would fault every page in twice)."""
        if not self.pin or self.pinned or self.tensor.numel() == 0:
            return
        err = torch.cuda.cudart().cudaHostRegister(self.tensor.data_ptr(), self.tensor.numel(), 0)
        if getattr(err, "value", err) == 0:
            self._registered = True
            return
        log.warning("cudaHostRegister of %.2f GB failed (%s); using pin_memory()", self.tensor.numel() / 1e9, err)
        self.tensor = self.tensor.pin_memory()

    def __del__(self) -> None:
        if self._registered:
            with contextlib.suppress(Exception):
                torch.cuda.cudart().cudaHostUnregister(self.tensor.data_ptr())


class _EmulatedEvent:
    """CPU stand-in for a CUDA event on the emulated copy stream: the copies it covers run when it is waited on.
    This makes the emulated upload genuinely asynchronous (a consumer that forgets to wait sees stale bytes)."""

    def __init__(self) -> None:
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def copy(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        self.pending.append((dst, src))

    def wait(self) -> None:
        for dst, src in self.pending:
            dst.copy_(src)
        self.pending.clear()


class CopyStream:
    """Host->device copies on a side stream, with events the compute stream waits on. On CPU (emulation) copies are
    deferred until waited on, so the ordering logic is exercised the same way."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None

    def new_event(self) -> torch.cuda.Event | _EmulatedEvent:
        return torch.cuda.Event() if self.cuda else _EmulatedEvent()

    def copy(self, dst: torch.Tensor, src: torch.Tensor, done: torch.cuda.Event | _EmulatedEvent,
             after: torch.cuda.Event | None = None) -> None:
        """Copy src into dst on the side stream once `after` (default: all work already queued on the caller's
        stream) has completed; `done` is recorded when the copy has landed."""
        if not self.cuda:
            done.copy(dst, src)  # type: ignore[union-attr]
            return
        assert self.stream is not None
        if after is None:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
        else:
            self.stream.wait_event(after)
        with torch.cuda.stream(self.stream):
            dst.copy_(src, non_blocking=True)
            done.record(self.stream)  # type: ignore[union-attr]

    def wait(self, done: torch.cuda.Event | _EmulatedEvent) -> None:
        """The caller's stream waits until `done` (does not block the host on CUDA)."""
        if self.cuda:
            torch.cuda.current_stream(self.device).wait_event(done)  # type: ignore[arg-type]
        else:
            done.wait()  # type: ignore[union-attr]

    def synchronize(self) -> None:
        """Every queued kernel and copy of this process on the device has finished (called before freeing)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)


class Lease:
    """The call protocol shared by `Offloader` and `BlockStreamer`: `on_device()` around a call, `prefetch()` ahead
    of it, `release()`; weights fetched by `prefetch()` or kept by `on_device(keep=True)` are dropped after
    `lease_s` seconds without a call (the flow may have abandoned the request)."""

    active: bool
    device: torch.device

    def __init__(self, lease_s: float = DEFAULT_LEASE_S) -> None:
        self.lease_s = lease_s
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None
        self._generation = 0
        self.uploads = 0  # how many times the weights went to the device
        self.upload_seconds = 0.0  # host time spent issuing and waiting for uploads (not overlapped time)

    # -- subclass hooks -------------------------------------------------------------------------------------------
    def _fetch(self) -> None:  # start the upload (asynchronous), idempotent
        raise NotImplementedError

    def _ready(self) -> None:  # make the caller's stream wait for the upload
        raise NotImplementedError

    def _drop(self) -> None:  # synchronise, point the tensors back at the host, free the device memory
        raise NotImplementedError

    def resident_bytes(self) -> int:
        raise NotImplementedError

    # -- protocol -------------------------------------------------------------------------------------------------
    def prefetch(self, lease_s: float | None = None) -> None:
        """Start uploading the weights and return at once; they stay until the next call (or the lease ends)."""
        if not self.active:
            return
        with self._lock:
            self._cancel_timer()
            start = time.perf_counter()
            self._fetch()
            self.upload_seconds += time.perf_counter() - start
            self._arm_timer(lease_s)

    @contextlib.contextmanager
    def on_device(self, keep: bool = False) -> Iterator[None]:
        """Weights on the device for the body; released afterwards unless `keep` (then the lease timer runs)."""
        if not self.active:
            yield
            return
        with self._lock:
            self._cancel_timer()
            start = time.perf_counter()
            self._fetch()
            self._ready()
            self.upload_seconds += time.perf_counter() - start
            try:
                yield
            finally:
                if keep:
                    self._arm_timer(None)
                else:
                    self._drop()

    def release(self) -> None:
        if not self.active:
            return
        with self._lock:
            self._cancel_timer()
            self._drop()

    def hint(self, hint: str | None) -> bool:
        """Handle a control-only hint: True if `hint` was one (prefetch/release) and no call must run."""
        hint = (hint or "").strip().lower()
        if hint not in HINTS:
            raise ValueError(f"unknown memory hint {hint!r}; expected one of {HINTS}")
        if hint == HINT_PREFETCH:
            self.prefetch()
            return True
        if hint == HINT_RELEASE:
            self.release()
            return True
        return False

    # -- lease timer ----------------------------------------------------------------------------------------------
    def _arm_timer(self, lease_s: float | None) -> None:
        seconds = self.lease_s if lease_s is None else lease_s
        if seconds <= 0:
            return
        self._generation += 1
        generation = self._generation
        self._timer = threading.Timer(seconds, self._expire, args=(generation,))
        self._timer.daemon = True
        self._timer.start()

    def _cancel_timer(self) -> None:
        self._generation += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, generation: int) -> None:
        if not self._lock.acquire(blocking=False):  # a call is running: it decides
            return
        try:
            if generation == self._generation:
                log.info("%s: lease expired without a call; releasing the weights", type(self).__name__)
                self._drop()
        finally:
            self._lock.release()


class Offloader(Lease):
    """Weights of `modules` in host memory, on `device` only inside `on_device()` (see the module docstring).

    `exclude`: modules whose tensors are left alone (e.g. transformer blocks a `BlockStreamer` handles).
    `pin`: page-lock the host buffer (default: when `device` is CUDA). `emulate`: on a CPU device, still copy to a
    second CPU buffer around each call (tests). `empty_cache`: return freed memory to the driver after release.
    """

    def __init__(self, *modules: nn.Module, device: str | torch.device, exclude: Iterable[nn.Module] = (),
                 pin: bool | None = None, emulate: bool = False, empty_cache: bool = True,
                 lease_s: float = DEFAULT_LEASE_S) -> None:
        super().__init__(lease_s)
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.active = self.device.type == "cuda" or emulate
        self.empty_cache = empty_cache
        self.packed = PackedTensors(unique_tensors(modules, exclude))
        self.host_bytes = self.packed.nbytes
        if stray := stray_tensors(modules):
            log.warning("tensors outside parameters/buffers stay where they are: %s", ", ".join(stray[:8]))
        self._device_buffer: torch.Tensor | None = None
        self._done: torch.cuda.Event | _EmulatedEvent | None = None
        if not self.active:
            return
        self._copier = CopyStream(self.device)
        self._host = HostBuffer(self.host_bytes, pin=self.device.type == "cuda" if pin is None else pin)
        self.packed.pack(self._host.tensor)
        self._host.lock()
        self._host_views = self.packed.views(self._host.tensor)
        self.packed.point(self._host_views)  # the original storages (disk mmap, device copies) are now unreferenced
        release_cached_memory(self.device)  # in case the modules were loaded on the device

    @property
    def pinned(self) -> bool:
        return self.active and self._host.pinned

    def resident_bytes(self) -> int:
        return 0 if self._device_buffer is None else self._device_buffer.numel()

    def _fetch(self) -> None:
        if self._device_buffer is not None:
            return
        buffer = torch.empty(self.host_bytes, dtype=torch.uint8, device=self.device)  # on the caller's stream
        self._done = self._copier.new_event()
        self._copier.copy(buffer, self._host.tensor, self._done)
        self._device_buffer = buffer
        self.packed.point(self.packed.views(buffer))
        self.uploads += 1

    def _ready(self) -> None:
        if self._done is not None:
            self._copier.wait(self._done)

    def _drop(self) -> None:
        if self._device_buffer is None:
            return
        self._copier.synchronize()  # the last call's kernels and the copy are done with the buffer
        self.packed.point(self._host_views)
        self._device_buffer = None
        self._done = None
        if self.empty_cache:
            release_cached_memory(self.device)

    def on_host(self) -> bool:
        """True when every managed tensor is in the host buffer (nothing of it on the device)."""
        host = self._host.tensor.untyped_storage().data_ptr() if self.active else None
        return all(
            e.tensor.device.type == "cpu" and (host is None or e.tensor.untyped_storage().data_ptr() == host)
            for e in self.packed.entries
        )
