"""Training data of the small models: the seeded clip stream, caption embeddings from the small T5, latent pools.

Clip i of a stream with base seed s is `scenes.sample_scene(scene_rng(s, i), "train")` and its caption
`captions.caption_for(scene, same rng, "train")`: a deterministic function of (s, i). Held-out colour x motion pairs
and phrasings never occur.

Caption embeddings are computed like `cosmos_triton.models.text_encoder.T5TextEncoder.encode_one` (512 tokens,
padded positions zeroed), batched; only the first CAPTION_TOKENS positions are stored (the rest are zero anyway).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from cosmos_triton.models.text_encoder import MAX_TOKENS, T5TextEncoder
from cosmos_triton.models.tokenizer import CosmosVideoTokenizer
from cosmos_triton.synthetic.captions import caption_for
from cosmos_triton.synthetic.render import render_clip, to_model_input
from cosmos_triton.synthetic.scenes import Scene, sample_scene, scene_rng

CAPTION_TOKENS = 96  # longest training caption: under 80 tokens of the small T5 tokenizer (tests check)
FINGERPRINT_PROMPT = "A red circle moving left on a striped background. The camera pans right."


def clip(seed: int, index: int, aspect: float, split: str = "train") -> tuple[Scene, str]:
    rng = scene_rng(seed, index)
    scene = sample_scene(rng, split, aspect)
    return scene, caption_for(scene, rng, split)


@torch.no_grad()
def embed_captions(t5: T5TextEncoder, captions: list[str], tokens: int = CAPTION_TOKENS) -> torch.Tensor:
    """[N, tokens, d_model] bf16: T5 last hidden state with positions >= each prompt's length zeroed, cast to bf16
    as the pipeline does. Raises if a caption is longer than `tokens` (it would lose words)."""
    batch = t5.tokenizer(captions, return_tensors="pt", truncation=True, padding="max_length", max_length=MAX_TOKENS)
    ids, mask = batch.input_ids.to(t5.device), batch.attention_mask.to(t5.device)
    lengths = mask.sum(1)
    if int(lengths.max()) > tokens:
        raise ValueError(f"a caption has {int(lengths.max())} tokens, more than the {tokens} stored: "
                         f"{captions[int(lengths.argmax())]!r}")
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 like the CPU/served T5
    try:
        hidden = t5.model(input_ids=ids, attention_mask=mask).last_hidden_state
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    hidden = hidden * (positions[None, :] < lengths[:, None])[..., None]
    return hidden[:, :tokens].to(torch.bfloat16)


def full_context(stored: torch.Tensor, length: int = MAX_TOKENS) -> torch.Tensor:
    """Stored [B, tokens, D] embeddings zero-padded to the [B, 512, D] context the DiT sees."""
    out = stored.new_zeros(stored.shape[0], length, stored.shape[2])
    out[:, : stored.shape[1]] = stored
    return out


def t5_fingerprint(t5: T5TextEncoder) -> str:
    """sha256 over the T5 weights (fp32 bytes, sorted names) and the token ids of a reference prompt: the same on
    every device, so a training run can check it uses the very text encoder that serving will."""
    h = hashlib.sha256()
    for name, tensor in sorted(t5.model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    h.update(str(t5.tokenize(FINGERPRINT_PROMPT)[0][0].tolist()).encode())
    return h.hexdigest()


@dataclass
class LatentPool:
    """A fixed-size pool of (latent, caption embedding) pairs at one resolution, refreshed slot by slot from the
    seeded clip stream. Latents are the tokenizer's normalised latents (x sigma_data), as the pipeline makes."""

    height: int
    width: int
    latents: torch.Tensor  # [P, 16, 16, h, w] bf16
    contexts: torch.Tensor  # [P, CAPTION_TOKENS, D] bf16
    seed: int
    next_index: int = 0  # next clip of the stream
    next_slot: int = 0  # next slot to overwrite (FIFO)

    @classmethod
    def empty(cls, size: int, height: int, width: int, d_model: int, seed: int, device: torch.device) -> LatentPool:
        latents = torch.zeros(size, 16, 16, height // 8, width // 8, dtype=torch.bfloat16, device=device)
        contexts = torch.zeros(size, CAPTION_TOKENS, d_model, dtype=torch.bfloat16, device=device)
        return cls(height, width, latents, contexts, seed)

    @property
    def size(self) -> int:
        return self.latents.shape[0]

    def refresh(self, count: int, tokenizer: CosmosVideoTokenizer, t5: T5TextEncoder) -> list[str]:
        """Replace the `count` oldest slots with the next clips of the stream; returns their captions."""
        count = min(count, self.size)
        device = self.latents.device
        aspect = self.width / self.height
        scenes, captions = zip(*(clip(self.seed, self.next_index + k, aspect) for k in range(count)), strict=True)
        self.next_index += count
        frames = torch.stack([render_clip(s, self.height, self.width, device=device) for s in scenes])
        latents = tokenizer.encode(to_model_input(frames).to(torch.bfloat16))
        contexts = embed_captions(t5, list(captions))
        slots = (self.next_slot + torch.arange(count, device=device)) % self.size
        self.latents[slots] = latents.to(torch.bfloat16)
        self.contexts[slots] = contexts
        self.next_slot = int((self.next_slot + count) % self.size)
        return list(captions)

    def fill(self, tokenizer: CosmosVideoTokenizer, t5: T5TextEncoder, chunk: int = 64) -> None:
        for _ in range(0, self.size, chunk):
            self.refresh(chunk, tokenizer, t5)

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, self.size, (size,), generator=generator, device=generator.device)
        idx = idx.to(self.latents.device)
        return self.latents[idx], self.contexts[idx]
