"""TensorRT plan build and runner: what runs without TensorRT (profiles from the envelopes, build settings, the
command, profile selection, the DiT adapter's input packing), and the real build/run where TensorRT and a GPU exist.
Expected shapes are written out by hand from the envelopes (latent = 16 x (1 + 120/8) x H/8 x W/8)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from cosmos_triton.models.checkpoints import DIT_PRESETS
from cosmos_triton.models.tensorrt_engine import (
    TORCH_DTYPES,
    EngineDiT,
    Profile,
    load_dit_backend,
    pack_dit_inputs,
    parse_backend,
    plan_path,
    select_profile,
)
from cosmos_triton.request.envelope import ORIGINAL_ENVELOPE, ORIGINAL_V2W_ENVELOPE, SMALL_ENVELOPE
from export.tensorrt_build import build_spec, has_fp8_qdq
from export.tensorrt_build import main as build_main
from export.tensorrt_build import parse_args as build_args
from export.tensorrt_profiles import stage_profiles

T2W_7B, V2W_7B = DIT_PRESETS["Cosmos-1.0-Diffusion-7B-Text2World"], DIT_PRESETS["Cosmos-1.0-Diffusion-7B-Video2World"]


def sizes(envelope) -> dict:
    return {"resolutions": [list(r) for r in envelope.resolutions], "num_video_frames": list(envelope.num_video_frames)}


def dit_entry(arch, *envelopes, dtype: str = "BFLOAT16", file: str = "dit.onnx") -> dict:
    return {"file": file, "architecture": asdict(arch), "envelopes": [sizes(e) for e in envelopes],
            "inputs": [{"name": "x", "dtype": dtype, "dims": ["batch", 16, "latent_t", "h", "w"]}],
            "outputs": [{"name": "output", "dtype": dtype, "dims": ["batch", 16, "latent_t", "h", "w"]}]}


# --- profiles ---------------------------------------------------------------------------------------------------

def test_full_size_text2world_gets_one_exact_profile_per_accepted_resolution() -> None:
    profiles = stage_profiles("dit_t2w", dit_entry(T2W_7B, ORIGINAL_ENVELOPE), max_batch=2)
    # 704x1280, 1280x704, 960x960, 704x960, 960x704 -> latent H x W
    latents = [(88, 160), (160, 88), (120, 120), (88, 120), (120, 88)]
    assert [p["x"][1] for p in profiles] == [(1, 16, 16, h, w) for h, w in latents]
    for profile, (h, w) in zip(profiles, latents, strict=True):
        assert profile == {
            "x": ((1, 16, 16, h, w), (1, 16, 16, h, w), (2, 16, 16, h, w)),
            "c_noise": ((1,), (1,), (2,)),
            "context": ((1, 512, 1024), (1, 512, 1024), (2, 512, 1024)),
            "fps": ((), (), ()),
        }


def test_video2world_profile_has_the_condition_mask() -> None:
    (profile,) = stage_profiles("dit_v2w", dit_entry(V2W_7B, ORIGINAL_V2W_ENVELOPE))
    assert profile["x"] == ((1, 16, 16, 88, 160),) * 3
    assert profile["condition_mask"] == ((1, 1, 16, 88, 160),) * 3
    assert set(profile) == {"x", "c_noise", "context", "fps", "condition_mask"}


def test_range_profile_spans_the_resolutions_and_prefers_the_default() -> None:
    (profile,) = stage_profiles("dit_t2w", dit_entry(T2W_7B, ORIGINAL_ENVELOPE), mode="range")
    assert profile["x"] == ((1, 16, 16, 88, 88), (1, 16, 16, 88, 160), (1, 16, 16, 160, 160))
    assert profile["fps"] == ((), (), ())


def test_small_checkpoint_profiles() -> None:
    profiles = stage_profiles("dit_t2w", dit_entry(T2W_7B, SMALL_ENVELOPE))
    assert [p["x"][0][3:] for p in profiles] == [(12, 20), (20, 12), (16, 16)]


def test_tokenizer_text_encoder_and_safety_profiles() -> None:
    encoder = stage_profiles("tokenizer_encoder", {"envelopes": [sizes(ORIGINAL_V2W_ENVELOPE)]})
    assert encoder == [{"video": ((1, 3, 121, 704, 1280),) * 3}]
    # the decoder renders both models: 704x1280 is in both envelopes and gets one profile
    both = [sizes(ORIGINAL_ENVELOPE), sizes(ORIGINAL_V2W_ENVELOPE)]
    decoder = stage_profiles("tokenizer_decoder", {"envelopes": both})
    assert [p["latent"][0] for p in decoder] == [(1, 16, 16, 88, 160), (1, 16, 16, 160, 88), (1, 16, 16, 120, 120),
                                                 (1, 16, 16, 88, 120), (1, 16, 16, 120, 88)]
    assert stage_profiles("t5", {}) == [{"input_ids": ((1, 512),) * 3, "attention_mask": ((1, 512),) * 3}]
    safety = {"inputs": [{"name": "pixel_values", "dims": ["frames", 3, 384, 384]}],
              "envelopes": [sizes(ORIGINAL_ENVELOPE)]}
    assert stage_profiles("video_safety", safety) == [
        {"pixel_values": ((1, 3, 384, 384), (1, 3, 384, 384), (121, 3, 384, 384))}]


def test_profile_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="profile mode"):
        stage_profiles("t5", {}, mode="exact")
    with pytest.raises(ValueError, match="max_batch"):
        stage_profiles("t5", {}, max_batch=0)
    with pytest.raises(ValueError, match="upsampler"):
        stage_profiles("upsampler", {})
    with pytest.raises(ValueError, match="no accepted sizes"):
        stage_profiles("tokenizer_decoder", {"envelopes": []})


# --- build settings ---------------------------------------------------------------------------------------------

def _write_onnx(path: Path, fp8: bool = False) -> Path:
    """A one-node graph; with fp8, a QuantizeLinear to float8 e4m3 as Model Optimizer writes them."""
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])]
    if fp8:
        inits = [helper.make_tensor("scale", TensorProto.FLOAT, [], [0.5]),
                 helper.make_tensor("zero", TensorProto.FLOAT8E4M3FN, [], [0.0])]
        nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"])]
    else:
        inits, nodes = [], [helper.make_node("Relu", ["x"], ["y"])]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(path))
    return path


def test_served_precision_per_stage(tmp_path: Path) -> None:
    for name in ("dit.onnx", "tok.onnx", "t5.onnx"):
        _write_onnx(tmp_path / name)
    dit = build_spec("dit_t2w", dit_entry(T2W_7B, SMALL_ENVELOPE), tmp_path, tmp_path / "plans")
    assert (dit.precision, dit.strongly_typed, dit.builder_flags) == ("bf16", True, ())
    assert dit.plan == tmp_path / "plans" / "dit_t2w.plan" == plan_path(tmp_path / "plans", "dit_t2w")
    tok = {"file": "tok.onnx", "envelopes": [sizes(SMALL_ENVELOPE)],
           "inputs": [{"name": "latent", "dtype": "FLOAT", "dims": []}], "outputs": []}
    spec = build_spec("tokenizer_decoder", tok, tmp_path, tmp_path)
    assert (spec.precision, spec.strongly_typed, spec.builder_flags) == ("bf16", False, ("BF16",))
    t5 = {"file": "t5.onnx", "inputs": [{"name": "input_ids", "dtype": "INT64", "dims": []}],
          "outputs": [{"name": "hidden_states", "dtype": "FLOAT", "dims": []}]}
    spec = build_spec("t5", t5, tmp_path, tmp_path)
    assert (spec.precision, spec.strongly_typed, spec.builder_flags) == ("fp32", True, ())
    with pytest.raises(ValueError, match="--dit_dtype"):
        build_spec("dit_t2w", dit_entry(T2W_7B, SMALL_ENVELOPE), tmp_path, tmp_path, precision="fp32")
    with pytest.raises(FileNotFoundError, match="dit_v2w"):
        build_spec("dit_v2w", dit_entry(V2W_7B, SMALL_ENVELOPE, file="absent.onnx"), tmp_path, tmp_path)


def test_fp8_needs_a_quantized_dit_graph(tmp_path: Path) -> None:
    plain, quantized = _write_onnx(tmp_path / "dit.onnx"), _write_onnx(tmp_path / "q.onnx", fp8=True)
    assert not has_fp8_qdq(plain) and has_fp8_qdq(quantized)
    with pytest.raises(ValueError, match="Model Optimizer"):
        build_spec("dit_t2w", dit_entry(T2W_7B, SMALL_ENVELOPE), tmp_path, tmp_path, precision="fp8")
    spec = build_spec("dit_t2w", dit_entry(T2W_7B, SMALL_ENVELOPE, file="q.onnx"), tmp_path, tmp_path, "fp8")
    assert (spec.precision, spec.strongly_typed, spec.builder_flags) == ("fp8", True, ())
    with pytest.raises(ValueError, match="DiT only"):
        build_spec("t5", {"file": "q.onnx", "inputs": [], "outputs": []}, tmp_path, tmp_path, "fp8")


def test_build_command_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _write_onnx(tmp_path / "dit.onnx")
    (tmp_path / "manifest.json").write_text(json.dumps({"dit_t2w": dit_entry(T2W_7B, ORIGINAL_ENVELOPE)}))
    assert build_args(["--stage", "dit_t2w", "t5"]).stages == ["dit_t2w", "t5"]
    assert build_args([]).precision == "served" and build_args([]).profiles == "per_resolution"
    build_main(["--onnx_dir", str(tmp_path), "--stage", "dit_t2w", "--dry_run", "--profiles", "range"])
    (line,) = capsys.readouterr().out.splitlines()
    spec = json.loads(line)
    assert spec["stage"] == "dit_t2w" and spec["precision"] == "bf16"
    assert spec["profiles"][0]["x"] == [[1, 16, 16, 88, 88], [1, 16, 16, 88, 160], [1, 16, 16, 160, 160]]
    with pytest.raises(SystemExit, match="no export of t5"):
        build_main(["--onnx_dir", str(tmp_path), "--stage", "t5", "--dry_run"])
    with pytest.raises(SystemExit, match=r"export\.onnx"):
        build_main(["--onnx_dir", str(tmp_path / "none"), "--dry_run"])


# --- runner -----------------------------------------------------------------------------------------------------

def test_profile_selection() -> None:
    wide = Profile({"x": ((1, 16, 16, 88, 88), (1, 16, 16, 88, 160), (1, 16, 16, 160, 160)), "fps": ((), (), ())})
    exact = Profile({"x": ((1, 16, 16, 88, 160),) * 3, "fps": ((), (), ())})
    assert select_profile([exact, wide], {"x": (1, 16, 16, 88, 160), "fps": ()}) == 0
    assert select_profile([exact, wide], {"x": (1, 16, 16, 120, 120), "fps": ()}) == 1
    with pytest.raises(ValueError, match=r"dit_t2w.plan: input shapes .* outside every optimisation profile"):
        select_profile([exact, wide], {"x": (1, 16, 16, 176, 88), "fps": ()}, "dit_t2w.plan")
    assert not exact.accepts({"x": (1, 16, 88, 160), "fps": ()})  # rank differs


def test_dtype_table_and_backend_names() -> None:
    assert TORCH_DTYPES["BF16"] is torch.bfloat16 and TORCH_DTYPES["FLOAT"] is torch.float32
    assert TORCH_DTYPES["INT64"] is torch.int64 and TORCH_DTYPES["FP8"] is torch.float8_e4m3fn
    assert parse_backend("tensorrt", "dit") == "tensorrt"
    with pytest.raises(ValueError, match="stage dit: backend 'onnx'"):
        parse_backend("onnx", "dit")


def test_dit_inputs_are_packed_as_the_graph_takes_them() -> None:
    x = torch.randn(1, 16, 3, 4, 6)
    c_noise, context = torch.tensor([0.5]), torch.randn(1, 512, 1024)
    packed = pack_dit_inputs(x, c_noise, context, 24, None, video2world=False, dtype=torch.bfloat16)
    assert list(packed) == ["x", "c_noise", "context", "fps"]
    assert {k: v.dtype for k, v in packed.items()} == {
        "x": torch.bfloat16, "c_noise": torch.bfloat16, "context": torch.bfloat16, "fps": torch.float32}
    assert packed["fps"].shape == () and packed["fps"].item() == 24.0
    assert torch.equal(packed["x"], x.to(torch.bfloat16)) and packed["c_noise"].shape == (1,)
    mask = torch.zeros(1, 1, 3, 4, 6)
    mask[:, :, 0] = 1
    v2w = pack_dit_inputs(x, torch.tensor(0.5), context, torch.tensor(12.0), mask, video2world=True,
                          dtype=torch.float32)
    assert list(v2w) == ["x", "c_noise", "context", "fps", "condition_mask"]
    assert v2w["c_noise"].shape == (1,) and v2w["fps"].item() == 12.0 and torch.equal(v2w["condition_mask"], mask)
    with pytest.raises(ValueError, match="needs condition_mask"):
        pack_dit_inputs(x, c_noise, context, 24, None, video2world=True, dtype=torch.float32)
    with pytest.raises(ValueError, match="takes no condition_mask"):
        pack_dit_inputs(x, c_noise, context, 24, mask, video2world=False, dtype=torch.float32)
    with pytest.raises(ValueError, match="c_noise has 2 values"):
        pack_dit_inputs(x, torch.ones(2), context, 24, None, video2world=False, dtype=torch.float32)


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, torch.Tensor]] = []

    def run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.calls.append(inputs)
        return {"output": inputs["x"] * 2}


def test_engine_dit_has_the_call_of_cosmos_dit() -> None:
    engine = _Recorder()
    net = EngineDiT(engine, V2W_7B, torch.bfloat16, "cpu")
    assert net.dtype is torch.bfloat16 and net.device == torch.device("cpu") and net.video2world
    x, mask = torch.randn(1, 16, 2, 4, 4), torch.ones(1, 1, 2, 4, 4)
    out = net(x, torch.tensor([0.1]), torch.randn(1, 512, 1024), 30, mask)
    assert torch.equal(out, x.to(torch.bfloat16) * 2)
    assert set(engine.calls[0]) == {"x", "c_noise", "context", "fps", "condition_mask"}
    assert engine.calls[0]["fps"].item() == 30.0


def test_backend_selection(small_settings) -> None:
    from cosmos_triton.models.dit import CosmosDiT

    assert isinstance(load_dit_backend(small_settings.dit_path, "torch"), CosmosDiT)
    with pytest.raises(ValueError, match="needs the plan path"):
        load_dit_backend(small_settings.dit_path, "tensorrt")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs NVIDIA TensorRT"):
            load_dit_backend(small_settings.dit_path, "tensorrt", plan="dit_t2w.plan", device="cuda")


# --- with TensorRT ------------------------------------------------------------------------------------------------

def test_plan_built_from_the_small_dit_export_runs_like_the_network(small_settings, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (its wheels are not available here): "
                        "the plan build and the TensorRT runner are unverified")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT plans need a CUDA GPU")
    from cosmos_triton.models.dit import load_dit
    from export.onnx.__main__ import main as export_main

    export_main(["--checkpoint_dir", small_settings.checkpoint_dir, "--stage", "dit_t2w", "--out", str(tmp_path),
                 "--diffusion_transformer_dir", small_settings.dit_dir,
                 "--v2w_diffusion_transformer_dir", small_settings.v2w_dit_dir])
    build_main(["--onnx_dir", str(tmp_path), "--out", str(tmp_path / "plans"), "--stage", "dit_t2w"])
    engine_net = load_dit_backend(small_settings.dit_path, "tensorrt", plan_path(tmp_path / "plans", "dit_t2w"),
                                  device="cuda")
    torch_net = load_dit(small_settings.dit_path, device="cuda")
    g = torch.Generator().manual_seed(0)
    for h, w in SMALL_ENVELOPE.resolutions:
        x = torch.randn(1, 16, 16, h // 8, w // 8, generator=g).cuda().bfloat16()
        c_noise = torch.tensor([0.2], device="cuda", dtype=torch.bfloat16)
        context = torch.randn(1, 512, 1024, generator=g).cuda().bfloat16()
        with torch.no_grad():
            want = torch_net(x, c_noise, context, 24.0).float()
        got = engine_net(x, c_noise, context, 24.0).float()
        rel = float((got - want).abs().max() / want.abs().max())
        print(f"\ndit_t2w TensorRT {h}x{w} vs torch bf16: max rel {rel:.3g}")
        assert rel <= 3e-2  # two bf16 implementations: bf16 rounding, accumulated


def test_the_dit_stage_selects_the_tensorrt_runner_from_its_configuration(small_settings, tmp_path) -> None:
    """`--tensorrt_plans DIR` renders backend tensorrt for the DiT steps; without TensorRT the stage says so at load
    (the server does not start on a plan it cannot run) instead of falling back silently."""
    from cosmos_triton.deployment import ModelOptions
    from cosmos_triton.pipeline.catalog import stage_models
    from cosmos_triton.pipeline.stages import DiTStepStage

    specs = stage_models(small_settings, ModelOptions(tensorrt_plans=str(tmp_path)))
    params = specs["dit_step"].params
    assert (params["backend"], params["plan_dir"]) == ("tensorrt", str(tmp_path))
    assert "backend" not in stage_models(small_settings)["dit_step"].params
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises((ImportError, RuntimeError), match=r"(?i)tensorrt"):
            DiTStepStage(params, "cpu")
