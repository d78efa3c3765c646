#!/usr/bin/env python3
"""Video2World client for the Cosmos-1.0 Triton ensemble, with the original `video2world.py` flags.

    python client/video2world.py --input_image_or_video_path robot.jpg --prompt "The robot walks" \
        --num_input_frames 1 --video_save_name robot
    python client/video2world.py --batch_input_path inputs.jsonl --num_input_frames 9 --video_save_folder outputs/v2w

Batch JSONL lines hold "visual_input" (a path, relative to the current folder) and, with
--disable_prompt_upsampler, "prompt"; otherwise the server's Pixtral upsampler writes the prompt from the last
input frame and the user's text is ignored, as in the original. Needs only tritonclient, numpy and imageio;
shares its machinery with text2world.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

try:  # `python client/video2world.py` puts client/ on sys.path; `-m client.video2world` needs the package
    import text2world as t2w
except ImportError:  # pragma: no cover - depends on how it is started
    from client import text2world as t2w


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Generate a 121-frame continuation of an image or video with the Cosmos-1.0 Video2World ensemble.",
        epilog="Flags marked 'server default' fall back to the defaults the server publishes for its checkpoint.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input_image_or_video_path", help="image (jpg, png, webp) or video (mp4) to continue")
    src.add_argument("--batch_input_path", help='JSONL file, one {"visual_input": ..., "prompt": ...} per line')
    p.add_argument("--prompt", help="text prompt; used (and required) only with --disable_prompt_upsampler, "
                   "otherwise the server's upsampler writes it from the last input frame")
    p.add_argument("--num_input_frames", type=int, choices=[1, 9], help="condition on the last 1 or 9 frames "
                   "(server default, 1)")
    t2w.add_common_flags(p, model="video2world")
    return p


def _extra(args: argparse.Namespace, visual_input: Path) -> tuple[tuple[str, object], ...]:
    return (("visual_input", visual_input), ("num_input_frames", args.num_input_frames), *t2w.upsampler_inputs(args))


def parse_batch_lines(lines: Sequence[str], source: str, need_prompt: bool
                      ) -> tuple[list[tuple[int, str, str]], list[str]]:
    """(line index, visual input path, prompt) per valid line, and one message per invalid line. The "prompt"
    field is needed only when the upsampler is disabled, as in the original."""
    items = []
    records, errors = t2w.json_records(lines, source)
    for index, where, record in records:
        if not isinstance(record, dict):
            errors.append(f'{where}: expected a JSON object like {{"visual_input": "...", "prompt": "..."}}')
            continue
        fields = ("visual_input", "prompt") if need_prompt else ("visual_input",)
        missing = [f'"{k}"' for k in fields if not isinstance(record.get(k), str) or not record[k].strip()]
        if missing:
            why = " (needed with --disable_prompt_upsampler)" if '"prompt"' in missing else ""
            errors.append(f"{where}: missing or empty {', '.join(missing)}{why}")
        else:
            items.append((index, record["visual_input"], str(record.get("prompt") or "")))
    return items, errors


def load_jobs(args: argparse.Namespace) -> tuple[list[t2w.Job], list[str]]:
    if args.batch_input_path is None:
        if args.disable_prompt_upsampler and not args.prompt:
            return [], ["--prompt is required with --disable_prompt_upsampler"]
        video, text = t2w.output_paths(args.video_save_folder, args.video_save_name)
        visual = Path(args.input_image_or_video_path)
        return [t2w.Job(0, args.prompt or "", video, text, _extra(args, visual))], []
    try:
        with open(args.batch_input_path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        return [], [f"cannot read batch input {args.batch_input_path}: {err}"]
    items, errors = parse_batch_lines(lines, str(args.batch_input_path), need_prompt=args.disable_prompt_upsampler)
    jobs = [t2w.Job(i, prompt, *t2w.output_paths(args.video_save_folder, str(i)), _extra(args, Path(visual)))
            for i, visual, prompt in items]
    return jobs, errors


def main(argv: Sequence[str] | None = None) -> int:
    return t2w.main(argv, parser=build_parser, jobs_loader=load_jobs)


if __name__ == "__main__":
    sys.exit(main())
