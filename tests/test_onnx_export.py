"""ONNX exports of every stage, run with onnxruntime (CPU) against the PyTorch stage on the small checkpoints,
plus the full-size DiT graph built on the meta device (reduced to one block).

Errors are printed (`pytest -s`): max |onnx - torch| and that over max |torch|. Bounds: fp32 graph vs fp32 torch
agree to float rounding (1e-5 relative); where the served stage computes in bf16 the bound is bf16's (2^-8 = 0.4%
per rounding, accumulated through the network), stated per test.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from cosmos_triton.diffusion.edm import denoise
from cosmos_triton.guardrail.common import VIDEO_SAFETY_DIR
from cosmos_triton.models.checkpoints import DIT_PRESETS, latent_shape, read_dit_checkpoint
from cosmos_triton.models.dit import CosmosDiT, build_model, diffusers_key, load_dit, original_key_shapes
from cosmos_triton.models.tensorrt_engine import EngineDiT
from cosmos_triton.models.tokenizer import CosmosVideoTokenizer
from cosmos_triton.request.envelope import SMALL_ENVELOPE
from export.onnx import stages
from export.onnx.__main__ import main as export_main
from export.onnx.__main__ import parse_args
from export.onnx.graph_io import bf16_to_fp32, needs_external_data, save_proto, summarize, summarize_ir
from export.onnx.torchscript import repair_bfloat16_casts
from export.onnx.verify import Error, OnnxRuntimeEngine, measure

FP32_REL = 1e-5  # fp32 graph vs the same network in fp32 torch: float rounding only
# A bf16 graph widened to fp32 keeps the bf16 RoPE constants (the original's bf16 frequency ranges, as
# models/dit.py computes them); the fp32 network computes those in fp32, which moves the output: 1e-4 on the
# random 2-block DiT, 4.7e-4 on the trained 8-block one (sharper attention). Still 60x below the served-bf16 bound.
WIDENED_BF16_REL = 1e-3
SMALL_LATENTS = [latent_shape(121, h, w)[1:] for h, w in SMALL_ENVELOPE.resolutions]  # (16, 12, 20), ...


def report(stage: str, case: str, err: Error) -> Error:
    print(f"\n{stage} [{case}]: {err}")
    return err


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def sources(small_settings) -> stages.StageSources:
    return stages.StageSources.from_settings(small_settings)


def _dit_inputs(arch, t: int, h: int, w: int, seed: int, video2world: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    inputs = {
        "x": torch.randn(1, 16, t, h, w, generator=g),
        "c_noise": torch.tensor([0.25 * math.log(2.5)]),
        "context": torch.randn(1, 512, arch.crossattn_emb_channels, generator=g),
    }
    if video2world:
        mask = torch.zeros(1, 1, t, h, w)
        mask[:, :, :2] = 1.0  # 9 conditioning frames -> 2 latent frames
        inputs["condition_mask"] = mask
    return inputs


def _torch_dit(net: CosmosDiT, inputs: dict[str, torch.Tensor], fps: float, dtype: torch.dtype) -> torch.Tensor:
    with torch.no_grad():
        mask = inputs.get("condition_mask")
        return net(inputs["x"].to(dtype), inputs["c_noise"].to(dtype), inputs["context"].to(dtype), fps,
                   None if mask is None else mask.to(dtype)).float()


# --- T5 ---------------------------------------------------------------------------------------------------------

def test_t5_graph_matches_the_stage(sources, out_dir: Path) -> None:
    from cosmos_triton.models.text_encoder import T5TextEncoder

    path = stages.export_t5(sources.t5, out_dir / "t5.onnx")
    summary = summarize(path)
    assert [(s.name, s.dtype, s.dims) for s in summary.inputs] == [
        ("input_ids", "INT64", ("batch", "text_tokens")), ("attention_mask", "INT64", ("batch", "text_tokens"))]
    assert [(s.name, s.dtype, s.dims) for s in summary.outputs] == [
        ("hidden_states", "FLOAT", ("batch", "text_tokens", 1024))]
    stage, engine = T5TextEncoder(sources.t5), OnnxRuntimeEngine(path)
    prompts = ["A robot arm stacks three red cubes on a wooden table, seen from above.", "", "rain"]
    ids, masks, want = [], [], []
    for prompt in prompts:
        i, m = stage.tokenize(prompt)
        ids.append(i), masks.append(m), want.append(stage.encode_one(prompt))
    # one prompt per call, as served (512 tokens), then the three as one batch (dynamic batch axis)
    for prompt, i, m, w in zip(prompts, ids, masks, want, strict=True):
        got = engine.run({"input_ids": i, "attention_mask": m})["hidden_states"]
        assert report("t5", f"{len(prompt)} chars", measure(got, w)).max_rel <= FP32_REL
        length = int(m.sum())
        assert torch.equal(got[0, length:], torch.zeros_like(got[0, length:]))  # zeroed past the length, exactly
        assert got[0, :length].abs().amax(dim=-1).min() > 0
    got = engine.run({"input_ids": torch.cat(ids), "attention_mask": torch.cat(masks)})["hidden_states"]
    assert report("t5", "batch of 3", measure(got, torch.cat(want))).max_rel <= FP32_REL


# --- DiT --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dit_t2w_fp32(sources, out_dir: Path) -> Path:
    return stages.export_dit(sources.dit_t2w, out_dir / "dit_t2w.onnx", torch.float32)


def test_dit_t2w_fp32_graph_matches_the_network_at_every_small_resolution(sources, dit_t2w_fp32: Path) -> None:
    summary = summarize(dit_t2w_fp32)
    video = ("batch", 16, "latent_t", "2*latent_h_patches", "2*latent_w_patches")
    assert [(s.name, s.dtype, s.dims) for s in summary.inputs] == [
        ("x", "FLOAT", video), ("c_noise", "FLOAT", ("batch",)), ("context", "FLOAT", ("batch", "text_tokens", 1024)),
        ("fps", "FLOAT", ())]
    assert [(s.name, s.dims) for s in summary.outputs] == [("output", video)]
    net32 = load_dit(sources.dit_t2w, dtype=torch.float32)
    served = load_dit(sources.dit_t2w)  # bf16, as served
    engine = OnnxRuntimeEngine(dit_t2w_fp32)
    for (t, h, w), fps in zip(SMALL_LATENTS, (24.0, 12.0, 40.0), strict=True):
        inputs = _dit_inputs(net32.arch, t, h, w, seed=h, video2world=False)
        got = engine.run({**inputs, "fps": torch.tensor(fps)})["output"]
        case = f"{t}x{h}x{w} fps {fps:g}"
        err = measure(got, _torch_dit(net32, inputs, fps, torch.float32))
        assert report("dit_t2w fp32", case + " vs fp32 torch", err).max_rel <= FP32_REL
        if (t, h, w) == SMALL_LATENTS[0]:
            # the precision choice, not the export: the served bf16 network differs from fp32 by bf16 rounding
            err = measure(got, _torch_dit(served, inputs, fps, torch.bfloat16))
            assert report("dit_t2w fp32", case + " vs served bf16", err).max_rel <= 3e-2


def test_dit_adapter_runs_the_graph_inside_the_edm_denoiser(sources, dit_t2w_fp32: Path) -> None:
    """`EngineDiT` packs CosmosDiT's call for the graph: D(x, sigma) through it equals D through CosmosDiT."""
    net32 = load_dit(sources.dit_t2w, dtype=torch.float32)
    adapter = EngineDiT(OnnxRuntimeEngine(dit_t2w_fp32), net32.arch, torch.float32, "cpu")
    g = torch.Generator().manual_seed(5)
    x_t = 3.0 * torch.randn(1, 16, 16, 16, 16, generator=g)
    context = torch.randn(1, 512, 1024, generator=g)
    for sigma in (80.0, 1.0, 0.002):
        s = torch.tensor([sigma])
        err = measure(denoise(adapter, x_t, s, context, 24), denoise(net32, x_t, s, context, 24))
        assert report("dit_t2w adapter", f"sigma {sigma:g}", err).max_rel <= FP32_REL


