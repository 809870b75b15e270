"""What capture stores of two models' attention: a digest of every sample (`metrics.attention_digest`: per-head
summaries, pooled thumbnails, layer × layer and, per mapped layer pair, head × head divergences) and the exact maps
of the samples ``attention_samples`` chooses.

``attention_samples="auto"`` keeps exact maps for as many of the first samples as fit in `EXACT_BUDGET` bytes per
sample of the run on average: every sample of short inputs (a ViT-S pair at 197 tokens takes 0.46 MB), none of a
16-sample BERT-base run at 512 tokens (113 MB a sample), 46 samples of a 10,000-sample one. A run's attention then
costs at most about 1 MB per sample, and every view still works on every sample from the digest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from kdviz import layout
from kdviz.errors import InputError
from kdviz.metrics import attention as attn
from kdviz.metrics import attention_digest as digest
from kdviz.records import ROLES, as_numpy, kept_rows, pad_tokens

EXACT_BUDGET = 512 * 1024  # bytes of exact float16 maps per sample of the run, on average, that "auto" allows


def exact_count(spec: int | Sequence[int] | str, *, n_samples: int | None, bytes_per_sample: int) -> int | list[int]:
    """What ``attention_samples`` keeps exact: the first K samples (an int; ``"all"``) or listed sample indices.

    ``"auto"``: K = ⌊n · `EXACT_BUDGET` / bytes_per_sample⌋, all when that is n or more; without a known sample count
    n, all samples or none, by whether one sample fits the budget."""
    if isinstance(spec, str):
        if spec == "all":
            return 1 << 62
        if spec != "auto":
            raise InputError(f"attention_samples must be 'auto', 'all', a number of first samples or a list of sample "
                             f"indices, got {spec!r}")
        if n_samples is None:
            return 1 << 62 if bytes_per_sample <= EXACT_BUDGET else 0
        return int(min(n_samples, n_samples * EXACT_BUDGET // max(1, bytes_per_sample)))
    if isinstance(spec, bool) or (isinstance(spec, int) and spec < 0):
        raise InputError(f"attention_samples must be 'auto', a number ≥ 0 or a list of sample indices, got {spec!r}")
    if isinstance(spec, int):
        return spec
    indices = [int(i) for i in spec]
    if any(i < 0 for i in indices):
        raise InputError(f"attention_samples lists negative sample indices: {sorted(i for i in indices if i < 0)}")
    return sorted(set(indices))


class AttentionRecords:
    """Per batch, the stored form of both models' attention layers ([B, H, T, T] each, at the batch's length).

    ``pairs``: the (teacher layer, student layer) pairs of the run's layer map, whose head × head divergence is kept
    for every sample. ``positions``: each model's [T, d] token positions for attention distance (`token_positions`).
    """

    def __init__(self, spec: int | Sequence[int] | str, *, pairs: Sequence[tuple[int, int]],
                 positions: dict[str, np.ndarray], seq_len: int, n_samples: int | None, heads: dict[str, list[int]]) -> None:
        bytes_per_sample = 2 * seq_len * seq_len * sum(sum(heads[role]) for role in ROLES)
        self.keep = exact_count(spec, n_samples=n_samples, bytes_per_sample=bytes_per_sample)
        self.pairs = [(int(t), int(s)) for t, s in pairs]
        self.positions = positions
        self.seq_len = seq_len
        self.side = min(seq_len, digest.THUMBNAIL_SIDE)
        self.kept_indices: list[int] = []

    def records(self, offset: int, mask: torch.Tensor | None, teacher: Sequence[torch.Tensor],
                student: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
        """The digest rows of this batch for every layer of both models, and the exact maps of its kept samples."""
        self.start(offset, mask, int(teacher[0].shape[0]), int(teacher[0].shape[-1]))
        for role, layers in (("teacher", teacher), ("student", student)):
            for i, maps in enumerate(layers):
                self.add(role, i, maps)
        return self.finish()

    # ---- one batch, a layer at a time (the teacher's layers before the student's) ----
    def start(self, offset: int, mask: torch.Tensor | None, batch_size: int, length: int) -> None:
        """Begin a batch of ``batch_size`` samples at sample ``offset``, ``length`` tokens, ``mask`` [B, T] or None."""
        if length != self.seq_len and mask is None:
            raise InputError(f"the batch starting at sample {offset} has {length} tokens of attention but the run stores "
                             f"{self.seq_len}, and no attention mask says which are real")
        self.offset = offset
        self.valid = attn.as_mask(None if mask is None else mask.cpu(), batch_size, length)
        self.keep_rows = kept_rows(self.keep, offset, batch_size)
        self.batch: dict[str, np.ndarray] = {}
        self.means: dict[str, list[torch.Tensor]] = {role: [] for role in ROLES}  # head means [B, T, T] per layer
        self.t_mapped: dict[int, torch.Tensor] = {}  # the teacher's layers in the layer map, until the student's arrive

    def add(self, role: str, layer: int, maps: torch.Tensor) -> None:
        """Digest one layer's [B, H, T, T] maps; what the student's layers are compared with is kept until then."""
        maps = maps.detach()
        length = int(maps.shape[-1])
        positions = self.positions[role][:length]
        batch = self.batch
        batch[layout.attention_summaries(role, layer)] = digest.per_sample_summaries(maps, mask=self.valid,
                                                                                     positions=positions)
        batch[layout.attention_thumbnails(role, layer)] = pad_tokens(
            digest.thumbnails(maps, mask=self.valid, side=self.side), (2, 3), self.side)
        if self.keep_rows:
            batch[layout.attention(role, layer)] = pad_tokens(
                as_numpy(maps[self.keep_rows].to(torch.float16)), (2, 3), self.seq_len)
        self.means[role].append(digest.head_means(maps))
        if role == "teacher":
            if any(t == layer for t, _ in self.pairs):
                self.t_mapped[layer] = maps
            return
        for t_layer, s_layer in self.pairs:
            if s_layer == layer:
                batch[layout.attention_head_divergence(t_layer, s_layer)] = digest.head_divergences(
                    self.t_mapped[t_layer], maps, mask=self.valid)

    def finish(self) -> dict[str, np.ndarray]:
        """This batch's records, once every layer of both models has been added."""
        n_t, n_s = len(self.means["teacher"]), len(self.means["student"])
        if not n_t or not n_s:
            raise InputError(f"the batch starting at sample {self.offset} gave {n_t} teacher and {n_s} student attention "
                             "layers; capture needs every layer of both models in every batch")
        self.batch[layout.ATTENTION_LAYER_DIVERGENCE] = digest.layer_divergences_from_means(
            self.means["teacher"], self.means["student"], mask=self.valid)
        self.kept_indices.extend(self.offset + i for i in self.keep_rows)
        records, self.batch, self.t_mapped = self.batch, {}, {}
        self.means = {role: [] for role in ROLES}
        return records

    def settings(self) -> dict[str, Any]:
        """The capture settings `readers.attention` needs: which samples are exact, the digest's form."""
        return {"attention_samples": self.kept_indices, "attention_tokens": self.seq_len, "attention_thumbnail": self.side,
                "attention_summaries": list(digest.SUMMARY_NAMES), "attention_head_pairs": [list(p) for p in self.pairs]}

    def state(self) -> dict[str, Any]:
        return {"kept_indices": self.kept_indices}

    def absorb(self, states: Sequence[dict[str, Any]]) -> None:
        self.kept_indices = sorted(i for state in states for i in state["kept_indices"])
