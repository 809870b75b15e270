"""Two language models that tokenize the same text differently, compared exactly where they can be and by the
chain rule everywhere else (issue 19; the formulas are in docs/formulas.md, "Cross-tokenizer comparison").

- Pieces are matched **by their bytes, never by id**: byte-level BPE ("Ġ" = space), sentencepiece ("▁" = space,
  "<0x0A>" = one byte) and plain vocabularies are all read back to the bytes they stand for.
- Two tokenizations of one text are aligned by the character where each piece ends. Where both end a piece at the
  same character (a shared boundary), both models predict the next piece from the same text, so their next-piece
  distributions are compared over the strings both vocabularies hold (`matched_divergence`).
- Between two shared boundaries, each model's log-probability of the span's text is the sum of its pieces'
  log-probabilities (`span_logprobs`): log p(span) = Σ_j log p(piece_j | everything before it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from kdviz.errors import InputError

F64 = torch.float64
SCHEMES = ("byte_level", "sentencepiece", "plain")
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
CHUNK_BYTES = 1 << 24  # float64 log-probabilities per model and chunk of rows in matched_divergence


@cache
def _byte_level_decoder() -> dict[str, int]:
    """The inverse of byte-level BPE's byte → printable-character table (GPT-2): bytes that print as themselves
    keep their character; the other 68 bytes are shifted, in order, to characters from U+0100 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    table = {chr(b): b for b in printable}
    table.update({chr(256 + i): b for i, b in enumerate(shifted)})
    return table


def piece_bytes(piece: str, scheme: str) -> bytes:
    """The bytes a vocabulary entry stands for: ``"Ġworld"`` (byte-level) and ``"▁world"`` (sentencepiece) are both
    b" world"; sentencepiece's byte fallback ``"<0x0A>"`` is b"\\n"."""
    if scheme == "byte_level":
        table = _byte_level_decoder()
        try:
            return bytes(table[c] for c in piece)
        except KeyError as error:
            raise InputError(f"{piece!r} is not a byte-level BPE piece (character {error.args[0]!r}); "
                             "pass scheme='sentencepiece' or 'plain' for this vocabulary") from None
    if scheme == "sentencepiece":
        byte = _BYTE_PIECE.fullmatch(piece)
        return bytes([int(byte.group(1), 16)]) if byte else piece.replace("▁", " ").encode("utf-8")
    if scheme == "plain":
        return piece.encode("utf-8")
    raise InputError(f"scheme must be one of {SCHEMES}, got {scheme!r}")


def detect_scheme(pieces: Sequence[str]) -> str:
    """Which marker a vocabulary uses for a leading space: the more frequent of "Ġ" and "▁", else plain."""
    byte_level = sum(p.startswith("Ġ") for p in pieces)
    sentencepiece = sum(p.startswith("▁") for p in pieces)
    if max(byte_level, sentencepiece) == 0:
        return "plain"
    return "byte_level" if byte_level > sentencepiece else "sentencepiece"


def vocabulary_bytes(pieces: Sequence[str | None], scheme: str | None = None) -> list[bytes | None]:
    """Every id's bytes (None stays None: special tokens, padding rows, ids never to be matched)."""
    scheme = scheme or detect_scheme([p for p in pieces if p is not None])
    return [None if p is None else piece_bytes(p, scheme) for p in pieces]


@dataclass(frozen=True)
class VocabularyMatch:
    """Both vocabularies mapped onto the byte strings they share.

    ``teacher_slot`` [V_t] and ``student_slot`` [V_s] give each id's shared string (0 … n_shared − 1), or −1 for an
    id whose string the other vocabulary lacks (and for ids given as None). Several ids with the same bytes share a
    slot, and their probabilities add up: the comparison is between distributions over strings.
    """

    teacher_slot: np.ndarray
    student_slot: np.ndarray
    n_shared: int

    @classmethod
    def from_bytes(cls, teacher: Sequence[bytes | None], student: Sequence[bytes | None]) -> VocabularyMatch:
        shared = sorted({b for b in teacher if b is not None} & {b for b in student if b is not None})
        if not shared:
            raise InputError("the two vocabularies share no piece; check the schemes passed for them")
        slot = {b: i for i, b in enumerate(shared)}
        teacher_slot = np.array([slot.get(b, -1) if b is not None else -1 for b in teacher], dtype=np.int64)
        student_slot = np.array([slot.get(b, -1) if b is not None else -1 for b in student], dtype=np.int64)
        return cls(teacher_slot, student_slot, len(shared))

    @classmethod
    def from_pieces(cls, teacher: Sequence[str | None], student: Sequence[str | None], *,
                    teacher_scheme: str | None = None, student_scheme: str | None = None) -> VocabularyMatch:
        """From the vocabularies' entries as tokenizers list them (``convert_ids_to_tokens(range(V))``)."""
        return cls.from_bytes(vocabulary_bytes(teacher, teacher_scheme), vocabulary_bytes(student, student_scheme))


