"""The request flow, written once. It runs in process (`call` is a direct call of the stage objects) and on the
server, inside the entry-point models (`call` is a BLS call of the stage models).

    1. validate the request against the checkpoint's envelope (Video2World: decode the visual input)
    2. the prompt: guardrail, upsampler, guardrail (model-type rules in model_types.py)
    3. T5: the prompt and the negative prompt, each alone
    4. Video2World: encode the input frames -> the condition latent
    5. sample: x_T = 80 N(seed); RES-2ab over guided DiT evaluations (one DiT-step call per evaluation)
    6. decode the latent -> uint8 frames
    7. video guardrail (content safety, face pixelation)
    8. mp4
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from cosmos_triton.diffusion.conditioning import VideoCondition
from cosmos_triton.diffusion.sampler import SIGMA_MAX, initial_noise, sample
from cosmos_triton.errors import RequestError
from cosmos_triton.models.checkpoints import latent_shape
from cosmos_triton.pipeline.model_types import ModelType, StageCall
from cosmos_triton.request.envelope import Envelope, validate_request

StepCallback = Callable[[int, int], None]  # (evaluations done, evaluations in all); may raise Cancelled


@dataclass
class Generation:
    video: bytes  # mp4
    prompt_used: str
    frames: Any  # the guarded uint8 frames [T, H, W, 3] that were encoded (numpy, or a tensor from a BLS call)
    latent: torch.Tensor  # the sampler's final clean x0
    skipped_evaluations: int = 0  # DiT branch evaluations the step cache skipped (0 unless cache_threshold > 0)


def validate(envelope: Envelope, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Step 1: every field checked and defaulted. Video2World: the visual input decoded to its last 1 or 9 frames,
    then shrunk here, before any stage: the encoder's frames resized to the output size (bf16, exactly what the
    encoder would compute), and only the last frame kept at its own size for the prompt upsampler."""
    from cosmos_triton.media.visual_input import condition_frames, decode_visual_input, select_input_frames

    req = validate_request(envelope, {k: v for k, v in fields.items() if k != "visual_input"})
    if "num_input_frames" in req:
        data = fields.get("visual_input")
        if not data:
            raise RequestError("visual_input", "an image (jpg, png, webp) or a video (mp4) is required")
        n = req["num_input_frames"]
        frames = select_input_frames(decode_visual_input(data, keep_last=n), n)
        req["condition_frames"] = condition_frames(frames, req["height"], req["width"])
        req["last_frame"] = frames[-1:]
    return req


def seeded_normal(shape: tuple[int, ...], seed: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """N of shape (1, C, T, H, W) from numpy's RandomState(seed): x_T = 80 N, and Video2World's augment noise is
    this same N."""
    return initial_noise((1, *shape), seed).to(device)


def generate(model_type: ModelType, call: StageCall, req: dict[str, Any], device: str | torch.device = "cpu",
             on_step: StepCallback | None = None) -> Generation:
    """Steps 2-8 for a validated request."""
    prompt = model_type.prompt_used(call, req)
    negative = req["negative_prompt"]
    # "keep": an offloaded stage keeps its weights on the GPU for the next call of this request
    cond = call("t5_encoder", prompt=prompt, memory_hint="keep" if negative else "")["embedding"]
    uncond = call("t5_encoder", prompt=negative)["embedding"] if negative else model_type.uncond_without_negative(cond)

    noise = seeded_normal(latent_shape(req["num_video_frames"], req["height"], req["width"]), req["seed"], device)
    dit_inputs = {"cond": cond, "uncond": uncond, "guidance": req["guidance"], "fps": float(req["fps"])}
    condition_latent = model_type.condition_latent(call, req)
    if condition_latent is not None:
        from cosmos_triton.media.visual_input import num_condition_latent_frames

        n = num_condition_latent_frames(req["num_input_frames"])
        condition = VideoCondition.build(condition_latent.to(device), n, noise)
        dit_inputs |= {"gt_latent": condition.gt_latent, "augment_latent": condition.augment_latent,
                       "num_condition_frames": n}

    evaluations, skipped = req["num_steps"] + 1, 0
    session = secrets.randbits(62)  # the step cache's state of this request in the DiT stage
    threshold = req.get("cache_threshold", 0.0)

    def x0_fn(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        nonlocal evaluations, skipped
        evaluations -= 1
        final = evaluations == 0
        out = call(model_type.dit_model, x=x, sigma=sigma, **dit_inputs, session=session, cache_threshold=threshold,
                   final=final, memory_hint="" if final else "keep")
        skipped += int(out.get("cache_skipped", 0))
        return out["x0"]

    latent = sample(x0_fn, noise * SIGMA_MAX, req["num_steps"], on_step)
    frames = call("tokenizer_decoder", latent=latent)["video"]
    frames = call("video_guardrail", video=frames)["video"]
    video = call("mp4_encoder", video=frames, fps=req["fps"])["mp4"]
    return Generation(video=video, prompt_used=prompt, frames=frames, latent=latent, skipped_evaluations=skipped)
