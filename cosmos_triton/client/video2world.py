"""`cosmos-video2world`: a 121-frame continuation of an image or video with the Cosmos-1.0 Video2World entry
point, with the original `video2world.py` flags.

    cosmos-video2world --input_image_or_video_path robot.jpg --num_input_frames 1 --video_save_name robot
    cosmos-video2world --batch_input_path inputs.jsonl --num_input_frames 9    # {"visual_input": ..., "prompt": ...}

The server's Pixtral upsampler writes the prompt from the last input frame unless --disable_prompt_upsampler is
given (then "prompt" is required and used), as in the original. Paths in a batch file are relative to the current
folder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cosmos_triton.client import common


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cosmos-video2world", description=__doc__.split("\n\n")[0],
                                epilog="Flags marked 'server default' take the defaults the server publishes.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input_image_or_video_path", help="image (jpg, png, webp) or video (mp4) to continue")
    src.add_argument("--batch_input_path", help='JSONL file, one {"visual_input": ..., "prompt": ...} per line')
    p.add_argument("--prompt", help="text prompt; used (and required) only with --disable_prompt_upsampler")
    p.add_argument("--num_input_frames", type=int, choices=[1, 9],
                   help="condition on the last 1 or 9 frames (server default, 1)")
    common.add_common_flags(p, model="video2world")
    return p


def load_jobs(args: argparse.Namespace) -> tuple[list[common.Job], list[str]]:
    flags = common.explicit_fields(args)
    if args.num_input_frames is not None:
        flags["num_input_frames"] = args.num_input_frames
    if args.batch_input_path is None:
        if args.disable_prompt_upsampler and not args.prompt:
            return [], ["--prompt is required with --disable_prompt_upsampler"]
        fields = {"visual_input": Path(args.input_image_or_video_path), "prompt": args.prompt, **flags}
        return [common.Job(args.video_save_name, fields)], []
    records, errors = common.read_jsonl(args.batch_input_path)
    jobs = []
    for where, record in records:
        needed = ("visual_input", "prompt") if args.disable_prompt_upsampler else ("visual_input",)
        missing = [f'"{k}"' for k in needed if not isinstance(record.get(k), str) or not record[k].strip()]
        if missing:
            why = " (needed with --disable_prompt_upsampler)" if '"prompt"' in missing else ""
            errors.append(f"{where}: missing or empty {', '.join(missing)}{why}")
            continue
        visual = Path(record["visual_input"])
        if not visual.is_file():
            errors.append(f"{where}: visual_input {visual} is not a readable file")
            continue
        fields = {"visual_input": visual, "prompt": record.get("prompt") or None, **flags}
        jobs.append(common.Job(str(record["_index"]), fields, where))
    return jobs, errors


def main(argv: Sequence[str] | None = None) -> int:
    return common.main(argv, build_parser, load_jobs)


if __name__ == "__main__":
    sys.exit(main())
