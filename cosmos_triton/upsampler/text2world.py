"""Cosmos-1.0-Prompt-Upsampler-12B-Text2World on `transformers.MistralForCausalLM`.
See docs/FORMATS.md, Text2World upsampler.

The checkpoint folder holds `model.pt` (Cosmos autoregressive key names, interleaved "complex" RoPE layout of q/k),
HF tokenizer files with the chat template, and a `config.json` that NVIDIA's code never reads.

Which hyperparameters: NVIDIA's loader ignores `config.json` and always builds Mistral-NeMo-12B, so the real
folder gets the `MISTRAL_NEMO_12B` preset whatever its `config.json` says. Only a `config.json` that carries our own
`"architecture"` object (Cosmos field names, written by `export/small_text2world_upsampler.py`) overrides the preset;
this is how the small test checkpoint states its tiny dims.

Generation follows NVIDIA's `AutoRegressiveModel.generate` + `sample_top_k` (temperature 0.01, no top-k/top-p):
the prefill token is always kept, later tokens stop at EOS (never appended), at most 512 new tokens and
`prompt + new <= 1024`. Attention, RoPE and the KV cache are HF's; only the sampling rule is ours.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

WEIGHTS = "model.pt"
CONFIG_JSON = "config.json"
ARCHITECTURE_KEY = "architecture"  # our own key; the real config.json has none, so the preset is used

PROMPT_TEMPLATE = "Upsample the short caption to a long caption: {prompt}"
TEMPERATURE = 0.01
MAX_GEN_LEN = 512
MAX_SEQ_LEN = 1024  # create_text_model_config(max_seq_len=1024): prompt + generated tokens
WORD_LIMIT_TO_SKIP_UPSAMPLER = 250  # CLI default of text2world.py

ORIGINAL_PREFIX = "model."  # stripped when present, as process_state_dict(prefix_to_remove="model.")
EXTRA_STATE = "_extra_state"  # TransformerEngine FP8 entries, dropped by the original loader


@dataclass(frozen=True)
class MistralArchitecture:
    """Hyperparameters in Cosmos `ModelConfig` field names (docs/FORMATS.md, Text2World upsampler)."""

    n_layers: int
    dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_hidden_size: int
    norm_eps: float
    rope_theta: float
    vocab_size: int

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MistralArchitecture:
        names = {f.name for f in fields(cls)}
        unknown, missing = sorted(set(d) - names), sorted(names - set(d))
        if unknown or missing:
            raise ValueError(f"bad upsampler architecture: unknown fields {unknown}, missing fields {missing}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def hf_config(self, dtype: torch.dtype = torch.bfloat16):  # -> transformers.MistralConfig
        from transformers import MistralConfig

        return MistralConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.dim,
            intermediate_size=self.ffn_hidden_size,
            num_hidden_layers=self.n_layers,
            num_attention_heads=self.n_heads,
            num_key_value_heads=self.n_kv_heads,
            head_dim=self.head_dim,  # 128 for NeMo although dim / n_heads = 160
            hidden_act="silu",
            max_position_embeddings=MAX_SEQ_LEN,  # no effect with default RoPE; the loop caps the length itself
            rms_norm_eps=self.norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},  # no YaRN (apply_yarn=False)
            sliding_window=None,
            tie_word_embeddings=False,  # separate `output` projection
            bos_token_id=1,
            eos_token_id=2,
            dtype=dtype,
        )


MISTRAL_NEMO_12B = MistralArchitecture(
    n_layers=40, dim=5120, n_heads=32, n_kv_heads=8, head_dim=128, ffn_hidden_size=14336,
    norm_eps=1e-5, rope_theta=1e6, vocab_size=131072,
)  # fmt: skip


def read_architecture(checkpoint_dir: Path) -> MistralArchitecture:
    """Our `"architecture"` object from config.json when present, else the NeMo-12B preset (see module doc)."""
    config_file = Path(checkpoint_dir) / CONFIG_JSON
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        if isinstance(config, dict) and isinstance(config.get(ARCHITECTURE_KEY), dict):
            return MistralArchitecture.from_dict(config[ARCHITECTURE_KEY])
    return MISTRAL_NEMO_12B


# -- checkpoint mapping -----------------------------------------------------------------------------------------

# Per-layer Cosmos name -> HF name under `model.layers.N.`.
_LAYER_KEYS = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_TOP_KEYS = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}  # fmt: skip


def original_key_shapes(arch: MistralArchitecture) -> dict[str, tuple[int, ...]]:
    """Every tensor the original strict load expects (docs/FORMATS.md, Text2World upsampler), with its shape."""
    d, q, kv, f = arch.dim, arch.n_heads * arch.head_dim, arch.n_kv_heads * arch.head_dim, arch.ffn_hidden_size
    per_layer = {
        "attention.wq.weight": (q, d), "attention.wk.weight": (kv, d), "attention.wv.weight": (kv, d),
        "attention.wo.weight": (d, q), "feed_forward.w1.weight": (f, d), "feed_forward.w3.weight": (f, d),
        "feed_forward.w2.weight": (d, f), "attention_norm.weight": (d,), "ffn_norm.weight": (d,),
    }  # fmt: skip
    shapes = {"tok_embeddings.weight": (arch.vocab_size, d), "norm.weight": (d,), "output.weight": (arch.vocab_size, d)}
    for i in range(arch.n_layers):
        shapes.update({f"layers.{i}.{name}": shape for name, shape in per_layer.items()})
    return shapes


def unwrap_checkpoint(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The four spellings the original accepts: `{"model": sd}` or bare, keys with or without `model.`."""
    state_dict = checkpoint.get("model", checkpoint)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if EXTRA_STATE in key:
            continue
        name = key[len(ORIGINAL_PREFIX) :] if key.startswith(ORIGINAL_PREFIX) else key
        if name in out:  # the original would silently keep the later one; two copies mean a broken file
            raise KeyError(f"upsampler checkpoint has {name!r} both with and without the {ORIGINAL_PREFIX!r} prefix")
        out[name] = value
    return out


