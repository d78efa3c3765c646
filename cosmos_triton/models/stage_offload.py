"""Per-stage memory settings: which modules of each stage's loaded object are offloaded or streamed.

A stage loads its object as usual (on the host when it is offloaded: pass device "cpu" to the loader, or on the
device when the weights fit there transiently, e.g. the 0.2 GB tokenizer), then calls
`stage_memory(obj, device, offload)` once and wraps every call:

    memory = stage_memory(obj, device, offload="stage")      # at load
    if memory.hint(hint):                                    # a control-only call (prefetch / release)
        return {}
    with memory.call(hint):                                  # around each real call ("" or "keep")
        outputs = obj.method(...)

`offload`:
- "none": weights stay resident (loaded on the device by the stage as today); after each call (unless "keep") the
  allocator cache is emptied so the activations' memory goes back to the driver for the other stage processes;
- "stage": `Offloader` over the object's modules: pinned host copy, uploaded for the call, freed after it;
- "blocks": `BlockStreamer` over the repeated blocks (DiT transformer blocks, T5 encoder blocks, decoder layers of
  the LLMs) with the rest uploaded per call; for stages without large blocks (tokenizer, video guardrail) this is
  "stage".

The object's `device` attribute (and the few plain tensors some objects create at load) are set to the real device
here, so inputs and generators land on the GPU while the weights live on the host between calls.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cosmos_triton.models.block_stream import BlockStreamer
from cosmos_triton.models.offload import DEFAULT_LEASE_S, HINT_KEEP, HINTS, Lease, Offloader, release_cached_memory

log = logging.getLogger(__name__)

OFFLOAD_MODES = ("none", "stage", "blocks")
DEFAULT_DECODE_CHUNK_FRAMES = 4  # latent frames per chunk of the tokenizer decode (0: whole clip)
DEFAULT_DECODE_ATTENTION_FRAMES = 2  # frames per piece of the decoder's mid-block spatial attention (0: all)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class MemorySettings:
    """A stage's memory parameters (Triton model-config parameters, all optional strings):

    offload                  none | stage | blocks                       (default none)
    offload_slots            device slots of the block streamer          (default 2)
    offload_lease_s          seconds prefetched/kept weights wait for a call before they are dropped (default 120)
    empty_cache              true | false: return the allocator cache to the driver after each call (default true)
    decode_chunk_frames      tokenizer decoder: latent frames per chunk, 0 = whole clip (default 4)
    decode_attention_frames  tokenizer decoder: frames per piece of the mid-block spatial attention, 0 = all (2)
    """

    offload: str = "none"
    slots: int = 2
    lease_s: float = DEFAULT_LEASE_S
    empty_cache: bool = True
    decode_chunk_frames: int = DEFAULT_DECODE_CHUNK_FRAMES
    decode_attention_frames: int = DEFAULT_DECODE_ATTENTION_FRAMES

    PARAMS = ("offload", "offload_slots", "offload_lease_s", "empty_cache", "decode_chunk_frames",
              "decode_attention_frames")

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> MemorySettings:
        def get(name: str) -> str | None:
            value = params.get(name)
            return None if value is None or str(value).strip() == "" else str(value).strip().lower()

        kwargs: dict[str, object] = {}
        if (mode := get("offload")) is not None:
            if mode not in OFFLOAD_MODES:
                raise ValueError(f"offload must be one of {OFFLOAD_MODES}, not {mode!r}")
            kwargs["offload"] = mode
        for name, field_name, kind in (("offload_slots", "slots", int), ("offload_lease_s", "lease_s", float),
                                       ("decode_chunk_frames", "decode_chunk_frames", int),
                                       ("decode_attention_frames", "decode_attention_frames", int)):
            if (value := get(name)) is not None:
                kwargs[field_name] = kind(value)
        if (value := get("empty_cache")) is not None:
            if value not in _TRUE + _FALSE:
                raise ValueError(f"empty_cache must be true or false, not {value!r}")
            kwargs["empty_cache"] = value in _TRUE
        return cls(**kwargs)  # type: ignore[arg-type]

    def load_device(self, device: str | torch.device) -> str:
        """Where the stage should load its weights: the host when they are offloaded (they never need to fit on the
        device all at once), else the device."""
        return "cpu" if self.offload != "none" else str(device)

    def apply(self, obj: object, device: str | torch.device, *, emulate: bool = False) -> StageMemory:
        """Chunked decode for a tokenizer (when decode_chunk_frames > 0; a decoder of unknown layout keeps the
        whole-clip decode, with a warning), then `stage_memory`."""
        if type(obj).__name__ == "CosmosVideoTokenizer" and self.decode_chunk_frames > 0:
            from cosmos_triton.models.chunked_decode import StreamingUnsupported, enable_chunked_decode

            try:
                enable_chunked_decode(obj, self.decode_chunk_frames, self.decode_attention_frames)
            except StreamingUnsupported as err:  # a decoder.jit of another layout: decode whole clips
                log.warning("chunked decode unavailable (%s); decoding whole clips", err)
        return stage_memory(obj, device, self.offload, emulate=emulate, slots=self.slots,
                            empty_cache=self.empty_cache, lease_s=self.lease_s)


@dataclass
class StageMemory:
    """The leases of one stage and the call protocol around them."""

    device: torch.device
    mode: str
    leases: list[Lease] = field(default_factory=list)
    empty_cache_after_call: bool = True

    def hint(self, hint: str | None) -> bool:
        """Apply a control-only hint ("prefetch", "release"); True when no call must run."""
        value = (hint or "").strip().lower()
        if value not in HINTS:
            raise ValueError(f"unknown memory hint {hint!r}; expected one of {HINTS}")
        handled = False
        for lease in self.leases:
            handled = lease.hint(value) or handled
        if value in ("prefetch", "release") and not self.leases:
            if value == "release":
                release_cached_memory(self.device)
            return True
        return handled

    @contextlib.contextmanager
    def call(self, hint: str | None = None) -> Iterator[None]:
        keep = (hint or "").strip().lower() == HINT_KEEP
        with contextlib.ExitStack() as stack:
            for lease in self.leases:
                stack.enter_context(lease.on_device(keep=keep))
            yield
        if not keep and self.empty_cache_after_call:
            release_cached_memory(self.device)

    def resident_bytes(self) -> int:
        return sum(lease.resident_bytes() for lease in self.leases)

    @property
    def host_bytes(self) -> int:
        return sum(getattr(lease, "host_bytes", 0) for lease in self.leases)

    @property
    def uploads(self) -> int:
        return sum(lease.uploads for lease in self.leases)


def largest_block_list(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of repeated blocks holding the most parameters (transformer layers / blocks)."""
    best, best_params = None, 0
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) >= 1:
            params = sum(p.numel() for p in module.parameters())
            if params > best_params:
                best, best_params = module, params
    if best is None:
        raise ValueError(f"{type(model).__name__} has no list of blocks to stream")
    return best


