"""Download the real checkpoints into the layout the servers load (needs a Hugging Face token with access).

    python -m export.download_checkpoints --checkpoint_dir checkpoints --model_sizes 7B 14B \
        --model_types Text2World

Nothing in the serving path downloads anything; this is the one place that talks to the Hub.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cosmos_triton.guardrail.common import GUARDRAIL_DIR
from cosmos_triton.models.checkpoints import T5_DIR, TOKENIZER_DIR

T5_REPO = "google-t5/t5-11b"
T5_FILES = ["config.json", "model.safetensors*", "spiece.model", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json"]


def main(argv: list[str] | None = None) -> int:
    from huggingface_hub import snapshot_download

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_dir", type=Path, default=Path("checkpoints"))
    parser.add_argument("--model_sizes", nargs="+", default=["7B"], choices=["7B", "14B"])
    parser.add_argument("--model_types", nargs="+", default=["Text2World"], choices=["Text2World", "Video2World"])
    args = parser.parse_args(argv)
    for size in args.model_sizes:
        for kind in args.model_types:
            name = f"Cosmos-1.0-Diffusion-{size}-{kind}"
            snapshot_download(f"nvidia/{name}", local_dir=args.checkpoint_dir / name,
                              allow_patterns=["model.pt", "config.json", "README.md"])
    snapshot_download(f"nvidia/{TOKENIZER_DIR}", local_dir=args.checkpoint_dir / TOKENIZER_DIR,
                      allow_patterns=["encoder.jit", "decoder.jit", "mean_std.pt", "config.json"])
    snapshot_download(T5_REPO, local_dir=args.checkpoint_dir / T5_DIR, allow_patterns=T5_FILES)
    # the guardrail folder ships its own hub caches (LlamaGuard + Aegis adapter, SigLIP) and nltk_data
    snapshot_download(f"nvidia/{GUARDRAIL_DIR}", local_dir=args.checkpoint_dir / GUARDRAIL_DIR)
    # prompt upsamplers: the 12B Text2World one with its tokenizer files, and Pixtral-12B (converted by NVIDIA's
    # convert_pixtral_ckpt.py from mistralai/Pixtral-12B-2409, a gated repo) plus the HF tokenizer NVIDIA loads
    snapshot_download("nvidia/Cosmos-1.0-Prompt-Upsampler-12B-Text2World",
                      local_dir=args.checkpoint_dir / "Cosmos-1.0-Prompt-Upsampler-12B-Text2World")
    snapshot_download("mistral-community/pixtral-12b", local_dir=args.checkpoint_dir / "Pixtral-12B",
                      allow_patterns=["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
