"""Write a tiny T5 encoder checkpoint in Hugging Face format, built offline (docs/MATH.md, Text encoder).

The model is `transformers.T5EncoderModel` with d_model = 1024 (the width the DiT cross-attention expects, as in
t5-11b) but one-digit everything else. The tokenizer is a T5 Unigram tokenizer (`T5TokenizerFast`) whose vocabulary
is derived from a small built-in English corpus: <pad>=0, </s>=1, <unk>=2, whole words, and single characters as a
fallback, so any ASCII prompt tokenises without <unk>. `</s>` is appended by the T5 post-processor.

Usage: python -m export.small_t5 OUT_DIR [--seed N]
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from pathlib import Path

import torch

D_MODEL = 1024  # must stay: the DiT's cross-attention input width
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in T5
SPACE = "\u2581"  # sentencepiece's word-boundary marker
CHAR_SCORE = -12.0  # below any whole word, so Viterbi prefers words and falls back to characters
SPACE_SCORE = -11.0

# The Cosmos-1.0 README example prompt and the default negative prompt, plus generic scene words.
CORPUS = """
A sleek, humanoid robot stands in a vast warehouse filled with neatly stacked cardboard boxes on industrial shelves.
The robot's metallic body gleams under the bright, even lighting, highlighting its futuristic design and intricate
joints. A glowing blue light emanates from its chest, adding a touch of advanced technology. The background is
dominated by rows of boxes, suggesting a highly organized storage system. The floor is lined with wooden pallets,
enhancing the industrial setting. The camera remains static, capturing the robot's poised stance amidst the orderly
environment, with a shallow depth of field that keeps the focus on the robot while subtly blurring the background
for a cinematic effect.
The video captures a series of frames showing ugly scenes, static with no motion, motion blur, over-saturation,
shaky footage, low resolution, grainy texture, pixelated images, poorly lit areas, underexposed and overexposed
scenes, poor color balance, washed out colors, choppy sequences, jerky movements, low frame rate, artifacting, color
banding, unnatural transitions, outdated special effects, fake elements, unconvincing visuals, poorly edited content,
jump cuts, visual noise, and flickering. Overall, the video is of poor quality.
A car drives along a wet city street at night while people walk past shops and trees under a cloudy sky.
A robotic arm picks up a red cube from a table and places it into a box next to a green bottle.
The first person view shows a kitchen, a hand opens the door, and the scene moves slowly to the left and right.
"""


def corpus_word_counts(text: str = CORPUS) -> Counter[str]:
    """Words (letters only, case kept) with their counts."""
    return Counter(re.findall(r"[A-Za-z]+", text))


def build_vocab(text: str = CORPUS) -> list[tuple[str, float]]:
    """T5-style Unigram vocabulary: specials, then whole words (log-frequency scores), then the character fallback."""
    counts = corpus_word_counts(text)
    total = sum(counts.values())
    words = {SPACE + w: math.log(c / total) for w, c in counts.items()}
    words.update({SPACE + w.lower(): math.log(c / total) for w, c in counts.items() if SPACE + w.lower() not in words})
    chars = {c: CHAR_SCORE for c in string.ascii_letters + string.digits + string.punctuation}
    chars.update({SPACE + c: CHAR_SCORE for c in string.ascii_letters + string.digits + string.punctuation})
    chars[SPACE] = SPACE_SCORE
    pieces = {**chars, **words}  # a one-letter word keeps its word score
    ordered = sorted(pieces.items(), key=lambda kv: (-kv[1], kv[0]))  # best first, ties by text: deterministic
    return [(tok, 0.0) for tok in SPECIAL_TOKENS] + [(p, round(s, 6)) for p, s in ordered]


def build_tokenizer(text: str = CORPUS):  # -> transformers.T5TokenizerFast
    from transformers import T5TokenizerFast

    # extra_ids=0: no sentinel tokens, so every id is below the model's vocab_size
    return T5TokenizerFast(vocab=build_vocab(text), extra_ids=0, model_max_length=512)


def build_config(vocab_size: int):  # -> transformers.T5Config
    from transformers import T5Config

    return T5Config(
        vocab_size=vocab_size,
        d_model=D_MODEL,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=0,
        num_heads=4,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.0,
        feed_forward_proj="relu",  # t5-11b (not v1.1) uses ReLU
        layer_norm_epsilon=1e-6,
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def write_small_t5(out_dir: Path, seed: int = 0) -> Path:
    """Write config.json, model.safetensors (fp32) and tokenizer files into out_dir; byte-identical per seed."""
    from transformers import T5EncoderModel

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = T5EncoderModel(build_config(len(tokenizer))).eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "model.safetensors").chmod(0o644)  # written as 0600 via a temporary file; others load it too
    return out_dir


if __name__ == "__main__":
    from export.writer_cli import run_writer

    run_writer(write_small_t5, __doc__)
