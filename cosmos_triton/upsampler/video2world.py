"""Video2World prompt upsampler: Pixtral-12B as Cosmos-1.0 runs it, on HF classes.
See docs/FORMATS.md, Video2World upsampler.

The network is transformers' `LlavaForConditionalGeneration` (Mistral LM + `PixtralVisionModel` + MLP projector),
loaded from `Pixtral-12B/model.pt` in the key layout `convert_pixtral_ckpt.py` writes. What this module supplies:
- the key mapping, with the interleaved ("complex") -> half-split RoPE permutation of q/k for the 40-layer LM and
  the 24-layer ViT (docs/FORMATS.md, Interleaved RoPE);
- the original's input preparation: last frame, longer side <= 1024 with ceil, Pixtral preprocessing, the
  [IMG]/[IMG_BREAK]/[IMG_END] layout and the fixed instruction;
- the original's sampler (top-p 0.9 at temperature 0.01 with the exponential trick, max 400 new tokens, capped by
  max_seq_len 4300, stop at EOS), on HF's KV cache, with a seeded `torch.Generator`. No `clean_text`.

Hyperparameters: NVIDIA's code ignores `config.json` and uses a hard-coded Pixtral-12B table, reproduced in
`PixtralParams()`. The rule for `config.json` (read when present):
- `"vision_encoder": "pixtral-12b-vit"` (what the converter writes): the preset is used; any LM field present must
  equal it, otherwise loading fails rather than silently differing from the original;
- `"vision_encoder": {...}` (a dict, with the converter's ViT key names): a small test checkpoint; its LM fields and
  ViT fields override the preset field by field.
Unknown keys fail in both cases.

Files read from the checkpoint folder: `model.pt`, optional `config.json`, and HF tokenizer files (for the real model,
those of `mistral-community/pixtral-12b`, which NVIDIA loads from the hub). A tokenizer without a chat template gets
one that renders `<s>[INST]{content}[/INST]`, as NVIDIA's `PIXTRAL_CHAT_TEMPLATE` does for a single user turn.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "config.json"
VIT_PRESET_NAME = "pixtral-12b-vit"

# Verbatim from video2world_prompt_upsampler_inference.py (prepare_dialog); the user turn is "[IMG]\n" + this.
INSTRUCTION = (
    "Your task is to transform a given prompt into a refined and concise video description, no more than 150 words.\n"
    "Focus only on the content, no filler words or descriptions on the style. Never mention things outside the video."
)
IMAGE_TOKEN = "[IMG]"
IMAGE_BREAK_TOKEN = "[IMG_BREAK]"
IMAGE_END_TOKEN = "[IMG_END]"

# Generation, as world_generation_pipeline.py passes it and create_vlm_prompt_upsampler configures it.
TEMPERATURE = 0.01
TOP_P = 0.9
MAX_GEN_LEN = 400
MAX_SEQ_LEN = 4300

# Image preparation: resize_image(max_size=1024), then mistral-community/pixtral-12b's preprocessor_config.json.
MAX_IMAGE_SIZE = 1024
RESAMPLE = Image.Resampling.BICUBIC  # PIL's default for resize() (the original passes none) and resample=3
RESCALE_FACTOR = 1 / 255
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)

# Used only when the tokenizer brings no template; renders a single user turn exactly as the original's template.
FALLBACK_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{- '[INST]' + message['content'] + '[/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}{{- message['content'] + eos_token }}"
    "{%- else %}{{- raise_exception('Only user and assistant turns are supported') }}{%- endif %}"
    "{%- endfor %}"
)


class CheckpointKeyError(KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


# ---------------------------------------------------------------------------------------------- hyperparameters


@dataclass(frozen=True)
class VisionEncoderParams:
    """vit.py get_vit_config("pixtral-12b-vit"); field names as in convert_pixtral_ckpt.py's vit_config."""

    dim: int = 1024
    num_channels: int = 3
    image_size: int = 1024
    patch_size: int = 16
    rope_theta: float = 10000.0
    ffn_hidden_size: int = 4096
    n_layers: int = 24
    n_heads: int = 16
    n_kv_heads: int = 16
    norm_type: str = "rmsnorm"
    norm_eps: float = 1e-5
    image_token_id: int = 10

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


