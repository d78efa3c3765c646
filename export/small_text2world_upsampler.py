"""Write a tiny Text2World prompt upsampler in the original checkpoint layout, built offline.
See docs/FORMATS.md, Text2World upsampler.

<out_dir>/model.pt      bf16 tensors under the original Cosmos names (`tok_embeddings`, `layers.N.attention.wq`, ...),
                        q/k in the original interleaved (complex-pair) RoPE layout
<out_dir>/config.json   {"architecture": {...}}: our own key, which the loader uses instead of the NeMo-12B preset
<out_dir>/tokenizer.json, tokenizer_config.json, chat_template.jinja   (via `save_pretrained`)

Tokenizer: a byte-level BPE trained on a small built-in corpus, ids <unk>=0, <s>=1, </s>=2, [INST]=3, [/INST]=4 as
in Mistral's tokenizers, with a Mistral-style chat template: a single user turn renders `<s>[INST]{content}[/INST]`.

How it always answers `UPSAMPLED_PROMPT`: every layer's `wo` and `w2` are zero, so attention and MLP add nothing to
the residual stream and the logits depend only on the current token's embedding (a bigram table). The prompt always
ends with `[/INST]`; call the chain c0 = [/INST], c1..cn = the tokens of `UPSAMPLED_PROMPT` (all distinct, checked).
Token c_k's embedding is the unit vector e_k; every other token's embedding is random on the dimensions past the
chain. `output` is zero except row c_{k+1} = LOGIT_SCALE * e_k and row </s> = LOGIT_SCALE * e_n. After the final
RMSNorm (weight 1) the hidden state of c_k is sqrt(dim) * e_k, so c_{k+1} scores LOGIT_SCALE * sqrt(dim) and every
other token exactly 0; at temperature 0.01 its probability is exactly 1 in bf16, so every seed samples the chain:
n tokens then </s>. q/k/v/w1/w3 and the norms before them are seeded random and have no effect on the answer (the
mapping of those tensors is checked against a reference forward pass in the tests instead).

Usage: python -m export.small_text2world_upsampler OUT_DIR [--seed N]
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cosmos_triton.upsampler.text2world import (
    ARCHITECTURE_KEY,
    CONFIG_JSON,
    PROMPT_TEMPLATE,
    WEIGHTS,
    MistralArchitecture,
    original_key_shapes,
)
from export.offline_bpe import train_byte_level_bpe

UPSAMPLED_PROMPT = "A calm river winds through a quiet valley at sunrise, soft light shimmering on still water."
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]")  # ids 0..4 as in Mistral's tokenizers
VOCAB_SIZE = 512
SMALL_ARCH = MistralArchitecture(
    n_layers=2, dim=64, n_heads=4, n_kv_heads=2, head_dim=16, ffn_hidden_size=96,
    norm_eps=1e-5, rope_theta=1e6, vocab_size=VOCAB_SIZE,
)  # fmt: skip  # head_dim * n_heads != dim and GQA, as in NeMo-12B
LOGIT_SCALE = 2.0  # * sqrt(64) = a 16-logit margin, 1600 after the 0.01 temperature
CORPUS = (
    PROMPT_TEMPLATE.format(prompt="A robot arm picks up a red cube in a warehouse.")
    + "\nA car drives along a wet city street at night while people walk past shops and trees.\n"
    + (UPSAMPLED_PROMPT + "\n") * 8  # frequent enough that its words become whole tokens
)

# Mistral-NeMo-style template, written for this tokenizer: an optional system message goes in front of the last
# user turn, roles must alternate, assistant turns end with </s>; [/INST] itself is the generation prompt.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.last and system_message is defined %}"
    "{{- '[INST]' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}"
    "{%- else %}{{- '[INST]' + message['content'] + '[/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}{{- message['content'] + eos_token }}"
    "{%- else %}{{- raise_exception('Only user and assistant roles are supported') }}{%- endif %}"
    "{%- endfor %}"
)


def build_tokenizer():  # -> transformers.PreTrainedTokenizerFast
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = train_byte_level_bpe([CORPUS], VOCAB_SIZE, SPECIAL_TOKENS)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])  # like Mistral
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", model_max_length=1024,
        clean_up_tokenization_spaces=False, chat_template=CHAT_TEMPLATE,
    )  # fmt: skip


def answer_chain(tokenizer) -> list[int]:
    """[/INST] followed by the answer's tokens; the bigram construction needs them all distinct."""
    chain = [tokenizer.convert_tokens_to_ids("[/INST]"), *tokenizer.encode(UPSAMPLED_PROMPT, add_special_tokens=False)]
    if len(set(chain)) != len(chain) or tokenizer.eos_token_id in chain:
        raise RuntimeError(f"the answer's tokens repeat: {tokenizer.convert_ids_to_tokens(chain)}")
    if len(chain) > SMALL_ARCH.dim:
        raise RuntimeError(f"the answer needs {len(chain)} embedding dimensions, the model has {SMALL_ARCH.dim}")
    return chain


def small_state_dict(chain: list[int], eos_id: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Original-layout tensors (see the module doc for why this emits the chain)."""
    arch, n = SMALL_ARCH, len(chain)
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in sorted(original_key_shapes(arch).items()):
        if key.endswith(("attention.wo.weight", "feed_forward.w2.weight", "output.weight")):
            state[key] = torch.zeros(shape)  # zero outputs: the residual stream stays the embedding
        elif key == "norm.weight":
            state[key] = torch.ones(shape)
        elif len(shape) == 1:
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:  # random in the original layout directly: no HF model (and no inverse permutation) needed
            state[key] = torch.randn(shape, generator=gen) / shape[1] ** 0.5
    embed = state["tok_embeddings.weight"]
    embed[:, :n] = 0.0
    embed[chain] = torch.eye(n, arch.dim)
    output = state["output.weight"]
    for k, token in enumerate([*chain[1:], eos_id]):
        output[token, k] = LOGIT_SCALE
    return {k: v.to(torch.bfloat16) for k, v in state.items()}


def write_small_text2world_upsampler(out_dir: Path, seed: int = 0) -> Path:
    """Write model.pt, config.json and the tokenizer files into out_dir; byte-identical per seed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    if len(tokenizer) > VOCAB_SIZE:
        raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens, more than the model's {VOCAB_SIZE}")
    state = small_state_dict(answer_chain(tokenizer), tokenizer.eos_token_id, seed)
    torch.save(state, out_dir / WEIGHTS)
    config = {ARCHITECTURE_KEY: SMALL_ARCH.to_dict()}
    (out_dir / CONFIG_JSON).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(out_dir)
    return out_dir


if __name__ == "__main__":
    from export.writer_cli import run_writer

    run_writer(write_small_text2world_upsampler, __doc__)
