"""Text2World, in process: the same stage functions the Triton models call, composed top to bottom.

1. validate the request against the checkpoint's envelope
2. text guardrail on the prompt (Blocklist, Aegis)
3. encode prompt and negative prompt with T5 (each alone, batch 1)
4. initial noise from the seed, times sigma_max
5. sample: RES-2ab over guided denoiser evaluations
6. decode the latent and convert to uint8 frames
7. video guardrail (content safety, then face pixelation)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cosmos_triton.checkpoints import Envelope, latent_shape, read_dit_checkpoint, validate_request
from cosmos_triton.denoiser import guided_x0
from cosmos_triton.dit import CosmosDiT, load_dit
from cosmos_triton.guardrail.runner import TextGuardrail, VideoGuardrail
from cosmos_triton.sampler import SIGMA_MAX, StepCallback, initial_noise, sample
from cosmos_triton.settings import ServeSettings
from cosmos_triton.text_encoder import T5TextEncoder
from cosmos_triton.tokenizer import CosmosVideoTokenizer, frames_to_uint8


def encode_prompts(t5: T5TextEncoder, prompt: str, negative_prompt: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """T5 embeddings cast to bf16 as prepare_data_batch does; an empty negative prompt yields zeros and False."""
    has_negative = bool(negative_prompt)
    embeddings = t5.encode([prompt, negative_prompt] if has_negative else [prompt]).to(torch.bfloat16)
    cond = embeddings[:1]
    return cond, (embeddings[1:2] if has_negative else torch.zeros_like(cond)), has_negative


def uncond_context(model_type: str, cond: torch.Tensor, negative: torch.Tensor, has_negative: bool) -> torch.Tensor:
    """Reference §4.5. Text2World without a negative prompt: the T5 embedding times 0 (all-zero context).
    Video2World without one: the positive embedding (CFG becomes a no-op)."""
    if has_negative:
        return negative
    return torch.zeros_like(cond) if model_type == "Text2World" else cond


def latent_noise(shape: tuple[int, ...], seed: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """x_T = 80 N with N from numpy.RandomState(seed), shape (1, C, T, H, W) (reference §4.6)."""
    return (initial_noise((1, *shape), seed) * SIGMA_MAX).to(device)


@dataclass
class Text2WorldPipeline:
    net: CosmosDiT
    tokenizer: CosmosVideoTokenizer
    text_encoder: T5TextEncoder
    text_guardrail: TextGuardrail
    video_guardrail: VideoGuardrail
    envelope: Envelope

    @classmethod
    def from_settings(cls, settings: ServeSettings, device: str = "cpu") -> Text2WorldPipeline:
        ckpt = read_dit_checkpoint(settings.dit_path)
        return cls(net=load_dit(ckpt, device=device), tokenizer=CosmosVideoTokenizer(settings.tokenizer_path, device),
                   text_encoder=T5TextEncoder(settings.t5_path, device),
                   text_guardrail=TextGuardrail(settings.guardrail_path, device),
                   video_guardrail=VideoGuardrail(settings.guardrail_path, device), envelope=ckpt.envelope)

    @torch.no_grad()
    def __call__(self, callback: StepCallback | None = None, **request: Any) -> np.ndarray:
        """Returns uint8 frames [T, H, W, 3]. Request fields as the ensemble's inputs; absent ones get defaults.
        Raises GuardrailBlocked when a guardrail refuses the prompt or the video."""
        req = validate_request(self.envelope, request)
        prompt = self.text_guardrail(req["prompt"])
        cond, negative, has_negative = encode_prompts(self.text_encoder, prompt, req["negative_prompt"])
        uncond = uncond_context(self.net.arch.model_type, cond, negative, has_negative)
        shape = latent_shape(req["num_video_frames"], req["height"], req["width"])
        x_T = latent_noise(shape, req["seed"], self.net.device)

        def x0_fn(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return guided_x0(self.net, x, sigma, cond, uncond, req["guidance"], float(req["fps"]))

        latent = sample(x0_fn, x_T, req["num_steps"], callback)
        return self.video_guardrail(frames_to_uint8(self.tokenizer.decode(latent)).cpu().numpy())
