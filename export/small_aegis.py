"""Write a tiny LlamaGuard + Aegis LoRA adapter into an `aegis/` hub cache, built offline.
See docs/FORMATS.md, Guardrail folder and Aegis.

Layout, as the real Cosmos-1.0-Guardrail folder (a Hugging Face hub cache, not a model folder):
    aegis/models--meta-llama--LlamaGuard-7b/{refs/main, snapshots/<sha>/{config.json, generation_config.json,
        model.safetensors, tokenizer.json, tokenizer_config.json}}
    aegis/models--nvidia--Aegis-AI-Content-Safety-LlamaGuard-Defensive-1.0/{refs/main,
        snapshots/<sha>/{adapter_config.json, adapter_model.safetensors}}

Tokenizer: a byte-level BPE (`tokenizers`) trained on the Aegis prompt template plus a few words, so any text
tokenises; ids <unk>=0, <s>=1, </s>=2 as in Llama, and a post-processor that prepends <s> like Llama's, which the
guardrail must switch off (add_special_tokens=False).

Why it always answers "safe": every layer's o_proj and down_proj are zero (the LoRA B matrices of those two too), so
the residual stream at each position is just the token's embedding and the model is a bigram table. Embeddings put 1
on dimension 0 for every token except "safe", which has 1 on dimension 1 instead (other dimensions random); lm_head is
zero except row "safe" = e0 and row </s> = e1. After any token the "safe" logit is the only positive one; after
"safe" it is </s>. Greedy decoding therefore emits "safe" then stops, for any prompt, in two decoding steps. The
LoRA adapter is real (rank 2 on q/k/v/o/gate/up/down, non-zero B on q/k/v/gate/up) but cannot change the answer.

Usage: python -m export.small_aegis OUT_AEGIS_DIR [--seed N]
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from cosmos_triton.guardrail.common import AEGIS_ADAPTER_REPO, LLAMAGUARD_REPO
from export.offline_bpe import train_byte_level_bpe

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2 as in Llama
SAFE_TOKEN = "safe"
VOCAB_SIZE = 2048
HIDDEN = 16
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ZERO_OUTPUT = ("o_proj", "down_proj")  # their outputs join the residual stream: zero keeps it = embedding
EXTRA_CORPUS = """safe
unsafe
O1
O3
A robot arm picks up a red cube in a warehouse. A car drives along a wet city street at night.
"""


def fake_sha(repo_id: str) -> str:
    """A fixed 40-hex "commit" per repo, so the cache looks like one the hub wrote."""
    return hashlib.sha1(f"small:{repo_id}".encode()).hexdigest()


def snapshot_dir(cache_dir: Path, repo_id: str) -> Path:
    """Create `models--org--name/{refs/main, snapshots/<sha>/}` and return the snapshot folder."""
    repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    sha = fake_sha(repo_id)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(sha)  # the hub writes it without a newline
    snapshot = repo_dir / "snapshots" / sha
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def build_tokenizer():  # -> transformers.PreTrainedTokenizerFast
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    from cosmos_triton.guardrail.aegis import PROMPT_PREFIX, PROMPT_SUFFIX

    tok = train_byte_level_bpe([PROMPT_PREFIX, PROMPT_SUFFIX, EXTRA_CORPUS], VOCAB_SIZE, SPECIAL_TOKENS)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    if tok.token_to_id(SAFE_TOKEN) is None:
        raise RuntimeError(f"the small tokenizer has no single token {SAFE_TOKEN!r}")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", model_max_length=4096
    )


def build_model(vocab_size: int, safe_id: int, seed: int):  # -> transformers.LlamaForCausalLM
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=32,
        num_hidden_layers=1,  # each bf16 op costs milliseconds on a busy 2-core CPU: keep them few
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,  # as LlamaGuard-7b; the bigram trick needs lm_head apart from the embeddings
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = model.model.embed_tokens.weight
        embed[:, :2] = 0.0
        embed[:, 0] = 1.0
        embed[safe_id, 0], embed[safe_id, 1] = 0.0, 1.0
        head = model.lm_head.weight
        head.zero_()
        head[safe_id, 0] = 1.0
        head[config.eos_token_id, 1] = 1.0
    model.name_or_path = LLAMAGUARD_REPO  # recorded as base_model_name_or_path in the adapter config
    return model


def add_lora(model, seed: int):  # -> peft.PeftModel
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=2, lora_alpha=4, lora_dropout=0.0, target_modules=list(LORA_TARGETS), bias="none", task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name and not any(f".{target}." in name for target in ZERO_OUTPUT):
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))  # peft inits B to zero
    return peft_model


def _sort_target_modules(config_file: Path) -> None:
    """peft keeps target_modules as a set, so its saved order follows PYTHONHASHSEED; sort it for stable bytes."""
    config = json.loads(config_file.read_text())
    config["target_modules"] = sorted(config["target_modules"])
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))  # peft's own formatting


def write_small_aegis(aegis_dir: Path, seed: int = 0) -> Path:
    """Write both snapshots into the `aegis/` hub cache; byte-identical per seed. Returns aegis_dir."""
    aegis_dir = Path(aegis_dir)
    base_dir = snapshot_dir(aegis_dir, LLAMAGUARD_REPO)
    adapter_dir = snapshot_dir(aegis_dir, AEGIS_ADAPTER_REPO)
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer), tokenizer.convert_tokens_to_ids(SAFE_TOKEN), seed)
    model.save_pretrained(base_dir, safe_serialization=True)  # before peft wraps (and renames) the layers
    tokenizer.save_pretrained(base_dir)
    # save_embedding_layers=False: "auto" would look the base model up on the hub
    add_lora(model, seed).save_pretrained(adapter_dir, safe_serialization=True, save_embedding_layers=False)
    (adapter_dir / "README.md").unlink(missing_ok=True)  # peft's model-card template; the real tree has none
    _sort_target_modules(adapter_dir / "adapter_config.json")
    for weights in (base_dir / "model.safetensors", adapter_dir / "adapter_model.safetensors"):
        weights.chmod(0o644)  # written as 0600 via a temporary file; others load it too
    return aegis_dir


if __name__ == "__main__":
    from export.writer_cli import run_writer

    run_writer(write_small_aegis, __doc__)
