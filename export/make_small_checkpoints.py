"""Write the built-in small checkpoints, deterministically, in exactly the real checkpoint layout.

    python -m export.make_small_checkpoints [--out checkpoints/small] [--force]

<out>/Cosmos-1.0-Diffusion-Small-{Text2World,Video2World}/{model.pt, config.json}   original DiT key names,
    tiny dims (Video2World: patch embedding over 16 latent + condition mask + padding mask channels)
<out>/Cosmos-1.0-Tokenizer-CV8x8x8/{encoder.jit, decoder.jit, mean_std.pt}   TorchScript, real interface
<out>/google-t5/t5-11b/   HF-format T5 encoder (d_model 1024) with a tokenizer built offline
<out>/Cosmos-1.0-Prompt-Upsampler-12B-Text2World/, <out>/Pixtral-12B/   tiny Mistral / Pixtral-style
    upsamplers in the original key layouts, tokenizers built offline, emitting a fixed benign sentence
<out>/Cosmos-1.0-Guardrail/{blocklist, aegis, face_blur_filter, video_content_safety_filter}   the guardrail
    folder: word lists + nltk_data, hub caches of a tiny LlamaGuard + LoRA adapter and a tiny SigLIP, a
    narrow RetinaFace-ResNet-50 and the safety classifier, all in the original key layouts

The two DiTs and the tokenizer are the trained ones of checkpoints/builtin/ (copied) when that folder holds them
(export.train_small_models makes them, export.install_builtin puts them there), else seeded random weights;
--random writes the random ones regardless. Each component is taken from builtin/ only when its folder there is
complete; a folder present but incomplete is an error.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

from cosmos_triton.deployment import DEFAULT_T2W_UPSAMPLER_DIR, DEFAULT_V2W_UPSAMPLER_DIR
from cosmos_triton.guardrail.common import AEGIS_DIR, BLOCKLIST_DIR, FACE_BLUR_DIR, GUARDRAIL_DIR, VIDEO_SAFETY_DIR
from cosmos_triton.models.checkpoints import T5_DIR, TOKENIZER_DIR
from cosmos_triton.request.envelope import SMALL_ENVELOPE, SMALL_V2W_ENVELOPE
from export.small_aegis import write_small_aegis
from export.small_blocklist import write_small_blocklist
from export.small_dit import SMALL_DIT_DIR, SMALL_V2W, SMALL_V2W_DIT_DIR, write_small_dit
from export.small_face_blur import write_small_face_blur
from export.small_t5 import write_small_t5
from export.small_text2world_upsampler import write_small_text2world_upsampler
from export.small_tokenizer import write_small_tokenizer
from export.small_video2world_upsampler import write_small_video2world_upsampler
from export.small_video_safety import write_small_video_safety

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "checkpoints" / "small"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "checkpoints" / "builtin"
VERSION = "small-checkpoints-v4"  # bump when what is written changes, so stale copies are rebuilt
STAMP = ".complete"
# the trained components kept in git (checkpoints/builtin/<folder>/<files>)
BUILTIN_FILES: dict[str, tuple[str, ...]] = {
    SMALL_DIT_DIR: ("model.pt", "config.json"),
    SMALL_V2W_DIT_DIR: ("model.pt", "config.json"),
    TOKENIZER_DIR: ("encoder.jit", "decoder.jit", "mean_std.pt"),
}


def trained_components(builtin: Path = BUILTIN_DIR) -> dict[str, str]:
    """{folder: sha256 of its files} for every complete component folder in `builtin`."""
    found = {}
    for folder, files in BUILTIN_FILES.items():
        if not (builtin / folder).exists():
            continue
        missing = [f for f in files if not (builtin / folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{builtin / folder} is incomplete: missing {', '.join(missing)}")
        h = hashlib.sha256()
        for f in files:
            h.update(f.encode())
            h.update((builtin / folder / f).read_bytes())
        found[folder] = h.hexdigest()
    return found


def _stamp(trained: dict[str, str]) -> str:
    parts = [VERSION] + [f"{folder}={trained.get(folder, 'random')}" for folder in BUILTIN_FILES]
    return "\n".join(parts)


def make_small_checkpoints(out: Path = DEFAULT_OUT, force: bool = False, random: bool = False,
                           builtin: Path = BUILTIN_DIR) -> Path:
    trained = {} if random else trained_components(builtin)
    stamp = _stamp(trained)
    if not force and (out / STAMP).is_file() and (out / STAMP).read_text() == stamp:
        return out
    if out.exists():
        shutil.rmtree(out)
    for folder in trained:
        shutil.copytree(builtin / folder, out / folder)
    if SMALL_DIT_DIR not in trained:
        write_small_dit(out / SMALL_DIT_DIR, SMALL_ENVELOPE)
    if SMALL_V2W_DIT_DIR not in trained:
        write_small_dit(out / SMALL_V2W_DIT_DIR, SMALL_V2W_ENVELOPE, SMALL_V2W, seed=1)
    if TOKENIZER_DIR not in trained:
        write_small_tokenizer(out / TOKENIZER_DIR)
    write_small_t5(out / T5_DIR)
    write_small_text2world_upsampler(out / DEFAULT_T2W_UPSAMPLER_DIR)
    write_small_video2world_upsampler(out / DEFAULT_V2W_UPSAMPLER_DIR)
    guardrail = out / GUARDRAIL_DIR
    write_small_blocklist(guardrail / BLOCKLIST_DIR)
    write_small_aegis(guardrail / AEGIS_DIR)
    write_small_face_blur(guardrail / FACE_BLUR_DIR)
    write_small_video_safety(guardrail / VIDEO_SAFETY_DIR)
    (out / STAMP).write_text(stamp)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--force", action="store_true", help="rewrite even if an up-to-date copy exists")
    parser.add_argument("--random", action="store_true",
                        help="random-weight DiTs and tokenizer even when checkpoints/builtin has trained ones")
    parser.add_argument("--builtin", type=Path, default=BUILTIN_DIR, help="where the trained components are kept")
    args = parser.parse_args(argv)
    out = make_small_checkpoints(args.out, args.force, args.random, args.builtin)
    trained = sorted(trained_components(args.builtin)) if not args.random else []
    print(f"small checkpoints: {out} (trained: {', '.join(trained) or 'none, random weights'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
