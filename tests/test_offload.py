"""Offloading (issue #12) on CPU: `Offloader`, `BlockStreamer` and the per-stage plans, with emulated device buffers.

With `emulate=True` a CPU offloader still copies the weights into a second buffer for each call and points the
modules at it, and its copies only land when waited on, so a call that forgot to wait computes with garbage. The
tests check bit-identical outputs against the resident modules and that, between calls, every managed tensor lives
in the host buffer and nothing is "on the device".
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cosmos_triton.diffusion.guidance import guided_x0
from cosmos_triton.models.block_stream import BlockStreamer
from cosmos_triton.models.dit import CosmosDiT, build_model, load_dit
from cosmos_triton.models.offload import Offloader, PackedTensors, unique_tensors
from cosmos_triton.models.stage_offload import StageMemory, largest_block_list, stage_memory
from export.small_dit import SMALL_DIT_DIR, SMALL_T2W, small_state_dict

# -- helpers ----------------------------------------------------------------------------------------------------


def storage_ptrs(module: nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in unique_tensors([module])}


def host_ptr(offloader: Offloader) -> int:
    return offloader._host.tensor.untyped_storage().data_ptr()


class Tied(nn.Module):
    """Tied weights, a transposed view of a buffer, mixed dtypes, an int buffer."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)
        self.b.weight = self.a.weight  # tied
        self.p16 = nn.Parameter(torch.randn(8, generator=g).half(), requires_grad=False)
        self.bf = nn.Parameter(torch.randn(8, generator=g).bfloat16(), requires_grad=False)
        base = torch.randn(4, 8, generator=g)
        self.register_buffer("base", base)
        self.register_buffer("base_t", base.t())  # a view sharing base's storage
        self.register_buffer("index", torch.arange(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(self.a(x)) + self.p16.float() + self.bf.float()
        return y[:, self.index] @ self.base_t + self.base.sum()


def small_dit(blocks: int, seed: int = 0) -> CosmosDiT:
    arch = dataclasses.replace(SMALL_T2W, num_blocks=blocks)
    return CosmosDiT(build_model(arch, small_state_dict(arch, seed)), arch)


def dit_inputs(seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = 80.0 * torch.randn(1, 16, 2, 4, 6, generator=g)
    sigma = torch.tensor([30.0])
    cond = torch.randn(1, 512, 1024, generator=g).bfloat16()
    uncond = torch.randn(1, 512, 1024, generator=g).bfloat16()
    return x, sigma, cond, uncond, 7.0, 24.0


def check_stream_order(trace: list[tuple[str, int, int]], slots: int) -> None:
    """Every compute waits for its own block's copy into its slot; a slot is only overwritten after the block it
    held has finished (its 'done' after its last 'wait')."""
    holds: dict[int, int] = {}
    pending: dict[int, bool] = {}  # slot -> its block was waited on but is not done yet
    for what, block, slot in trace:
        assert slot == block % slots
        if what == "copy":
            assert not pending.get(slot), f"slot {slot} overwritten with block {block} while still in use"
            holds[slot] = block
        elif what == "wait":
            assert holds.get(slot) == block, f"block {block} computed from slot {slot} holding {holds.get(slot)}"
            pending[slot] = True
        elif what == "done":
            pending[slot] = False


# -- Offloader --------------------------------------------------------------------------------------------------


def test_packed_layout_keeps_aliasing_dtypes_and_values() -> None:
    m = Tied().eval()
    before = {n: t.clone() for n, t in [*m.named_parameters(), *m.named_buffers(remove_duplicate=False)]}
    tensors = unique_tensors([m])
    assert len(tensors) == 8  # a.weight (= b.weight), a.bias, b.bias, p16, bf, base, base_t, index
    pack = PackedTensors(tensors)
    buffer = torch.empty(pack.nbytes, dtype=torch.uint8)
    pack.pack(buffer)
    pack.point(pack.views(buffer))
    for name, t in [*m.named_parameters(), *m.named_buffers(remove_duplicate=False)]:
        assert t.dtype == before[name].dtype and torch.equal(t, before[name]), name
        assert t.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr(), name
    assert m.b.weight is m.a.weight
    assert m.base_t.data_ptr() == m.base.data_ptr() and m.base_t.stride() == (1, 8)
    with torch.no_grad():
        m.base[0, 0] = 123.0  # still one storage
    assert m.base_t[0, 0] == 123.0


def test_offloaded_module_is_bit_identical_and_leaves_the_device() -> None:
    m = Tied().eval()
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = m(x)
    off = Offloader(m, device="cpu", emulate=True)
    assert off.active and off.on_host() and off.resident_bytes() == 0
    for call in range(3):
        with off.on_device(), torch.no_grad():
            assert not off.on_host() and off.resident_bytes() == off.host_bytes
            assert host_ptr(off) not in storage_ptrs(m)  # every tensor points into the "device" copy
            out = m(x)
        assert torch.equal(out, ref)
        assert off.on_host() and off.resident_bytes() == 0 and storage_ptrs(m) == {host_ptr(off)}
        assert off.uploads == call + 1
    assert m.b.weight is m.a.weight and m.base_t.data_ptr() == m.base.data_ptr()


def test_offloader_is_inactive_on_a_cpu_device_without_emulation() -> None:
    m = Tied()
    ptrs = storage_ptrs(m)
    off = Offloader(m, device="cpu")
    assert not off.active
    with off.on_device():
        assert storage_ptrs(m) == ptrs
    off.prefetch()
    off.release()
    assert storage_ptrs(m) == ptrs and off.uploads == 0


def test_a_call_that_does_not_wait_for_the_upload_sees_other_bytes() -> None:
    """The emulated copy is deferred until waited on, so the ordering is really tested."""
    m = nn.Linear(64, 64)
    x = torch.randn(2, 64)
    with torch.no_grad():
        ref = m(x)
    off = Offloader(m, device="cpu", emulate=True)
    off._fetch()  # issued, not waited on
    with torch.no_grad():
        early = m(x)
    assert not torch.equal(early, ref)
    off._ready()
    with torch.no_grad():
        assert torch.equal(m(x), ref)
    off.release()


def test_prefetch_keep_release_and_lease_expiry() -> None:
    m = Tied().eval()
    x = torch.randn(3, 8)
    with torch.no_grad():
        ref = m(x)
    off = Offloader(m, device="cpu", emulate=True)
    off.prefetch()
    assert off.resident_bytes() == off.host_bytes and off.uploads == 1
    with off.on_device(), torch.no_grad():
        assert torch.equal(m(x), ref)
    assert off.uploads == 1 and off.on_host()  # the call used the prefetched copy, then released it
    for _ in range(3):  # the DiT steps of one request: uploaded once, kept between calls
        with off.on_device(keep=True), torch.no_grad():
            assert torch.equal(m(x), ref)
        assert off.resident_bytes() == off.host_bytes
    assert off.uploads == 2
    off.release()
    assert off.on_host() and off.resident_bytes() == 0
    off.prefetch(lease_s=0.05)  # nobody calls: the lease expires
    deadline = time.monotonic() + 5
    while off.resident_bytes() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert off.resident_bytes() == 0 and off.on_host()


def test_memory_hints() -> None:
    m = Tied()
    memory = StageMemory(device=torch.device("cpu"), mode="stage",
                         leases=[Offloader(m, device="cpu", emulate=True)])
    assert memory.hint("prefetch") is True and memory.resident_bytes() > 0
    assert memory.hint("release") is True and memory.resident_bytes() == 0
    assert memory.hint("") is False and memory.hint(None) is False and memory.hint("keep") is False
    with pytest.raises(ValueError, match="unknown memory hint"):
        memory.hint("evict")
    with memory.call("keep"):
        pass
    assert memory.resident_bytes() > 0
    with memory.call():
        pass
    assert memory.resident_bytes() == 0


# -- BlockStreamer ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("blocks", "slots"), [(6, 2), (5, 2), (6, 3)])
def test_block_streaming_is_bit_identical_to_resident(blocks: int, slots: int) -> None:
    net = small_dit(blocks)
    inputs = dit_inputs()
    ref = guided_x0(net, *inputs)
    streamer = BlockStreamer(net.model, list(net.model.transformer_blocks), "cpu", slots=slots, emulate=True,
                             trace=True)
    host = {id(t): t.untyped_storage().data_ptr() for t in unique_tensors([net.model])}
    assert streamer.slot_bytes == max(streamer.block_bytes) and streamer.rest.host_bytes > 0
    for keep in (True, True, False):  # steps of one request, then the last one
        with streamer.on_device(keep=keep):
            out = guided_x0(net, *inputs)
        assert torch.equal(out, ref)
    check_stream_order(streamer.trace, slots)
    waits = [b for what, b, _ in streamer.trace if what == "wait"]
    assert waits == list(range(blocks)) * 6  # 3 calls x (cond + uncond)
    # between requests: nothing on the device, every tensor back in its host buffer
    assert streamer.resident_bytes() == 0
    assert {id(t): t.untyped_storage().data_ptr() for t in unique_tensors([net.model])} == host
    copies = sum(1 for what, _, _ in streamer.trace if what == "copy")
    assert copies >= 6 * blocks - 2 * slots  # every pass streams the blocks (the first slots come at engage)


def test_block_copies_run_ahead_of_compute() -> None:
    """Double buffering: block i+1's copy is issued before block i is waited for (after the first blocks)."""
    blocks = 6
    net = small_dit(blocks)
    streamer = BlockStreamer(net.model, list(net.model.transformer_blocks), "cpu", emulate=True, trace=True)
    with streamer.on_device():
        guided_x0(net, *dit_inputs())
    trace = streamer.trace
    for k, (what, block, _) in enumerate(trace):
        if what == "wait":
            nxt = (block + 1) % blocks
            assert any(w == "copy" and b == nxt for w, b, _ in trace[:k]), f"block {nxt} not in flight at {k}"


def test_block_streaming_engages_outside_on_device_and_detaches() -> None:
    net = small_dit(4)
    inputs = dit_inputs(1)
    ref = guided_x0(net, *inputs)
    streamer = BlockStreamer(net.model, list(net.model.transformer_blocks), "cpu", emulate=True)
    streamer.rest.prefetch()  # the non-block weights (an unwrapped call would otherwise find them on the host)
    streamer.rest._ready()
    assert torch.equal(guided_x0(net, *inputs), ref)  # the hooks engage the slots themselves
    assert streamer.resident_bytes() > 0
    streamer.detach()
    assert streamer.resident_bytes() == 0 and not net.model.transformer_blocks[0]._forward_pre_hooks
    assert torch.equal(guided_x0(net, *inputs), ref)


def test_block_streaming_composes_with_compiled_blocks() -> None:
    """Regional compile (what the speed mode does): the hooks stay eager around each compiled block."""
    net = small_dit(4)
    inputs = dit_inputs(2)
    ref = guided_x0(net, *inputs)
    streamer = BlockStreamer(net.model, list(net.model.transformer_blocks), "cpu", emulate=True, trace=True)
    torch._dynamo.reset()
    for block in net.model.transformer_blocks:
        block.compile(backend="eager", dynamic=False)
    try:
        with streamer.on_device():
            out = guided_x0(net, *inputs)
    finally:
        torch._dynamo.reset()
    assert torch.equal(out, ref)
    check_stream_order(streamer.trace, 2)
    assert sum(1 for what, *_ in streamer.trace if what == "wait") == 8


def test_block_streaming_under_the_speed_modes_compile() -> None:
    """What the DiT stage does under `--dit_offload blocks`: DiTSpeed's compiled blocks (Dynamo; aot_eager here)
    with the streamer's hooks. One graph serves every block (the per-block hooks cause no recompile), the hooks
    run for every block of both passes, and the output is the resident one."""
    from torch._dynamo.utils import counters

    from cosmos_triton.models.dit_speed import DiTSpeed

    net = small_dit(4)
    inputs = dit_inputs(2)
    ref = guided_x0(net, *inputs)
    torch._dynamo.reset()
    fast = DiTSpeed(attention="sdpa", compile=True, cache=None, compile_backend="aot_eager").apply(net)
    streamer = BlockStreamer(net.model, list(net.model.transformer_blocks), "cpu", emulate=True, trace=True)
    counters.clear()
    try:
        for _ in range(2):
            with streamer.on_device():
                out = guided_x0(fast, *inputs)
            assert torch.equal(out, ref)
        assert counters["stats"]["unique_graphs"] == 1
        assert not counters["recompiles"]
    finally:
        torch._dynamo.reset()
    assert sum(1 for what, *_ in streamer.trace if what == "wait") == 2 * 2 * 4
    check_stream_order(streamer.trace, 2)


def test_streamer_numbers() -> None:
    net = small_dit(6)
    streamer = BlockStreamer(net.model, list(net.model.transformer_blocks), "cpu", emulate=True)
    per_block = streamer.block_bytes[0]
    assert streamer.block_bytes == [per_block] * 6
    assert streamer.resident_bytes_engaged == 2 * per_block + streamer.rest.host_bytes
    assert streamer.bytes_per_pass == 6 * per_block
    assert streamer.host_bytes == 6 * per_block + streamer.rest.host_bytes
    assert largest_block_list(net.model) is net.model.transformer_blocks
    with pytest.raises(ValueError, match="at least 2 slots"):
        BlockStreamer(net.model, list(net.model.transformer_blocks), "cpu", slots=1, emulate=True)


# -- the stages' own objects, small checkpoints ------------------------------------------------------------------


@pytest.fixture(scope="module")
def root(small_settings) -> Path:
    return Path(small_settings.checkpoint_dir)


def _frames(n: int = 2, h: int = 96, w: int = 160) -> np.ndarray:
    t, y, x = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
    rgb = np.stack([(x * 3 + t * 20) % 256, (y * 5) % 256, (x + y) % 256], axis=-1)
    return rgb.astype(np.uint8)


def _load(kind: str, root: Path):
    """(object, a call returning comparable output) for each stage kind, loaded on the host."""
    from cosmos_triton.deployment import DEFAULT_T2W_UPSAMPLER_DIR, DEFAULT_V2W_UPSAMPLER_DIR
    from cosmos_triton.guardrail.common import GUARDRAIL_DIR
    from cosmos_triton.models.checkpoints import T5_DIR, TOKENIZER_DIR

    if kind == "dit":
        net = load_dit(root / SMALL_DIT_DIR)
        return net, lambda: guided_x0(net, *dit_inputs(3))
    if kind == "t5":
        from cosmos_triton.models.text_encoder import T5TextEncoder

        t5 = T5TextEncoder(root / T5_DIR)
        return t5, lambda: t5.encode(["A robot walks through a warehouse.", ""])
    if kind == "tokenizer":
        from cosmos_triton.models.tokenizer import CosmosVideoTokenizer

        tok = CosmosVideoTokenizer(root / TOKENIZER_DIR)
        g = torch.Generator().manual_seed(4)
        latent = torch.randn(1, 16, 3, 6, 10, generator=g).bfloat16()
        video = (torch.rand(1, 3, 17, 48, 80, generator=g) * 2 - 1).bfloat16()
        return tok, lambda: (tok.decode(latent), tok.encode(video))
    if kind == "text_guardrail":
        from cosmos_triton.guardrail.runner import TextGuardrail

        guard = TextGuardrail(root / GUARDRAIL_DIR)
        return guard, lambda: guard.checks[1].generate("A robot walks through a warehouse.")
    if kind == "video_guardrail":
        from cosmos_triton.guardrail.runner import VideoGuardrail

        guard = VideoGuardrail(root / GUARDRAIL_DIR)
        frames = _frames()
        return guard, lambda: (guard.safety.encode(list(frames)), guard.face_blur.apply(frames))
    if kind == "upsampler_t2w":
        from cosmos_triton.upsampler.text2world import Text2WorldPromptUpsampler

        up = Text2WorldPromptUpsampler(root / DEFAULT_T2W_UPSAMPLER_DIR)
        return up, lambda: up.generate_ids(up.prompt_ids("A robot."), seed=1)
    if kind == "upsampler_v2w":
        from cosmos_triton.upsampler.video2world import Video2WorldPromptUpsampler

        up = Video2WorldPromptUpsampler(root / DEFAULT_V2W_UPSAMPLER_DIR)
        frames = _frames(1, 64, 64)
        return up, lambda: up.generate_ids(up.prepare(frames), seed=1)
    raise AssertionError(kind)


def _same(a, b) -> bool:
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


@pytest.mark.parametrize(
    ("kind", "mode"),
    [("dit", "stage"), ("dit", "blocks"), ("t5", "stage"), ("t5", "blocks"), ("tokenizer", "stage"),
     ("text_guardrail", "stage"), ("text_guardrail", "blocks"), ("video_guardrail", "stage"),
     ("upsampler_t2w", "stage"), ("upsampler_t2w", "blocks"), ("upsampler_v2w", "stage")],
)
def test_offloaded_stage_equals_resident(root: Path, kind: str, mode: str) -> None:
    obj, run = _load(kind, root)
    ref = run()
    memory = stage_memory(obj, "cpu", mode, emulate=True)
    assert memory.leases and memory.host_bytes > 0
    assert memory.resident_bytes() == 0
    for _ in range(2):
        with memory.call():
            out = run()
        assert _same(out, ref), f"{kind} ({mode}) differs from resident"
        assert memory.resident_bytes() == 0  # nothing left on the "device" between requests
    for lease in memory.leases:
        host = lease.rest if isinstance(lease, BlockStreamer) else lease
        assert host.on_host()
    assert memory.uploads == 2 * len(memory.leases)


def test_offload_none_keeps_weights_and_unknown_objects_fail() -> None:
    net = small_dit(2)
    ptrs = storage_ptrs(net.model)
    memory = stage_memory(net, "cpu", "none")
    with memory.call():
        guided_x0(net, *dit_inputs())
    assert not memory.leases and storage_ptrs(net.model) == ptrs
    with pytest.raises(TypeError, match="no offload plan"):
        stage_memory(object(), "cpu", "stage")
    with pytest.raises(ValueError, match="offload must be one of"):
        stage_memory(net, "cpu", "disk")


def test_memory_settings_from_model_config_parameters(root: Path) -> None:
    from cosmos_triton.models.checkpoints import TOKENIZER_DIR
    from cosmos_triton.models.chunked_decode import ChunkedDecoder
    from cosmos_triton.models.stage_offload import MemorySettings
    from cosmos_triton.models.tokenizer import CosmosVideoTokenizer

    default = MemorySettings.from_params({})
    assert default == MemorySettings() and default.offload == "none" and default.load_device("cuda:0") == "cuda:0"
    settings = MemorySettings.from_params({"offload": "Blocks", "offload_slots": "3", "offload_lease_s": "30",
                                           "empty_cache": "false", "decode_chunk_frames": "2",
                                           "decode_attention_frames": "0", "unrelated": "x"})
    assert settings == MemorySettings("blocks", 3, 30.0, False, 2, 0)
    assert settings.load_device("cuda:0") == "cpu"
    for bad in ({"offload": "disk"}, {"empty_cache": "maybe"}, {"offload_slots": "two"}):
        with pytest.raises(ValueError):
            MemorySettings.from_params(bad)
    tok = CosmosVideoTokenizer(root / TOKENIZER_DIR)
    memory = MemorySettings.from_params({"offload": "stage"}).apply(tok, "cpu", emulate=True)
    assert isinstance(tok.decoder, ChunkedDecoder) and tok.decoder.chunk_frames == 4
    assert memory.mode == "stage" and memory.host_bytes > 0
