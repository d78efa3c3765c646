"""Exact, memory-bounded decode of the CV8x8x8 tokenizer: the decoder streamed over latent frames.

The full-size decode of one 121-frame clip keeps several whole-clip activations alive at once (each 512 x 31 x
176 x 320 in bf16 is 1.8 GB) and, in NVIDIA's `decoder.jit`, materialises the mid block's spatial attention scores
(16 frames x 14080^2 in bf16, 6.3 GB per tensor): diffusers' `AutoencoderKLCosmos` peaks at 43 GiB. The decoder is
causal in time, so it can be run chunk by chunk, exactly:

- per frame (no temporal context): every GroupNorm (`CausalNormalize` folds time into the batch), SiLU, the (1,3,3)
  and 1x1x1 convolutions, the spatial attention, the spatial half of the upsampler, the unpatcher (the inverse Haar
  transform maps each frame to 4 frames, no overlap);
- causal with finite reach: the (3,1,1) convolutions pad with copies of the first frame and read the 2 previous
  frames; a factorised resnet block reads 4 frames back, the hybrid upsampler 1 latent frame back (2 after its x2
  repeat), the output convolution 2;
- causal with unbounded reach: only the temporal attention of the mid block (causal mask over all earlier latent
  frames). The mid block runs at latent resolution (16 x 88 x 160 at 704x1280), so it runs on the whole clip.

So the decode runs `post_quant_conv`, `conv_in` and the mid block on the whole latent (its spatial attention in
groups of `attention_frames` frames, which is per frame anyway), then every later module on chunks of
`chunk_frames` latent frames, each module getting the last `reach` input frames of the previous chunk as context and
keeping only the outputs of the new frames. A context that starts at global frame 0 is shorter than `reach`; the
module's own first-frame padding then rebuilds exactly the padding of the whole-clip decode. The global drops (the
upsampler's first repeated frame, the unpatcher's 3 leading frames) fall inside the context outputs of every chunk
but the first. Independent chunks without context would not be exact (replicated-frame padding at every chunk
start, the temporal attention cut, the drops repeated per chunk).

The decode calls the loaded module's own submodules (TorchScript submodules of `decoder.jit`, or the eager
diffusers modules), so the arithmetic is the shipped module's; results differ from the whole-clip call only where a
kernel picks another algorithm for another shape (bf16 rounding-level, measured in the tests and in
`benchmarks/memory.py`). The cost is the recomputed context frames (with 4-frame chunks about 1.5x the work of the
full-resolution blocks) and more, smaller kernel launches.

Supported layouts: diffusers' `AutoencoderKLCosmos` / `_JitDecoder` (`post_quant_conv`, `decoder.mid_block`,
`decoder.up_blocks`, ...; our small `decoder.jit` is traced from it) and NVIDIA's
`Sequential(post_quant_conv, DecoderFactorized)` (`1.mid.block_1`, `1.mid.attn_1`, `1.up.{i}.block`, ...). Anything
else (or attention inside the up blocks) raises `StreamingUnsupported`; use the plain call then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Fn = Callable[[torch.Tensor], torch.Tensor]
RESNETS = ("CosmosResnetBlock3d", "CausalResnetBlockFactorized3d", "CausalResnetBlock3d")
HYBRID_UPSAMPLERS = ("CosmosUpsample3d", "CausalHybridUpsample3d")
PLAIN_UPSAMPLERS = ("CausalUpsample3d",)


class StreamingUnsupported(ValueError):
    """The module's layout is not one the chunked decode knows to be causal."""


def kind(module: nn.Module) -> str:
    """Class name of an eager module, or of the module a TorchScript module was made from."""
    return getattr(module, "original_name", None) or type(module).__name__


def child(module: nn.Module, name: str) -> nn.Module | None:
    return dict(module.named_children()).get(name)


def children(module: nn.Module | None) -> list[nn.Module]:
    """Submodules in order (None entries of a ModuleList skipped); works on TorchScript modules too."""
    return [] if module is None else [m for _, m in module.named_children()]


def temporal_reach(module: nn.Module) -> int:
    """Frames of history a causal module reads: the sum of (temporal kernel - 1) over its convolutions (an upper
    bound when some run in parallel, e.g. a shortcut)."""
    return sum(p.shape[2] - 1 for p in module.parameters() if p.dim() == 5)


def _silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x)


def _swish(x: torch.Tensor) -> torch.Tensor:  # NVIDIA's `nonlinearity`
    return x * torch.sigmoid(x)


@dataclass
class CausalStage:
    """A module applied chunk by chunk: `reach` input frames of context, `rate` output frames per input frame."""

    fn: Fn
    reach: int
    rate: int = 1


