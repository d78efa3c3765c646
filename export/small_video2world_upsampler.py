"""Write a tiny Pixtral prompt upsampler in the layout `convert_pixtral_ckpt.py` produces.
See docs/FORMATS.md, Video2World upsampler.

Files, as the real `Pixtral-12B/` folder plus the tokenizer the loader reads from it:
    model.pt        {"model": {model.*, mm_projector.*, vision_encoder.*}, "mm_projector": {...},
                     "vision_encoder": {...}} - the original renamed keys, q/k in the interleaved RoPE layout,
                     the ViT and projector tensors stored under both names (shared storage), bf16
    config.json     the converter's LM fields with tiny values, and `vision_encoder` as a dict of ViT fields
                    (the loader's rule for small checkpoints)
    tokenizer.json, tokenizer_config.json (+ chat template)   a byte-level BPE trained offline on the instruction
                    and the answer, with Pixtral's first special ids: <unk>=0 <s>=1 </s>=2 [INST]=3 [/INST]=4
                    ... [IMG]=10 <pad>=11 [IMG_BREAK]=12 [IMG_END]=13

Why it always answers SMALL_UPSAMPLED_PROMPT: every LM layer's o_proj (wo) and down_proj (w2) is zero, so the residual
stream at each position is the token's own embedding and the LM is a bigram table. The prompt always ends with
[/INST]; call the answer's tokens a_1..a_n (all distinct) and a_0 = [/INST]. Embedding row a_i is the unit vector
e_i; lm_head row a_{i+1} is 4 e_i and row </s> is 4 e_n, every other row is zero. After the final RMSNorm the
current token a_i scores 4*sqrt(dim) = 32 for a_{i+1} and 0 for everything else: at temperature 0.01 that is a
probability of 1 in bf16 whatever the seed, so the answer is emitted token by token, then EOS. The ViT, the
projector and the attention (GQA, head_dim != dim/heads) run on random weights but cannot change the answer.

Usage: python -m export.small_video2world_upsampler OUT_DIR [--seed N]
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import torch

from cosmos_triton.upsampler.video2world import (
    CONFIG_FILE,
    FALLBACK_CHAT_TEMPLATE,
    INSTRUCTION,
    WEIGHTS_FILE,
    PixtralParams,
    VisionEncoderParams,
    original_key_specs,
    params_to_config,
)
from export.offline_bpe import train_byte_level_bpe

SMALL_UPSAMPLED_PROMPT = "A red ball rolls slowly across a wooden floor."
PIXTRAL_SPECIAL_TOKENS = (  # tekken's first ids, so [IMG] is 10 as image_token_id says
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]",
)
PROMPT_END_TOKEN = "[/INST]"
BPE_VOCAB = 600
LOGIT = 4.0  # lm_head entry of each bigram step; after RMSNorm the winning logit is LOGIT * sqrt(dim)


def small_params(vocab_size: int) -> PixtralParams:
    vit = VisionEncoderParams(dim=32, ffn_hidden_size=64, n_layers=2, n_heads=2, n_kv_heads=2)
    # GQA (4 q heads on 2 kv heads) and head_dim 32 != dim/heads, as the real 32/8 heads of 128 on dim 5120
    return PixtralParams(dim=64, n_layers=2, head_dim=32, ffn_hidden_size=128, n_heads=4, n_kv_heads=2,
                         vocab_size=vocab_size, vision_encoder=vit)


def build_tokenizer():  # -> transformers.PreTrainedTokenizerFast
    from transformers import PreTrainedTokenizerFast

    tok = train_byte_level_bpe([INSTRUCTION, SMALL_UPSAMPLED_PROMPT] * 4, BPE_VOCAB, PIXTRAL_SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        model_max_length=131072, clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer


def answer_chain(tokenizer) -> list[int]:
    """[/INST], the answer's tokens, </s>: the bigram chain the LM is wired to follow."""
    answer = tokenizer.encode(SMALL_UPSAMPLED_PROMPT, add_special_tokens=False)
    chain = [tokenizer.convert_tokens_to_ids(PROMPT_END_TOKEN), *answer, tokenizer.eos_token_id]
    if len(set(chain)) != len(chain) or tokenizer.decode(answer) != SMALL_UPSAMPLED_PROMPT:
        raise RuntimeError(f"answer tokens must be distinct and round-trip: {tokenizer.convert_ids_to_tokens(chain)}")
    return chain


def random_state_dict(params: PixtralParams, seed: int) -> dict[str, torch.Tensor]:
    """Every converted key (model.*, mm_projector.*, vision_encoder.*) with seeded, fan-in scaled values."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, spec in sorted(original_key_specs(params).items()):
        if len(spec.shape) == 1:  # norm weights and projector biases
            base = 1.0 if key.endswith("norm.weight") else 0.0
            state[key] = base + 0.1 * torch.randn(spec.shape, generator=gen)
        else:
            fan_in = int(torch.tensor(spec.shape[1:]).prod())
            state[key] = torch.randn(spec.shape, generator=gen) / fan_in**0.5
    return state


def wire_bigram_answer(state: dict[str, torch.Tensor], params: PixtralParams, chain: list[int]) -> None:
    """Zero the LM's residual writers and lay the answer chain into embeddings and lm_head (module docstring)."""
    if len(chain) - 1 > params.dim:
        raise ValueError("the answer is longer than the LM width allows")
    for i in range(params.n_layers):
        state[f"model.layers.{i}.attention.wo.weight"].zero_()
        state[f"model.layers.{i}.feed_forward.w2.weight"].zero_()
    embed, head = state["model.tok_embeddings.weight"], state["model.output.weight"]
    head.zero_()
    for i, (current, following) in enumerate(itertools.pairwise(chain)):
        embed[current] = 0.0
        embed[current, i] = 1.0
        head[following, i] = LOGIT
    state["model.norm.weight"].fill_(1.0)


def converter_layout(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """convert_pixtral_ckpt.py's saved dict: the flat "model" dict plus the two groups again without prefix."""
    groups = {"vision_encoder": {}, "mm_projector": {}}
    for key, value in state.items():
        group = key.split(".", 1)[0]
        if group in groups:
            groups[group][key.split(".", 1)[1]] = value
    return {"model": state, **groups}


def write_small_video2world_upsampler(out_dir: Path, seed: int = 0) -> Path:
    """Write model.pt, config.json and the tokenizer into out_dir; byte-identical per seed. Returns out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    params = small_params(len(tokenizer))
    state = random_state_dict(params, seed)
    wire_bigram_answer(state, params, answer_chain(tokenizer))
    state = {k: v.to(torch.bfloat16) for k, v in state.items()}
    torch.save(converter_layout(state), out_dir / WEIGHTS_FILE)
    (out_dir / CONFIG_FILE).write_text(json.dumps(params_to_config(params)))  # the converter writes no indent
    tokenizer.save_pretrained(out_dir)
    return out_dir


if __name__ == "__main__":
    from export.writer_cli import run_writer

    run_writer(write_small_video2world_upsampler, __doc__)
