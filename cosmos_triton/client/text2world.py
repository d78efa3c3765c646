"""`cosmos-text2world`: videos from text with the Cosmos-1.0 Text2World entry point, with the original
`text2world.py` flags.

    cosmos-text2world --prompt "A robot in a warehouse" --video_save_name robot
    cosmos-text2world --batch_input_path prompts.jsonl --video_save_folder outputs/run1     # {"prompt": ...}
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cosmos_triton.client import common


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cosmos-text2world", description=__doc__.split("\n\n")[0],
                                epilog="Flags marked 'server default' take the defaults the server publishes.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="text prompt for single video generation")
    src.add_argument("--batch_input_path", help='JSONL file, one {"prompt": ...} object per line')
    p.add_argument("--word_limit_to_skip_upsampler", type=int,
                   help="skip the prompt upsampler for prompts with more words than this (server default, 250)")
    common.add_common_flags(p, model="text2world")
    return p


def load_jobs(args: argparse.Namespace) -> tuple[list[common.Job], list[str]]:
    flags = common.explicit_fields(args)
    if args.word_limit_to_skip_upsampler is not None:
        flags["word_limit_to_skip_upsampler"] = args.word_limit_to_skip_upsampler
    if args.batch_input_path is None:
        return [common.Job(args.video_save_name, {"prompt": args.prompt, **flags})], []
    records, errors = common.read_jsonl(args.batch_input_path)
    jobs = []
    for where, record in records:
        prompt = record.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            has = ", ".join(sorted(k for k in record if k != "_index")) or "nothing"
            errors.append(f'{where}: needs a non-empty "prompt" string (has: {has})')
            continue
        jobs.append(common.Job(str(record["_index"]), {"prompt": prompt, **flags}, where))
    return jobs, errors


def main(argv: Sequence[str] | None = None) -> int:
    return common.main(argv, build_parser, load_jobs)


if __name__ == "__main__":
    sys.exit(main())