@dataclass(frozen=True)
class PixtralParams:
    """Pixtral-12B LM (model_config.py, family "pixtral"); field names as in the converter's config.json."""

    dim: int = 5120
    n_layers: int = 40
    head_dim: int = 128
    ffn_hidden_size: int = 14336
    n_heads: int = 32
    n_kv_heads: int = 8
    rope_theta: float = 1e9
    norm_eps: float = 1e-5
    vocab_size: int = 131072
    vision_encoder: VisionEncoderParams = field(default_factory=VisionEncoderParams)


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _check_hf_supported(vit: VisionEncoderParams) -> None:
    """PixtralVisionModel hard-codes what the original leaves configurable: refuse what it cannot represent."""
    if vit.n_kv_heads != vit.n_heads or vit.norm_type != "rmsnorm" or vit.norm_eps != 1e-5:
        raise ValueError(f"PixtralVisionModel needs n_kv_heads == n_heads, rmsnorm and eps 1e-5, got {vit}")
    if vit.head_dim % 4:
        raise ValueError(f"2-D RoPE needs a ViT head_dim divisible by 4, got {vit.head_dim}")


def pixtral_params_from_config(config: Mapping[str, Any]) -> PixtralParams:
    """Apply the config.json rule of the module docstring."""
    lm_fields = _field_names(PixtralParams) - {"vision_encoder"}
    unknown = sorted(set(config) - lm_fields - {"vision_encoder"})
    if unknown:
        raise ValueError(f"unknown Pixtral config.json key(s): {unknown}")
    vision = config.get("vision_encoder", VIT_PRESET_NAME)
    lm = {k: config[k] for k in lm_fields & set(config)}
    preset = PixtralParams()
    if isinstance(vision, str):
        if vision != VIT_PRESET_NAME:
            raise ValueError(f"unknown vision_encoder {vision!r}; expected {VIT_PRESET_NAME!r} or a dict")
        differing = sorted(k for k, v in lm.items() if v != getattr(preset, k))
        if differing:
            raise ValueError(
                f"config.json fields {differing} differ from the Pixtral-12B preset the original always uses"
            )
        return preset
    if not isinstance(vision, Mapping):
        raise ValueError(f"vision_encoder must be {VIT_PRESET_NAME!r} or a dict, got {type(vision).__name__}")
    unknown_vit = sorted(set(vision) - _field_names(VisionEncoderParams))
    if unknown_vit:
        raise ValueError(f"unknown vision_encoder config key(s): {unknown_vit}")
    vit = dataclasses.replace(VisionEncoderParams(), **vision)
    _check_hf_supported(vit)
    return dataclasses.replace(preset, **lm, vision_encoder=vit)


def load_params(checkpoint_dir: Path) -> PixtralParams:
    path = Path(checkpoint_dir) / CONFIG_FILE
    if not path.is_file():
        return PixtralParams()
    return pixtral_params_from_config(json.loads(path.read_text()))


def params_to_config(params: PixtralParams) -> dict[str, Any]:
    """The config.json that states these dims (the ViT as a dict), for small checkpoints."""
    config = dataclasses.asdict(params)
    config["vision_encoder"] = dataclasses.asdict(params.vision_encoder)
    return config


# ------------------------------------------------------------------------------------------------- key mapping


@dataclass(frozen=True)
class KeySpec:
    hf_key: str
    shape: tuple[int, ...]
    rope_heads: int | None = None  # q/k: number of heads for the interleaved -> half-split permutation


