"""Export the served stages to ONNX, one command per stage or all at once.

    python -m export.onnx --checkpoint_dir checkpoints/small --stage all --out exports/onnx \\
        --diffusion_transformer_dir Cosmos-1.0-Diffusion-Small-Text2World \\
        --v2w_diffusion_transformer_dir Cosmos-1.0-Diffusion-Small-Video2World

Folder names default to the server's (full-size 7B checkpoints). Writes <out>/<stage>.onnx (weights in
<stage>.onnx.data when they reach the 2 GiB protobuf limit) and <out>/manifest.json, which lists each file's
inputs/outputs and the envelopes the TensorRT build (export/tensorrt_build.py) turns into profiles.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from cosmos_triton.deployment import ServeSettings
from cosmos_triton.models.checkpoints import read_dit_checkpoint
from cosmos_triton.request.envelope import Envelope
from export.onnx.graph_io import summarize
from export.onnx.stages import DIT_DTYPES, STAGES, StageSources, stage_exporter

MANIFEST = "manifest.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    base = ServeSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_dir", default=base.checkpoint_dir, help="folder holding the checkpoint folders")
    parser.add_argument("--stage", nargs="+", choices=("all", *STAGES), default=["all"])
    parser.add_argument("--out", type=Path, default=Path("exports/onnx"))
    parser.add_argument("--diffusion_transformer_dir", default=base.dit_dir, help="Text2World DiT folder name")
    parser.add_argument("--v2w_diffusion_transformer_dir", default=base.v2w_dit_dir, help="Video2World DiT folder")
    parser.add_argument("--tokenizer_dir", default=base.tokenizer_dir)
    parser.add_argument("--t5_dir", default=base.t5_dir)
    parser.add_argument("--guardrail_dir", default=base.guardrail_dir)
    parser.add_argument("--dit_dtype", choices=tuple(DIT_DTYPES), default="bf16",
                        help="bf16: the served precision (TensorRT); fp32: runtimes without bf16 kernels")
    args = parser.parse_args(argv)
    args.stages = list(STAGES) if "all" in args.stage else list(dict.fromkeys(args.stage))
    return args


def settings_of(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings(checkpoint_dir=args.checkpoint_dir, dit_dir=args.diffusion_transformer_dir,
                         v2w_dit_dir=args.v2w_diffusion_transformer_dir, tokenizer_dir=args.tokenizer_dir,
                         t5_dir=args.t5_dir, guardrail_dir=args.guardrail_dir)


def _sizes(envelope: Envelope) -> dict:
    return {"resolutions": [list(r) for r in envelope.resolutions], "num_video_frames": list(envelope.num_video_frames)}


def manifest_entry(stage: str, path: Path, sources: StageSources) -> dict:
    """The file's interface, plus what the TensorRT build needs to size its optimisation profiles."""
    summary = summarize(path)
    entry = {"file": path.name, **asdict(summary)}
    entry["initializer_dtypes"] = sorted(summary.initializer_dtypes)
    if stage.startswith("dit_"):
        ckpt = read_dit_checkpoint(sources.dit_t2w if stage == "dit_t2w" else sources.dit_v2w)
        entry |= {"architecture": asdict(ckpt.architecture), "envelopes": [_sizes(ckpt.envelope)]}
    elif stage != "t5":
        # the encoder only sees Video2World input clips; the decoder and the safety filter see both models' videos
        dits = [sources.dit_v2w] if stage == "tokenizer_encoder" else [sources.dit_t2w, sources.dit_v2w]
        entry["envelopes"] = [_sizes(read_dit_checkpoint(d).envelope) for d in dits if d.is_dir()]
    return entry


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sources = StageSources.from_settings(settings_of(args))
    manifest_path = args.out / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    for stage in args.stages:
        start = time.perf_counter()
        try:
            path = stage_exporter(stage, sources, DIT_DTYPES[args.dit_dtype])(args.out / f"{stage}.onnx")
        except (FileNotFoundError, ValueError, OSError) as err:
            raise SystemExit(f"stage {stage}: {err}") from err
        manifest[stage] = manifest_entry(stage, path, sources)
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        print(f"{stage}: {path} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
