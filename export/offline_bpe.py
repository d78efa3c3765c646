"""A byte-level BPE tokenizer trained offline on a small built-in corpus: the small Llama, Mistral and Pixtral
checkpoints need a real `tokenizer.json` and nothing may be downloaded."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def train_byte_level_bpe(corpus: Iterable[str], vocab_size: int, special_tokens: Sequence[str]):  # -> Tokenizer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: no <unk> for any text
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return tok