def _lm_specs(p: PixtralParams) -> dict[str, KeySpec]:
    lm, q_out, kv_out = "model.language_model.", p.n_heads * p.head_dim, p.n_kv_heads * p.head_dim
    specs = {
        "model.tok_embeddings.weight": KeySpec(lm + "embed_tokens.weight", (p.vocab_size, p.dim)),
        "model.norm.weight": KeySpec(lm + "norm.weight", (p.dim,)),
        "model.output.weight": KeySpec("lm_head.weight", (p.vocab_size, p.dim)),
    }
    for i in range(p.n_layers):
        src, dst = f"model.layers.{i}.", f"{lm}layers.{i}."
        specs |= {
            src + "attention.wq.weight": KeySpec(dst + "self_attn.q_proj.weight", (q_out, p.dim), p.n_heads),
            src + "attention.wk.weight": KeySpec(dst + "self_attn.k_proj.weight", (kv_out, p.dim), p.n_kv_heads),
            src + "attention.wv.weight": KeySpec(dst + "self_attn.v_proj.weight", (kv_out, p.dim)),
            src + "attention.wo.weight": KeySpec(dst + "self_attn.o_proj.weight", (p.dim, q_out)),
            src + "feed_forward.w1.weight": KeySpec(dst + "mlp.gate_proj.weight", (p.ffn_hidden_size, p.dim)),
            src + "feed_forward.w2.weight": KeySpec(dst + "mlp.down_proj.weight", (p.dim, p.ffn_hidden_size)),
            src + "feed_forward.w3.weight": KeySpec(dst + "mlp.up_proj.weight", (p.ffn_hidden_size, p.dim)),
            src + "attention_norm.weight": KeySpec(dst + "input_layernorm.weight", (p.dim,)),
            src + "ffn_norm.weight": KeySpec(dst + "post_attention_layernorm.weight", (p.dim,)),
        }
    return specs


def _projector_specs(p: PixtralParams) -> dict[str, KeySpec]:
    # MultimodalProjector("mlp") = Sequential(Linear, GELU, Linear): indices 0 and 2.
    src, dst, vit_dim = "mm_projector.projector.", "model.multi_modal_projector.", p.vision_encoder.dim
    return {
        src + "0.weight": KeySpec(dst + "linear_1.weight", (p.dim, vit_dim)),
        src + "0.bias": KeySpec(dst + "linear_1.bias", (p.dim,)),
        src + "2.weight": KeySpec(dst + "linear_2.weight", (p.dim, p.dim)),
        src + "2.bias": KeySpec(dst + "linear_2.bias", (p.dim,)),
    }


def _vit_specs(v: VisionEncoderParams) -> dict[str, KeySpec]:
    src, dst, d, f = "vision_encoder.", "model.vision_tower.", v.dim, v.ffn_hidden_size
    specs = {
        src + "patch_conv.weight": KeySpec(dst + "patch_conv.weight", (d, v.num_channels, v.patch_size, v.patch_size)),
        src + "ln_pre.weight": KeySpec(dst + "ln_pre.weight", (d,)),
    }
    for i in range(v.n_layers):
        s, t = f"{src}transformer.layers.{i}.", f"{dst}transformer.layers.{i}."
        specs |= {
            s + "attention.wq.weight": KeySpec(t + "attention.q_proj.weight", (d, d), v.n_heads),
            s + "attention.wk.weight": KeySpec(t + "attention.k_proj.weight", (d, d), v.n_heads),
            s + "attention.wv.weight": KeySpec(t + "attention.v_proj.weight", (d, d)),
            s + "attention.wo.weight": KeySpec(t + "attention.o_proj.weight", (d, d)),
            s + "feed_forward.w1.weight": KeySpec(t + "feed_forward.gate_proj.weight", (f, d)),
            s + "feed_forward.w2.weight": KeySpec(t + "feed_forward.down_proj.weight", (d, f)),
            s + "feed_forward.w3.weight": KeySpec(t + "feed_forward.up_proj.weight", (f, d)),
            s + "attention_norm.weight": KeySpec(t + "attention_norm.weight", (d,)),
            s + "ffn_norm.weight": KeySpec(t + "ffn_norm.weight", (d,)),
        }
    return specs


def original_key_specs(params: PixtralParams) -> dict[str, KeySpec]:
    """Every key of the flat converted state dict with its HF name and shape.
    See docs/FORMATS.md, Video2World upsampler."""
    return _lm_specs(params) | _projector_specs(params) | _vit_specs(params.vision_encoder)


