"""Demo data that ships with installed packages: scikit-learn's digits, and Python's own documentation text."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SPLIT_SEED = 0
N_TEST_DIGITS = 500
SEQ_LEN = 64


@dataclass
class Digits:
    """8×8 digit images [N, 1, 8, 8] in [0, 1] with labels [N], split once with a fixed seed."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: list[str]


def load_digits() -> Digits:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.from_numpy(np.random.default_rng(SPLIT_SEED).permutation(len(x)))
    test, train = order[:N_TEST_DIGITS], order[N_TEST_DIGITS:]
    return Digits(x[train], y[train], x[test], y[test], [str(c) for c in bunch.target_names])


def corpus_text(max_chars: int = 400_000) -> str:
    """English prose that ships with every CPython: the language reference topics behind ``help()`` (pydoc_data)."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key] for key in sorted(topics))
    return "".join(ch for ch in text if ch == "\n" or 32 <= ord(ch) < 127)[:max_chars]


def encode(text: str, vocab: list[str]) -> torch.Tensor:
    """Character ids [len(text)]; characters outside ``vocab`` map to id 0."""
    index = {ch: i for i, ch in enumerate(vocab)}
    return torch.tensor([index.get(ch, 0) for ch in text], dtype=torch.long)


def char_sequences(ids: torch.Tensor, n: int, seq_len: int = SEQ_LEN, seed: int = 0) -> torch.Tensor:
    """``n`` windows [n, seq_len] drawn from ``ids`` at seeded random offsets."""
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - seq_len, (n,), generator=generator)
    return torch.stack([ids[s : s + seq_len] for s in starts.tolist()])


def split_corpus(text: str, held_out: float = 0.1) -> tuple[str, str]:
    cut = int(len(text) * (1 - held_out))
    return text[:cut], text[cut:]
