"""Small tokenizers trained offline with the `tokenizers` library, for the cross-tokenizer demo, examples and tests:
a byte-level BPE (GPT-2 style, "Ġ" marks a space) and a sentencepiece-style BPE ("▁" marks a space, byte fallback
pieces "<0xNN>" for bytes it has no piece for)."""

from __future__ import annotations

from typing import Any


def train_byte_level(text: str, size: int) -> Any:
    """A byte-level BPE of about ``size`` pieces trained on ``text`` (a `tokenizers.Tokenizer`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator([text], trainers.BpeTrainer(vocab_size=size,
                                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tokenizer


def train_sentencepiece_like(text: str, size: int) -> Any:
    """A sentencepiece-style BPE of about ``size`` pieces (256 of them the byte-fallback pieces) trained on ``text``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    tokenizer.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=size, special_tokens=[f"<0x{b:02X}>" for b in range(256)]))
    return with_decoder(tokenizer)


def with_decoder(tokenizer: Any) -> Any:
    """A sentencepiece-style tokenizer that decodes back to its text ("▁" to a space, "<0xNN>" pieces to their
    bytes), as Llama's does; tokenizers saved without one (the committed demo ones) get it when loaded."""
    from tokenizers import decoders, pre_tokenizers

    if tokenizer.decoder is None and isinstance(tokenizer.pre_tokenizer, pre_tokenizers.Metaspace):
        tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    return tokenizer


def train_tokenizer(text: str, scheme: str, size: int) -> Any:
    """A tokenizer of ``scheme`` ("byte_level" or "sentencepiece") and about ``size`` pieces, trained on ``text``."""
    trainers = {"byte_level": train_byte_level, "sentencepiece": train_sentencepiece_like}
    return trainers[scheme](text, size)


def load_tokenizer(path: Any) -> Any:
    """A tokenizer saved with ``tokenizer.save(path)`` (its JSON), as a Hugging Face fast tokenizer."""
    from tokenizers import Tokenizer

    return as_hugging_face(with_decoder(Tokenizer.from_file(str(path))))


def as_hugging_face(tokenizer: Any) -> Any:
    """The same tokenizer as a `transformers.PreTrainedTokenizerFast` (what `compare_texts` and capture take)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer)


def character_tokenizer(vocab: list[str]) -> Any:
    """A Hugging Face fast tokenizer with one id per character of ``vocab`` (the charlm demo's), so that text goes
    in and out of the demo character LMs as it does for any Hugging Face LM; unknown characters become id 0."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({ch: i for i, ch in enumerate(vocab)}, unk_token=vocab[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")  # every character
    tokenizer.decoder = decoders.Fuse()
    return as_hugging_face(tokenizer)