def interleaved_to_half_split(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder q/k output rows so HF's half-split rotate_half equals the original's rotation of adjacent pairs.

    Within each head, rows (0,1), (2,3), ... are the (real, imaginary) pairs of the original; HF pairs row j with
    row j + head_dim/2. Same as permute_for_rope in transformers' convert_pixtral_weights_to_hf.py.
    """
    out_features, in_features = weight.shape
    head_dim = out_features // n_heads
    return weight.reshape(n_heads, head_dim // 2, 2, in_features).transpose(1, 2).reshape(out_features, in_features)


def flatten_checkpoint(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The flat converted state dict from model.pt: `obj["model"]` (or obj itself), where top-level
    `vision_encoder` / `mm_projector` dicts take precedence as in NVIDIA's loader (model.py L240-252)."""
    flat = dict(obj["model"]) if isinstance(obj.get("model"), Mapping) else dict(obj)
    for group in ("vision_encoder", "mm_projector"):
        sub = obj.get(group)
        if isinstance(sub, Mapping):
            flat = {k: v for k, v in flat.items() if not k.startswith(group + ".")}
            flat |= {f"{group}.{k}": v for k, v in sub.items()}
    return {k: v for k, v in flat.items() if not k.endswith("_extra_state")}  # TE FP8 metadata, dropped by the original


def _list(keys: list[str], limit: int = 8) -> str:
    return ", ".join(keys[:limit]) + (f" ... (+{len(keys) - limit})" if len(keys) > limit else "")


def check_keys(state_dict: Mapping[str, torch.Tensor], specs: Mapping[str, KeySpec]) -> None:
    """Strict: every expected key with its shape, nothing else; the error names the offending keys."""
    missing = sorted(set(specs) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(specs))
    wrong = sorted(k for k in set(specs) & set(state_dict) if tuple(state_dict[k].shape) != specs[k].shape)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_list(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_list(unexpected)}")
    if wrong:
        problems.append("wrong shape(s): " + _list([f"{k} {tuple(state_dict[k].shape)} != {specs[k].shape}"
                                                   for k in wrong]))
    if problems:
        raise CheckpointKeyError("Pixtral checkpoint does not match its config: " + "; ".join(problems))


def original_to_hf_llava(
    state_dict: Mapping[str, torch.Tensor], config: PixtralParams | Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """Converted Pixtral-12B keys (`model.*`, `mm_projector.*`, `vision_encoder.*`) -> LlavaForConditionalGeneration
    names, with LM and ViT q/k permuted from interleaved to half-split RoPE. Strict on keys and shapes."""
    params = config if isinstance(config, PixtralParams) else pixtral_params_from_config(config)
    specs = original_key_specs(params)
    check_keys(state_dict, specs)
    mapped = {}
    for key, spec in specs.items():
        value = state_dict[key]
        mapped[spec.hf_key] = value if spec.rope_heads is None else interleaved_to_half_split(value, spec.rope_heads)
    return mapped


# ------------------------------------------------------------------------------------------------------- model


def hf_llava_config(params: PixtralParams):  # -> transformers.LlavaConfig
    from transformers import LlavaConfig, MistralConfig, PixtralVisionConfig

    vit = params.vision_encoder
    text_config = MistralConfig(
        vocab_size=params.vocab_size,
        hidden_size=params.dim,
        intermediate_size=params.ffn_hidden_size,
        num_hidden_layers=params.n_layers,
        num_attention_heads=params.n_heads,
        num_key_value_heads=params.n_kv_heads,
        head_dim=params.head_dim,
        rms_norm_eps=params.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": params.rope_theta},  # no YaRN
        max_position_embeddings=MAX_SEQ_LEN,
        sliding_window=None,  # MistralConfig defaults to 4096, shorter than a 1024x1024 image prompt
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=11,
    )
    vision_config = PixtralVisionConfig(
        hidden_size=vit.dim,
        intermediate_size=vit.ffn_hidden_size,
        num_hidden_layers=vit.n_layers,
        num_attention_heads=vit.n_heads,
        num_channels=vit.num_channels,
        image_size=vit.image_size,
        patch_size=vit.patch_size,
        hidden_act="silu",  # the ViT MLP is w2(silu(w1 x) * w3 x); PixtralVisionConfig defaults to gelu
        rope_parameters={"rope_type": "axial", "rope_theta": vit.rope_theta},
    )
    return LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=vit.image_token_id,
        projector_hidden_act="gelu",  # nn.GELU(), the exact erf form
        vision_feature_layer=-1,  # the last block's output, no post-norm
        vision_feature_select_strategy="full",  # no class token to drop
        image_seq_length=1,
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
    )


def _rebuild_rotary_tables(model, device: torch.device) -> None:
    """The RoPE inverse-frequency buffers are non-persistent: built on meta, they never receive values."""
    from transformers.models.mistral.modeling_mistral import MistralRotaryEmbedding
    from transformers.models.pixtral.modeling_pixtral import PixtralVisionRotaryEmbedding

    inner = model.model
    inner.language_model.rotary_emb = MistralRotaryEmbedding(inner.language_model.config).to(device)
    inner.vision_tower.patch_positional_embedding = PixtralVisionRotaryEmbedding(inner.vision_tower.config).to(device)


def build_llava(params: PixtralParams, hf_state: Mapping[str, torch.Tensor], device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.bfloat16):  # -> transformers.LlavaForConditionalGeneration
    """Build on the meta device (no fp32 init of 12B parameters) and assign the weights cast to `dtype`."""
    from transformers import LlavaForConditionalGeneration

    device = torch.device(device)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(hf_llava_config(params))
    model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in hf_state.items()}, strict=True, assign=True)
    _rebuild_rotary_tables(model, device)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"tensors left on the meta device after loading: {_list(left)}")
    return model.eval().requires_grad_(False)


