"""Per-token statistics of two language models at vocabulary scale, computed chunk by chunk over the tokens.

A [B, T, V] float32 logit tensor at V = 152k is 0.6 GB per 1k tokens, so nothing here copies it whole: each chunk of
token rows (about `CHUNK_BYTES` of float32 logits per model) is turned into probabilities once, and every statistic
is read off that chunk. Elementwise work is float32; every sum over the vocabulary is accumulated in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from kdviz.errors import InputError
from kdviz.metrics.tempered import check_pair

F64 = torch.float64
# 4 MB of float32 logits per model and chunk: its temporaries stay in the allocator, while 16 MB ones are mmapped
# afresh each time and their page faults double the cost
CHUNK_BYTES = 1 << 22
BLOCK = 256  # terms summed in float32 before the float64 accumulation

# token rows whose logits the output head computes at once, into one buffer: up to 1,024 rows within 512 MB. Blocks
# of 512–1,024 rows run the head faster than one whole [B·T, D] × [D, V] product; 220 (the old 128 MB at V = 152k)
# ran it 12–18 % slower (`benchmarks/llm_capture.py`)
HEAD_BLOCK_BYTES = 1 << 29
HEAD_BLOCK_ROWS = 1024


class HeadLogits:
    """Logits [B, T, V] not yet computed: a model's last hidden states [B, T, D] and its output head (a Linear), so
    a language model's vocabulary-sized logits exist a block of token rows at a time and never whole (2.5 GB per
    model for 4 × 1,024 tokens at V = 152k)."""

    def __init__(self, hidden: torch.Tensor, head: torch.nn.Linear, buffers: list[torch.Tensor] | None = None) -> None:
        """``buffers``: a list, kept by the caller from batch to batch, that holds the block buffer once `rows` has
        made it, so the next batch writes into memory already mapped (first touching 0.5 GB costs about 0.1 s)."""
        self.hidden, self.head = hidden, head
        self.shape = torch.Size((*hidden.shape[:-1], head.out_features))
        self.ndim, self.device = len(self.shape), hidden.device
        self._buffers = buffers if buffers is not None else []

    def __getitem__(self, index: Any) -> torch.Tensor:
        """The logits of some samples [k, T, V], computed now (the kept full logits); not through the module, whose
        hooks are capture's."""
        hidden = self.hidden[index]
        return torch.nn.functional.linear(hidden.to(self.head.weight.dtype), self.head.weight, self.head.bias)

    def block_rows(self) -> int:
        return max(1, min(HEAD_BLOCK_ROWS, HEAD_BLOCK_BYTES // (4 * self.shape[-1])))

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Logits [stop − start, V] of the flattened token rows ``start…``, computed into a buffer kept between blocks
        (a fresh 100 MB allocation each time would cost its page faults)."""
        flat = self.hidden.reshape(-1, self.hidden.shape[-1])[start:stop]
        weight = self.head.weight
        held = self._buffers[0] if self._buffers else None
        if (held is None or held.shape[0] < len(flat) or held.shape[1] != weight.shape[0] or held.dtype != weight.dtype
                or held.device != weight.device):
            held = torch.empty(len(flat), weight.shape[0], dtype=weight.dtype, device=weight.device)
            self._buffers[:] = [held]
        out = held[: len(flat)]
        torch.matmul(flat.to(weight.dtype), weight.t(), out=out)
        if self.head.bias is not None:
            out += self.head.bias
        return out


def _logit_rows(z: torch.Tensor | HeadLogits, vocab: int) -> tuple[Callable[[int, int], torch.Tensor], int]:
    """(rows(start, stop) → logits [r, V], rows per block) over the flattened tokens of a tensor or `HeadLogits`."""
    if isinstance(z, HeadLogits):
        return z.rows, z.block_rows()
    flat = z.reshape(-1, vocab)
    return (lambda start, stop: flat[start:stop]), flat.shape[0] or 1


ROLES = ("teacher", "student")
PAIR_STATS = ("kl", "reverse_kl")  # [B, T] between the models
# per model, stored; padding_mass only for a pair compared over a real vocabulary smaller than an output layer
ROLE_STATS = ("entropy", "topk_ids", "topk_probs", "tail_mass", "shared_topk_mass", "true_prob", "padding_mass")


def check_vocabulary(z_t: torch.Tensor | HeadLogits, z_s: torch.Tensor | HeadLogits, vocab: int | None) -> None:
    """Two models' [B, T, V] logits compared over the first ``vocab`` ids: both output layers must hold them (they
    may be padded past them). Without ``vocab`` the shapes must be equal (`tempered.check_pair`)."""
    if vocab is None:
        check_pair(z_t, z_s)
        return
    if z_t.shape[:-1] != z_s.shape[:-1] or vocab < 1 or min(z_t.shape[-1], z_s.shape[-1]) < vocab:
        raise InputError(
            f"teacher logits {tuple(z_t.shape)} and student logits {tuple(z_s.shape)} cannot be compared over a "
            f"vocabulary of {vocab} ids: both must cover the same tokens and hold at least that many ids; pass "
            "vocab_size= the tokenizer's real vocabulary (len(tokenizer))")


def token_statistics(
    z_t: torch.Tensor | HeadLogits, z_s: torch.Tensor | HeadLogits, targets: torch.Tensor | None, topk: int = 10,
    vocab: int | None = None,
) -> dict[str, torch.Tensor]:
    """Per-token summaries of two [B, T, V] logit tensors (or `HeadLogits`, computed here block by block), so
    vocabulary-sized outputs need not be stored. With ``vocab``, both are compared over ids 0 … vocab − 1 only (an
    output layer padded past its tokenizer: Qwen2's 151,936 or 152,064 rows for 151,646 real ids), each model's
    distribution renormalised over them, and ``padding_mass`` [B, T] per model is what it put on the other ids.

    Returns [B, T] float64 ``kl`` (KL(p_t‖p_s)) and ``reverse_kl``, and per role (``teacher_…``, ``student_…``):
    - ``entropy`` [B, T] (nats);
    - ``topk_ids`` [B, T, k] int32 and ``topk_probs`` [B, T, k] float32, most probable first;
    - ``tail_mass`` [B, T]: 1 − Σ of the model's own top-k probabilities, the mass a stored top-k hides;
    - ``shared_topk_mass`` [B, T]: the model's mass on the ids in both models' top-k;
    - with ``targets`` [B, T] (negative: no target), ``true_prob`` [B, T] (0 where there is no target) and
      ``true_logprob`` [B, T] (−inf there), for perplexity without underflow.
    """
    check_vocabulary(z_t, z_s, vocab)
    padded = vocab is not None
    lead, vocab = z_t.shape[:-1], vocab if vocab is not None else z_t.shape[-1]
    (rows_t, block_t), (rows_s, block_s) = _logit_rows(z_t, z_t.shape[-1]), _logit_rows(z_s, z_s.shape[-1])
    flat_targets = targets.reshape(-1).to(z_t.device) if targets is not None else None
    k = min(topk, vocab)
    rows = int(np.prod(lead))
    out: dict[str, torch.Tensor] = {name: torch.empty(rows, dtype=F64, device=z_t.device) for name in PAIR_STATS}
    for role in ROLES:
        for stat in ("entropy", "tail_mass", "shared_topk_mass"):
            out[f"{role}_{stat}"] = torch.empty(rows, dtype=F64, device=z_t.device)
        out[f"{role}_topk_ids"] = torch.empty(rows, k, dtype=torch.int32, device=z_t.device)
        out[f"{role}_topk_probs"] = torch.empty(rows, k, dtype=torch.float32, device=z_t.device)
        if flat_targets is not None:
            out[f"{role}_true_prob"] = torch.empty(rows, dtype=torch.float32, device=z_t.device)
            out[f"{role}_true_logprob"] = torch.empty(rows, dtype=F64, device=z_t.device)
        if padded:
            out[f"{role}_padding_mass"] = torch.zeros(rows, dtype=F64, device=z_t.device)
    step = max(1, CHUNK_BYTES // (4 * max(z_t.shape[-1], z_s.shape[-1])))
    block = max(step, min(block_t, block_s) // step * step)  # head logits are computed a block at a time
    work = ChunkBuffers(min(step, max(rows, 1)), vocab, z_t.device)
    for block_start in range(0, rows, block):
        block_stop = min(rows, block_start + block)
        logits_t, logits_s = rows_t(block_start, block_stop), rows_s(block_start, block_stop)
        for start in range(block_start, block_stop, step):
            stop = min(block_stop, start + step)
            chunk_targets = flat_targets[start:stop] if flat_targets is not None else None
            local = slice(start - block_start, stop - block_start)
            chunk = {"teacher": logits_t[local].float(), "student": logits_s[local].float()}
            for role, z in chunk.items():
                if z.shape[-1] > vocab:
                    out[f"{role}_padding_mass"][start:stop] = _padding_mass(z, vocab)
            _chunk_statistics(chunk["teacher"][:, :vocab], chunk["student"][:, :vocab], chunk_targets, k, out, start,
                              work)
    shaped: dict[str, torch.Tensor] = {}
    for name, value in out.items():
        shaped[name] = value.reshape(*lead, *value.shape[1:])
    return shaped


class ChunkBuffers:
    """The [r, V] float32 work arrays of `_chunk_statistics`, allocated once per `token_statistics` call: a fresh
    3–4 MB temporary per elementwise step is a fresh allocation, and its page faults cost several times the
    arithmetic (measured: 1.8 s against 0.5 s per 1,024 rows at V = 152k)."""

    def __init__(self, rows: int, vocab: int, device: torch.device) -> None:
        self.shifted = torch.empty(2, rows, vocab, device=device)  # z − m per model, ≤ 0
        self.probs = torch.empty(2, rows, vocab, device=device)  # softmax per model
        self.gap = torch.empty(rows, vocab, device=device)  # (z_t − m_t) − (z_s − m_s)
        self.product = torch.empty(rows, vocab, device=device)  # scratch for the terms of a sum

    def views(self, rows: int) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
        return ([self.shifted[i, :rows] for i in range(2)], [self.probs[i, :rows] for i in range(2)],
                self.gap[:rows], self.product[:rows])


def _chunk_statistics(zt: torch.Tensor, zs: torch.Tensor, targets: torch.Tensor | None, k: int,
                      out: dict[str, torch.Tensor], start: int, work: ChunkBuffers) -> None:
    """Fill rows ``start…`` of ``out`` from one chunk of float32 logits [r, V] of each model.

    One softmax and one top-k per model, and no second exp pass. With y = z − m (m the top logit, so y ≤ 0),
    p' the float32 softmax and S = Σ p' (1 up to its float32 normaliser's error, which dividing by S removes), every
    sum is taken over terms measured from the row's top, so no two large sums cancel:
    - lse − m = log S − log p'_top (a log-probability: small);
    - H = (lse − m) − Σ p' y / S, every term ≥ 0;
    - KL(p_t‖p_s) = Σ p'_t g / S_t − c, with g = y_t − y_s and c = (lse_t − m_t) − (lse_s − m_s);
      reverse KL = c − Σ p'_s g / S_s.
    Every [r, V] step writes into ``work`` (`ChunkBuffers`).
    """
    rows = zt.shape[0]
    stop = start + rows
    shifted, probs, gap, product = work.views(rows)
    above, total, top = [], [], []  # above: lse − m [r], float64
    for i, (role, z) in enumerate(zip(ROLES, (zt, zs), strict=True)):
        values, ids = top_k(z, k)
        torch.sub(z, values[:, :1], out=shifted[i])
        torch.softmax(shifted[i], -1, out=probs[i])
        total.append(_rowsum(probs[i]))
        top_p = probs[i].gather(-1, ids[:, :1]).squeeze(-1).to(F64)
        above.append(torch.log(total[i]) - torch.log(top_p))
        lse = values[:, 0].to(F64) + above[i]
        top_probs = torch.exp(values.to(F64) - lse.unsqueeze(-1))
        top.append(ids)
        out[f"{role}_topk_ids"][start:stop] = ids.to(torch.int32)
        out[f"{role}_topk_probs"][start:stop] = top_probs.float()
        out[f"{role}_tail_mass"][start:stop] = (1.0 - top_probs.sum(-1)).clamp_min(0.0)
        out[f"{role}_entropy"][start:stop] = above[i] - _rowdot(probs[i], shifted[i], product) / total[i]
        if targets is not None:
            valid = targets >= 0
            logp = z.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1).to(F64) - lse
            logp = torch.where(valid, logp, torch.full_like(logp, float("-inf")))
            out[f"{role}_true_logprob"][start:stop] = logp
            out[f"{role}_true_prob"][start:stop] = logp.exp().float()
    torch.sub(shifted[0], shifted[1], out=gap)  # g = (z_t − m_t) − (z_s − m_s)
    c = above[0] - above[1]
    out["kl"][start:stop] = _rowdot(probs[0], gap, product) / total[0] - c
    out["reverse_kl"][start:stop] = c - _rowdot(probs[1], gap, product) / total[1]
    # ids in both top-k lists: the teacher's that also appear among the student's
    shared = (top[0].unsqueeze(-1) == top[1].unsqueeze(-2)).any(-1)  # [r, k] over the teacher's list
    shared_ids = torch.where(shared, top[0], torch.zeros_like(top[0]))
    for i, role in enumerate(ROLES):
        mass = probs[i].gather(-1, shared_ids).to(F64) / total[i].unsqueeze(-1)
        out[f"{role}_shared_topk_mass"][start:stop] = torch.where(shared, mass, torch.zeros_like(mass)).sum(-1)


TOPK_BLOCK = 512  # vocabulary entries per block in top_k


def top_k(z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``z.topk(k)`` over the last axis of float32 rows [r, V], exactly, at a fraction of its cost for large V: the
    k blocks (of `TOPK_BLOCK` entries) with the largest maxima hold the k largest values, since any block outside
    them has k maxima above its own; one pass takes the block maxima, and topk runs on those k blocks alone (plus
    the last, partial block). Among equal values the ids chosen may differ from ``topk``'s."""
    rows, vocab = z.shape
    blocks = vocab // TOPK_BLOCK
    if blocks < 2 * k or z.stride(-1) != 1:
        return z.topk(k, dim=-1)
    whole = blocks * TOPK_BLOCK
    maxima = z.as_strided((rows, blocks, TOPK_BLOCK), (z.stride(0), TOPK_BLOCK, 1)).amax(-1)  # [r, blocks]
    chosen = maxima.topk(k, dim=-1).indices
    index = (chosen.unsqueeze(-1) * TOPK_BLOCK + torch.arange(TOPK_BLOCK, device=z.device)).reshape(rows, -1)
    if whole < vocab:
        index = torch.cat([index, torch.arange(whole, vocab, device=z.device).expand(rows, -1)], -1)
    values, where = z.gather(-1, index).topk(k, dim=-1)
    return values, index.gather(-1, where)


def _padding_mass(z: torch.Tensor, vocab: int) -> torch.Tensor:
    """Σ softmax(z) over ids ≥ ``vocab`` of float32 logits [r, V] = exp(lse(z[vocab:]) − lse(z)), float64 [r]."""
    return torch.exp(torch.logsumexp(z[:, vocab:], -1).to(F64) - torch.logsumexp(z, -1).to(F64))


def _rowdot(a: torch.Tensor, b: torch.Tensor, product: torch.Tensor) -> torch.Tensor:
    """Σ a·b over the last axis of two float32 [r, V] chunks, the terms written into ``product``: float32 within
    blocks of `BLOCK` terms, float64 across blocks (a float64 sum of every term costs 4× as much, for no digit the
    float32 store keeps)."""
    return _rowsum(torch.mul(a, b, out=product))


def _rowsum(product: torch.Tensor) -> torch.Tensor:
    """Σ over the last axis of a float32 [r, V] chunk, float32 within blocks of `BLOCK` terms and float64 across."""
    main = product.shape[-1] // BLOCK * BLOCK
    blocks = product[:, :main].reshape(product.shape[0], -1, BLOCK).sum(-1)
    return blocks.sum(-1, dtype=F64) + product[:, main:].sum(-1, dtype=F64)
