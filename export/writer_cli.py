"""The command line every small-checkpoint writer shares: `python -m export.small_X OUT_DIR [--seed N]`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def run_writer(writer: Callable[[Path, int], object], doc: str | None, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    writer(args.out_dir, args.seed)