def load_tokenizer(tokenizer_dir: Path, image_token_id: int):  # -> transformers.PreTrainedTokenizerBase
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    if tokenizer.chat_template is None:  # as ImageTextTokenizer does with PIXTRAL_CHAT_TEMPLATE
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (IMAGE_TOKEN, IMAGE_BREAK_TOKEN, IMAGE_END_TOKEN)}
    if ids[IMAGE_TOKEN] != image_token_id or tokenizer.unk_token_id in ids.values() or None in ids.values():
        raise ValueError(f"tokenizer in {tokenizer_dir} lacks the Pixtral image tokens (got ids {ids}, "
                         f"[IMG] must be {image_token_id})")
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer in {tokenizer_dir} has no EOS token")
    return tokenizer


# -------------------------------------------------------------------------------------------- image and prompt


def last_frame(frames: np.ndarray) -> np.ndarray:
    """The original uses video_np[-1] for an .mp4 (an image is a one-frame video here)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ValueError(f"frames must be uint8 [T, H, W, 3] with T >= 1, got {frames.dtype} {frames.shape}")
    return np.ascontiguousarray(frames[-1])  # PIL needs contiguous rows


def resized_size(width: int, height: int, max_size: int = MAX_IMAGE_SIZE) -> tuple[int, int]:
    """resize_image(): scale so the longer side fits max_size, rounding the scaled dims up; never upscale."""
    ratio = max(width / max_size, height / max_size)
    if ratio <= 1:
        return width, height
    return math.ceil(width / ratio), math.ceil(height / ratio)


def resize_image(image: Image.Image, max_size: int = MAX_IMAGE_SIZE) -> Image.Image:
    size = resized_size(*image.size, max_size=max_size)
    return image if size == image.size else image.resize(size, RESAMPLE)


def pixtral_pixel_values(image: Image.Image, patch_size: int) -> np.ndarray:
    """PixtralImageProcessor at <= 1024: bicubic resize up to whole patches, x/255, CLIP mean/std -> [1, 3, H, W]."""
    width, height = image.size
    target = (math.ceil(width / patch_size) * patch_size, math.ceil(height / patch_size) * patch_size)
    image = image.convert("RGB")
    if target != image.size:
        image = image.resize(target, RESAMPLE)
    pixels = (np.asarray(image).astype(np.float64) * RESCALE_FACTOR).astype(np.float32)  # HF rescale()
    pixels = (pixels - np.array(IMAGE_MEAN, np.float32)) / np.array(IMAGE_STD, np.float32)
    return pixels.transpose(2, 0, 1)[None]


def image_token_text(height: int, width: int, patch_size: int) -> str:
    """Rows of [IMG] per patch column, each closed by [IMG_BREAK]; the very last token becomes [IMG_END]."""
    row = IMAGE_TOKEN * (width // patch_size) + IMAGE_BREAK_TOKEN
    return (row * (height // patch_size))[: -len(IMAGE_BREAK_TOKEN)] + IMAGE_END_TOKEN


def render_prompt(tokenizer) -> str:
    dialog = [{"role": "user", "content": IMAGE_TOKEN + "\n" + INSTRUCTION}]
    return tokenizer.apply_chat_template(dialog, tokenize=False, add_generation_prompt=True)


# ----------------------------------------------------------------------------------------------------- sampling


def sample_top_p(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """utils/sampling.py sample_top_p for logits [B, V]: nucleus mask on the sorted softmax, renormalise, then
    argmax(p / Exp(1)) (a multinomial draw). Runs in the logits' dtype (bf16), as the original."""
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    outside = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p
    sorted_probs = sorted_probs.masked_fill(outside, 0.0)
    sorted_probs = sorted_probs / sorted_probs.sum(dim=-1, keepdim=True)
    noise = torch.empty_like(sorted_probs).exponential_(1.0, generator=generator)
    return order.gather(-1, torch.argmax(sorted_probs / noise, dim=-1, keepdim=True))


