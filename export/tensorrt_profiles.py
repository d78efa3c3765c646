"""TensorRT optimisation profiles for each stage, from the envelopes its checkpoints accept.

A profile gives every input a (min, opt, max) shape. Per resolution (the default), each accepted size gets its own
profile with min = opt = max apart from the batch, so TensorRT picks kernels for exactly that shape; `range` builds
one profile spanning them all (smaller plan, kernels chosen for the first, default resolution).
The served stages run batch 1 (the CFG branches are two calls); `max_batch` widens the batch axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cosmos_triton.models.checkpoints import latent_shape
from cosmos_triton.models.text_encoder import MAX_TOKENS

Shape = tuple[int, ...]
ShapeRange = tuple[Shape, Shape, Shape]
StageProfile = dict[str, ShapeRange]
MODES = ("per_resolution", "range")


def _sizes(envelopes: Sequence[Mapping[str, Any]]) -> list[tuple[int, int, int]]:
    """(frames, height, width) accepted by any of the envelopes, in envelope order, without repeats."""
    sizes = [(int(f), int(h), int(w))
             for env in envelopes for h, w in env["resolutions"] for f in env["num_video_frames"]]
    return list(dict.fromkeys(sizes))


def exact_shapes(stage: str, entry: Mapping[str, Any]) -> list[dict[str, Shape]]:
    """Batch-1 input shapes of `stage` for each accepted size (`entry`: the stage's export manifest entry)."""
    if stage in ("dit_t2w", "dit_v2w"):
        arch = entry["architecture"]
        out = []
        for frames, height, width in _sizes(entry["envelopes"]):
            _, t, h, w = latent_shape(frames, height, width)
            shapes = {"x": (1, arch["latent_channels"], t, h, w), "c_noise": (1,),
                      "context": (1, MAX_TOKENS, arch["crossattn_emb_channels"]), "fps": ()}
            if arch["model_type"] == "Video2World":
                shapes["condition_mask"] = (1, 1, t, h, w)
            out.append(shapes)
        return out
    if stage == "tokenizer_encoder":
        return [{"video": (1, 3, f, h, w)} for f, h, w in _sizes(entry["envelopes"])]
    if stage == "tokenizer_decoder":
        return [{"latent": (1, *latent_shape(f, h, w))} for f, h, w in _sizes(entry["envelopes"])]
    if stage == "t5":
        return [{"input_ids": (1, MAX_TOKENS), "attention_mask": (1, MAX_TOKENS)}]
    if stage == "video_safety":
        _, channels, height, width = next(i["dims"] for i in entry["inputs"] if i["name"] == "pixel_values")
        return [{"pixel_values": (1, channels, height, width)}]
    raise ValueError(f"no TensorRT profile rule for stage {stage!r}")


def _with_batch(shape: Shape, batch: int) -> Shape:
    return shape if not shape else (batch, *shape[1:])  # 0-d inputs (fps) have no batch axis


def stage_profiles(stage: str, entry: Mapping[str, Any], mode: str = "per_resolution",
                   max_batch: int = 1) -> list[StageProfile]:
    if mode not in MODES:
        raise ValueError(f"profile mode {mode!r} is not one of {', '.join(MODES)}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, not {max_batch}")
    if stage == "video_safety":  # frames are the batch: 1 per call as served, up to a whole video
        frames = [f for env in entry.get("envelopes", []) for f in env["num_video_frames"]]
        max_batch = max([max_batch, *frames])
    exact = exact_shapes(stage, entry)
    if not exact:
        raise ValueError(f"stage {stage}: no accepted sizes in its manifest entry (export it with the DiT "
                         "checkpoints present, whose envelopes give them)")
    if mode == "per_resolution":
        return [{n: (s, s, _with_batch(s, max_batch)) for n, s in shapes.items()} for shapes in exact]
    profile: StageProfile = {}
    for name in exact[0]:
        low = tuple(min(dims) for dims in zip(*(e[name] for e in exact), strict=True))
        high = tuple(max(dims) for dims in zip(*(e[name] for e in exact), strict=True))
        profile[name] = (low, exact[0][name], _with_batch(high, max_batch))
    return [profile]
