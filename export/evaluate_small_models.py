"""Score exported small models on the oracle caption set, batched, with the serving code's own pieces:
`load_dit` on the exported model.pt, `CosmosVideoTokenizer` on the exported tokenizer, the RES-2ab sampler,
classifier-free guidance and Video2World conditioning of `cosmos_triton.diffusion`, seeded noise as the pipeline
draws it. Used at the end of a training run (on its GPU) for a first read-out; the tests score the served /
in-process pipeline itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cosmos_triton.diffusion.conditioning import VideoCondition
from cosmos_triton.diffusion.guidance import guided_x0
from cosmos_triton.diffusion.sampler import SIGMA_MAX, initial_noise, sample
from cosmos_triton.models.checkpoints import latent_shape
from cosmos_triton.models.dit import CosmosDiT
from cosmos_triton.models.text_encoder import MAX_TOKENS, T5TextEncoder
from cosmos_triton.models.tokenizer import CosmosVideoTokenizer, frames_to_uint8
from cosmos_triton.request.envelope import DEFAULT_NEGATIVE_PROMPT
from cosmos_triton.synthetic.metrics import adherence, psnr
from cosmos_triton.synthetic.oracle import Case, oracle_cases, summarise
from cosmos_triton.synthetic.render import render_clip
from cosmos_triton.synthetic.scenes import oracle_scene
from export.training_data import CAPTION_TOKENS, embed_captions, full_context

HEIGHT, WIDTH, FRAMES = 96, 160, 121


def condition_clip(frames: np.ndarray, num_video_frames: int = FRAMES) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> bf16 [1, 3, num_video_frames, H, W]: x / 128 - 1, the N frames first, zeros after.
    What cosmos_triton.media.visual_input.prepare_condition_video does for frames already at the target size (no
    resize), without its imageio import, which a training host may lack (a test checks they agree)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float() / 128.0 - 1.0
    clip = torch.zeros(1, 3, num_video_frames, *frames.shape[1:3], dtype=torch.bfloat16)
    clip[0, :, : frames.shape[0]] = x.to(torch.bfloat16)
    return clip


def num_condition_latent_frames(num_input_frames: int) -> int:
    return 1 + (num_input_frames - 1) // 8


@torch.no_grad()
def generate_batch(net: CosmosDiT, tokenizer: CosmosVideoTokenizer, cond: torch.Tensor, uncond: torch.Tensor,
                   seeds: list[int], num_steps: int, guidance: float, fps: float = 24.0,
                   condition_clips: torch.Tensor | None = None, num_input_frames: int = 1,
                   height: int = HEIGHT, width: int = WIDTH) -> list[np.ndarray]:
    """uint8 [T, H, W, 3] per seed. cond/uncond: [B, 512, D] contexts; condition_clips: [B, 3, 121, H, W] bf16
    padded Video2World clips (prepare_condition_video) or None for Text2World."""
    shape = latent_shape(FRAMES, height, width)
    device = net.device
    noise = torch.cat([initial_noise((1, *shape), s) for s in seeds]).to(device)
    condition = None
    if condition_clips is not None:
        gt = tokenizer.encode(condition_clips.to(device, torch.bfloat16))
        condition = VideoCondition.build(gt, num_condition_latent_frames(num_input_frames), noise)

    def x0_fn(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return guided_x0(net, x, sigma, cond, uncond, guidance, fps, condition)

    latent = sample(x0_fn, noise * SIGMA_MAX, num_steps)
    video = tokenizer.decode(latent)
    return [frames_to_uint8(video[i : i + 1]).cpu().numpy() for i in range(video.shape[0])]


def _contexts(t5: T5TextEncoder, prompts: list[str], device: torch.device, tokens: int = CAPTION_TOKENS
              ) -> torch.Tensor:
    return full_context(embed_captions(t5, prompts, tokens)).to(device)


def evaluate(t2w: CosmosDiT, v2w: CosmosDiT | None, tokenizer: CosmosVideoTokenizer, t5: T5TextEncoder,
             num_steps: int = 35, guidance: float = 7.0, chunk: int = 16, cases: list[Case] | None = None,
             v2w_cases: int = 8, keep_samples: int = 6, resolution: tuple[int, int] = (HEIGHT, WIDTH)
             ) -> tuple[dict, dict[str, np.ndarray]]:
    """Adherence of Text2World (guidance on, and off for the seen cases), tokenizer round trip of the ground truth,
    and Video2World continuation (9 input frames) on the oracle cases. Returns (report, sample frames)."""
    device = t2w.device
    cases = oracle_cases() if cases is None else cases
    negative = _contexts(t5, [DEFAULT_NEGATIVE_PROMPT], device, tokens=MAX_TOKENS)
    height, width = resolution
    report: dict = {"num_steps": num_steps, "guidance": guidance, "negative_prompt": "default",
                    "resolution": [height, width]}
    samples: dict[str, np.ndarray] = {}

    def run(net: CosmosDiT, chosen: list[Case], g: float, clips: torch.Tensor | None = None) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for i in range(0, len(chosen), chunk):
            part = chosen[i : i + chunk]
            cond = _contexts(t5, [c.prompt for c in part], device)
            out += generate_batch(net, tokenizer, cond, negative.expand_as(cond), [c.seed for c in part], num_steps,
                                  g, condition_clips=None if clips is None else clips[i : i + chunk],
                                  num_input_frames=9, height=height, width=width)
        return out

    videos = run(t2w, cases, guidance)
    rows = [(c, adherence(v, c.colour, c.direction)) for c, v in zip(cases, videos, strict=True)]
    report["text2world"] = summarise(rows)
    report["text2world_cases"] = [{"prompt": c.prompt, "group": c.group, **a.to_dict()} for c, a in rows]
    for c, v in list(zip(cases, videos, strict=True))[:keep_samples]:
        samples[f"t2w_{c.seed}"] = v[::8]
    seen = [c for c in cases if c.group == "seen"]
    unguided = run(t2w, seen, 0.0)
    report["text2world_guidance_0"] = summarise(
        [(c, adherence(v, c.colour, c.direction)) for c, v in zip(seen, unguided, strict=True)])
    # ground truth through the tokenizer: the ceiling of what the DiT can reach
    aspect = width / height
    truth = [render_clip(oracle_scene(c.colour, c.shape, c.direction, c.seed, aspect), height, width).numpy()
             for c in seen]
    clips = torch.cat([condition_clip(f) for f in truth])
    recon = tokenizer.decode(tokenizer.encode(clips.to(device, torch.bfloat16)))
    recon = [frames_to_uint8(recon[i : i + 1]).cpu().numpy() for i in range(recon.shape[0])]
    report["tokenizer_round_trip"] = {
        **summarise([(c, adherence(r, c.colour, c.direction)) for c, r in zip(seen, recon, strict=True)])["all"],
        "psnr_db": float(np.mean([psnr(t, r) for t, r in zip(truth, recon, strict=True)]))}
    if v2w is not None:
        chosen = seen[:v2w_cases]
        inputs = [t[:9] for t in truth[:v2w_cases]]
        clips = torch.cat([condition_clip(f) for f in inputs])
        outs = run(v2w, chosen, guidance, clips)
        report["video2world"] = {
            **summarise([(c, adherence(v, c.colour, c.direction)) for c, v in zip(chosen, outs, strict=True)])["all"],
            "input_frames_psnr_db": float(np.mean([psnr(v[:9], f) for v, f in zip(outs, inputs, strict=True)])),
        }
        for c, v in list(zip(chosen, outs, strict=True))[:2]:
            samples[f"v2w_{c.seed}"] = v[::8]
    return report, samples


def save_samples(path: Path, samples: dict[str, np.ndarray]) -> None:
    np.savez_compressed(path, **samples)
