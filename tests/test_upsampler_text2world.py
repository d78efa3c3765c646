"""Text2World upsampler: key mapping + RoPE permutation, generation rules, clean_text and the small checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cosmos_triton.upsampler.text2world import (
    MISTRAL_NEMO_12B,
    MistralArchitecture,
    Text2WorldPromptUpsampler,
    build_hf_model,
    clean_text,
    half_to_interleaved,
    interleaved_to_half,
    original_key_shapes,
    original_to_hf_mistral,
    read_architecture,
    sample_top_k,
    word_count_exceeds,
)
from export.small_text2world_upsampler import (
    SMALL_ARCH,
    UPSAMPLED_PROMPT,
    answer_chain,
    write_small_text2world_upsampler,
)

TINY = MistralArchitecture(
    n_layers=2, dim=24, n_heads=4, n_kv_heads=2, head_dim=8, ffn_hidden_size=40,
    norm_eps=1e-5, rope_theta=1e6, vocab_size=50,
)  # fmt: skip


def random_original(arch: MistralArchitecture, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        k: (1.0 + 0.1 * torch.randn(s, generator=gen)) if len(s) == 1 else torch.randn(s, generator=gen) / s[1] ** 0.5
        for k, s in original_key_shapes(arch).items()
    }


# -- independent implementation of the ORIGINAL's interleaved (complex) RoPE ------------------------------------------


def original_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """x [T, H, hd]: adjacent pairs are complex numbers, multiplied by e^{i pos theta^(-2j/hd)}."""
    hd = x.shape[-1]
    freqs = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    rot = torch.polar(torch.ones(len(positions), hd // 2, dtype=torch.float64), positions[:, None].double() * freqs)
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], hd // 2, 2).contiguous())
    return torch.view_as_real(xc * rot[:, None, :]).flatten(-2)


def original_scores(wq, wk, x, positions, arch) -> torch.Tensor:
    """[H, T, T] q·k with the original layout and rotation; GQA: q head h reads kv head h // n_rep."""
    t = len(positions)
    q = original_rope((x @ wq.T).view(t, arch.n_heads, arch.head_dim), positions, arch.rope_theta)
    k = original_rope((x @ wk.T).view(t, arch.n_kv_heads, arch.head_dim), positions, arch.rope_theta)
    k = k.repeat_interleave(arch.n_heads // arch.n_kv_heads, dim=1)
    return torch.einsum("ihd,jhd->hij", q, k)


def hf_scores(q_proj, k_proj, x, positions, arch) -> torch.Tensor:
    from transformers.models.mistral.modeling_mistral import MistralRotaryEmbedding, apply_rotary_pos_emb, repeat_kv

    t = len(positions)
    q = (x @ q_proj.T).view(1, t, arch.n_heads, arch.head_dim).transpose(1, 2)
    k = (x @ k_proj.T).view(1, t, arch.n_kv_heads, arch.head_dim).transpose(1, 2)
    cos, sin = MistralRotaryEmbedding(arch.hf_config(torch.float32))(x, positions[None])
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    k = repeat_kv(k, arch.n_heads // arch.n_kv_heads)
    return torch.einsum("hid,hjd->hij", q[0].double(), k[0].double())


def test_permutation_gives_the_original_attention_scores() -> None:
    original = random_original(TINY, seed=1)
    hf = original_to_hf_mistral(original, TINY)
    x = torch.randn(5, TINY.dim, generator=torch.Generator().manual_seed(2))
    positions = torch.tensor([0, 1, 7, 300, 1023])
    for i in range(TINY.n_layers):
        wq, wk = original[f"layers.{i}.attention.wq.weight"], original[f"layers.{i}.attention.wk.weight"]
        expected = original_scores(wq, wk, x, positions, TINY)
        got = hf_scores(hf[f"model.layers.{i}.self_attn.q_proj.weight"],
                        hf[f"model.layers.{i}.self_attn.k_proj.weight"], x, positions, TINY)  # fmt: skip
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        # the check has teeth: HF's rotation on the unpermuted weights is wrong
        assert not torch.allclose(hf_scores(wq, wk, x, positions, TINY), expected, atol=1e-2)


def test_half_to_interleaved_inverts() -> None:
    w = torch.randn(4 * 8, 24)
    assert torch.equal(half_to_interleaved(interleaved_to_half(w, 4), 4), w)
    # head 0 of the HF layout starts with the real parts (original rows 0, 2, 4, 6), then the imaginary ones
    assert torch.equal(interleaved_to_half(w, 4)[:8], w[[0, 2, 4, 6, 1, 3, 5, 7]])


def reference_forward(sd: dict[str, torch.Tensor], tokens: torch.Tensor, arch: MistralArchitecture) -> torch.Tensor:
    """The original Transformer in a few lines (fp64): RMSNorm, interleaved RoPE, GQA by repeat_interleave,
    causal SDPA, w2(silu(w1 x) * w3 x), separate output projection."""
    sd = {k: v.double() for k, v in sd.items()}

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + arch.norm_eps) * w

    t, hd = len(tokens), arch.head_dim
    pos = torch.arange(t)
    h = sd["tok_embeddings.weight"][tokens]
    for i in range(arch.n_layers):
        p = f"layers.{i}."
        x = rms(h, sd[p + "attention_norm.weight"])
        q = original_rope((x @ sd[p + "attention.wq.weight"].T).view(t, -1, hd), pos, arch.rope_theta)
        k = original_rope((x @ sd[p + "attention.wk.weight"].T).view(t, -1, hd), pos, arch.rope_theta)
        v = (x @ sd[p + "attention.wv.weight"].T).view(t, -1, hd)
        rep = arch.n_heads // arch.n_kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True)
        h = h + att.transpose(0, 1).reshape(t, -1) @ sd[p + "attention.wo.weight"].T
        x = rms(h, sd[p + "ffn_norm.weight"])
        ffn = F.silu(x @ sd[p + "feed_forward.w1.weight"].T) * (x @ sd[p + "feed_forward.w3.weight"].T)
        h = h + ffn @ sd[p + "feed_forward.w2.weight"].T
    return rms(h, sd["norm.weight"]) @ sd["output.weight"].T


def test_converted_model_matches_reference_forward() -> None:
    original = random_original(TINY, seed=3)
    model = build_hf_model(original_to_hf_mistral(original, TINY), TINY, dtype=torch.float32)
    tokens = torch.tensor([1, 3, 17, 42, 8, 4, 33, 9])
    with torch.no_grad():
        got = model(input_ids=tokens[None]).logits[0]
    torch.testing.assert_close(got.double(), reference_forward(original, tokens, TINY), rtol=1e-4, atol=1e-4)


# -- key handling ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrapped", [False, True])
@pytest.mark.parametrize("prefixed", [False, True])
def test_wrapper_and_prefix_variants(wrapped: bool, prefixed: bool) -> None:
    original = random_original(TINY)
    sd = {("model." + k if prefixed else k): v for k, v in original.items()}
    sd["layers.0.attention._extra_state"] = torch.zeros(1)  # TransformerEngine leftovers are dropped
    hf = original_to_hf_mistral({"model": sd} if wrapped else sd, TINY)
    reference = original_to_hf_mistral(original, TINY)
    assert hf.keys() == reference.keys() and all(torch.equal(hf[k], reference[k]) for k in hf)
    assert hf["lm_head.weight"] is original["output.weight"]  # renamed, not copied
    assert torch.equal(hf["model.layers.1.mlp.gate_proj.weight"], original["layers.1.feed_forward.w1.weight"])


def test_missing_key_fails_loudly() -> None:
    sd = random_original(TINY)
    del sd["layers.1.feed_forward.w3.weight"]
    with pytest.raises(KeyError, match=r"missing \['layers\.1\.feed_forward\.w3\.weight'\]"):
        original_to_hf_mistral(sd, TINY)


def test_renamed_key_fails_loudly() -> None:
    sd = random_original(TINY)
    sd["layers.0.attention.wqkv.weight"] = sd.pop("layers.0.attention.wq.weight")
    with pytest.raises(KeyError, match=r"wq\.weight.*unexpected \['layers\.0\.attention\.wqkv\.weight'\]"):
        original_to_hf_mistral(sd, TINY)


def test_wrong_shape_and_duplicate_prefix_fail() -> None:
    sd = random_original(TINY)
    sd["layers.0.attention.wk.weight"] = torch.zeros(TINY.n_heads * TINY.head_dim, TINY.dim)  # MHA-sized k
    with pytest.raises(ValueError, match=r"layers\.0\.attention\.wk\.weight"):
        original_to_hf_mistral(sd, TINY)
    sd = random_original(TINY)
    sd["model.norm.weight"] = sd["norm.weight"]
    with pytest.raises(KeyError, match=r"norm\.weight"):
        original_to_hf_mistral(sd, TINY)


def test_nemo_preset_key_count() -> None:
    # 9 per layer x 40 + 3 (docs/FORMATS.md, Text2World upsampler)
    assert len(original_key_shapes(MISTRAL_NEMO_12B)) == 363
    assert original_key_shapes(MISTRAL_NEMO_12B)["layers.0.attention.wq.weight"] == (4096, 5120)


def test_architecture_from_config_json_only_with_our_key(tmp_path: Path) -> None:
    assert read_architecture(tmp_path) == MISTRAL_NEMO_12B  # no config.json
    (tmp_path / "config.json").write_text(json.dumps({"dim": 64, "n_layers": 2, "architectures": ["X"]}))
    assert read_architecture(tmp_path) == MISTRAL_NEMO_12B  # the original never reads it either
    (tmp_path / "config.json").write_text(json.dumps({"architecture": TINY.to_dict()}))
    assert read_architecture(tmp_path) == TINY


# -- rules and text ----------------------------------------------------------------------------------------------


def test_word_limit() -> None:
    assert not word_count_exceeds(" ".join(["word"] * 250))
    assert word_count_exceeds(" ".join(["word"] * 251))
    assert not word_count_exceeds("a\n b\t\tc  ", limit=3)  # str.split(): any whitespace run
    assert word_count_exceeds("a b c d", limit=3)


TEN_WORDS = "one two three four five six seven eight nine ten"


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("line one\nline two\r\nthree\rfour", "line one line two three four"),  # newlines, then collapse
        ("A scene - **Setting:** a dock at dawn.", "A scene a dock at dawn."),  # short bold span removed
        (f"Intro - **{TEN_WORDS}** end", f"Intro - **{TEN_WORDS}** end"),  # 10 words: kept
        ("Intro - **a b c d e f g h i** end", "Intro end"),  # 9 words: removed
        ("x - **A** y - **B c** z", "x y z"),  # non-greedy, every span
        ("Caption: A red car.", "A red car."),
        ("##### A red car.", "A red car."),
        ("#### A red car.", "A red car."),
        ("- A red car.", "A red car."),
        ("* A red car.", "A red car."),
        (", A red car.", "A red car."),
        ("Caption: ##### - * , A red car.", "A red car."),  # no break: every prefix is tried in turn
        ("######A", "#A"),  # "#####" then "####" no longer matches; '#' is not in the strip set
        ("A Caption: stays", "A Caption: stays"),  # prefixes only at the start
        ("  a   b \t c  ", "a b c"),
        ('"\u201cA quiet lake.\u201d"', "A quiet lake."),  # straight and curly quotes
        ("'*-: A quiet lake. ,:*-'", "A quiet lake."),
        ("A quiet lake...", "A quiet lake..."),  # '.' is not stripped
    ],
)
def test_clean_text(raw: str, cleaned: str) -> None:
    assert clean_text(raw) == cleaned