@pytest.fixture(scope="module")
def dit_v2w_program(sources) -> torch.onnx.ONNXProgram:
    return stages.export_dit_program(load_dit(sources.dit_v2w))


def test_dit_v2w_bf16_graph_is_the_served_network(sources, dit_v2w_program, out_dir: Path) -> None:
    """bf16 as served: interface, GEMMs and attention in bf16. onnxruntime's CPU provider has no bf16 kernels, so
    the graph runs widened to fp32 (weights exact, bf16 casts made fp32): it must then equal the fp32 network."""
    path = stages.save_program(dit_v2w_program, out_dir / "dit_v2w.onnx")
    model = onnx.load(str(path))
    summary = summarize(model)
    dtypes = {s.name: (s.dtype, s.dims) for s in (*summary.inputs, *summary.outputs)}
    video = ("batch", 16, "latent_t", "2*latent_h_patches", "2*latent_w_patches")
    assert dtypes == {
        "x": ("BFLOAT16", video), "c_noise": ("BFLOAT16", ("batch",)),
        "context": ("BFLOAT16", ("batch", "text_tokens", 1024)), "fps": ("FLOAT", ()),
        "condition_mask": ("BFLOAT16", ("batch", 1, "latent_t", "2*latent_h_patches", "2*latent_w_patches")),
        "output": ("BFLOAT16", video)}
    typed = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (*typed.graph.value_info, *typed.graph.input)}
    types |= {t.name: t.data_type for t in typed.graph.initializer}
    gemm_inputs = [types.get(i) for n in typed.graph.node if n.op_type in ("MatMul", "Gemm") for i in n.input[:2]]
    blocks = read_dit_checkpoint(sources.dit_v2w).architecture.num_blocks
    assert len(gemm_inputs) >= 2 * blocks * 8 and set(gemm_inputs) == {onnx.TensorProto.BFLOAT16}
    attention = [n for n in typed.graph.node if n.op_type == "Attention"]  # self and cross, per block
    assert len(attention) == 2 * blocks and {types.get(i) for n in attention for i in n.input[:3]} == {
        onnx.TensorProto.BFLOAT16}
    assert summary.opset == stages.DYNAMO_OPSET

    widened = out_dir / "dit_v2w_widened.onnx"
    save_proto(bf16_to_fp32(model), widened)
    engine = OnnxRuntimeEngine(widened)
    net32, served = load_dit(sources.dit_v2w, dtype=torch.float32), load_dit(sources.dit_v2w)
    t, h, w = SMALL_LATENTS[0]  # Video2World accepts 96x160 only
    inputs = _dit_inputs(net32.arch, t, h, w, seed=7, video2world=True)
    bf16_inputs = {k: v.to(torch.bfloat16).float() for k, v in inputs.items()}  # what a bf16 graph receives
    got = engine.run({**bf16_inputs, "fps": torch.tensor(24.0)})["output"]
    err = measure(got, _torch_dit(net32, bf16_inputs, 24.0, torch.float32))
    assert report("dit_v2w bf16 (widened)", "vs fp32 torch", err).max_rel <= WIDENED_BF16_REL
    err = measure(got, _torch_dit(served, bf16_inputs, 24.0, torch.bfloat16))
    assert report("dit_v2w bf16 (widened)", "vs served bf16", err).max_rel <= 3e-2