def _slots_with_outside(slots: np.ndarray, n_shared: int, device: torch.device) -> torch.Tensor:
    """Each id's shared-string slot [V], with every id the other vocabulary lacks sent to one more slot, n_shared:
    one index_add over a row gives the shared strings' masses and the mass outside them together."""
    slots = torch.as_tensor(slots, device=device)
    return torch.where(slots >= 0, slots, torch.full_like(slots, n_shared))


def _string_log_probs(z: torch.Tensor, lse: torch.Tensor | None, slots: torch.Tensor,
                      n_shared: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From logits [r, V] (and their logsumexp [r], or None): log P(string) over the shared strings [r, n_shared]
    (−inf where no id has mass), the mass on strings the other model lacks [r] and the entropy over all V [r], all
    float64, from one softmax in z's dtype (float32 at least)."""
    log_p = _log_softmax(z, lse)
    p = log_p.exp()
    entropy = _entropy(p, log_p)
    mass = torch.zeros(len(z), n_shared + 1, dtype=z.dtype, device=z.device).index_add_(1, slots, p).to(F64)
    return torch.log(mass[:, :-1]), mass[:, -1], entropy


def matched_divergence(z_t: torch.Tensor, z_s: torch.Tensor, match: VocabularyMatch, *,
                       rows: tuple[torch.Tensor, torch.Tensor] | None = None,
                       lse: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Next-piece divergences at shared boundaries: teacher logits [r, V_t] and student logits [r, V_s], row i of
    both predicting the piece after the same text.

    Each model's distribution is summed onto the shared strings and renormalised over them (p̂); returned [r],
    float64: ``kl`` = KL(p̂_t‖p̂_s), ``reverse_kl`` = KL(p̂_s‖p̂_t) (nats; inf where one model gives a shared string
    no mass and the other some), ``teacher_outside_mass`` / ``student_outside_mass``, each model's probability on
    strings the other vocabulary lacks (before the renormalisation), and ``teacher_entropy`` / ``student_entropy``
    over each model's whole vocabulary.

    ``rows``: (teacher rows [r], student rows [r]) of logits [T_t, V_t] and [T_s, V_s] to compare, read chunk by
    chunk instead of copied out first; ``lse``: the logsumexp of every row of each [T, V] when the caller has it.
    """
    picked = rows if rows is not None else (None, None)
    count = [len(z) if r is None else len(r) for z, r in zip((z_t, z_s), picked, strict=True)]
    if z_t.ndim != 2 or z_s.ndim != 2 or count[0] != count[1]:
        raise InputError(f"matched_divergence needs [r, V_t] and [r, V_s] logits for the same r rows, got "
                         f"{tuple(z_t.shape)} and {tuple(z_s.shape)}" + (f" with {count} rows picked" if rows else ""))
    if z_t.shape[1] != len(match.teacher_slot) or z_s.shape[1] != len(match.student_slot):
        raise InputError(f"the logits cover {z_t.shape[1]} and {z_s.shape[1]} ids but the vocabulary match was built "
                         f"for {len(match.teacher_slot)} and {len(match.student_slot)}; build it from the models' "
                         "own vocabularies (padding rows included, as None)")
    slots_t = _slots_with_outside(match.teacher_slot, match.n_shared, z_t.device)
    slots_s = _slots_with_outside(match.student_slot, match.n_shared, z_t.device)
    chunk = max(1, CHUNK_BYTES // (8 * max(z_t.shape[1], z_s.shape[1], match.n_shared)))
    out = {name: torch.empty(count[0], dtype=F64, device=z_t.device)
           for name in ("kl", "reverse_kl", "teacher_outside_mass", "student_outside_mass", "teacher_entropy",
                        "student_entropy")}

    def read(z: torch.Tensor, index: torch.Tensor | None, norms: torch.Tensor | None,
             part: slice) -> tuple[torch.Tensor, torch.Tensor | None]:
        if index is None:
            return z[part], None if norms is None else norms[part]
        where = torch.as_tensor(index[part], device=z.device).long()
        return z.index_select(0, where), None if norms is None else norms.to(z.device)[where]

    norms = lse if lse is not None else (None, None)
    for start in range(0, count[0], chunk):
        part = slice(start, start + chunk)
        z, norm = read(z_t, picked[0], norms[0], part)
        log_t, out["teacher_outside_mass"][part], out["teacher_entropy"][part] = _string_log_probs(
            z, norm, slots_t, match.n_shared)
        z, norm = read(z_s, picked[1], norms[1], part)
        log_s, out["student_outside_mass"][part], out["student_entropy"][part] = _string_log_probs(
            z.to(z_t.device), None if norm is None else norm.to(z_t.device), slots_s, match.n_shared)
        log_t = log_t - torch.logsumexp(log_t, -1, keepdim=True)  # renormalised over the shared strings
        log_s = log_s - torch.logsumexp(log_s, -1, keepdim=True)
        out["kl"][part] = _kl(log_t, log_s)
        out["reverse_kl"][part] = _kl(log_s, log_t)
    return out


def row_logsumexp(z: torch.Tensor, rows: int = 32) -> torch.Tensor:
    """logsumexp(z) of every row of logits [T, V] [T], in z's working dtype (`_working`), a few rows at a time so
    that each block's passes stay in cache (about a quarter faster than one call over a [1024, 32000] block)."""
    z = _working(z)
    out = torch.empty(z.shape[:-1], dtype=z.dtype, device=z.device)
    for start in range(0, len(z), rows):
        out[start:start + rows] = torch.logsumexp(z[start:start + rows], dim=-1)
    return out


def _working(z: torch.Tensor) -> torch.Tensor:
    """Logits in the dtype the per-row passes run in: float64 stays float64, anything else is float32 (one pass
    over a [T, V] block in float32 is a quarter of the memory traffic of a float64 copy)."""
    return z if z.dtype == F64 else z.float()


def entropy_rows(z: torch.Tensor, lse: torch.Tensor | None = None) -> torch.Tensor:
    """H(p) = −Σ p log p of softmax(z) per row of logits [r, V] (nats), in z's dtype (float32 at least; every term
    is ≥ 0, so the sum loses no digits to cancellation), returned as float64 [r]. ``lse``: logsumexp(z) per row [r]
    when the caller has it."""
    log_p = _log_softmax(z, lse)
    return _entropy(log_p.exp(), log_p)


def _log_softmax(z: torch.Tensor, lse: torch.Tensor | None) -> torch.Tensor:
    """log softmax(z) [r, V] in z's working dtype (`_working`), from logsumexp(z) [r] when the caller has it."""
    z = _working(z)
    lse = torch.logsumexp(z, dim=-1) if lse is None else lse.to(z.dtype)
    return z - lse.unsqueeze(-1)


def _entropy(p: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """−Σ p log p per row [r], float64; every term is ≥ 0, so the sum loses no digits to cancellation."""
    return -torch.linalg.vecdot(p, log_p).to(F64)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Σ p (log p − log q) over the last axis, with 0 · log 0 = 0 (float64 [r])."""
    p = log_p.exp()
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(-1)


@dataclass(frozen=True)
class Alignment:
    """Two tokenizations of one text aligned by where their pieces end.

    ``boundaries`` [K] the characters where both end a piece (ascending); ``teacher_piece`` [K] and
    ``student_piece`` [K] the index of the piece ending there in each (the last one, when several end at the same
    character, as byte pieces of one character do). Span k is the text between boundaries k − 1 and k: teacher
    pieces ``teacher_piece[k−1] + 1 … teacher_piece[k]``, and likewise for the student (span 0 starts at the text's
    start, after piece −1)."""

    boundaries: np.ndarray
    teacher_piece: np.ndarray
    student_piece: np.ndarray

    def spans(self, role: str) -> list[range]:
        """Each span's pieces in the ``role``'s tokenization."""
        last = self.teacher_piece if role == "teacher" else self.student_piece
        starts = np.concatenate([[-1], last[:-1]]) + 1
        return [range(int(a), int(b) + 1) for a, b in zip(starts, last, strict=True)]


def _last_piece_at(ends: np.ndarray) -> dict[int, int]:
    """end character → index of the last piece that ends there (pieces with end < 0 end nowhere)."""
    where: dict[int, int] = {}
    for index, end in enumerate(ends.tolist()):
        if end >= 0:
            where[end] = index
    return where


def align(teacher_ends: Sequence[int], student_ends: Sequence[int]) -> Alignment:
    """Align two tokenizations of the same text from each piece's end character (a tokenizer's offset mapping,
    ``[end for _, end in offsets]``). Give −1 for pieces that cover no text (padding, special tokens after the
    text); a piece at the start that covers nothing (BOS) is the boundary 0, shared only if both have one."""
    ends_t, ends_s = np.asarray(teacher_ends, dtype=np.int64), np.asarray(student_ends, dtype=np.int64)
    for what, ends in (("teacher", ends_t), ("student", ends_s)):
        real = ends[ends >= 0]
        if len(real) and (np.diff(real) < 0).any():
            raise InputError(f"the {what} pieces' ends go backwards; pass the offsets of one text, in order")
    at_t, at_s = _last_piece_at(ends_t), _last_piece_at(ends_s)
    shared = sorted(set(at_t) & set(at_s))
    return Alignment(np.array(shared, dtype=np.int64), np.array([at_t[b] for b in shared], dtype=np.int64),
                     np.array([at_s[b] for b in shared], dtype=np.int64))


def true_token_logprobs(logits: torch.Tensor, ids: torch.Tensor, lse: torch.Tensor | None = None) -> torch.Tensor:
    """log p(piece_j | pieces before j) of a causal LM [T] from its logits [T, V] and the pieces' ids [T]: row j − 1
    predicts piece j (float64, from z's dtype, float32 at least; NaN at j = 0, which nothing before it predicts).
    ``lse``: logsumexp of every row [T] when the caller has it."""
    if logits.ndim != 2 or ids.ndim != 1 or len(logits) != len(ids):
        raise InputError(f"true_token_logprobs needs logits [T, V] and ids [T], got {tuple(logits.shape)} and {tuple(ids.shape)}")
    out = torch.full((len(ids),), float("nan"), dtype=F64, device=logits.device)
    if len(ids) > 1:  # z[id] − logsumexp(z): one pass over the rows, no [T, V] log-softmax kept
        z = _working(logits[:-1])
        chosen = z.gather(-1, ids[1:].to(logits.device).long().unsqueeze(-1)).squeeze(-1)
        norm = torch.logsumexp(z, dim=-1) if lse is None else lse[:-1]
        out[1:] = chosen.to(F64) - norm.to(F64)
    return out


def span_logprobs(alignment: Alignment, teacher_logprobs: torch.Tensor,
                  student_logprobs: torch.Tensor) -> dict[str, np.ndarray]:
    """Each span's log-probability under each model by the chain rule [K] (float64): the sum of its pieces'
    log-probabilities (`true_token_logprobs`). A span with a piece nothing predicts (the first one) is NaN.
    ``difference`` = teacher − student: log p_t(span) − log p_s(span)."""
    out = {}
    for role, logprobs in (("teacher", teacher_logprobs), ("student", student_logprobs)):
        values = torch.as_tensor(logprobs, dtype=F64).cpu().numpy()
        out[role] = np.array([values[list(span)].sum() for span in alignment.spans(role)], dtype=np.float64)
    out["difference"] = out["teacher"] - out["student"]
    return out


@dataclass(frozen=True)
class TextComparison:
    """One text as two models tokenized and scored it: each model's pieces [T_m] (strings, as its tokenizer lists
    them) and character offsets [T_m, 2]; their `Alignment`; at each shared boundary [K] the next-piece divergences
    of `matched_divergence` and each model's entropy there (``teacher_entropy``, ``student_entropy``), and, when
    scored from models, each one's most probable next pieces in its own vocabulary (``teacher_topk_ids`` [K, k] and
    ``teacher_topk_probs`` [K, k], likewise the student's); for each span [K] both models' log-probabilities and
    their difference (`span_logprobs`)."""

    text: str
    pieces: dict[str, list[str]]
    offsets: dict[str, np.ndarray]
    alignment: Alignment
    boundary: dict[str, np.ndarray]
    spans: dict[str, np.ndarray]

    def span_text(self, k: int) -> str:
        start = int(self.alignment.boundaries[k - 1]) if k > 0 else 0
        return self.text[start:int(self.alignment.boundaries[k])]


def piece_ends(offsets: np.ndarray) -> np.ndarray:
    """Each piece's end character from a tokenizer's offsets [T, 2], for `align`: −1 for pieces that cover no text
    (special tokens), except one at the very start (BOS), which ends at 0."""
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    ends = offsets[:, 1].copy()
    empty = offsets[:, 0] == offsets[:, 1]
    ends[empty] = -1
    if len(ends) and empty[0]:
        ends[0] = 0
    return ends
