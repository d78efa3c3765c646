"""What each exported graph computes, and its export.

Every graph is the stage's network and nothing of the sampler: the EDM preconditioning, CFG, the Video2World
frame replacement, T5 tokenisation, SigLIP's PIL preprocessing and the tokenizer's 121-frame chunking stay in
the host code that calls the graph. Names and dims are listed in export/README.md.

- t5: (input_ids, attention_mask) -> hidden_states, fp32 as served; padded positions set to exactly 0 in the graph.
- dit_t2w / dit_v2w: output = F(x, c_noise, context, fps[, condition_mask]), the network of docs/MATH.md, DiT, as
  `CosmosDiT` computes it (zero padding-mask channel appended inside). bf16 by default: the served precision and
  the checkpoint's, so a strongly typed TensorRT build keeps the served rounding; fp32 on request for runtimes
  without bf16 kernels (onnxruntime's CPU provider has none). fps is a 0-d fp32 tensor, so it promotes like the
  Python number the torch stage receives.
- tokenizer_encoder: video [-1, 1] -> latent normalised by the per-(channel, frame) table and scaled by sigma_data;
  tokenizer_decoder: the inverse. One chunk of up to 121 frames per batch item. Exported from the ScriptModule;
  fp32 (see `tokenizer_graph`).
- video_safety: preprocessed pixel_values -> (image_features, probabilities): the raw SigLIP embedding and the
  softmax of the safety head on its L2-normalised copy; the stage's class is the argmax of probabilities.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx_ir as ir
import torch
from torch import nn
from torch.export import Dim

from cosmos_triton.guardrail.common import VIDEO_SAFETY_DIR
from cosmos_triton.models.checkpoints import DiTArchitecture, read_dit_checkpoint
from cosmos_triton.models.dit import CosmosDiT, load_dit
from cosmos_triton.models.text_encoder import MAX_TOKENS
from cosmos_triton.models.tokenizer import SIGMA_DATA, CosmosVideoTokenizer
from export.onnx.graph_io import EXTERNAL_DATA_THRESHOLD, needs_external_data, save_proto
from export.onnx.torchscript import check_runs_in_fp32, export_scripted, widen_to_fp32

STAGES = ("t5", "dit_t2w", "dit_v2w", "tokenizer_encoder", "tokenizer_decoder", "video_safety")
MAX_BATCH = 16  # graph bound only; the served stages run batch 1 (CFG branches are two calls)
MAX_FRAMES = 256  # video safety frames per call
DIT_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
# The newest opset torch 2.13's dynamo exporter writes (its default is 20). From 23 scaled_dot_product_attention is
# the ONNX Attention op, whose default scale 1/sqrt(head_dim) the runtime applies; at 20 the decomposition stores
# sqrt(scale) as a graph constant, bf16 in bf16 graphs (0.4199 for 0.4204: attention logits 0.25% off).
# TensorRT parses Attention from 10.14 (its ONNX parser release notes).
DYNAMO_OPSET = 23

DIT_INPUTS = ("x", "c_noise", "context", "fps")
DIT_V2W_INPUTS = (*DIT_INPUTS, "condition_mask")
DIT_OUTPUTS = ("output",)
T5_INPUTS, T5_OUTPUTS = ("input_ids", "attention_mask"), ("hidden_states",)
ENCODER_INPUTS, ENCODER_OUTPUTS = ("video",), ("latent",)
DECODER_INPUTS, DECODER_OUTPUTS = ("latent",), ("video",)
SAFETY_INPUTS, SAFETY_OUTPUTS = ("pixel_values",), ("image_features", "probabilities")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters print progress and tracer warnings; keep them off the command's output."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _dim_names(program: torch.export.ExportedProgram, dynamic_shapes: dict) -> dict[str, str]:
    """Exporter symbol (`s48`) -> the name given to its `Dim` (`batch`); derived dims map through their root."""
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    names: dict[str, str] = {}
    for spec, node in zip(dynamic_shapes.values(), program.graph_signature.user_inputs, strict=False):
        for axis, dim in (spec or {}).items():
            size = placeholders[node].meta["val"].shape[axis]
            if isinstance(size, torch.SymInt):
                for symbol in size.node.expr.free_symbols:
                    names[str(symbol)] = getattr(dim, "root", dim).__name__
    return names


def _rename_dims(model: ir.Model, names: dict[str, str]) -> None:
    if not names:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    values = [*model.graph.inputs, *model.graph.outputs, *(v for n in model.graph.all_nodes() for v in n.outputs)]
    for value in values:
        if value.shape is None:
            continue
        dims = [ir.SymbolicDim(pattern.sub(lambda m: names[m.group(1)], d.value))
                if isinstance(d, ir.SymbolicDim) and d.value else d for d in value.shape]
        value.shape = ir.Shape(dims)


def _export_dynamo(module: nn.Module, args: tuple, dynamic_shapes: dict, input_names: tuple[str, ...],
                   output_names: tuple[str, ...], optimize: bool = True) -> torch.onnx.ONNXProgram:
    with _quiet(), torch.no_grad():
        # torch.export first: inside torch.onnx.export, diffusers' attention takes an `is_in_onnx_export()` branch
        # that makes head counts data-dependent tensors, which sends the exporter to its slow fallback
        program = torch.export.export(module.eval(), args, dynamic_shapes=dynamic_shapes, strict=False)
        onnx_program = torch.onnx.export(program, dynamo=True, input_names=list(input_names),
                                         output_names=list(output_names), optimize=optimize,
                                         opset_version=DYNAMO_OPSET)
    _rename_dims(onnx_program.model, _dim_names(program, dynamic_shapes))
    return onnx_program


def save_program(program: torch.onnx.ONNXProgram, path: Path, threshold: int = EXTERNAL_DATA_THRESHOLD) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    side = path.with_name(path.name + ".data")
    side.unlink(missing_ok=True)
    weights = sum(v.const_value.nbytes for v in program.model.graph.initializers.values() if v.const_value is not None)
    program.save(str(path), external_data=needs_external_data(weights, threshold))
    return path


# --- DiT -------------------------------------------------------------------------------------------------------

class DiTGraph(nn.Module):
    """F(x, c_noise, context, fps[, condition_mask]) of `CosmosDiT`; fps as a 0-d tensor."""

    def __init__(self, net: CosmosDiT):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, context: torch.Tensor, fps: torch.Tensor,
                condition_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, c_noise, context, fps, condition_mask)


def dit_io_names(arch: DiTArchitecture) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (DIT_V2W_INPUTS if arch.model_type == "Video2World" else DIT_INPUTS), DIT_OUTPUTS


def dit_example(arch: DiTArchitecture, dtype: torch.dtype, device: str | torch.device = "cpu",
                batch: int = 2, t: int = 3, h: int = 8, w: int = 10, tokens: int = 7) -> tuple[torch.Tensor, ...]:
    """Sizes distinct from each other and from 0/1, so that the exporter keeps every marked dim symbolic."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, arch.latent_channels, t, h, w, generator=g).to(device, dtype)
    c_noise = torch.linspace(-1.0, 1.0, batch).to(device, dtype)
    context = torch.randn(batch, tokens, arch.crossattn_emb_channels, generator=g).to(device, dtype)
    fps = torch.tensor(24.0, device=device)
    if arch.model_type == "Video2World":
        return x, c_noise, context, fps, torch.zeros(batch, 1, t, h, w).to(device, dtype)
    return x, c_noise, context, fps