@dataclass
class _Plan:
    modules: list[nn.Module]  # what is offloaded
    streamable: nn.Module | None  # the model whose largest block list streams in "blocks" mode
    relocate: list[tuple[object, str]]  # (object, attribute) holding a device or a small tensor to move


def _plan(obj: object) -> _Plan:
    name = type(obj).__name__
    if name == "CosmosDiT":
        return _Plan([obj.model], obj.model, [])  # type: ignore[attr-defined]
    if name == "T5TextEncoder":
        return _Plan([obj.model], obj.model, [(obj, "device")])  # type: ignore[attr-defined]
    if name in ("Text2WorldPromptUpsampler", "Video2WorldPromptUpsampler"):
        return _Plan([obj.model], obj.model, [(obj, "device")])  # type: ignore[attr-defined]
    if name == "TextGuardrail":
        aegis = [c for c in obj.checks if type(c).__name__ == "Aegis"]  # type: ignore[attr-defined]
        return _Plan([a.model for a in aegis], aegis[0].model if aegis else None, [(a, "device") for a in aegis])
    if name == "VideoGuardrail":
        safety, faces = obj.safety, obj.face_blur  # type: ignore[attr-defined]
        return _Plan([safety.encoder, safety.classifier, faces.net], None,
                     [(safety, "device"), (faces, "device"), (faces, "_means"), (faces, "_priors")])
    if name == "CosmosVideoTokenizer":
        decoder: nn.Module = getattr(obj.decoder, "module", obj.decoder)  # type: ignore[attr-defined,assignment]
        return _Plan([obj.encoder, decoder], None,  # type: ignore[attr-defined]
                     [(obj, "device"), (obj, "latent_mean"), (obj, "latent_std")])
    raise TypeError(f"no offload plan for {name}")


def _relocate(targets: list[tuple[object, str]], device: torch.device) -> None:
    for owner, attr in targets:
        value = getattr(owner, attr)
        if isinstance(value, torch.Tensor):
            setattr(owner, attr, value.to(device))
        elif isinstance(value, dict):  # caches of device tensors (face-blur priors): rebuilt on demand
            value.clear()
        elif isinstance(value, torch.device):
            setattr(owner, attr, device)
        else:
            setattr(owner, attr, str(device))


def stage_memory(obj: object, device: str | torch.device, offload: str = "stage", *, emulate: bool = False,
                 slots: int = 2, empty_cache: bool = True, lease_s: float = DEFAULT_LEASE_S) -> StageMemory:
    """Set up `obj` (a stage's loaded object: CosmosDiT, T5TextEncoder, CosmosVideoTokenizer, TextGuardrail,
    VideoGuardrail, Text2World/Video2WorldPromptUpsampler) for `offload` and return its `StageMemory`."""
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {OFFLOAD_MODES}, not {offload!r}")
    device = torch.device(device)
    memory = StageMemory(device=device, mode=offload, empty_cache_after_call=empty_cache)
    if offload == "none":
        return memory
    plan = _plan(obj)
    if device.type == "cuda":
        _relocate(plan.relocate, device)
    kwargs: dict[str, Any] = dict(device=device, emulate=emulate, empty_cache=empty_cache, lease_s=lease_s)
    if offload == "blocks" and plan.streamable is not None:
        blocks = largest_block_list(plan.streamable)
        memory.leases.append(BlockStreamer(plan.streamable, list(blocks), slots=slots, **kwargs))
        rest = [m for m in plan.modules if m is not plan.streamable]
        if rest:
            memory.leases.append(Offloader(*rest, **kwargs))
    else:
        if offload == "blocks":
            log.info("%s has no block list; offloading it per stage", type(obj).__name__)
            memory.mode = "stage"
        memory.leases.append(Offloader(*plan.modules, **kwargs))
    return memory
