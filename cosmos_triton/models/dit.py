"""The Cosmos-1.0 DiT: original checkpoint keys mapped into diffusers' CosmosTransformer3DModel
(docs/MATH.md, DiT and Checkpoint keys).

diffusers provides the network; where its bf16 numerics differ from NVIDIA's original (NVIDIA/Cosmos
`cosmos1/models/diffusion/`), `_follow_original` swaps in the original arithmetic after construction, with the
state-dict keys unchanged (docs/MATH.md, DiT numerics):
- QK RMSNorm eps is 1e-6 in the original, 1e-5 in diffusers;
- every RMSNorm (Q/K norms of both attentions, the time-embedding `affline_norm`) rounds once, as
  TransformerEngine's kernel does: weight * normalised in fp32, then to bf16; diffusers' `RMSNorm` rounds the
  normalised value to bf16 before the weight product;
- the 3D RoPE angles are computed in the model dtype (bf16): `VideoRopePosition3DEmb`
  (`module/position_embedding.py`) keeps `seq` and the frequency ranges as float buffers that the inference
  model's `.to(bfloat16)` (`model/model_t2w.py`) casts, and fps arrives as a bf16 tensor; only the final angle
  table is fp32. diffusers' `CosmosRotaryPosEmbed` computes the same formula in fp32 (up to 0.15 rad apart
  for 7B, 0.29 rad for 14B at 704x1280). The table depends only on (T, H, W, fps), so it is cached;
- the learnable position embedding runs in bf16 with a bf16-rounded norm in the original, where
  diffusers keeps it in fp32;
- the zero padding-mask channel is concatenated here: diffusers would resize it with torchvision
  (docs/MATH.md, Network inputs).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import CosmosTransformer3DModel
from diffusers.models.normalization import RMSNorm
from diffusers.models.transformers.transformer_cosmos import CosmosLearnablePositionalEmbed, CosmosRotaryPosEmbed

from cosmos_triton.models.checkpoints import DiTArchitecture, DiTCheckpoint, read_dit_checkpoint

ORIGINAL_QK_NORM_EPS = 1e-6
ROPE_TABLES_KEPT = 4  # (T, H, W, fps) shapes whose cos/sin tables stay cached: 58 MB each at 704x1280
WRAPPER_KEYS = ("model", "module", "state_dict")
DROPPED_KEYS = ("logvar.0.freqs", "logvar.0.phases", "logvar.1.weight", "pos_embedder.seq")

# docs/MATH.md, Checkpoint keys: applied in this order after stripping "net.".
_RENAMES: tuple[tuple[str, str], ...] = (
    ("t_embedder.1", "time_embed.t_embedder"),
    ("affline_norm", "time_embed.norm"),
    (".blocks.0.block.attn", ".attn1"),
    (".blocks.1.block.attn", ".attn2"),
    (".blocks.2.block", ".ff"),
    (".blocks.0.adaLN_modulation.1", ".norm1.linear_1"),
    (".blocks.0.adaLN_modulation.2", ".norm1.linear_2"),
    (".blocks.1.adaLN_modulation.1", ".norm2.linear_1"),
    (".blocks.1.adaLN_modulation.2", ".norm2.linear_2"),
    (".blocks.2.adaLN_modulation.1", ".norm3.linear_1"),
    (".blocks.2.adaLN_modulation.2", ".norm3.linear_2"),
    ("to_q.0", "to_q"),
    ("to_q.1", "norm_q"),
    ("to_k.0", "to_k"),
    ("to_k.1", "norm_k"),
    ("to_v.0", "to_v"),
    ("layer1", "net.0.proj"),
    ("layer2", "net.2"),
    ("proj.1", "proj"),
    ("x_embedder", "patch_embed"),
    ("extra_pos_embedder", "learnable_pos_embed"),
    ("final_layer.adaLN_modulation.1", "norm_out.linear_1"),
    ("final_layer.adaLN_modulation.2", "norm_out.linear_2"),
    ("final_layer.linear", "proj_out"),
)
_BLOCK = re.compile(r"^blocks\.block(\d+)\.")


class CheckpointKeyError(KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def original_key_shapes(arch: DiTArchitecture) -> dict[str, tuple[int, ...]]:
    """Every key of an original model.pt with its shape, derived from the architecture.
    See docs/MATH.md, Checkpoint keys."""
    d, lora, hd = arch.model_channels, arch.adaln_lora_dim, arch.head_dim
    ctx, hidden = arch.crossattn_emb_channels, int(d * arch.mlp_ratio)
    pt, ph, pw = arch.patch_size
    tokens = [m // p for m, p in zip(arch.max_size, arch.patch_size, strict=True)]
    patch_in = (arch.in_channels + 1) * pt * ph * pw  # + the padding-mask channel
    shapes: dict[str, tuple[int, ...]] = {
        "net.x_embedder.proj.1.weight": (d, patch_in),
        "net.pos_embedder.seq": (max(tokens),),
        "net.extra_pos_embedder.pos_emb_t": (tokens[0], d),
        "net.extra_pos_embedder.pos_emb_h": (tokens[1], d),
        "net.extra_pos_embedder.pos_emb_w": (tokens[2], d),
        "net.t_embedder.1.linear_1.weight": (d, d),
        "net.t_embedder.1.linear_2.weight": (3 * d, d),
        "net.affline_norm.weight": (d,),
    }
    for i in range(arch.num_blocks):
        b = f"net.blocks.block{i}.blocks"
        for j, kv_in in ((0, d), (1, ctx)):  # 0: self-attention, 1: cross-attention on T5
            a = f"{b}.{j}.block.attn"
            shapes |= {
                f"{a}.to_q.0.weight": (d, d),
                f"{a}.to_k.0.weight": (d, kv_in),
                f"{a}.to_v.0.weight": (d, kv_in),
                f"{a}.to_q.1.weight": (hd,),
                f"{a}.to_k.1.weight": (hd,),
                f"{a}.to_out.0.weight": (d, d),
            }
        shapes |= {f"{b}.2.block.layer1.weight": (hidden, d), f"{b}.2.block.layer2.weight": (d, hidden)}
        for j in range(3):
            shapes |= {f"{b}.{j}.adaLN_modulation.1.weight": (lora, d),
                       f"{b}.{j}.adaLN_modulation.2.weight": (3 * d, lora)}
    shapes |= {
        "net.final_layer.linear.weight": (pt * ph * pw * arch.latent_channels, d),
        "net.final_layer.adaLN_modulation.1.weight": (lora, d),
        "net.final_layer.adaLN_modulation.2.weight": (2 * d, lora),
        "logvar.0.freqs": (128,),
        "logvar.0.phases": (128,),
        "logvar.1.weight": (1, 128),
    }
    return shapes


def unwrap_state_dict(obj: Mapping) -> dict[str, torch.Tensor]:
    """model.pt is a flat dict; tolerate the model/module/state_dict wrappers other exporters produce."""
    for key in WRAPPER_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            return unwrap_state_dict(obj[key])
    return {k: v for k, v in obj.items() if not k.endswith("_extra_state")}  # TE FP8 metadata, skipped by the original


def diffusers_key(original: str) -> str | None:
    """The diffusers name of an original key, or None for keys the network does not use."""
    key = original.removeprefix("net.")
    if key in DROPPED_KEYS:
        return None
    for old, new in _RENAMES:
        key = key.replace(old, new)
    return _BLOCK.sub(r"transformer_blocks.\1.", key)


def to_diffusers_state_dict(original: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    mapped: dict[str, torch.Tensor] = {}
    for key, value in original.items():
        new = diffusers_key(key)
        if new is not None:
            mapped[new] = value
    return mapped


def diffusers_config(arch: DiTArchitecture) -> dict:
    return dict(
        in_channels=arch.in_channels + 1,  # padding-mask channel counted here, concatenated by CosmosDiT
        out_channels=arch.latent_channels,
        num_attention_heads=arch.num_heads,
        attention_head_dim=arch.head_dim,
        num_layers=arch.num_blocks,
        mlp_ratio=arch.mlp_ratio,
        text_embed_dim=arch.crossattn_emb_channels,
        adaln_lora_dim=arch.adaln_lora_dim,
        max_size=arch.max_size,
        patch_size=arch.patch_size,
        rope_scale=arch.rope_scale,
        concat_padding_mask=False,
        extra_pos_embed_type="learnable",
    )


class OriginalLearnablePosEmbed(CosmosLearnablePositionalEmbed):
    """The learnable position embedding as NVIDIA computes it: the axis tables summed in the model dtype, the norm
    accumulated in fp32, rounded to the model dtype, then divided (diffusers divides in fp32)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = hidden_states.shape
        pt, ph, pw = self.patch_size
        t, h, w = t // pt, h // ph, w // pw
        emb = (
            self.pos_emb_t[:t][None, :, None, None, :]
            + self.pos_emb_h[:h][None, None, :, None, :]
            + self.pos_emb_w[:w][None, None, None, :, :]
        ).expand(b, t, h, w, -1)
        norm = torch.linalg.vector_norm(emb, dim=-1, keepdim=True, dtype=torch.float32)
        norm = torch.add(1e-6, norm, alpha=float(np.sqrt(1.0 / emb.shape[-1])))
        return (emb / norm.to(emb.dtype)).flatten(1, 3).type_as(hidden_states)


