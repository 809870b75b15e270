"""`capture_text`: a run from texts, each tokenized by each model's own tokenizer (issue 19).

With one tokenizer the run is an ordinary language-model run (`kdviz.capture` on the tokenized texts), plus the
texts and each token's character offsets. With two, the models do not share tokens, so the run's tokens are the
**spans** both tokenizations share (`metrics.token_alignment`): span k of a text is the text between two
consecutive shared boundaries, and its statistics are those of any language-model run at a token, read at the
boundary after it: the exact next-piece divergences over the matched vocabulary (``kl``, ``reverse_kl``), each
model's entropy and its mass outside the matched vocabulary there, and each model's probability of the next span
by the chain rule (``true_prob``). Every token view works on such a run; the alignment itself (both tokenizations'
offsets, the boundaries, the pieces of each span) is kept under ``text/`` for the alignment view
(`readers.text.TextData`)."""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from kdviz import layout
from kdviz.adapters.probe import logit_probes
from kdviz.capture import MAX_VOCAB_IN_META, ROLES, capture, new_run_path, resolve_device
from kdviz.cross_tokenizer import TextScorer, _encode, align, vocabulary_pieces
from kdviz.errors import InputError
from kdviz.metrics.token_alignment import vocabulary_bytes
from kdviz.store import GroupWriter, Run, RunWriter
from kdviz.text import check_texts

# per model, at each span of a two-tokenizer run (top-k: its next pieces at the span's end, in its own vocabulary)
SPAN_STATS = ("entropy", "true_prob", "outside_mass", "topk_ids", "topk_probs", "tail_mass")