def test_external_data_path_loads_from_a_moved_folder(dit_v2w_program, tmp_path: Path) -> None:
    """Weights at or past the threshold go to <name>.onnx.data by relative path (threshold lowered to 0 here;
    the real one is the 2 GiB protobuf limit, which the full-size DiT passes: see the full-size test)."""
    inline = stages.save_program(dit_v2w_program, tmp_path / "inline" / "dit.onnx")
    external = stages.save_program(dit_v2w_program, tmp_path / "external" / "dit.onnx", threshold=0)
    assert not summarize(inline).external_data and not (inline.parent / "dit.onnx.data").exists()
    assert summarize(external).external_data and (external.parent / "dit.onnx.data").is_file()
    weights = summarize(inline).initializer_bytes
    assert (external.parent / "dit.onnx.data").stat().st_size >= 0.99 * weights  # a few scalars stay inline
    assert external.stat().st_size < inline.stat().st_size - 0.9 * weights
    # the fp32 proto path (tokenizer, widened graphs) too, then run both after moving the folder
    save_proto(bf16_to_fp32(onnx.load(str(external))), tmp_path / "external" / "wide.onnx", threshold=0)
    save_proto(bf16_to_fp32(onnx.load(str(inline))), tmp_path / "inline" / "wide.onnx")
    moved = shutil.move(str(tmp_path / "external"), str(tmp_path / "moved"))
    inputs = {**_dit_inputs(DIT_PRESETS["Cosmos-1.0-Diffusion-7B-Video2World"], 2, 4, 6, 0, True),
              "fps": torch.tensor(24.0)}
    inputs["context"] = inputs["context"][:, :7]
    a = OnnxRuntimeEngine(Path(moved) / "wide.onnx").run(inputs)["output"]
    b = OnnxRuntimeEngine(tmp_path / "inline" / "wide.onnx").run(inputs)["output"]
    assert torch.equal(a, b)


