"""T5 text encoder as Cosmos-1.0 uses it (docs/MATH.md, Text encoder).

fp32 weights, 512 tokens padded to max length, one prompt per forward pass (batch 1, like the original), the
attention mask given to the encoder, and every position at or after the true length (which counts `</s>`) set to 0.
"""

from __future__ import annotations

from pathlib import Path

import torch

MAX_TOKENS = 512
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")


def _check_folder(folder: Path) -> None:
    """Fail early, naming the folder, instead of letting from_pretrained try a hub lookup or a vague OSError."""
    if not folder.is_dir():
        raise FileNotFoundError(f"T5 checkpoint folder {folder} does not exist")
    problems = []
    if not (folder / "config.json").is_file():
        problems.append("config.json")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        problems.append("weights (one of " + ", ".join(WEIGHT_FILES) + ")")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        problems.append("tokenizer (one of " + ", ".join(TOKENIZER_FILES) + ")")
    if problems:
        raise FileNotFoundError(f"T5 checkpoint folder {folder} lacks " + "; ".join(problems))


class T5TextEncoder:
    """`encode(prompts)` -> [N, 512, d_model] fp32 embeddings with padded positions zeroed."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        from transformers import T5EncoderModel, T5TokenizerFast  # type: ignore[attr-defined]

        folder = Path(path)
        _check_folder(folder)
        self.device = torch.device(device)
        try:
            self.tokenizer = T5TokenizerFast.from_pretrained(folder, local_files_only=True)
            # fp32 as in the original (it gives no dtype); explicit because transformers 5 defaults to the stored dtype
            model = T5EncoderModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
        except (OSError, ValueError) as err:
            raise OSError(f"could not load the T5 encoder from {folder}: {err}") from err
        self.model = model.to(self.device).eval().requires_grad_(False)  # type: ignore[arg-type]
        self.embed_dim: int = self.model.config.d_model

    def tokenize(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids and attention_mask, both [1, 512], for one prompt."""
        batch = self.tokenizer(
            [prompt], return_tensors="pt", truncation=True, padding="max_length", max_length=MAX_TOKENS
        )
        return batch.input_ids.to(self.device), batch.attention_mask.to(self.device)

    @torch.no_grad()
    def encode_one(self, prompt: str) -> torch.Tensor:
        """[1, 512, d_model] fp32; positions >= number of real tokens (EOS included) are exactly 0."""
        input_ids, attention_mask = self.tokenize(prompt)
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        length = int(attention_mask.sum())
        hidden[0, length:] = 0
        return hidden

    def encode(self, prompts: list[str] | str) -> torch.Tensor:
        """[N, 512, d_model] fp32, each prompt encoded on its own (batch 1) as the original does."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts:
            raise ValueError("no prompts to encode")
        return torch.cat([self.encode_one(p) for p in prompts], dim=0)
