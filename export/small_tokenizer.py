"""Write a tiny CV8x8x8-compatible tokenizer: `encoder.jit`, `decoder.jit`, `mean_std.pt` (docs/MATH.md, Tokenizer).

The network is diffusers' `AutoencoderKLCosmos` with the real interface (3 -> 16 latent channels, haar patch 4,
8x spatial / 8x temporal compression, causal) but 8-channel blocks, randomly initialised and stored in bf16. The
TorchScript modules have the original signatures: the encoder returns `(latent, (tensor([0.]), tensor([0.])))`,
the decoder is `post_quant_conv` followed by the decoder.

The modules are traced on CPU from a small example; sizes stay symbolic, so they run at any batch, frame count and
resolution, and `_check_traced` compares them with eager mode on another shape. Two trace-time patches keep the
graph usable everywhere: bf16 `avg_pool3d` (missing on CPU) runs in fp32, and no CPU device gets frozen into it.

Byte-identical output on rerun, also from another directory, needs two more measures:
- TorchScript numbers clashing type names (`___torch_mangle_N`) with a per-process counter, so tracing happens in a
  fresh interpreter (`write_small_tokenizer`);
- `torch.jit.save` stores the tracing call stack with absolute source paths (`*.debug_pkl`), which are dropped
  (`_strip_debug_info`).

Usage: python -m export.small_tokenizer OUT_DIR [--seed N]
       python -m export.small_tokenizer OUT_DIR --weights VAE.pt --mean_std STATS.pt \
           --encoder_channels 32,64,64,64 --decoder_channels 64,64,64,64   (a trained tokenizer)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

BLOCK_CHANNELS = (8, 8, 8, 8)
TRACE_EXAMPLE_SHAPE = (1, 3, 17, 32, 48)  # small on purpose: the traced graph is shape-generic (checked below)
CHECK_SHAPE = (2, 3, 25, 48, 80)  # a different batch, T and resolution than the trace example
DECODER_OUTPUT_GAIN = 0.25  # random init decodes to std ~1.2 (heavily clipped); this gives std ~0.3
ENCODER_OUTPUT_GAIN = 3.0  # raw latent std ~0.2 -> ~0.65, close to the std table below, like the real tokenizer
TORCHSCRIPT_MODULE = "cosmos_small_tokenizer"  # fixed TorchScript type prefix, whatever way this file is run
REPO_ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def _cpu_bf16_pooling() -> Iterator[None]:
    """CPU has no bf16 `avg_pool3d`; pool in fp32 and round back (what the CUDA kernel's fp32 accumulator does).
    Used while tracing, so the recorded graph holds `to(fp32) -> avg_pool3d -> to(bf16)`."""
    original = torch.nn.functional.avg_pool3d

    def avg_pool3d(x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return original(x.float(), *args, **kwargs).to(x.dtype)

    torch.nn.functional.avg_pool3d = avg_pool3d
    try:
        yield
    finally:
        torch.nn.functional.avg_pool3d = original


@contextlib.contextmanager
def _no_device_constants() -> Iterator[None]:
    """The unpatcher does `self.wavelets.to(hidden_states.device)`, which a trace records with the example's device
    as a constant, so a decoder traced on CPU would pull its haar filters back to CPU when run on CUDA. Such a call is
    the identity in eager mode; skipping it while tracing leaves the buffers wherever map_location puts the module."""
    original = torch.Tensor.to

    def to(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        if not kwargs and len(args) == 1 and isinstance(args[0], torch.device) and args[0] == self.device:
            return self
        return original(self, *args, **kwargs)

    torch.Tensor.to = to
    try:
        yield
    finally:
        torch.Tensor.to = original


class _JitEncoder(torch.nn.Module):
    """Sequential(encoder, quant_conv, identity distribution) as in the original encoder.jit."""

    __module__ = TORCHSCRIPT_MODULE

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = vae.encoder
        self.quant_conv = vae.quant_conv

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        return self.quant_conv(self.encoder(x)), (torch.tensor([0.0]), torch.tensor([0.0]))


class _JitDecoder(torch.nn.Module):
    """Sequential(post_quant_conv, decoder) as in the original decoder.jit."""

    __module__ = TORCHSCRIPT_MODULE

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.post_quant_conv = vae.post_quant_conv
        self.decoder = vae.decoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))


def build_vae(encoder_channels: tuple[int, ...] = BLOCK_CHANNELS,
              decoder_channels: tuple[int, ...] = BLOCK_CHANNELS) -> torch.nn.Module:
    """AutoencoderKLCosmos with the CV8x8x8 interface (3 -> 16 latent channels, haar patch 4, 8x spatial and 8x
    temporal compression, causal) and the given block widths; fp32, default initialisation (from torch's RNG)."""
    from diffusers import AutoencoderKLCosmos

    return AutoencoderKLCosmos(
        in_channels=3,
        out_channels=3,
        latent_channels=16,
        encoder_block_out_channels=tuple(encoder_channels),
        decode_block_out_channels=tuple(decoder_channels),
        attention_resolutions=(32,),  # with resolution 1024: attention only in the mid blocks, like the real one
        resolution=1024,
        num_layers=2,
        patch_size=4,
        patch_type="haar",
        spatial_compression_ratio=8,
        temporal_compression_ratio=8,
    )


def _frozen_bf16(vae: torch.nn.Module) -> torch.nn.Module:
    # ModelMixin.to() warns about fp32-pinned modules; this model has none
    return torch.nn.Module.to(vae, torch.bfloat16).eval().requires_grad_(False)


def build_small_vae(seed: int = 0) -> torch.nn.Module:
    """Deterministically initialised tiny AutoencoderKLCosmos in bf16, eval mode."""
    torch.manual_seed(seed)
    vae = build_vae()
    with torch.no_grad():
        last = vae.decoder.conv_out.conv_t
        last.weight.mul_(DECODER_OUTPUT_GAIN)
        last.bias.mul_(DECODER_OUTPUT_GAIN)
        vae.quant_conv.weight.mul_(ENCODER_OUTPUT_GAIN)
        vae.quant_conv.bias.mul_(ENCODER_OUTPUT_GAIN)
    return _frozen_bf16(vae)


def load_trained_vae(weights: Path, encoder_channels: tuple[int, ...], decoder_channels: tuple[int, ...]
                     ) -> torch.nn.Module:
    """A trained AutoencoderKLCosmos state dict (any float dtype) in bf16, eval mode."""
    vae = build_vae(encoder_channels, decoder_channels)
    vae.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return _frozen_bf16(vae)


def small_mean_std(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """256 means/stds each (16 channels x 16 latent frames, channel-major), shaped like the real table:
    small per-channel means, stds around 0.6-0.75, and a distinct first latent frame (it encodes one pixel frame)."""
    g = torch.Generator().manual_seed(10_000 + seed)
    channels, frames = 16, 16
    mean = 0.03 * torch.randn(channels, 1, generator=g) + 0.005 * torch.randn(channels, frames, generator=g)
    std = 0.6 + 0.15 * torch.rand(channels, 1, generator=g) + 0.01 * torch.randn(channels, frames, generator=g)
    mean[:, 0] += 0.08 * torch.randn(channels, generator=g)
    std[:, 0] *= 0.85
    return mean.reshape(-1).contiguous(), std.reshape(-1).contiguous()


def _strip_debug_info(path: Path) -> None:
    """Rewrite a TorchScript archive without `*.debug_pkl` (absolute paths of the tracing call stack).

    Written next to it under the same file name (the archive name is the file stem, as torch.jit.save does) and
    then moved over it, so a torch version whose private archive API differs leaves the original file intact (with
    its debug records: still loadable, only not byte-reproducible across directories) and a warning."""
    staging = path.parent / f".{path.name}.strip"
    try:
        reader = torch._C.PyTorchFileReader(str(path))
        records = {name: reader.get_record(name) for name in reader.get_all_records()}
        version = int(records["version"])
        del reader
        staging.mkdir(exist_ok=True)
        writer = torch._C.PyTorchFileWriter(str(staging / path.name))
        for name, data in records.items():
            # the writer adds version, byteorder and a content-derived serialization id itself
            if name.endswith(".debug_pkl") or name in ("version", "byteorder", ".data/serialization_id"):
                continue
            writer.write_record(name, data, len(data))
        writer.set_min_version(version)
        writer.write_end_of_file()
        del writer
        os.replace(staging / path.name, path)
    except (AttributeError, RuntimeError, TypeError, ValueError, KeyError) as err:
        warnings.warn(f"kept the debug records of {path.name}: {err}", stacklevel=2)
    finally:
        if staging.exists():
            for leftover in staging.iterdir():
                leftover.unlink()
            staging.rmdir()


def _trace(module: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Trace on a small example. Sizes are recorded symbolically; the one value frozen (the decoder's temporal
    upsample factor, 2) gives the same result for a 1-frame latent, and `_check_traced` compares against eager."""
    with torch.no_grad(), _cpu_bf16_pooling(), _no_device_constants(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(module, example, check_trace=False, _store_inputs=False)


def _check_traced(eager: torch.nn.Module, path: Path, x: torch.Tensor) -> torch.Tensor:
    """The saved module must equal eager on shapes other than the trace example (catches baked-in sizes)."""
    traced = torch.jit.load(str(path))
    with torch.no_grad(), _cpu_bf16_pooling():
        want = eager(x)
        got = traced(x)
    want_t, got_t = (want[0], got[0]) if isinstance(want, tuple) else (want, got)
    if got_t.shape != want_t.shape or not torch.equal(got_t, want_t):
        raise RuntimeError(f"traced {path.name} differs from eager for input {tuple(x.shape)}")
    return got_t


def _write_in_this_process(out_dir: Path, seed: int, trained: argparse.Namespace | None = None) -> None:
    if trained is None:
        vae = build_small_vae(seed)
    else:
        vae = load_trained_vae(trained.weights, trained.encoder_channels, trained.decoder_channels)
    encoder, decoder = _JitEncoder(vae).eval(), _JitDecoder(vae).eval()
    g = torch.Generator().manual_seed(seed)
    example = (torch.rand(TRACE_EXAMPLE_SHAPE, generator=g) * 2 - 1).to(torch.bfloat16)
    traced_encoder = _trace(encoder, example)
    traced_decoder = _trace(decoder, traced_encoder(example)[0])
    for name, traced in (("encoder.jit", traced_encoder), ("decoder.jit", traced_decoder)):
        torch.jit.save(traced, str(out_dir / name))
        _strip_debug_info(out_dir / name)
    check = (torch.rand(CHECK_SHAPE, generator=g) * 2 - 1).to(torch.bfloat16)
    check_latent = _check_traced(encoder, out_dir / "encoder.jit", check)
    _check_traced(decoder, out_dir / "decoder.jit", check_latent)
    if trained is None:
        torch.save(small_mean_std(seed), out_dir / "mean_std.pt")
    else:  # the trained statistics, saved as the original's (mean, std) tuple of 256 values each
        mean, std = torch.load(trained.mean_std, map_location="cpu", weights_only=True)
        torch.save((mean.float().reshape(-1).contiguous(), std.float().reshape(-1).contiguous()),
                   out_dir / "mean_std.pt")


def _in_fresh_interpreter(args: list[str]) -> None:
    # a fresh interpreter, so TorchScript type numbering does not depend on what this process traced before
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    code = "import sys; from export.small_tokenizer import _main; _main(sys.argv[1:], fresh=True)"
    subprocess.run([sys.executable, "-c", code, *args], check=True, env=env)


def write_small_tokenizer(out_dir: Path, seed: int = 0) -> Path:
    """Write encoder.jit, decoder.jit and mean_std.pt into out_dir (created); byte-identical for a given seed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _in_fresh_interpreter([str(out_dir), "--seed", str(seed)])
    return out_dir


def write_trained_tokenizer(out_dir: Path, weights: Path, mean_std: Path, encoder_channels: tuple[int, ...],
                            decoder_channels: tuple[int, ...]) -> Path:
    """The same three files from a trained AutoencoderKLCosmos state dict (`weights`) and its latent statistics
    (`mean_std`: a (mean, std) pair of 256 values, channel-major), traced on CPU like the random one."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _in_fresh_interpreter([str(out_dir), "--weights", str(weights), "--mean_std", str(mean_std),
                           "--encoder_channels", ",".join(map(str, encoder_channels)),
                           "--decoder_channels", ",".join(map(str, decoder_channels))])
    return out_dir


def _channels(text: str) -> tuple[int, ...]:
    return tuple(int(c) for c in text.split(","))


def _main(argv: list[str] | None = None, fresh: bool = False) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", type=Path, help="a trained state dict instead of the seeded random weights")
    parser.add_argument("--mean_std", type=Path, help="with --weights: the trained latent statistics")
    parser.add_argument("--encoder_channels", type=_channels, default=BLOCK_CHANNELS)
    parser.add_argument("--decoder_channels", type=_channels, default=BLOCK_CHANNELS)
    args = parser.parse_args(argv)
    if args.weights is not None and args.mean_std is None:
        parser.error("--weights needs --mean_std")
    if fresh:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        _write_in_this_process(args.out_dir, args.seed, args if args.weights is not None else None)
    elif args.weights is not None:
        write_trained_tokenizer(args.out_dir, args.weights, args.mean_std, args.encoder_channels,
                                args.decoder_channels)
    else:
        write_small_tokenizer(args.out_dir, args.seed)


if __name__ == "__main__":
    _main()
