"""Two causal LMs with different tokenizers, compared on the same texts straight from the models (issue 19): each
text is tokenized by each model's own tokenizer, both models score it, and `metrics.token_alignment` aligns and
compares them. Nothing is stored; `compare_texts` returns one `TextComparison` per text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from kdviz.adapters.probe import ModelProbe, logit_probes
from kdviz.capture import resolve_device
from kdviz.errors import InputError
from kdviz.metrics import token_alignment as ta
from kdviz.metrics.vocabulary import top_k


def vocabulary_pieces(tokenizer: Any, rows: int) -> list[str | None]:
    """The entry of each of a model's ``rows`` output ids as its tokenizer lists it; None for special tokens and for
    the padding rows past the tokenizer, which are never matched."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    size = len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(min(rows, size))))
    return [None if i in special else str(p) for i, p in enumerate(pieces)] + [None] * max(0, rows - size)


def _encode(tokenizer: Any, text: str, max_length: int | None, role: str) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """(ids [T], offsets [T, 2], pieces [T]) of one text by one model's tokenizer."""
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(f"the {role}'s tokenizer must be a fast (Rust) Hugging Face tokenizer, which gives character "
                         "offsets; load it with AutoTokenizer.from_pretrained(..., use_fast=True)")
    encoding = tokenizer(text, return_offsets_mapping=True, truncation=max_length is not None, max_length=max_length)
    ids = torch.tensor(encoding["input_ids"], dtype=torch.long)
    if len(ids) == 0:
        raise InputError(f"the {role}'s tokenizer gives no tokens for the text {text[:40]!r}; pass non-empty texts")
    return ids, np.asarray(encoding["offset_mapping"], dtype=np.int64).reshape(-1, 2), tokenizer.convert_ids_to_tokens(ids.tolist())


def compare_texts(
    teacher: nn.Module,
    student: nn.Module,
    texts: Sequence[str],
    *,
    tokenizer: Any,
    student_tokenizer: Any = None,
    max_length: int | None = 1024,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> list[ta.TextComparison]:
    """Score each text with both causal LMs, each through its own tokenizer (``student_tokenizer=None``: the
    teacher's), and compare them where the tokenizations share a boundary (exact next-piece KL over the strings both
    vocabularies hold, and each model's mass outside them) and by span log-probabilities between boundaries.

    ``texts``: strings; ``max_length``: each tokenization is cut at that many tokens (the comparison covers the text
    both cuts hold). Tokenizers must be fast Hugging Face tokenizers (they give character offsets). Memory: one text's
    logits per model, [T, V] float32.
    """
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise InputError("texts must be a list of strings")
    tokenizers = {"teacher": tokenizer, "student": student_tokenizer if student_tokenizer is not None else tokenizer}
    target = resolve_device(device)
    probes = logit_probes(teacher, student, target)
    scorer = TextScorer(probes, tokenizers, max_length)
    with probes["teacher"], probes["student"], torch.inference_mode():
        return [scorer.compare(text) for text in tqdm(texts, desc="kdviz compare texts", unit="text", disable=not progress)]


def align(encoded: dict[str, tuple[torch.Tensor, np.ndarray, list[str]]]) -> ta.Alignment:
    """The alignment of one text's two tokenizations (`TextScorer.encode`), from their character offsets alone."""
    return ta.align(ta.piece_ends(encoded["teacher"][1]), ta.piece_ends(encoded["student"][1]))


class TextScorer:
    """Scores one text at a time with both models (inside their probes' context), each through its own tokenizer,
    and compares them (`metrics.token_alignment`); the vocabulary match is built from the first text's logits."""

    def __init__(self, probes: dict[str, ModelProbe], tokenizers: dict[str, Any], max_length: int | None,
                 topk: int = 10) -> None:
        if not isinstance(topk, int) or topk < 1:
            raise InputError(f"topk must be a positive number of pieces, got {topk!r}")
        self.probes, self.tokenizers, self.max_length, self.topk = probes, tokenizers, max_length, topk
        self.match: ta.VocabularyMatch | None = None

    def encode(self, text: str) -> dict[str, tuple[torch.Tensor, np.ndarray, list[str]]]:
        """Each model's (ids [T], offsets [T, 2], pieces [T]) of ``text``."""
        return {role: _encode(self.tokenizers[role], text, self.max_length, role) for role in self.probes}

    def compare(self, text: str, encoded: dict[str, tuple[torch.Tensor, np.ndarray, list[str]]] | None = None,
                alignment: ta.Alignment | None = None) -> ta.TextComparison:
        """``text`` scored by both models; ``encoded`` (`encode`) and ``alignment`` (`align`) when the caller has them."""
        encoded = encoded or self.encode(text)
        logits, logprobs, lse = {}, {}, {}
        for role, probe in self.probes.items():
            ids = encoded[role][0]
            z = probe.forward({"input_ids": ids[None].to(probe.device)}).logits
            logits[role] = z[0].float()
            lse[role] = ta.row_logsumexp(logits[role])  # [T], shared by the chain rule and the boundary pass
            logprobs[role] = ta.true_token_logprobs(logits[role], ids, lse[role])
        if self.match is None:
            self.match = ta.VocabularyMatch.from_pieces(
                vocabulary_pieces(self.tokenizers["teacher"], logits["teacher"].shape[-1]),
                vocabulary_pieces(self.tokenizers["student"], logits["student"].shape[-1]))
        alignment = alignment or align(encoded)
        # at each shared boundary: the matched divergence, each model's mass outside it and its entropy, from one
        # softmax per row (the rows read chunk by chunk, each model's logsumexp shared with the chain rule)
        boundary = ta.matched_divergence(logits["teacher"], logits["student"], self.match,
                                         rows=(torch.from_numpy(alignment.teacher_piece),
                                               torch.from_numpy(alignment.student_piece)),
                                         lse=(lse["teacher"], lse["student"]))
        for role, rows in (("teacher", alignment.teacher_piece), ("student", alignment.student_piece)):
            # each model's most probable next pieces there, in its own vocabulary: [K, k] ids and probabilities
            values, ids = top_k(logits[role], min(self.topk, logits[role].shape[-1]))
            where = torch.from_numpy(rows).long().to(ids.device)
            boundary[f"{role}_topk_ids"] = ids[where].int()
            boundary[f"{role}_topk_probs"] = (values[where] - lse[role][where, None]).exp()
        return ta.TextComparison(
            text=text, pieces={role: encoded[role][2] for role in self.probes},
            offsets={role: encoded[role][1] for role in self.probes}, alignment=alignment,
            boundary={name: value.cpu().numpy() for name, value in boundary.items()},
            spans=ta.span_logprobs(alignment, logprobs["teacher"], logprobs["student"]))