def test_full_size_dit_graph_on_the_meta_device() -> None:
    """The largest architecture (14B Video2World) with one block, weights on the meta device (no memory):
    interface, weights per block extrapolated to all blocks and compared with the checkpoint's key table."""
    name = "Cosmos-1.0-Diffusion-14B-Video2World"
    full = DIT_PRESETS[name]
    arch = dataclasses.replace(full, num_blocks=1)
    net = CosmosDiT(build_model(arch, None, device="meta", dtype=torch.bfloat16), arch)
    program = stages.export_dit_program(net, optimize=False)
    summary = summarize_ir(program.model)
    video = ("batch", 16, "latent_t", "2*latent_h_patches", "2*latent_w_patches")
    want_inputs = [("x", "BFLOAT16", video), ("c_noise", "BFLOAT16", ("batch",)),
                   ("context", "BFLOAT16", ("batch", "text_tokens", 1024)), ("fps", "FLOAT", ())]
    if full.model_type == "Video2World":
        want_inputs.append(("condition_mask", "BFLOAT16", ("batch", 1, *video[2:])))
    assert [(s.name, s.dtype, s.dims) for s in summary.inputs] == want_inputs
    assert [(s.name, s.dtype, s.dims) for s in summary.outputs] == [("output", "BFLOAT16", video)]

    def weights(a) -> dict[str, int]:  # diffusers name -> element count, from the original checkpoint's keys
        return {diffusers_key(k): math.prod(s) for k, s in original_key_shapes(a).items() if diffusers_key(k)}

    inits = {n.removeprefix("net.model."): v for n, v in program.model.graph.initializers.items()}
    # the RoPE's own buffers (not checkpoint keys): positions and the frequency ranges, in the model dtype
    rope = {n: inits.pop(n) for n in list(inits) if n.startswith("rope.")}
    assert {n: math.prod(v.shape) for n, v in rope.items()} == {
        "rope.seq": max(m // p for m, p in zip(full.max_size, full.patch_size, strict=True)),
        "rope.dim_spatial_range": 21, "rope.dim_temporal_range": 22}
    assert {n: math.prod(v.shape) for n, v in inits.items()} == weights(arch)
    assert {v.dtype.name for v in inits.values()} == {"BFLOAT16"}
    block = sum(2 * math.prod(v.shape) for n, v in inits.items() if n.startswith("transformer_blocks.0."))
    full_bytes = summary.initializer_bytes + (full.num_blocks - 1) * block
    assert full_bytes == 2 * sum(weights(full).values()) + 2 * sum(math.prod(v.shape) for v in rope.values())
    print(f"\n{name}: {summary.initializer_count} weights with 1 block; {full_bytes / 1e9:.2f} GB in bf16 with "
          f"{full.num_blocks} -> external data: {needs_external_data(full_bytes)}")
    assert needs_external_data(full_bytes) and not needs_external_data(summary.initializer_bytes // 1000)


# --- Tokenizer --------------------------------------------------------------------------------------------------

# The graph is the released ScriptModule computed in fp32 (weights exact, its bf16 casts made fp32): it must equal
# that module run by torch to float rounding; the served stage computes in bf16, so against it the bound is bf16's
# accumulated through the network: measured 4.1e-2 (encoder) on the trained tokenizer, whose latent normalisation
# divides by stds 100x apart, so a channel's rounding is scaled up there.
TOKENIZER_SERVED_REL = 6e-2
# Against the fp32 module: float rounding, which the normalisation scales per channel by 0.5 / std (stds 100x
# apart on the trained tokenizer: 1.2e-5 measured for the encoder's latent).
TOKENIZER_FP32_REL = 5e-5


@pytest.fixture(scope="module")
def tokenizer(sources) -> CosmosVideoTokenizer:
    return CosmosVideoTokenizer(sources.tokenizer)


def test_tokenizer_encoder_graph_matches_the_stage(sources, tokenizer, out_dir: Path) -> None:
    path = stages.export_tokenizer(sources.tokenizer, "encoder", out_dir / "tokenizer_encoder.onnx")
    summary = summarize(path)
    assert [(s.name, s.dtype, s.dims) for s in summary.inputs] == [
        ("video", "FLOAT", ("batch", 3, "frames", "height", "width"))]
    assert [(s.name, s.dims) for s in summary.outputs] == [
        ("latent", ("batch", 16, "latent_frames", "latent_height", "latent_width"))]
    engine = OnnxRuntimeEngine(path, threads=2)
    fp32 = stages.load_fp32_scripted(sources.tokenizer / "encoder.jit")
    mean, std = tokenizer.latent_mean.float(), tokenizer.latent_std.float()
    g = torch.Generator().manual_seed(0)
    # the served clip at the default resolution; then batch 2 and other sizes kept small (torch's grouped 3-D
    # convolutions are slow on CPU)
    h0, w0 = SMALL_ENVELOPE.resolutions[0]
    cases = [(1, 121, h0, w0), (2, 9, 32, 48), (1, 17, 48, 32)]
    for b, frames, h, w in cases:
        video = (torch.rand(b, 3, frames, h, w, generator=g) * 2 - 1).to(torch.bfloat16)
        got = engine.run({"video": video.float()})["latent"]
        with torch.no_grad():
            raw = fp32(video.float())[0]
        want = 0.5 * (raw - mean[:, :, : raw.shape[2]]) / std[:, :, : raw.shape[2]]
        case = f"{b}x{frames}x{h}x{w}"
        err = measure(got, want)
        assert report("tokenizer_encoder", case + " vs fp32 module", err).max_rel <= TOKENIZER_FP32_REL
        if frames < 121:  # the served bf16 stage is slower still; its distance from fp32 does not depend on size
            err = measure(got, tokenizer.encode(video).float())
            assert report("tokenizer_encoder", case + " vs served bf16", err).max_rel <= TOKENIZER_SERVED_REL


def test_tokenizer_decoder_graph_matches_the_stage(sources, tokenizer, out_dir: Path) -> None:
    path = stages.export_tokenizer(sources.tokenizer, "decoder", out_dir / "tokenizer_decoder.onnx")
    summary = summarize(path)
    assert [(s.name, s.dims) for s in summary.inputs] == [
        ("latent", ("batch", 16, "latent_frames", "latent_height", "latent_width"))]
    assert [(s.name, s.dtype, s.dims) for s in summary.outputs] == [
        ("video", "FLOAT", ("batch", 3, "frames", "height", "width"))]
    engine = OnnxRuntimeEngine(path, threads=2)
    fp32 = stages.load_fp32_scripted(sources.tokenizer / "decoder.jit")
    mean, std = tokenizer.latent_mean.float(), tokenizer.latent_std.float()
    g = torch.Generator().manual_seed(1)
    for b, (t, h, w) in [(1, SMALL_LATENTS[0]), (2, (2, 4, 6)), (1, (3, 6, 4))]:  # small sizes: as for the encoder
        latent = 0.5 * torch.randn(b, 16, t, h, w, generator=g)
        got = engine.run({"latent": latent})["video"]
        with torch.no_grad():
            want = fp32(latent / 0.5 * std[:, :, :t] + mean[:, :, :t])
        case = f"{b}x{t}x{h}x{w}"
        assert report("tokenizer_decoder", case + " vs fp32 module", measure(got, want)).max_rel <= FP32_REL
        if t < 16:  # as for the encoder
            err = measure(got, tokenizer.decode(latent))
            assert report("tokenizer_decoder", case + " vs served bf16", err).max_rel <= TOKENIZER_SERVED_REL


def test_bfloat16_cast_repair() -> None:
    """torch writes ScalarType 15 (bfloat16) into a Cast that ONNX reads as complex128; only that is rewritten."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["a"], ["b"], to=15), helper.make_node("Cast", ["b"], ["c"], to=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph)
    assert repair_bfloat16_casts(model) == 1
    assert [n.attribute[0].i for n in model.graph.node] == [TensorProto.BFLOAT16, TensorProto.FLOAT]
    assert repair_bfloat16_casts(model) == 0


# --- Video safety -----------------------------------------------------------------------------------------------

def test_video_safety_graph_matches_the_stage(sources, out_dir: Path) -> None:
    """The small head always votes Safe (zero last layer), which would hide its errors: random last layer here."""
    from cosmos_triton.guardrail.video_safety import VideoContentSafetyFilter, classify_features

    stage = VideoContentSafetyFilter(sources.video_safety)
    last = stage.classifier.network.layers[-1]
    with torch.no_grad():
        last.weight.copy_(3 * torch.randn(last.weight.shape, generator=torch.Generator().manual_seed(2)))
        last.bias.zero_()
    graph = stages.VideoSafetyGraph(stage.encoder.vision_model, stage.classifier)
    path = stages.export_video_safety_module(graph, out_dir / "video_safety.onnx")
    summary = summarize(path)
    assert [(s.name, s.dims) for s in summary.inputs] == [("pixel_values", ("frames", 3, 32, 32))]
    assert [(s.name, s.dims) for s in summary.outputs] == [("image_features", ("frames", 32)),
                                                           ("probabilities", ("frames", 7))]
    frames = np.random.default_rng(0).integers(0, 256, size=(5, 40, 56, 3), dtype=np.uint8)
    pixels = stage.processor(images=[f for f in frames], return_tensors="pt")["pixel_values"]
    got = OnnxRuntimeEngine(path).run({"pixel_values": pixels})
    features = stage.encode(list(frames))
    assert report("video_safety", "image features", measure(got["image_features"], features)).max_rel <= FP32_REL
    with torch.no_grad():
        probabilities = torch.softmax(stage.classifier(features / features.norm(dim=-1, keepdim=True)), dim=-1)
    assert report("video_safety", "probabilities", measure(got["probabilities"], probabilities)).max_rel <= FP32_REL
    classes = got["probabilities"].argmax(dim=-1).tolist()
    assert classes == classify_features(features, stage.classifier) == stage.classify(list(frames))
    assert len(set(classes)) > 1  # the random head separates the frames, so the check means something


# --- Command ----------------------------------------------------------------------------------------------------

def test_command_arguments() -> None:
    args = parse_args(["--stage", "t5", "dit_v2w", "t5", "--diffusion_transformer_dir", "A", "--dit_dtype", "fp32"])
    assert args.stages == ["t5", "dit_v2w"] and args.diffusion_transformer_dir == "A" and args.dit_dtype == "fp32"
    assert parse_args([]).stages == list(stages.STAGES) == parse_args(["--stage", "all"]).stages
    assert parse_args([]).diffusion_transformer_dir == "Cosmos-1.0-Diffusion-7B-Text2World"
    with pytest.raises(SystemExit):
        parse_args(["--stage", "vae"])


def test_command_exports_a_stage_and_its_manifest_entry(small_settings, tmp_path: Path) -> None:
    export_main(["--checkpoint_dir", small_settings.checkpoint_dir, "--stage", "video_safety", "--out", str(tmp_path),
                 "--diffusion_transformer_dir", small_settings.dit_dir,
                 "--v2w_diffusion_transformer_dir", small_settings.v2w_dit_dir])
    import json

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert list(manifest) == ["video_safety"] and (tmp_path / "video_safety.onnx").is_file()
    entry = manifest["video_safety"]
    assert entry["file"] == "video_safety.onnx" and entry["opset"] == stages.DYNAMO_OPSET and not entry["external_data"]
    assert [i["name"] for i in entry["inputs"]] == ["pixel_values"]
    assert entry["envelopes"] == [{"resolutions": [[96, 160], [160, 96], [128, 128]], "num_video_frames": [121]},
                                  {"resolutions": [[96, 160]], "num_video_frames": [121]}]
    assert (Path(small_settings.checkpoint_dir) / small_settings.guardrail_dir / VIDEO_SAFETY_DIR).is_dir()