def dit_dynamic_shapes(arch: DiTArchitecture) -> dict[str, dict[int, Dim] | None]:
    """Latent T/H/W up to the position tables' caps (`max_size`), H and W multiples of the patch size."""
    pt, ph, pw = arch.patch_size
    batch = Dim("batch", min=1, max=MAX_BATCH)
    t = pt * Dim("latent_t_patches", min=1, max=arch.max_size[0] // pt) if pt > 1 else Dim("latent_t", min=1,
                                                                                            max=arch.max_size[0])
    h = ph * Dim("latent_h_patches", min=1, max=arch.max_size[1] // ph)
    w = pw * Dim("latent_w_patches", min=1, max=arch.max_size[2] // pw)
    video = {0: batch, 2: t, 3: h, 4: w}
    shapes: dict[str, dict[int, Dim] | None] = {
        "x": video, "c_noise": {0: batch}, "context": {0: batch, 1: Dim("text_tokens", min=1, max=MAX_TOKENS)},
        "fps": None,
    }
    if arch.model_type == "Video2World":
        shapes["condition_mask"] = dict(video)
    return shapes


def export_dit_program(net: CosmosDiT, optimize: bool = True) -> torch.onnx.ONNXProgram:
    """The graph in the network's dtype. Also works on the meta device (with optimize=False: constant folding
    needs values)."""
    arch = net.arch
    inputs, outputs = dit_io_names(arch)
    args = dit_example(arch, net.dtype, net.device)
    return _export_dynamo(DiTGraph(net), args, dit_dynamic_shapes(arch), inputs, outputs, optimize)


def export_dit(checkpoint: Path, out: Path, dtype: torch.dtype = torch.bfloat16,
               threshold: int = EXTERNAL_DATA_THRESHOLD) -> Path:
    net = load_dit(read_dit_checkpoint(checkpoint), dtype=dtype)
    return save_program(export_dit_program(net), out, threshold)


# --- T5 ---------------------------------------------------------------------------------------------------------

class T5Graph(nn.Module):
    """Encoder hidden states with every position whose attention_mask is 0 set to exactly 0. With right padding
    (the T5 tokenizer's), these are the positions at or after the true length, which the stage zeroes."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return torch.where(attention_mask[..., None].bool(), hidden, torch.zeros((), dtype=hidden.dtype))


def export_t5(t5_dir: Path, out: Path, threshold: int = EXTERNAL_DATA_THRESHOLD) -> Path:
    from cosmos_triton.models.text_encoder import T5TextEncoder

    encoder = T5TextEncoder(t5_dir).model
    batch, tokens = Dim("batch", min=1, max=MAX_BATCH), Dim("text_tokens", min=1, max=MAX_TOKENS)
    ids = torch.randint(3, encoder.config.vocab_size, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.int64)
    mask[1, 5:] = 0
    shapes = {"input_ids": {0: batch, 1: tokens}, "attention_mask": {0: batch, 1: tokens}}
    program = _export_dynamo(T5Graph(encoder), (ids, mask), shapes, T5_INPUTS, T5_OUTPUTS)
    return save_program(program, out, threshold)


# --- Video safety -----------------------------------------------------------------------------------------------

class VideoSafetyGraph(nn.Module):
    """SigLIP image features and the safety head's class probabilities, as `classify_features` computes them."""

    def __init__(self, vision_model: nn.Module, classifier: nn.Module):
        super().__init__()
        self.vision_model = vision_model
        self.classifier = classifier

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.vision_model(pixel_values=pixel_values).pooler_output
        normalised = features / features.norm(dim=-1, keepdim=True)
        return features, torch.softmax(self.classifier(normalised), dim=-1)


def load_video_safety_graph(safety_dir: Path) -> VideoSafetyGraph:
    from cosmos_triton.guardrail.video_safety import VideoContentSafetyFilter

    stage = VideoContentSafetyFilter(safety_dir)
    return VideoSafetyGraph(stage.encoder.vision_model, stage.classifier).eval()


def export_video_safety_module(graph: VideoSafetyGraph, out: Path, threshold: int = EXTERNAL_DATA_THRESHOLD) -> Path:
    size = graph.vision_model.config.image_size
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    shapes = {"pixel_values": {0: Dim("frames", min=1, max=MAX_FRAMES)}}
    program = _export_dynamo(graph, (pixels,), shapes, SAFETY_INPUTS, SAFETY_OUTPUTS)
    return save_program(program, out, threshold)


def export_video_safety(safety_dir: Path, out: Path, threshold: int = EXTERNAL_DATA_THRESHOLD) -> Path:
    return export_video_safety_module(load_video_safety_graph(safety_dir), out, threshold)


# --- Tokenizer --------------------------------------------------------------------------------------------------

def _returns_tuple(module: torch.jit.ScriptModule) -> bool:
    return isinstance(module.forward.schema.returns[0].type, torch._C.TupleType)


class _Normalised(nn.Module):
    __constants__ = ("sigma_data",)  # a TorchScript constant

    def __init__(self, jit: torch.jit.ScriptModule, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.jit = jit
        self.sigma_data = SIGMA_DATA
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)


class _EncoderOfTuple(_Normalised):
    """encoder.jit returning (latent, (0, 0)), as the CV8x8x8 release does."""

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        raw = self.jit(video)[0]
        t = raw.shape[2]
        return self.sigma_data * ((raw - self.mean[:, :, :t]) / self.std[:, :, :t])


class _EncoderOfTensor(_Normalised):
    def forward(self, video: torch.Tensor) -> torch.Tensor:
        raw = self.jit(video)
        t = raw.shape[2]
        return self.sigma_data * ((raw - self.mean[:, :, :t]) / self.std[:, :, :t])


class _Decoder(_Normalised):
    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        t = latent.shape[2]
        return self.jit(latent / self.sigma_data * self.std[:, :, :t] + self.mean[:, :, :t])


def tokenizer_graph(tokenizer_dir: Path, which: str) -> onnx.ModelProto:
    """The encoder or decoder ScriptModule with the normalisation around it, in fp32, scripted and exported with
    the TorchScript exporter.

    Why fp32: the served modules compute in bf16 (their traced code casts activations to bf16), but ONNX allows
    bf16 Conv only from opset 22, beyond this exporter's opsets. The module is widened before export
    (`widen_to_fp32`: weights exact, its bf16 casts made fp32 casts), so the graph is the released network computed
    in fp32; the tests measure it against both that module and the served bf16 stage.
    """
    if which not in ("encoder", "decoder"):
        raise ValueError(f"tokenizer part must be 'encoder' or 'decoder', not {which!r}")
    tokenizer = CosmosVideoTokenizer(tokenizer_dir)  # normalisation tables exactly as the stage reads them
    jit = load_fp32_scripted(tokenizer_dir / f"{which}.jit")
    g = torch.Generator().manual_seed(0)
    if which == "encoder":
        cls = _EncoderOfTuple if _returns_tuple(jit) else _EncoderOfTensor
        example = torch.rand(1, 3, 17, 48, 64, generator=g) * 2 - 1
        names, outs = ENCODER_INPUTS, ENCODER_OUTPUTS
        axes = {"video": {0: "batch", 2: "frames", 3: "height", 4: "width"},
                "latent": {0: "batch", 2: "latent_frames", 3: "latent_height", 4: "latent_width"}}
    else:
        cls = _Decoder
        example = torch.randn(1, 16, 3, 6, 8, generator=g)
        names, outs = DECODER_INPUTS, DECODER_OUTPUTS
        axes = {"latent": {0: "batch", 2: "latent_frames", 3: "latent_height", 4: "latent_width"},
                "video": {0: "batch", 2: "frames", 3: "height", 4: "width"}}
    # scripted, not traced: tracing cannot call a loaded ScriptModule it does not own
    scripted = torch.jit.script(cls(jit, tokenizer.latent_mean.float(), tokenizer.latent_std.float()).eval())
    check_runs_in_fp32(scripted, example, f"{tokenizer_dir / which}.jit")
    with _quiet():
        return export_scripted(scripted, (example,), names, outs, axes)


def load_fp32_scripted(path: Path) -> torch.jit.ScriptModule:
    """A fresh copy of a bf16 ScriptModule widened to fp32 (a fresh load: widening edits the code in place)."""
    if not path.is_file():
        raise FileNotFoundError(f"TorchScript module not found: {path}")
    module = torch.jit.load(str(path), map_location="cpu").eval()
    widen_to_fp32(module)
    return module


def export_tokenizer(tokenizer_dir: Path, which: str, out: Path, threshold: int = EXTERNAL_DATA_THRESHOLD) -> Path:
    model = tokenizer_graph(tokenizer_dir, which)
    onnx.checker.check_model(model)
    return save_proto(model, out, threshold)


# --- All stages -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StageSources:
    """The checkpoint folders the stages export from (as the server's settings name them)."""

    t5: Path
    dit_t2w: Path
    dit_v2w: Path
    tokenizer: Path
    video_safety: Path

    @classmethod
    def from_settings(cls, settings) -> StageSources:  # settings: cosmos_triton.deployment.ServeSettings
        return cls(t5=settings.t5_path, dit_t2w=settings.dit_path, dit_v2w=settings.v2w_dit_path,
                   tokenizer=settings.tokenizer_path, video_safety=settings.guardrail_path / VIDEO_SAFETY_DIR)


def stage_exporter(stage: str, sources: StageSources, dit_dtype: torch.dtype) -> Callable[[Path], Path]:
    exporters: dict[str, Callable[[Path], Path]] = {
        "t5": lambda out: export_t5(sources.t5, out),
        "dit_t2w": lambda out: export_dit(sources.dit_t2w, out, dit_dtype),
        "dit_v2w": lambda out: export_dit(sources.dit_v2w, out, dit_dtype),
        "tokenizer_encoder": lambda out: export_tokenizer(sources.tokenizer, "encoder", out),
        "tokenizer_decoder": lambda out: export_tokenizer(sources.tokenizer, "decoder", out),
        "video_safety": lambda out: export_video_safety(sources.video_safety, out),
    }
    if stage not in exporters:
        raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    return exporters[stage]