class OriginalRMSNorm(RMSNorm):
    """TransformerEngine's RMSNorm: x * rsqrt(mean(x^2) + eps) * weight all in fp32, rounded once to x's dtype.
    diffusers rounds the normalised value to the weight dtype first, then multiplies in bf16 (a second rounding).
    Plain torch ops, so it compiles with the blocks."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = hidden_states.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x * self.weight.float()).to(hidden_states.dtype)  # type: ignore[union-attr]  # always affine here


class OriginalRotaryPosEmbed(CosmosRotaryPosEmbed):
    """The 3D RoPE as `VideoRopePosition3DEmb.generate_embeddings` computes it: `seq` and the frequency ranges are
    float buffers cast with the model (bf16 at inference), fps is a tensor of the same dtype, so theta**range, its
    reciprocal, the position products and seq / fps * 24 all round to bf16; only the finished table is fp32.
    The buffers follow the module's .to() like the original's. cos/sin of the table are cached per
    (T, H, W, fps, device, dtype): one table serves every block of every step."""

    seq: torch.Tensor
    dim_spatial_range: torch.Tensor
    dim_temporal_range: torch.Tensor

    def follow_original(self, device: torch.device, dtype: torch.dtype) -> None:
        # Created in fp32 and then cast, as the original registers them and model.to(bf16) casts them.
        f32: dict[str, Any] = dict(device=device, dtype=torch.float32)
        self.register_buffer("seq", torch.arange(max(self.max_size), **f32).to(dtype), persistent=False)
        spatial = torch.arange(0, self.dim_h, 2, **f32)[: self.dim_h // 2] / self.dim_h
        temporal = torch.arange(0, self.dim_t, 2, **f32)[: self.dim_t // 2] / self.dim_t
        self.register_buffer("dim_spatial_range", spatial.to(dtype), persistent=False)
        self.register_buffer("dim_temporal_range", temporal.to(dtype), persistent=False)
        self._tables: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def angles(self, t: int, h: int, w: int, fps: float | torch.Tensor | None) -> torch.Tensor:
        """The fp32 angle table [t*h*w, head_dim] of tokens in (t, h, w) order, layout [t | h | w] * 2."""
        # The original's ops on the same operand dtypes, so torch's bf16 rounding (of theta itself, too: the python
        # float base becomes bf16, 10000 -> 9984) is the original's. dim_h == dim_w: one spatial range for both.
        h_freqs = 1.0 / ((10000.0 * self.h_ntk_factor) ** self.dim_spatial_range)
        w_freqs = 1.0 / ((10000.0 * self.w_ntk_factor) ** self.dim_spatial_range)
        t_freqs = 1.0 / ((10000.0 * self.t_ntk_factor) ** self.dim_temporal_range)
        t_pos = self.seq[:t]
        if fps is not None:
            fps = torch.as_tensor(fps, device=self.seq.device).to(self.seq.dtype).reshape(1)
            t_pos = t_pos / fps * self.base_fps
        axes = (
            torch.outer(t_pos, t_freqs)[:, None, None, :].expand(t, h, w, -1),
            torch.outer(self.seq[:h], h_freqs)[None, :, None, :].expand(t, h, w, -1),
            torch.outer(self.seq[:w], w_freqs)[None, None, :, :].expand(t, h, w, -1),
        )
        return torch.cat(axes * 2, dim=-1).flatten(0, 2).float()

    def forward(self, hidden_states: torch.Tensor, fps: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, t, h, w = hidden_states.shape
        pt, ph, pw = self.patch_size
        if torch.compiler.is_exporting():  # a traced graph takes fps and the sizes as inputs: no Python-keyed cache
            angles = self.angles(t // pt, h // ph, w // pw, fps)
            return torch.cos(angles), torch.sin(angles)
        fps = None if fps is None else float(fps)
        key = (t // pt, h // ph, w // pw, fps, self.seq.device, self.seq.dtype)
        table = self._tables.get(key)
        if table is None:
            angles = self.angles(t // pt, h // ph, w // pw, fps)
            table = (torch.cos(angles), torch.sin(angles))
            self._tables[key] = table
            while len(self._tables) > ROPE_TABLES_KEPT:
                self._tables.popitem(last=False)
        else:
            self._tables.move_to_end(key)
        return table


def _follow_original(model: CosmosTransformer3DModel) -> None:
    for block in model.transformer_blocks:
        for attn in (block.attn1, block.attn2):
            attn.norm_q.eps = ORIGINAL_QK_NORM_EPS
            attn.norm_k.eps = ORIGINAL_QK_NORM_EPS
    for module in model.modules():
        if type(module) is RMSNorm:  # Q/K norms of every attention and time_embed.norm (affline_norm)
            module.__class__ = OriginalRMSNorm
    model.learnable_pos_embed.__class__ = OriginalLearnablePosEmbed
    model.rope.__class__ = OriginalRotaryPosEmbed
    model.rope.follow_original(model.proj_out.weight.device, model.proj_out.weight.dtype)


def check_keys(original: Mapping[str, torch.Tensor], arch: DiTArchitecture) -> None:
    """Strict: every expected key present with its shape, nothing unexpected; errors name the keys."""
    expected = original_key_shapes(arch)
    missing = sorted(set(expected) - set(original))
    unexpected = sorted(set(original) - set(expected))
    wrong = sorted(k for k in set(expected) & set(original) if tuple(original[k].shape) != expected[k])
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(
            f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}"
        )
    if wrong:
        problems.append(
            "wrong shape(s): "
            + ", ".join(f"{k} {tuple(original[k].shape)} != {expected[k]}" for k in wrong[:8])
        )
    if problems:
        raise CheckpointKeyError(f"DiT checkpoint does not match {arch.model_type} {arch}: " + "; ".join(problems))


def build_model(arch: DiTArchitecture, state_dict: Mapping[str, torch.Tensor] | None = None,
                device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16) -> CosmosTransformer3DModel:
    """Build on the meta device (no 28 GB fp32 init for 7B) and assign the original weights cast to `dtype`."""
    with torch.device("meta"):
        model = CosmosTransformer3DModel(**diffusers_config(arch))
    if state_dict is None:
        model = model.to_empty(device=device).to(dtype)
    else:
        check_keys(state_dict, arch)
        mapped = {k: v.to(device=device, dtype=dtype) for k, v in to_diffusers_state_dict(state_dict).items()}
        model.load_state_dict(mapped, strict=True, assign=True)
    _follow_original(model)
    return model.eval().requires_grad_(False)


class CosmosDiT(torch.nn.Module):
    """net(x, c_noise, T5 context, fps) with the zero padding-mask channel appended last.
    See docs/MATH.md, Network inputs."""

    def __init__(self, model: CosmosTransformer3DModel, arch: DiTArchitecture):
        super().__init__()
        self.model = model
        self.arch = arch

    @property
    def dtype(self) -> torch.dtype:
        return self.model.proj_out.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.proj_out.weight.device

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, context: torch.Tensor, fps: float,
                condition_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, _, t, h, w = x.shape
        channels = [x] if condition_mask is None else [x, condition_mask.to(x.dtype)]
        channels.append(x.new_zeros(b, 1, t, h, w))  # padding mask: all zeros at inference
        out = self.model(torch.cat(channels, dim=1), timestep=c_noise, encoder_hidden_states=context,
                         fps=fps, return_dict=False)
        return out[0]


def load_dit(path: Path | str | DiTCheckpoint, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.bfloat16) -> CosmosDiT:
    ckpt = path if isinstance(path, DiTCheckpoint) else read_dit_checkpoint(path)
    if not ckpt.weights.is_file():
        raise FileNotFoundError(f"DiT weights not found: {ckpt.weights}")
    # mmap keeps the 14 GB / 28 GB files out of RAM until each tensor is cast and moved.
    state = unwrap_state_dict(torch.load(ckpt.weights, map_location="cpu", weights_only=True, mmap=True))
    return CosmosDiT(build_model(ckpt.architecture, state, device=device, dtype=dtype), ckpt.architecture)
