"""Text2World and Video2World, in process: the same stage functions the Triton models call, top to bottom.

1. validate the request against the checkpoint's envelope
2. prompt: Text2World: guardrail, upsample (12B), guardrail again; Video2World: upsample from the last input
   frame (Pixtral) or, with the upsampler disabled, the user's prompt; then the guardrail (Blocklist, Aegis)
3. encode prompt and negative prompt with T5 (each alone, batch 1)
4. initial noise from the seed, times sigma_max
5. Video2World: decode the visual input, encode its last 1 or 9 frames as the condition latent
6. sample: RES-2ab over guided denoiser evaluations
7. decode the latent and convert to uint8 frames
8. video guardrail (content safety, then face pixelation)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cosmos_triton.diffusion.conditioning import VideoCondition
from cosmos_triton.diffusion.guidance import guided_x0
from cosmos_triton.diffusion.sampler import SIGMA_MAX, StepCallback, initial_noise, sample
from cosmos_triton.guardrail.runner import TextGuardrail, VideoGuardrail
from cosmos_triton.models.checkpoints import latent_shape, read_dit_checkpoint
from cosmos_triton.models.dit import CosmosDiT, load_dit
from cosmos_triton.models.text_encoder import T5TextEncoder
from cosmos_triton.models.tokenizer import CosmosVideoTokenizer, frames_to_uint8
from cosmos_triton.request.envelope import Envelope, validate_request
from cosmos_triton.settings import ServeSettings


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


def seeded_normal(shape: tuple[int, ...], seed: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """N of reference §4.6, shape (1, C, T, H, W): x_T = 80 N, and Video2World's augment noise is this same N."""
    return initial_noise((1, *shape), seed).to(device)


def encode_condition(tokenizer: CosmosVideoTokenizer, clip: torch.Tensor, num_input_frames: int,
                     noise: torch.Tensor) -> VideoCondition:
    """The padded 121-frame clip [1, 3, 121, H, W] (bf16, [-1, 1]) -> the Video2World condition (§4.7)."""
    from cosmos_triton.media.visual_input import num_condition_latent_frames

    gt_latent = tokenizer.encode(clip.to(torch.bfloat16))
    return VideoCondition.build(gt_latent, num_condition_latent_frames(num_input_frames), noise)


@dataclass
class WorldPipeline:
    net: CosmosDiT
    tokenizer: CosmosVideoTokenizer
    text_encoder: T5TextEncoder
    text_guardrail: TextGuardrail
    video_guardrail: VideoGuardrail
    upsampler: Any  # Text2WorldPromptUpsampler or Video2WorldPromptUpsampler
    envelope: Envelope

    @classmethod
    def load(cls, settings: ServeSettings, dit_path: Path, device: str = "cpu") -> WorldPipeline:
        ckpt = read_dit_checkpoint(dit_path)
        if ckpt.architecture.model_type == "Text2World":
            from cosmos_triton.upsampler.text2world import Text2WorldPromptUpsampler

            upsampler = Text2WorldPromptUpsampler(settings.t2w_upsampler_path, device)
        else:
            from cosmos_triton.upsampler.video2world import Video2WorldPromptUpsampler

            upsampler = Video2WorldPromptUpsampler(settings.v2w_upsampler_path, device)
        return cls(net=load_dit(ckpt, device=device), tokenizer=CosmosVideoTokenizer(settings.tokenizer_path, device),
                   text_encoder=T5TextEncoder(settings.t5_path, device),
                   text_guardrail=TextGuardrail(settings.guardrail_path, device),
                   video_guardrail=VideoGuardrail(settings.guardrail_path, device), upsampler=upsampler,
                   envelope=ckpt.envelope)

    @property
    def model_type(self) -> str:
        return self.net.arch.model_type

    @torch.no_grad()
    def __call__(self, callback: StepCallback | None = None, visual_input: bytes | None = None,
                 **request: Any) -> np.ndarray:
        """Returns uint8 frames [T, H, W, 3]. Request fields as the ensemble's inputs; absent ones get defaults.
        Video2World also takes `visual_input` (image or mp4 bytes). Raises GuardrailBlocked when a guardrail
        refuses the prompt or the video, RequestError for a value outside the envelope."""
        req = validate_request(self.envelope, request)
        frames = None
        if self.model_type == "Video2World":
            from cosmos_triton.media.visual_input import decode_visual_input, select_input_frames

            if visual_input is None:
                from cosmos_triton.errors import RequestError

                raise RequestError("visual_input", "Video2World needs an image or a video")
            frames = select_input_frames(decode_visual_input(visual_input), req["num_input_frames"])
        prompt = self.last_prompt = self.prompt_used(req, frames)
        cond, negative, has_negative = encode_prompts(self.text_encoder, prompt, req["negative_prompt"])
        uncond = uncond_context(self.model_type, cond, negative, has_negative)
        shape = latent_shape(req["num_video_frames"], req["height"], req["width"])
        noise = seeded_normal(shape, req["seed"], self.net.device)
        condition = None
        if frames is not None:
            from cosmos_triton.media.visual_input import prepare_condition_video

            clip = prepare_condition_video(frames, req["height"], req["width"], req["num_video_frames"])
            condition = encode_condition(self.tokenizer, clip.to(self.net.device), req["num_input_frames"], noise)

        def x0_fn(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return guided_x0(self.net, x, sigma, cond, uncond, req["guidance"], float(req["fps"]), condition)

        latent = sample(x0_fn, noise * SIGMA_MAX, req["num_steps"], callback)
        self.last_latent = latent  # kept for tests and debugging
        return self.video_guardrail(frames_to_uint8(self.tokenizer.decode(latent)).cpu().numpy())


    def prompt_used(self, req: dict[str, Any], frames: np.ndarray | None) -> str:
        """The guardrail-checked prompt, upsampled unless disabled (reference §6, §7.0)."""
        if self.model_type == "Video2World":
            if req["disable_prompt_upsampler"]:
                return self.text_guardrail(req["prompt"])
            return self.text_guardrail(self.upsampler.upsample(frames, req["seed"]))
        from cosmos_triton.upsampler.text2world import word_count_exceeds

        prompt = self.text_guardrail(req["prompt"])
        if req["disable_prompt_upsampler"] or word_count_exceeds(prompt, req["word_limit_to_skip_upsampler"]):
            return prompt
        return self.text_guardrail(self.upsampler.upsample(prompt, req["seed"]))


class Text2WorldPipeline(WorldPipeline):
    @classmethod
    def from_settings(cls, settings: ServeSettings, device: str = "cpu") -> WorldPipeline:
        return cls.load(settings, settings.dit_path, device)


class Video2WorldPipeline(WorldPipeline):
    @classmethod
    def from_settings(cls, settings: ServeSettings, device: str = "cpu") -> WorldPipeline:
        return cls.load(settings, settings.v2w_dit_path, device)