# ---------------------------------------------------------------------------------------------------- upsampler


@dataclass
class PreparedInputs:
    input_ids: torch.Tensor  # [1, L]
    pixel_values: torch.Tensor  # [1, 3, H, W] float32
    image_sizes: torch.Tensor  # [1, 2] (H, W)


class Video2WorldPromptUpsampler:
    """Pixtral-12B from a `Pixtral-12B/` folder: `upsample(frames, seed)` describes the last frame."""

    def __init__(self, checkpoint_dir: Path | str, device: str | torch.device = "cpu"):
        self.checkpoint_dir = Path(checkpoint_dir)
        self.device = torch.device(device)
        self.params = load_params(self.checkpoint_dir)
        weights = self.checkpoint_dir / WEIGHTS_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"Pixtral weights not found: {weights}")
        # mmap keeps the ~25 GB file out of RAM until each tensor is cast and moved
        raw = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
        hf_state = original_to_hf_llava(flatten_checkpoint(raw), self.params)
        self.model = build_llava(self.params, hf_state, self.device)
        self.tokenizer = load_tokenizer(self.checkpoint_dir, self.params.vision_encoder.image_token_id)
        self.stop_ids = {self.tokenizer.eos_token_id}

    def prepare(self, frames: np.ndarray) -> PreparedInputs:
        """The original's dialog for the last frame: resized image, pixel values and expanded prompt ids."""
        patch = self.params.vision_encoder.patch_size
        image = resize_image(Image.fromarray(last_frame(frames)))
        pixels = pixtral_pixel_values(image, patch)
        height, width = pixels.shape[-2:]
        text = render_prompt(self.tokenizer).replace(IMAGE_TOKEN, image_token_text(height, width, patch), 1)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        n_image = sum(i == self.params.vision_encoder.image_token_id for i in ids)
        if n_image != (height // patch) * (width // patch):
            raise ValueError(f"prompt has {n_image} [IMG] tokens for a {height}x{width} image")
        return PreparedInputs(
            input_ids=torch.tensor([ids], dtype=torch.long, device=self.device),
            pixel_values=torch.from_numpy(pixels).to(self.device),
            image_sizes=torch.tensor([[height, width]], device=self.device),
        )

    @torch.inference_mode()
    def generate_ids(self, inputs: PreparedInputs, seed: int) -> list[int]:
        """Prefill with the image, then one token per step on HF's KV cache; EOS ends and is not returned.

        The original never checks the prefill's token against EOS (decode_n_tokens only checks later ones); here an
        EOS ends generation at any step, which differs only when the very first token is EOS.
        """
        prompt_len = inputs.input_ids.shape[1]
        max_new = min(MAX_GEN_LEN, MAX_SEQ_LEN - prompt_len)  # the original truncates max_gen_len the same way
        if max_new <= 0:
            raise ValueError(f"prompt of {prompt_len} tokens leaves no room within max_seq_len {MAX_SEQ_LEN}")
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        out = self.model(input_ids=inputs.input_ids, pixel_values=inputs.pixel_values,
                         image_sizes=inputs.image_sizes, use_cache=True, logits_to_keep=1)
        tokens: list[int] = []
        while True:
            token = sample_top_p(out.logits[:, -1], TEMPERATURE, TOP_P, generator)
            if int(token) in self.stop_ids:
                break
            tokens.append(int(token))
            if len(tokens) == max_new:
                break
            out = self.model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
        return tokens

    def upsample(self, frames: np.ndarray, seed: int) -> str:
        """frames: uint8 [T, H, W, 3] (T = 1 for an image). Returns the raw decoded text, special tokens kept."""
        tokens = self.generate_ids(self.prepare(frames), seed)
        return self.tokenizer.decode(tokens, skip_special_tokens=False)
