"""T5 text encoder wrapper (docs/MATH.md, Text encoder) and the small T5 writer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import T5EncoderModel, T5TokenizerFast

from cosmos_triton.models.text_encoder import T5TextEncoder
from export.small_t5 import write_small_t5

ROBOT = "A sleek, humanoid robot stands in a vast warehouse filled with neatly stacked cardboard boxes."
NEGATIVE = "The video captures a series of frames showing ugly scenes, static with no motion, motion blur."


@pytest.fixture(scope="session")
def t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_t5(tmp_path_factory.mktemp("small_t5"), seed=0)


@pytest.fixture(scope="module")
def t5(t5_dir: Path) -> T5TextEncoder:
    return T5TextEncoder(t5_dir, "cpu")


def _length(t5: T5TextEncoder, prompt: str) -> int:
    return int(t5.tokenize(prompt)[1].sum())


def test_shape_and_fp32(t5: T5TextEncoder) -> None:
    emb = t5.encode([ROBOT, NEGATIVE])
    assert emb.shape == (2, 512, 1024) and emb.dtype == torch.float32
    assert t5.model.dtype == torch.float32 and t5.embed_dim == 1024


def test_padded_positions_are_exactly_zero_and_real_ones_are_not(t5: T5TextEncoder) -> None:
    emb = t5.encode([ROBOT])[0]
    n = _length(t5, ROBOT)
    assert 5 < n < 512
    assert torch.count_nonzero(emb[n:]) == 0
    assert bool((emb[:n].abs().amax(dim=-1) > 0).all())


def test_length_counts_the_eos_token(t5: T5TextEncoder) -> None:
    ids, mask = t5.tokenize("a robot")
    assert ids[0, :4].tolist() == [*t5.tokenizer.convert_tokens_to_ids(["\u2581a", "\u2581robot"]), 1, 0]
    assert int(mask.sum()) == 3  # two words + </s>
    emb = t5.encode(["a robot"])[0]
    assert torch.count_nonzero(emb[2]) > 0 and torch.count_nonzero(emb[3:]) == 0  # the </s> row is kept


def test_equals_transformers_run_directly(t5: T5TextEncoder, t5_dir: Path) -> None:
    tokenizer = T5TokenizerFast.from_pretrained(t5_dir, local_files_only=True)
    model = T5EncoderModel.from_pretrained(t5_dir, local_files_only=True).eval()
    batch = tokenizer([ROBOT], return_tensors="pt", padding="max_length", max_length=512, truncation=True)
    with torch.no_grad():
        want = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    want[0, int(batch.attention_mask.sum()) :] = 0
    assert torch.equal(t5.encode([ROBOT]), want)


def test_prompts_are_encoded_separately(t5: T5TextEncoder) -> None:
    both = t5.encode([ROBOT, NEGATIVE])
    assert torch.equal(both[0], t5.encode([ROBOT])[0])
    assert torch.equal(both[1], t5.encode(NEGATIVE)[0])
    assert not torch.equal(both[0], both[1])


def test_each_prompt_is_a_batch_of_one(t5: T5TextEncoder) -> None:
    batches: list[int] = []
    handle = t5.model.register_forward_pre_hook(
        lambda _m, _a, kw: batches.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        t5.encode([ROBOT, NEGATIVE, ""])
    finally:
        handle.remove()
    assert batches == [1, 1, 1]


def test_long_prompts_are_truncated_to_512_with_eos(t5: T5TextEncoder) -> None:
    ids, mask = t5.tokenize(" ".join([ROBOT] * 60))
    assert int(mask.sum()) == 512 and ids[0, -1].item() == 1
    assert torch.count_nonzero(t5.encode([" ".join([ROBOT] * 60)])[0].abs().amax(dim=-1)) == 512


def test_small_t5_is_offline_t5_shaped(t5: T5TextEncoder) -> None:
    tok = t5.tokenizer
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok.unk_token_id not in t5.tokenize(ROBOT + " 0123 XYZ?!")[0][0].tolist()  # character fallback
    assert len(tok) == t5.model.config.vocab_size


def test_missing_folder_or_files_give_clear_errors(tmp_path: Path, t5_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        T5TextEncoder(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_bytes((t5_dir / "config.json").read_bytes())
    with pytest.raises(FileNotFoundError, match=f"{partial}.*weights.*tokenizer"):
        T5TextEncoder(partial)


def test_written_files_are_byte_identical_on_rerun(t5_dir: Path, tmp_path: Path) -> None:
    again = write_small_t5(tmp_path / "again", seed=0)
    names = sorted(p.name for p in t5_dir.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(names)
    for name in names:
        assert (again / name).read_bytes() == (t5_dir / name).read_bytes(), name
    different = write_small_t5(tmp_path / "seed1", seed=1)
    assert (different / "model.safetensors").read_bytes() != (t5_dir / "model.safetensors").read_bytes()
