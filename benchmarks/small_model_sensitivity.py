"""How much the small Text2World DiT's prediction depends on each part of the caption, by noise level.

    python benchmarks/small_model_sensitivity.py [--checkpoint_dir checkpoints/small] [--seed 0]

The same noisy input x_t = x0 + sigma n (x0: the encoded ground truth of "a red circle moving left") is denoised
under captions that differ in one word; printed is the relative L2 distance of the denoised estimates
D(x_t; sigma, caption) = c_skip x_t + c_out F, e.g. |left - right| / |left|. A model that has learnt a word moves
its estimate where that word decides the video: direction words at high sigma, where sampling fixes where the
object starts and which way it goes. Diagnosis of the training runs in benchmarks/results/small_model_training.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cosmos_triton.diffusion.edm import edm_scaling
from cosmos_triton.models.checkpoints import TOKENIZER_DIR
from cosmos_triton.models.dit import load_dit
from cosmos_triton.models.text_encoder import T5TextEncoder
from cosmos_triton.models.tokenizer import CosmosVideoTokenizer
from cosmos_triton.synthetic.render import render_clip, to_model_input
from cosmos_triton.synthetic.scenes import oracle_scene
from export.small_dit import SMALL_DIT_DIR
from export.training_data import embed_captions, full_context

REFERENCE = "A red circle moving left."
VARIANTS = {"left-right": "A red circle moving right.", "left-up": "A red circle moving up.",
            "red-blue": "A blue circle moving left."}
SIGMAS = (80.0, 20.0, 8.0, 3.0, 1.0, 0.3)


@torch.no_grad()
def sensitivity(checkpoint_dir: Path, seed: int = 0) -> dict[str, dict[str, float]]:
    net = load_dit(checkpoint_dir / SMALL_DIT_DIR, "cpu", dtype=torch.float32)
    tokenizer = CosmosVideoTokenizer(checkpoint_dir / TOKENIZER_DIR, "cpu")
    t5 = T5TextEncoder(checkpoint_dir / "google-t5" / "t5-11b", "cpu")
    prompts = [REFERENCE, *VARIANTS.values()]
    context = full_context(embed_captions(t5, prompts)).float()
    frames = render_clip(oracle_scene("red", "circle", "left", seed), 96, 160)[None]
    x0 = tokenizer.encode(to_model_input(frames).to(torch.bfloat16)).float()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    rows: dict[str, dict[str, float]] = {}
    for sigma in SIGMAS:
        c_skip, c_out, c_in, c_noise = edm_scaling(torch.tensor([sigma]))
        x = (x0 + sigma * noise).expand(len(prompts), -1, -1, -1, -1)
        denoised = c_skip * x + c_out * net(c_in * x, c_noise.expand(len(prompts)), context, 24.0)
        ref = denoised[0]
        rows[str(sigma)] = {name: round(float((denoised[i + 1] - ref).norm() / ref.norm()), 4)
                            for i, name in enumerate(VARIANTS)}
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_dir", type=Path, default=Path("checkpoints/small"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    rows = sensitivity(args.checkpoint_dir, args.seed)
    print("| sigma | " + " | ".join(f"\\|{k}\\|" for k in VARIANTS) + " |")
    print("|---|" + "---|" * len(VARIANTS))
    for sigma, row in rows.items():
        print(f"| {sigma} | " + " | ".join(f"{v:.3f}" for v in row.values()) + " |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