def interleaved_to_half(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of each head reordered from complex pairs (2i, 2i+1) to HF rotate-half halves (i, i + head_dim/2)."""
    rows, cols = weight.shape
    return weight.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def half_to_interleaved(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of `interleaved_to_half`."""
    rows, cols = weight.shape
    return weight.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def original_to_hf_mistral(state_dict: dict[str, Any], config: MistralArchitecture) -> dict[str, torch.Tensor]:
    """Cosmos autoregressive state dict (any wrapper/prefix variant) -> `MistralForCausalLM` state dict.

    Strict like the original `load_state_dict(strict=True)`: every missing, unexpected or mis-shaped tensor is
    named in the error. q and k projections are permuted to HF's rotate-half layout (k with the KV head count).
    """
    sd = unwrap_checkpoint(state_dict)
    shapes = original_key_shapes(config)
    missing, unexpected = sorted(set(shapes) - set(sd)), sorted(set(sd) - set(shapes))
    if missing or unexpected:
        raise KeyError(f"upsampler checkpoint does not match the architecture: missing {missing[:8]}"
                       f"{' ...' if len(missing) > 8 else ''} ({len(missing)}), unexpected {unexpected[:8]}"
                       f"{' ...' if len(unexpected) > 8 else ''} ({len(unexpected)})")  # fmt: skip
    wrong = [f"{k}: {tuple(sd[k].shape)} != {s}" for k, s in shapes.items() if tuple(sd[k].shape) != s]
    if wrong:
        raise ValueError(f"upsampler checkpoint tensors with wrong shapes: {wrong[:8]}")

    out = {hf: sd[name] for name, hf in _TOP_KEYS.items()}
    for i in range(config.n_layers):
        for name, hf in _LAYER_KEYS.items():
            value = sd[f"layers.{i}.{name}"]
            if name == "attention.wq.weight":
                value = interleaved_to_half(value, config.n_heads)
            elif name == "attention.wk.weight":
                value = interleaved_to_half(value, config.n_kv_heads)
            out[f"model.layers.{i}.{hf}"] = value
    return out


def build_hf_model(
    hf_state_dict: dict[str, torch.Tensor],
    arch: MistralArchitecture,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
):  # -> transformers.MistralForCausalLM
    """Build on the meta device (no 24 GB random init) and assign the checkpoint tensors in place."""
    from transformers import MistralForCausalLM
    from transformers.models.mistral.modeling_mistral import MistralRotaryEmbedding

    config = arch.hf_config(dtype)
    with torch.device("meta"):
        model = MistralForCausalLM(config)
    tensors = {k: v.to(device=device, dtype=dtype) for k, v in hf_state_dict.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    # inv_freq is a non-persistent buffer, so it is still on meta: compute it for real (fp32, as HF does)
    model.model.rotary_emb = MistralRotaryEmbedding(config).to(device)
    left_on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left_on_meta:
        raise RuntimeError(f"tensors not loaded: {left_on_meta}")
    return model.eval()


# -- text -------------------------------------------------------------------------------------------------------

_SHORT_BOLD = re.compile(r"(- \*\*)(.*?)(\*\*)")
_CLEAN_PREFIXES = ("Caption:", "#####", "####", "- ", "* ", ",")
_CLEAN_STRIP = ' -,*:"\'"“”'  # the original's set, with its duplicated double quote


def _drop_short_bold(match: re.Match[str]) -> str:
    return match.group(0) if len(re.findall(r"\w+", match.group(2))) >= 10 else ""


def clean_text(text: str) -> str:
    """The original `clean_text`, step for step."""
    text = text.replace("\n", " ").replace("\r", " ")
    text = _SHORT_BOLD.sub(_drop_short_bold, text)  # `- **Heading**` markers under 10 words go
    for prefix in _CLEAN_PREFIXES:  # no break: each prefix is tried in turn on what the previous ones left
        if text.startswith(prefix):
            text = text[len(prefix) :].lstrip()
    text = " ".join(text.split())
    return text.strip(_CLEAN_STRIP)


def word_count_exceeds(prompt: str, limit: int = WORD_LIMIT_TO_SKIP_UPSAMPLER) -> bool:
    """The pipeline's skip rule: prompts of more than `limit` whitespace-separated words are not upsampled."""
    return len(prompt.split()) > limit


# -- sampling ---------------------------------------------------------------------------------------------------


def sample_top_k(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """NVIDIA's `sample_top_k` with top_k=None on the last position: [batch, seq, vocab] -> [batch, 1].

    Kept in the logits' dtype (bf16, as the original); the multinomial draw is argmax(p / Exponential(1)).
    """
    last = logits[:, -1, :]
    if temperature == 0.0:
        return torch.argmax(last, dim=-1, keepdim=True)
    probs = torch.softmax(last / max(temperature, 1e-5), dim=-1)
    noise = torch.empty_like(probs).exponential_(1, generator=generator)
    return torch.argmax(probs / noise, dim=-1, keepdim=True)


class Text2WorldPromptUpsampler:
    """`Text2WorldPromptUpsampler(checkpoint_dir).upsample(prompt, seed)` -> the cleaned long caption."""

    def __init__(self, checkpoint_dir: Path, device: str | torch.device = "cpu") -> None:
        from transformers import AutoTokenizer

        checkpoint_dir = Path(checkpoint_dir)
        self.device = torch.device(device)
        self.arch = read_architecture(checkpoint_dir)
        checkpoint = torch.load(checkpoint_dir / WEIGHTS, map_location="cpu", mmap=True, weights_only=True)
        self.model = build_hf_model(original_to_hf_mistral(checkpoint, self.arch), self.arch, torch.bfloat16, device)
        del checkpoint
        # The original: AutoTokenizer.from_pretrained(<checkpoint dir>, use_fast=True), stop token = EOS only
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir, use_fast=True, local_files_only=True)
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"the tokenizer in {checkpoint_dir} has no EOS token")
        if len(self.tokenizer) > self.arch.vocab_size:
            raise ValueError(f"tokenizer has {len(self.tokenizer)} tokens, the model only {self.arch.vocab_size}")

    def prompt_ids(self, prompt: str) -> list[int]:
        dialog = [{"role": "user", "content": PROMPT_TEMPLATE.format(prompt=prompt)}]
        # tokenize=True encodes the rendered text without adding special tokens: the template writes <s> itself
        return list(self.tokenizer.apply_chat_template(dialog, add_generation_prompt=True, return_dict=False))

    @torch.inference_mode()
    def generate_ids(self, prompt_ids: list[int], seed: int, temperature: float = TEMPERATURE) -> list[int]:
        """New token ids, as `AutoRegressiveModel.generate`: the prefill token is kept unconditionally, each later
        one is checked against EOS before it is appended."""
        prompt_len = len(prompt_ids)
        max_gen_len = min(MAX_GEN_LEN, MAX_SEQ_LEN - prompt_len)
        if max_gen_len < 1:  # the original fails writing past its 1024-token buffer
            raise ValueError(f"prompt of {prompt_len} tokens leaves no room under max_seq_len={MAX_SEQ_LEN}")
        generator = torch.Generator(device=self.device).manual_seed(seed)
        eos = self.tokenizer.eos_token_id
        input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
        out = self.model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
        token = sample_top_k(out.logits, temperature, generator)
        generated = [int(token)]
        for _ in range(max_gen_len - 1):
            out = self.model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
            token = sample_top_k(out.logits, temperature, generator)
            if int(token) == eos:
                break
            generated.append(int(token))
        return generated

    def upsample(self, prompt: str, seed: int) -> str:
        ids = self.generate_ids(self.prompt_ids(prompt), seed)
        return clean_text(str(self.tokenizer.decode(ids, skip_special_tokens=False)))