class _StageState:
    def __init__(self, stage: CausalStage) -> None:
        self.stage = stage
        self.context: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        st = self.stage
        if st.reach == 0 and st.rate == 1:
            return st.fn(x)
        n = x.shape[2]
        if self.context is None:  # the clip's first frames: the module's own padding is the global one
            full, y = x, st.fn(x)
        else:
            full = torch.cat([self.context, x], dim=2)
            y = st.fn(full)[:, :, -n * st.rate :]
        keep = max(st.reach, 1)  # at least one frame: the drops of the next chunk must fall inside its context
        self.context = full[:, :, -keep:].clone()
        return y


@dataclass
class DecoderPlan:
    """The decoder cut into whole-clip parts and chunk-wise causal stages."""

    head: Fn  # post_quant_conv + conv_in + the mid block's first resnet
    spatial_attention: Fn | None  # per frame
    temporal_attention: Fn | None  # whole clip
    mid_tail: Fn  # the mid block's second resnet
    stages: list[CausalStage]
    temporal_rate: int  # output frames per latent frame after the first


def _upsample_stage(up: nn.Module, name: str) -> CausalStage | None:
    k = kind(up)
    if k in HYBRID_UPSAMPLERS:
        conv1, conv2, conv3 = (child(up, c) for c in ("conv1", "conv2", "conv3"))
        active = [c for c in (conv1, conv2, conv3) if c is not None and kind(c) != "Identity"]
        if not active:
            return None  # both flags off: the module is the identity
        temporal = conv1 is not None and kind(conv1) != "Identity"
    elif k in PLAIN_UPSAMPLERS:
        temporal = True
    else:
        raise StreamingUnsupported(f"{name}: unknown upsampler {k}")
    rate = 2 if temporal else 1
    return CausalStage(up, reach=-(-temporal_reach(up) // rate), rate=rate)


def _resnet_stage(block: nn.Module, name: str) -> CausalStage:
    if kind(block) not in RESNETS:
        raise StreamingUnsupported(f"{name}: unknown block {kind(block)}")
    return CausalStage(block, reach=temporal_reach(block))


def _diffusers_plan(root: nn.Module, attention_frames: int) -> DecoderPlan:
    post_quant_conv, dec = child(root, "post_quant_conv"), child(root, "decoder")
    assert post_quant_conv is not None and dec is not None
    mid = child(dec, "mid_block")
    if mid is None:
        raise StreamingUnsupported("decoder has no mid_block")
    resnets = children(child(mid, "resnets"))
    spatial, temporal = children(child(mid, "attentions")), children(child(mid, "temp_attentions"))
    if len(resnets) != 2 or len(spatial) != 1 or len(temporal) != 1:
        raise StreamingUnsupported("mid block is not resnet, attention, temporal attention, resnet")
    conv_in = child(dec, "conv_in")
    assert conv_in is not None

    def head(z: torch.Tensor) -> torch.Tensor:
        return resnets[0](conv_in(post_quant_conv(z)))

    def temporal_attention(x: torch.Tensor) -> torch.Tensor:
        t = x.shape[2]
        return temporal[0](x, torch.tril(x.new_ones(t, t)).bool())

    stages: list[CausalStage] = []
    for i, up_block in enumerate(children(child(dec, "up_blocks"))):
        if children(child(up_block, "attentions")) or children(child(up_block, "temp_attentions")):
            raise StreamingUnsupported(f"up_blocks.{i} has attention (unbounded temporal reach)")
        for j, resnet in enumerate(children(child(up_block, "resnets"))):
            stages.append(_resnet_stage(resnet, f"up_blocks.{i}.resnets.{j}"))
        for up in children(child(up_block, "upsamplers")):
            stage = _upsample_stage(up, f"up_blocks.{i}.upsamplers")
            if stage is not None:
                stages.append(stage)
    stages.extend(_output_stages(dec, "norm_out", "conv_out", "unpatch_embed", _silu))
    return _finish(DecoderPlan(head, _spatial(spatial[0], attention_frames), temporal_attention, resnets[1], stages,
                               temporal_rate=0))


def _nvidia_plan(root: nn.Module, attention_frames: int) -> DecoderPlan:
    post_quant_conv, dec = child(root, "0"), child(root, "1")
    assert post_quant_conv is not None and dec is not None
    if kind(dec) != "DecoderFactorized":  # DecoderBase repeats frames in its forward, outside any module
        raise StreamingUnsupported(f"NVIDIA layout with {kind(dec)}; only DecoderFactorized is supported")
    mid = child(dec, "mid")
    conv_in = child(dec, "conv_in")
    if mid is None or conv_in is None:
        raise StreamingUnsupported("decoder has no mid/conv_in")
    block_1, attn, block_2 = child(mid, "block_1"), child(mid, "attn_1"), child(mid, "block_2")
    attn_parts = children(attn)
    if block_1 is None or block_2 is None or len(attn_parts) != 2:
        raise StreamingUnsupported("mid block is not block_1, attn_1 = (spatial, temporal), block_2")

    def head(z: torch.Tensor) -> torch.Tensor:
        return block_1(conv_in(post_quant_conv(z)))

    stages: list[CausalStage] = []
    levels = children(child(dec, "up"))
    for i_level in reversed(range(len(levels))):  # the original runs up[n-1] ... up[0]
        level = levels[i_level]
        if children(child(level, "attn")):
            raise StreamingUnsupported(f"up.{i_level} has attention (unbounded temporal reach)")
        for j, block in enumerate(children(child(level, "block"))):
            stages.append(_resnet_stage(block, f"up.{i_level}.block.{j}"))
        up = child(level, "upsample")
        if up is not None:
            stage = _upsample_stage(up, f"up.{i_level}.upsample")
            if stage is not None:
                stages.append(stage)
    stages.extend(_output_stages(dec, "norm_out", "conv_out", "unpatcher3d", _swish))
    return _finish(DecoderPlan(head, _spatial(attn_parts[0], attention_frames), attn_parts[1], block_2, stages,
                               temporal_rate=0))


def _spatial(attention: nn.Module, frames: int) -> Fn:
    def run(x: torch.Tensor) -> torch.Tensor:
        if frames <= 0 or x.shape[2] <= frames:
            return attention(x)
        return torch.cat([attention(part) for part in x.split(frames, dim=2)], dim=2)

    return run


def _output_stages(dec: nn.Module, norm: str, conv: str, unpatch: str, act: Fn) -> list[CausalStage]:
    norm_out, conv_out, unpatcher = child(dec, norm), child(dec, conv), child(dec, unpatch)
    if norm_out is None or conv_out is None or unpatcher is None:
        raise StreamingUnsupported(f"decoder lacks {norm}/{conv}/{unpatch}")
    patch = _unpatch_rate(unpatcher)

    def out(x: torch.Tensor) -> torch.Tensor:
        return conv_out(act(norm_out(x)))

    return [CausalStage(out, reach=temporal_reach(conv_out)), CausalStage(unpatcher, reach=1, rate=patch)]


def _unpatch_rate(unpatcher: nn.Module) -> int:
    """Frames per input frame of the unpatcher: patch_size (haar: 2 per inverse-DWT level)."""
    size = getattr(unpatcher, "patch_size", None)
    if isinstance(size, int):
        return size
    return 4  # TorchScript keeps no Python attributes; CV8x8x8 (and our small tokenizer) use patch_size 4


def _finish(plan: DecoderPlan) -> DecoderPlan:
    rate = 1
    for stage in plan.stages:
        rate *= stage.rate
    plan.temporal_rate = rate
    return plan


def decoder_plan(module: nn.Module, attention_frames: int = 2) -> DecoderPlan:
    names = {name for name, _ in module.named_children()}
    if {"post_quant_conv", "decoder"} <= names:
        return _diffusers_plan(module, attention_frames)
    if {"0", "1"} <= names:
        return _nvidia_plan(module, attention_frames)
    raise StreamingUnsupported(f"unknown decoder layout (children {sorted(names)})")


class ChunkedDecoder:
    """Drop-in for the decoder: `ChunkedDecoder(decoder)(z)` == `decoder(z)`, computed `chunk_frames` latent frames
    at a time (see the module docstring). `module` is the wrapped decoder (for offloading)."""

    def __init__(self, module: nn.Module, chunk_frames: int = 4, attention_frames: int = 2) -> None:
        if chunk_frames < 1:
            raise ValueError("chunk_frames must be >= 1")
        self.module = module
        self.chunk_frames = chunk_frames
        self.plan = decoder_plan(module, attention_frames)

    @torch.no_grad()
    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        plan = self.plan
        h = plan.head(z)
        if plan.spatial_attention is not None:
            h = plan.spatial_attention(h)
        if plan.temporal_attention is not None:
            h = plan.temporal_attention(h)
        h = plan.mid_tail(h)
        states = [_StageState(s) for s in plan.stages]
        frames = h.shape[2]
        out: torch.Tensor | None = None
        written = 0
        for start in range(0, frames, self.chunk_frames):
            x = h[:, :, start : start + self.chunk_frames]
            for state in states:
                x = state(x)
            if out is None:  # first chunk: its drops fix the total; later chunks give `temporal_rate` per frame
                total = x.shape[2] + (frames - start - self.chunk_frames) * plan.temporal_rate
                total = max(total, x.shape[2])
                out = x.new_empty(*x.shape[:2], total, *x.shape[3:])
            out[:, :, written : written + x.shape[2]] = x
            written += x.shape[2]
            del x
        assert out is not None and written == out.shape[2], (written, None if out is None else out.shape)
        return out


def enable_chunked_decode(tokenizer: object, chunk_frames: int = 4, attention_frames: int = 2) -> ChunkedDecoder:
    """Make a `CosmosVideoTokenizer` decode chunk-wise (its `decoder` becomes the `ChunkedDecoder`)."""
    current = tokenizer.decoder  # type: ignore[attr-defined]
    module = current.module if isinstance(current, ChunkedDecoder) else current
    chunked = ChunkedDecoder(module, chunk_frames, attention_frames)
    tokenizer.decoder = chunked  # type: ignore[attr-defined]
    return chunked