def test_sample_top_k() -> None:
    logits = torch.tensor([[[0.0, 3.0, 1.0]]], dtype=torch.bfloat16)
    assert sample_top_k(logits, 0.0, torch.Generator()).item() == 1  # temperature 0: plain argmax
    flat = torch.zeros(1, 1, 64, dtype=torch.bfloat16)
    draws = [sample_top_k(flat, 1.0, torch.Generator().manual_seed(s)).item() for s in range(20)]
    assert len(set(draws)) > 1  # a real draw on ties, reproducible per seed
    assert draws == [sample_top_k(flat, 1.0, torch.Generator().manual_seed(s)).item() for s in range(20)]


# -- the small checkpoint through the real loader ----------------------------------------------------------------


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory) -> Path:
    return write_small_text2world_upsampler(tmp_path_factory.mktemp("t2w_upsampler"))


@pytest.fixture(scope="module")
def upsampler(small_dir: Path) -> Text2WorldPromptUpsampler:
    return Text2WorldPromptUpsampler(small_dir)


def test_small_checkpoint_files_are_original_layout(small_dir: Path) -> None:
    sd = torch.load(small_dir / "model.pt", weights_only=True)
    assert sd.keys() == original_key_shapes(SMALL_ARCH).keys()
    assert all(v.dtype == torch.bfloat16 for v in sd.values())
    assert read_architecture(small_dir) == SMALL_ARCH