def pad_rows(rows: Sequence[np.ndarray], length: int, value: float, dtype: Any) -> np.ndarray:
    """Ragged rows (each [L_i, ...]) stacked into [N, length, ...], padded at the end with ``value``."""
    tail = rows[0].shape[1:]
    out = np.full((len(rows), length, *tail), value, dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _text_records(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """The texts as UTF-8 bytes [total] and where each starts [N + 1] (a ragged array zarr stores as two)."""
    encoded = [t.encode("utf-8") for t in texts]
    return {layout.TEXT_BYTES: np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(),
            layout.TEXT_STARTS: np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype(np.int64)}


def capture_text(
    teacher: nn.Module,
    student: nn.Module,
    texts: Sequence[str],
    *,
    tokenizer: Any,
    student_tokenizer: Any = None,
    max_length: int | None = 1024,
    path: str | os.PathLike | None = None,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    **options: Any,
) -> Run:
    """Capture two causal LMs on ``texts`` into a run and return it, opened lazily.

    - ``student_tokenizer=None``: both models read ``tokenizer``'s ids. The texts go through `kdviz.capture`
      (``options``: its settings, such as ``attentions``, ``layers``, ``batch_size``, ``topk``, ``vocab_size``), and
      the run also keeps the texts and each token's character offsets under ``text/``.
    - A different ``student_tokenizer``: each model reads its own tokenization, the two are aligned by character
      offsets, and the run's tokens are the spans between shared boundaries (see the module's docstring); no
      attention or features are captured (``names`` and ``extra_meta`` apply, as for `kdviz.capture`). Both
      tokenizers must be fast Hugging Face tokenizers (character offsets).
    ``max_length`` cuts each tokenization; ``path`` as for `kdviz.capture` (default: a new temporary directory).
    """
    texts = check_texts(texts)
    if student_tokenizer is None or student_tokenizer is tokenizer:
        return _capture_shared(teacher, student, texts, tokenizer, max_length, path, overwrite, device, progress, options)
    unsupported = sorted(set(options) - {"batch_size", "names", "extra_meta", "topk"})
    if unsupported:
        raise InputError(f"with two tokenizers capture_text compares the models' outputs only, so {unsupported} do "
                         "not apply; capture attention and features per model with kdviz.capture and one tokenizer")
    return _capture_cross(teacher, student, texts, {"teacher": tokenizer, "student": student_tokenizer}, max_length,
                          path, overwrite, device, progress, options.get("names"), options.get("extra_meta"),
                          options.get("topk", 10))


def _capture_shared(teacher: nn.Module, student: nn.Module, texts: list[str], tokenizer: Any, max_length: int | None,
                    path: str | os.PathLike | None, overwrite: bool, device: Any, progress: bool,
                    options: dict[str, Any]) -> Run:
    encoded = [_encode(tokenizer, text, max_length, "teacher") for text in texts]
    samples = [{"input_ids": ids, "attention_mask": torch.ones_like(ids)} for ids, _, _ in encoded]
    run = capture(teacher, student, samples, tokenizer=tokenizer, path=path, overwrite=overwrite, device=device,
                  progress=progress, **options)
    if not isinstance(run, Run):
        return run  # dry_run: the estimate
    return add_texts(run, texts, [offsets for _, offsets, _ in encoded])


def add_texts(run: Run, texts: Sequence[str], offsets: Sequence[np.ndarray]) -> Run:
    """Keep in a run of one tokenizer the texts its samples were read from, and each token's character offsets
    (``offsets``: [T_i, 2] per sample); returns the run reopened."""
    length = run.token_ids.shape[1] if run.token_ids is not None else max(len(o) for o in offsets)
    with GroupWriter(run.path, layout.TEXT) as writer:  # keys relative to text/
        for key, rows in _text_records(texts).items():
            writer.append(key.removeprefix("text/"), rows)
        writer.append(layout.alignment("teacher_offsets").removeprefix("text/"), pad_rows(list(offsets), length, -1, np.int32))
        writer.commit({"texts": {}, "alignment": {"tokenizations": 1}})
    return Run.open(run.path)


def _capture_cross(teacher: nn.Module, student: nn.Module, texts: list[str], tokenizers: dict[str, Any],
                   max_length: int | None, path: str | os.PathLike | None, overwrite: bool, device: Any,
                   progress: bool, names: tuple[str, str] | None, extra: dict[str, Any] | None, topk: int) -> Run:
    target = resolve_device(device)
    probes = logit_probes(teacher, student, target)
    for probe, name in zip(probes.values(), names or (None, None), strict=True):
        probe.name = name or probe.name
    scorer = TextScorer(probes, tokenizers, max_length, topk)
    # the alignment needs only the offsets: every text's span and piece counts are known before a model runs
    encoded = [scorer.encode(text) for text in texts]
    alignments = [align(e) for e in encoded]
    spans = max(len(a.boundaries) for a in alignments)
    pieces = {role: max(len(e[role][0]) for e in encoded) for role in ROLES}
    if spans == 0:
        raise InputError("the two tokenizations share no boundary in any text; check that both tokenizers read the "
                         "same texts (and that neither is cut to nothing by max_length)")
    final = Path(path) if path is not None else new_run_path()
    with RunWriter(final, overwrite=overwrite) as writer, probes["teacher"], probes["student"], torch.inference_mode():
        for text, encoding, alignment in tqdm(list(zip(texts, encoded, alignments, strict=True)),
                                              desc="kdviz capture text", unit="text", disable=not progress):
            comparison = scorer.compare(text, encoding, alignment)
            writer.append_batch(_span_records(comparison, encoding, spans, pieces))
        writer.append_batch(_text_records(texts))
        meta = _cross_meta(probes, texts, encoded, alignments, tokenizers, topk)
        writer.commit({**meta, **({"extra": dict(extra)} if extra else {})})
    return Run.open(final)


def _span_records(c: Any, encoding: dict[str, Any], spans: int, pieces: dict[str, int]) -> dict[str, np.ndarray]:
    """One text's rows [1, S, …]: the per-span statistics (read at the boundary after each span) and the alignment."""
    k = len(c.alignment.boundaries)

    def row(values: np.ndarray, value: float = np.nan, dtype: Any = np.float32) -> np.ndarray:
        return pad_rows([np.asarray(values)], spans, value, dtype)

    nxt = {role: np.r_[c.spans[role][1:], np.nan] for role in ROLES}  # log p(next span | text so far)
    records = {layout.pair_token_stat("kl"): row(c.boundary["kl"]),
               layout.pair_token_stat("reverse_kl"): row(c.boundary["reverse_kl"]),
               layout.ATTENTION_MASK: row(np.ones(k), 0, np.uint8)}
    for role in ROLES:
        records[layout.token_stat(role, "entropy")] = row(c.boundary[f"{role}_entropy"])
        records[layout.token_stat(role, "true_prob")] = row(np.exp(nxt[role]))
        records[layout.token_stat(role, "outside_mass")] = row(c.boundary[f"{role}_outside_mass"])
        top_ids, top_probs = (np.asarray(c.boundary[f"{role}_topk_{name}"]) for name in ("ids", "probs"))
        records[layout.token_stat(role, "topk_ids")] = row(top_ids, -1, np.int32)  # own vocabulary, [1, S, k]
        records[layout.token_stat(role, "topk_probs")] = row(top_probs, 0, np.float32)
        records[layout.token_stat(role, "tail_mass")] = row(1 - top_probs.astype(np.float64).sum(-1))
        records[layout.alignment(f"{role}_offsets")] = pad_rows([encoding[role][1]], pieces[role], -1, np.int32)
        records[layout.alignment(f"{role}_piece")] = row(getattr(c.alignment, f"{role}_piece"), -1, np.int32)
        records[layout.alignment(f"{role}_span_logprob")] = row(c.spans[role], np.nan, np.float64)
    records[layout.alignment("boundaries")] = row(c.alignment.boundaries, -1, np.int32)
    return records


def piece_texts(tokenizer: Any) -> list[str] | None:
    """Each id of a model's tokenizer as the text it stands for ("Ġthe" is " the", "<0x0A>" a newline; special
    tokens as listed), for the top-k of a two-tokenizer run; None past `MAX_VOCAB_IN_META` entries."""
    size = len(tokenizer)
    if size > MAX_VOCAB_IN_META:
        return None
    listed = [str(p) for p in tokenizer.convert_ids_to_tokens(list(range(size)))]
    texts = vocabulary_bytes(vocabulary_pieces(tokenizer, size))
    return [t.decode("utf-8", errors="replace") if t is not None else p for t, p in zip(texts, listed, strict=True)]


def _cross_meta(probes: dict[str, Any], texts: list[str], encoded: list[dict[str, Any]], alignments: list[Any],
                tokenizers: dict[str, Any], topk: int) -> dict[str, Any]:
    """meta.json of a two-tokenizer run: its tokens are each text's spans."""
    length = max(len(a.boundaries) for a in alignments)

    def span_texts(text: str, boundaries: np.ndarray) -> list[str]:
        """Each span's text, then "" past the text's last span (every sample's tokens are as long as its rows)."""
        starts = np.r_[0, boundaries[:-1]]
        spans = [text[int(a):int(b)] for a, b in zip(starts, boundaries, strict=True)]
        return spans + [""] * (length - len(spans))

    models = {}
    for role, probe in probes.items():
        models[role] = {**probe.describe(), "attention_layers": [], "heads": [], "feature_names": [],
                        "spatial_names": [], "token_stats": list(SPAN_STATS),
                        "tokenizer": type(tokenizers[role]).__name__, "vocabulary": len(tokenizers[role]),
                        "vocab": piece_texts(tokenizers[role])}
    return {
        "task": "tokens", "n_samples": len(texts), "n_classes": None, **models,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "layer_map": {"spec": "none", "unit": "attention", "pairs": []},
        "class_names": None, "tokens": [span_texts(t, a.boundaries) for t, a in zip(texts, alignments, strict=True)],
        "inputs": {"labels": False, "seq_len": length},
        "text": {"tokenizations": 2, "unit": "span",
                 "pieces": {role: [len(e[role][0]) for e in encoded] for role in ROLES}},
        "capture": {"attentions": False, "attention_samples": [], "topk": topk,
                    "device": str(next(iter(probes.values())).device)},
    }
