"""Build TensorRT plans from the ONNX exports (export/onnx), one per stage, with profiles for the envelopes.

    python -m export.tensorrt_build --onnx_dir exports/onnx --out exports/tensorrt [--stage all|t5|dit_t2w|...]
        [--precision served|fp32|bf16|fp8] [--profiles per_resolution|range] [--max_batch 1] [--dry_run]

Unverified: TensorRT cannot be installed where this was written; `--dry_run` (what would be built: precision,
typing, profiles) is what has run. The build follows the TensorRT 10 Python API: ONNX parser, strongly typed
networks where the ONNX types say the precision (https://docs.nvidia.com/deeplearning/tensorrt/latest/
inference-library/advanced.html#strongly-typed-networks).

Precision, per stage:
- served (default): the precision each stage is served in: DiT bf16 (its bf16 export, strongly typed), tokenizer
  bf16 (its fp32 export with the BF16 builder flag: TensorRT may keep layers in fp32), T5 and video safety fp32;
- fp32 / bf16: force one for every selected stage (fp32 needs the DiT exported with --dit_dtype fp32);
- fp8: DiT only, from an ONNX that already holds FP8 QuantizeLinear/DequantizeLinear pairs (TensorRT builds FP8 only
  from explicit quantization), e.g. the export quantized with NVIDIA Model Optimizer
  (`modelopt.onnx.quantization`, https://nvidia.github.io/TensorRT-Model-Optimizer/); strongly typed.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx
from onnx import TensorProto

from cosmos_triton.models.tensorrt_engine import import_tensorrt, plan_path
from export.onnx.stages import STAGES
from export.tensorrt_profiles import MODES, StageProfile, stage_profiles

MANIFEST = "manifest.json"
PRECISIONS = ("served", "fp32", "bf16", "fp8")
SERVED_PRECISION = {"t5": "fp32", "dit_t2w": "bf16", "dit_v2w": "bf16", "tokenizer_encoder": "bf16",
                    "tokenizer_decoder": "bf16", "video_safety": "fp32"}
FLOAT_TYPES = {"FLOAT": "fp32", "BFLOAT16": "bf16", "FLOAT16": "fp16"}


@dataclass(frozen=True)
class BuildSpec:
    stage: str
    onnx: Path
    plan: Path
    precision: str
    strongly_typed: bool  # precision from the ONNX types; otherwise builder flags allow lower precision
    builder_flags: tuple[str, ...]
    profiles: list[StageProfile] = field(default_factory=list)


def graph_precision(entry: dict) -> str:
    """The precision of the first floating-point input (else output): what a strongly typed build runs in."""
    for spec in (*entry["inputs"], *entry["outputs"]):
        if spec["dtype"] in FLOAT_TYPES:
            return FLOAT_TYPES[spec["dtype"]]
    raise ValueError(f"{entry['file']}: no floating-point input or output")


def has_fp8_qdq(path: Path) -> bool:
    """Whether the graph quantizes to float8 e4m3 (QuantizeLinear output_dtype or its zero point's type)."""
    model = onnx.load(str(path), load_external_data=False)
    fp8 = TensorProto.FLOAT8E4M3FN
    typed = {t.name: t.data_type for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            typed |= {out: a.t.data_type for a in node.attribute if a.name == "value" for out in node.output}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear":
            continue
        if any(a.name == "output_dtype" and a.i == fp8 for a in node.attribute):
            return True
        if len(node.input) > 2 and typed.get(node.input[2]) == fp8:
            return True
    return False


def build_spec(stage: str, entry: dict, onnx_dir: Path, out_dir: Path, precision: str = "served",
               mode: str = "per_resolution", max_batch: int = 1) -> BuildSpec:
    onnx_path = onnx_dir / entry["file"]
    if not onnx_path.is_file():
        raise FileNotFoundError(f"stage {stage}: ONNX file not found: {onnx_path}")
    wanted = SERVED_PRECISION[stage] if precision == "served" else precision
    if wanted == "fp8":
        if not stage.startswith("dit_"):
            raise ValueError(f"stage {stage}: the fp8 build is for the DiT only")
        if not has_fp8_qdq(onnx_path):
            raise ValueError(f"stage {stage}: {onnx_path} has no FP8 QuantizeLinear/DequantizeLinear; quantize the "
                             "export first (NVIDIA Model Optimizer, modelopt.onnx.quantization, quantize_mode='fp8')")
        strongly_typed, flags = True, ()
    elif wanted == (exported := graph_precision(entry)):
        strongly_typed, flags = True, ()
    elif wanted == "bf16" and exported == "fp32":
        strongly_typed, flags = False, ("BF16",)
    else:
        raise ValueError(f"stage {stage}: {onnx_path.name} is {exported}; a {wanted} build needs a {wanted} export "
                         "(export/onnx --dit_dtype)")
    profiles = stage_profiles(stage, entry, mode, max_batch)
    return BuildSpec(stage, onnx_path, plan_path(out_dir, stage), wanted, strongly_typed, flags, profiles)


def build(spec: BuildSpec, workspace_gib: float | None = None) -> Path:
    """Parse, configure and serialise one plan (needs TensorRT and a GPU)."""
    trt = import_tensorrt(f"TensorRT build of {spec.stage}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if spec.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(spec.onnx)):  # from the file, so that <name>.onnx.data is found beside it
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"stage {spec.stage}: TensorRT could not parse {spec.onnx}: {errors}")
    config = builder.create_builder_config()
    for flag in spec.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if workspace_gib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    for shapes in spec.profiles:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in shapes.items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"stage {spec.stage}: TensorRT failed to build {spec.onnx} (see the log above)")
    spec.plan.parent.mkdir(parents=True, exist_ok=True)
    spec.plan.write_bytes(bytes(plan))
    spec.plan.with_suffix(".json").write_text(json.dumps(
        {**_jsonable(spec), "tensorrt": trt.__version__}, indent=2, sort_keys=True) + "\n")
    return spec.plan


def _jsonable(spec: BuildSpec) -> dict:
    d = asdict(spec)
    d["onnx"], d["plan"] = str(spec.onnx), str(spec.plan)
    return d


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx_dir", type=Path, default=Path("exports/onnx"), help="output of export.onnx")
    parser.add_argument("--out", type=Path, default=Path("exports/tensorrt"))
    parser.add_argument("--stage", nargs="+", choices=("all", *STAGES), default=["all"])
    parser.add_argument("--precision", choices=PRECISIONS, default="served")
    parser.add_argument("--profiles", choices=MODES, default="per_resolution")
    parser.add_argument("--max_batch", type=int, default=1)
    parser.add_argument("--workspace_gib", type=float, default=None, help="builder workspace limit")
    parser.add_argument("--dry_run", action="store_true", help="print what would be built; needs no TensorRT")
    args = parser.parse_args(argv)
    args.stages = list(STAGES) if "all" in args.stage else list(dict.fromkeys(args.stage))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    manifest_path = args.onnx_dir / MANIFEST
    if not manifest_path.is_file():
        raise SystemExit(f"{manifest_path} not found: run python -m export.onnx first")
    manifest = json.loads(manifest_path.read_text())
    missing = [s for s in args.stages if s not in manifest]
    if missing:
        raise SystemExit(f"{manifest_path} has no export of {', '.join(missing)}")
    specs = [build_spec(s, manifest[s], args.onnx_dir, args.out, args.precision, args.profiles, args.max_batch)
             for s in args.stages]
    for spec in specs:
        if args.dry_run:
            print(json.dumps(_jsonable(spec)))
        else:
            print(f"{spec.stage}: {build(spec, args.workspace_gib)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