def test_small_checkpoint_is_deterministic(small_dir: Path, tmp_path: Path) -> None:
    again = write_small_text2world_upsampler(tmp_path)
    names = sorted(p.name for p in small_dir.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    assert all((small_dir / n).read_bytes() == (again / n).read_bytes() for n in names)


def test_chat_template(upsampler: Text2WorldPromptUpsampler) -> None:
    ids = upsampler.prompt_ids("A dog is playing with a ball.")
    text = "<s>[INST]Upsample the short caption to a long caption: A dog is playing with a ball.[/INST]"
    assert upsampler.tokenizer.decode(ids, skip_special_tokens=False) == text
    assert ids[0] == upsampler.tokenizer.bos_token_id and ids.count(upsampler.tokenizer.bos_token_id) == 1


@pytest.mark.parametrize("seed", [0, 7, 2**32 - 1])
def test_small_upsample(upsampler: Text2WorldPromptUpsampler, seed: int) -> None:
    assert upsampler.upsample("A dog is playing with a ball.", seed=seed) == UPSAMPLED_PROMPT


def test_generation_stops_at_eos_and_caps_length(upsampler: Text2WorldPromptUpsampler) -> None:
    tokenizer = upsampler.tokenizer
    chain = answer_chain(tokenizer)
    ids = upsampler.generate_ids(upsampler.prompt_ids("A cat."), seed=0)
    assert ids == chain[1:]  # EOS ends it and is not returned
    filler = upsampler.prompt_ids("word " * 300)[:-1]
    long_prompt = [*(filler * 4)[: 1024 - 5], chain[0]]  # 1020 tokens ending in [/INST]: room for 4 new ones
    assert upsampler.generate_ids(long_prompt, seed=0) == chain[1:5]  # prompt + new <= 1024
    with pytest.raises(ValueError, match="max_seq_len"):
        upsampler.generate_ids([chain[0]] * 1024, seed=0)


def test_small_answer_passes_the_small_blocklist(tmp_path: Path) -> None:
    from cosmos_triton.guardrail.blocklist import Blocklist
    from export.small_blocklist import write_small_blocklist

    result = Blocklist(write_small_blocklist(tmp_path / "blocklist")).check(UPSAMPLED_PROMPT)
    assert result.safe, str(result)


def test_kv_cache_loop_matches_full_forward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With live attention (random weights, nothing zeroed) each cached step sees the right positions: its token is
    the best one of an uncached forward over the whole sequence (up to bf16 noise between the two paths)."""
    from cosmos_triton.upsampler import text2world
    from export.small_text2world_upsampler import VOCAB_SIZE, build_tokenizer

    arch = MistralArchitecture(**{**TINY.to_dict(), "vocab_size": VOCAB_SIZE})
    torch.save({k: v.to(torch.bfloat16) for k, v in random_original(arch, seed=5).items()}, tmp_path / "model.pt")
    (tmp_path / "config.json").write_text(json.dumps({"architecture": arch.to_dict()}))
    build_tokenizer().save_pretrained(tmp_path)
    monkeypatch.setattr(text2world, "MAX_GEN_LEN", 8)  # random weights rarely say </s>
    upsampler = Text2WorldPromptUpsampler(tmp_path)
    prompt = upsampler.prompt_ids("A dog is playing with a ball.")
    generated = upsampler.generate_ids(prompt, seed=0, temperature=0.0)
    assert 1 <= len(generated) <= 8
    with torch.no_grad():
        for i, token in enumerate(generated):
            logits = upsampler.model(input_ids=torch.tensor([prompt + generated[:i]])).logits[0, -1].float()
            assert logits[token] >= logits.max() - 0.05, (i, token, int(logits.argmax()))
