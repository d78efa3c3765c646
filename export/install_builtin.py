"""Install the results of `export.train_small_models` as the repository's built-in trained small models.

    python -m export.install_builtin RESULTS_DIR [--builtin checkpoints/builtin]
    python -m export.make_small_checkpoints --force      # then checkpoints/small uses them

Unpacks RESULTS_DIR/{tokenizer,t2w,v2w}.tar (whichever exist) into checkpoints/builtin/, replacing each component
folder whole; accepts only the expected member names. checkpoints/builtin/TRAINING.json becomes the run's record
(train_log.json without the per-case rows) and the full log is copied to benchmarks/results/. Refuses a set of
weights over the repository's size limit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

from export.make_small_checkpoints import BUILTIN_DIR, BUILTIN_FILES, trained_components
from export.train_small_models import TARS, TRAINING_JSON, training_record

MAX_WEIGHT_BYTES = 25 * 10**6  # everything kept in git for the three components
LOG_COPY = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "small_model_train_log.json"


def _allowed_members() -> set[str]:
    return {f"{folder}/{name}" for folder, names in BUILTIN_FILES.items() for name in names} | {TRAINING_JSON}


def install(results: Path, builtin: Path = BUILTIN_DIR, log_copy: Path | None = LOG_COPY) -> dict[str, str]:
    allowed = _allowed_members()
    staged = Path(tempfile.mkdtemp(prefix="builtin-"))
    found = []
    for name in TARS.values():
        path = results / name
        if not path.is_file():
            continue
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.name not in allowed or not member.isfile():
                    raise ValueError(f"{path}: unexpected member {member.name!r}")
                target = staged / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
        found.append(name)
    if not found:
        raise FileNotFoundError(f"no {', '.join(TARS.values())} in {results}")
    components = [folder for folder in BUILTIN_FILES if (staged / folder).is_dir()]
    trained_components(staged)  # raises on an incomplete component folder
    total = sum((staged / folder / f).stat().st_size for folder in components for f in BUILTIN_FILES[folder])
    kept = sum((builtin / folder / f).stat().st_size for folder in BUILTIN_FILES if folder not in components
               for f in BUILTIN_FILES[folder] if (builtin / folder / f).is_file())
    if total + kept > MAX_WEIGHT_BYTES:
        raise ValueError(f"weights would total {total + kept} bytes, over {MAX_WEIGHT_BYTES}")
    builtin.mkdir(parents=True, exist_ok=True)
    for folder in components:
        if (builtin / folder).exists():
            shutil.rmtree(builtin / folder)
        shutil.copytree(staged / folder, builtin / folder)
    log = results / "train_log.json"
    if log.is_file():
        full = json.loads(log.read_text())
        (builtin / TRAINING_JSON).write_text(json.dumps(training_record(full), indent=1) + "\n")
        if log_copy is not None:
            log_copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, log_copy)
    elif (staged / TRAINING_JSON).is_file():
        shutil.copyfile(staged / TRAINING_JSON, builtin / TRAINING_JSON)
    shutil.rmtree(staged)
    return trained_components(builtin)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--builtin", type=Path, default=BUILTIN_DIR)
    args = parser.parse_args(argv)
    installed = install(args.results, args.builtin)
    for folder, digest in installed.items():
        size = sum(p.stat().st_size for p in (args.builtin / folder).iterdir())
        print(f"{args.builtin / folder}: {size / 1e6:.2f} MB, sha256 {digest[:16]}")
    print("now: python -m export.make_small_checkpoints --force")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
