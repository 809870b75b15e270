"""Signals of on-policy vs off-policy drift in generated text (issue 19): where two continuations of one prompt fork,
how repetitive a continuation is, and the student's length against the teacher's (KD-NOTES: exposure bias)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

WRITERS = ("student", "teacher")  # who wrote a continuation: the student (on-policy) or the teacher (off-policy)
STATS = ("kl", "reverse_kl", "teacher_entropy", "student_entropy", "teacher_true_logprob", "student_true_logprob")


@dataclass(frozen=True)
class Continuation:
    """One model's continuation of a prompt (``writer``: "student" on-policy, "teacher" off-policy).

    - ``ids`` [G]: the new token ids, in the writer's own tokenizer; ``text``: what they decode to.
    - ``pieces`` [U] and ``stats`` (`STATS`, float64 [U] each): the units both models were scored on, the new tokens
      with one shared tokenizer (U = G) or the new spans both tokenizations share with two; at each, KL(p_t‖p_s),
      KL(p_s‖p_t), both entropies and both log-probabilities of the unit given everything before it.
    - ``fork``: the first unit where this continuation parts from the other writer's (None: they are identical).
    """

    writer: str
    ids: np.ndarray
    text: str
    stats: dict[str, np.ndarray]
    pieces: list[str]
    fork: int | None = None

    @property
    def repetition(self) -> float:
        """The share of its 4-grams of tokens that repeat an earlier one (`repeated_ngram_rate`)."""
        return repeated_ngram_rate(self.ids.tolist())


@dataclass(frozen=True)
class PromptGenerations:
    """A prompt (its text and the teacher tokenizer's ids [P]) with the student's and the teacher's continuation,
    where they fork (the student's unit index; None when identical), the units scored ("token" or "span") and
    ``draw``, which sample of the prompt this is (0 … n − 1)."""

    prompt: str
    prompt_ids: np.ndarray
    on_policy: Continuation
    off_policy: Continuation
    fork: int | None = None
    unit: str = "token"
    draw: int = 0

    @property
    def length_ratio(self) -> float:
        """The student's new tokens ÷ the teacher's, each counted in its own tokenizer: both had the same budget
        (``max_new_tokens``), so this is how much of it the student used against the teacher, with one tokenizer or
        two. Well under 1: the student stops early (length collapse)."""
        student, teacher = len(self.on_policy.ids), len(self.off_policy.ids)
        return student / teacher if teacher else float("nan")


def fork_position(a: Sequence, b: Sequence) -> int | None:
    """The first position where two sequences (of token ids, or the characters of two texts) differ (the shorter
    one ending counts as a difference); None when they are identical."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def repeated_ngram_rate(ids: Sequence[int], n: int = 4) -> float:
    """The share of a sequence's n-grams that already occurred earlier in it (0: none repeats; degenerate loops
    approach 1). NaN for sequences shorter than n."""
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    if not grams:
        return float("nan")
    seen: set[tuple[int, ...]] = set()
    repeats = 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams)


def mean_by_position(rows: Sequence[np.ndarray], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The mean over sequences of a per-position value, and how many sequences reach each position ([L] each):
    continuations of different lengths are averaged over those that have that position."""
    length = length or max((len(r) for r in rows), default=0)
    total, count = np.zeros(length), np.zeros(length, dtype=np.int64)
    for row in rows:
        values = np.asarray(row, dtype=np.float64)[:length]
        finite = np.isfinite(values)
        total[:len(values)][finite] += values[finite]
        count[:len(values)] += finite
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan), count
