"""What the attention views read from a run: each sample's attention digest (per-head summaries, pooled thumbnails,
layer and head divergences, stored for every sample by capture) and the exact maps of the samples the run kept
(`Run.attention_samples`).

Nothing here holds a whole [N, L, H, T, T] tensor: a sample's exact maps are read one layer [H, T, T] at a time;
the dataset-level divergences are weighted means of the stored per-sample ones, over every sample.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from kdviz.errors import MissingDataError
from kdviz.metrics import attention as attn
from kdviz.metrics import attention_digest as digest
from kdviz.metrics.features import suggest_layer_map
from kdviz.readers.memo import Memo
from kdviz.store import ModelSide, Run, read_rows
from kdviz.text import display_token

ROLES = ("teacher", "student")
MEMO_SIZE = 320  # per-sample head summaries of the recently shown samples, and every layer pair's head divergence


class AttentionData:
    """Lazy access to the attention maps (and CNN attention-transfer maps) of one run."""

    def __init__(self, run: Run, *, max_samples: int = 256, measure: str = "kl") -> None:
        self.run = run
        self.max_samples = int(min(max_samples, run.n_samples))
        self.measure = measure
        self.memo = Memo(MEMO_SIZE)  # per-head summaries, head divergences and the layer map, shared by every session

    @classmethod
    def from_run(cls, run: Run, *, max_samples: int = 256, measure: str = "kl") -> AttentionData:
        return cls(run, max_samples=max_samples, measure=measure)

    def sample_summaries(self, role: str, sample: int, summary: str) -> np.ndarray:
        """`_sample_summaries`, remembered."""
        return self.memo.get(("summaries", role, int(sample), summary), lambda: self._sample_summaries(role, sample, summary))

    def pair_divergence(self, teacher_layer: int, student_layer: int) -> np.ndarray:
        """`_pair_divergence`, remembered."""
        return self.memo.get(("pairs", int(teacher_layer), int(student_layer)),
                             lambda: self._pair_divergence(teacher_layer, student_layer))

    # ---- structure ----------------------------------------------------------------------------
    def side(self, role: str) -> ModelSide:
        return self.run.teacher if role == "teacher" else self.run.student

    @property
    def has_attention(self) -> bool:
        return bool(self.run.teacher.attention_layers and self.run.student.attention_layers)

    @property
    def has_spatial(self) -> bool:
        return bool(self.spatial_pairs)

    def require_attention(self) -> None:
        if not self.has_attention:
            raise MissingDataError(
                f"run {self.run.name!r} holds no attention maps for both models: capture transformer models with "
                "attentions=True (CNN runs have attention-transfer maps instead: see spatial_overlay)")

    def layers(self, role: str) -> list[str]:
        return self.side(role).attention_layers

    def heads(self, role: str) -> list[int]:
        return self.side(role).heads

    @property
    def n_tokens(self) -> int:
        """Tokens per sample as stored (padded samples included)."""
        return int(self.run.meta["capture"].get("attention_tokens") or self.run.teacher.attention(0).shape[-1])

    @property
    def layer_map(self) -> list[tuple[int, int]]:
        """(student layer, teacher layer) pairs of the run's map, when it pairs attention layers."""
        unit = self.run.meta["layer_map"].get("unit")
        return self.run.layer_map if unit == "attention" else []

    def mapped_student_layer(self, teacher_layer: int) -> int | None:
        return next((s for s, t in self.layer_map if t == teacher_layer), None)

    def grid(self, role: str) -> dict[str, Any] | None:
        return self.side(role).token_grid

    def positions(self, role: str) -> np.ndarray:
        """[T, d] positions for attention distance: patches of the ViT grid, else token index."""
        layout = self.grid(role)
        if layout:
            return attn.token_positions(self.n_tokens, layout["grid"], layout["prefix"])
        return attn.token_positions(self.n_tokens)

    # ---- one sample ---------------------------------------------------------------------------
    def exact_row(self, sample: int) -> int | None:
        """The row of ``sample`` in the exact maps, or None when the run keeps only its digest."""
        return self._exact_rows.get(int(sample))

    def has_exact(self, sample: int) -> bool:
        return self.exact_row(sample) is not None

    @cached_property
    def _exact_rows(self) -> dict[int, int]:
        return {sample: row for row, sample in enumerate(self.run.attention_samples)}

    def exact_note(self) -> str:
        """Which samples have exact maps, and how to keep others, in words."""
        kept = self.run.attention_samples
        which = ("none" if not kept else f"sample {kept[0]}" if len(kept) == 1
                 else f"samples {kept[0]}–{kept[-1]}" if kept == list(range(kept[0], kept[-1] + 1))
                 else f"{len(kept)} samples ({', '.join(map(str, kept[:5]))}{', …' if len(kept) > 5 else ''})")
        return f"exact maps kept for {which}: capture with attention_samples=[…] to keep others"

    def maps(self, role: str, layer: int, sample: int) -> np.ndarray:
        """[H, T, T] float32 exact attention of one layer for one sample (one chunk read)."""
        return self.side(role).attention(layer)[self._require_exact(sample)].astype(np.float32)

    def head_map(self, role: str, layer: int, head: int, sample: int) -> np.ndarray:
        """[T, T] float32 exact attention of one head."""
        return self.side(role).attention(layer)[self._require_exact(sample), head].astype(np.float32)

    def _require_exact(self, sample: int) -> int:
        row = self.exact_row(sample)
        if row is None:
            raise MissingDataError(f"sample {sample} of run {self.run.name!r} has no exact attention maps, only their "
                                   f"digest; {self.exact_note()}")
        return row

    def thumbnails(self, role: str, layer: int, sample: int) -> np.ndarray:
        """[H, s, s] float32 attention of one layer on one sample pooled at capture over its real tokens, s = min(real
        tokens, the stored side): keys summed and queries averaged per bin, so rows sum to 1."""
        side = self.thumbnail_side(sample)
        return self.sample_digest(role, sample)[1][layer][:, :side, :side].astype(np.float32)

    def sample_thumbnails(self, role: str, sample: int) -> list[np.ndarray]:
        """[H, s, s] float32 `thumbnails` of every layer of one model on one sample (from `sample_digest`)."""
        side = self.thumbnail_side(sample)
        return [maps[:, :side, :side].astype(np.float32) for maps in self.sample_digest(role, sample)[1]]

    def sample_digest(self, role: str, sample: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """One sample's digest of every layer of one model, remembered: per-head summaries [H, S] and thumbnails
        [H, P, P] as stored, read in one concurrent round trip (a sample switch reads 2 × L rows)."""
        def read() -> tuple[list[np.ndarray], list[np.ndarray]]:
            arrays = self._digest_arrays(role)
            rows = read_rows(arrays, int(sample))
            return rows[: len(arrays) // 2], rows[len(arrays) // 2:]

        return self.memo.get(("digest", role, int(sample)), read)

    def _digest_arrays(self, role: str) -> list[Any]:
        """The summary arrays of every layer, then the thumbnail arrays, opened once (opening reads metadata)."""
        def open_arrays() -> list[Any]:
            side, layers = self.side(role), range(len(self.layers(role)))
            return [side.attention_summaries(layer) for layer in layers] + [side.attention_thumbnails(layer) for layer in layers]

        return self.memo.get(("digest arrays", role), open_arrays)

    def thumbnail_side(self, sample: int) -> int:
        """Bins per side of one sample's thumbnails (fewer than `grid_side` when it has fewer real tokens)."""
        return digest.thumbnail_side(self.n_real(sample), self.grid_side)

    @property
    def grid_side(self) -> int:
        """Bins per side of the stored thumbnails: min(tokens, `metrics.attention_digest.THUMBNAIL_SIDE`)."""
        return int(self.run.meta["capture"].get("attention_thumbnail") or min(self.n_tokens, digest.THUMBNAIL_SIDE))

    def n_real(self, sample: int) -> int:
        """Real tokens of one sample (all of them without a padding mask); from `rows`, read once for all samples."""
        return int(self.rows[sample])

    def mask(self, sample: int | slice) -> np.ndarray | None:
        """[T] (or [n, T]) bool, True for real tokens; None when the run has no padding mask."""
        if self.run.attention_mask is None:
            return None
        return self.run.attention_mask[sample].astype(bool)

    def tokens(self, sample: int) -> list[str] | None:
        """Token strings of one sample, shown with visible whitespace; for a ViT "CLS" and patch "row,col" names."""
        layout = self.grid("teacher")
        if layout and self.grid("student") == layout:
            prefix, (rows, cols) = layout["prefix"], layout["grid"]
            return ["CLS" if i == 0 else f"reg{i}" for i in range(prefix)] + [f"p{r},{c}" for r in range(rows) for c in range(cols)]
        if self.run.tokens is not None:
            return [display_token(t) for t in self.run.tokens[sample]]
        vocab = self.run.meta.get("vocab")
        if vocab and self.run.token_ids is not None:
            return [display_token(vocab[int(i)]) if 0 <= int(i) < len(vocab) else f"#{int(i)}"
                    for i in self.run.token_ids[sample]]
        return None

    def image(self, sample: int) -> np.ndarray | None:
        """[h, w] or [h, w, 3] uint8 thumbnail of the input image, when the run stored one."""
        return self.run.thumbnails[sample] if self.run.thumbnails is not None else None

    def _sample_summaries(self, role: str, sample: int, summary: str) -> np.ndarray:
        """[L, H] one `metrics.attention.SUMMARIES` value of every head on one sample, as capture stored it."""
        names = self.run.meta["capture"].get("attention_summaries", [])
        if summary not in names:
            raise MissingDataError(f"run {self.run.name!r} stores the head summaries {names}, not {summary!r}")
        column = names.index(summary)
        return _stack_ragged([rows[:, column].astype(np.float64) for rows in self.sample_digest(role, sample)[0]])

    def rollout(self, role: str, sample: int) -> np.ndarray:
        """[T, T] attention rollout of one sample through all of the model's captured layers (exact maps only)."""
        return attn.rollout([self.maps(role, layer, sample) for layer in range(len(self.layers(role)))])[0]

    # ---- dataset level (every sample, from the stored per-sample divergences) -------------------------
    @cached_property
    def rows(self) -> np.ndarray:
        """[N] real query rows of each sample: the weights of its divergences in a dataset mean."""
        if self.run.attention_mask is None:
            return np.full(self.run.n_samples, self.n_tokens, np.int64)
        return np.asarray(self.run.attention_mask[:], np.int64).sum(1)

    @property
    def scope(self) -> str:
        """Which samples the dataset-level views average, in words."""
        return f"all {self.run.n_samples:,} samples"

    def _pair_divergence(self, teacher_layer: int, student_layer: int) -> np.ndarray:
        """[H_t, H_s] head divergence of one layer pair over every sample (a pair of the run's layer map), or over the
        samples with exact maps (any other pair)."""
        self.require_attention()
        if self.measure != "kl":
            raise MissingDataError(f"capture stores KL between heads; the {self.measure!r} measure is not stored")
        stored = self.run.attention_head_divergence(teacher_layer, student_layer)
        if stored is not None:
            return digest.weighted_mean(stored[:], self.rows)
        kept = self.run.attention_samples
        if not kept:
            raise MissingDataError(
                f"the heads of teacher layer {teacher_layer} and student layer {student_layer} were not compared: capture "
                "compares the layer map's pairs, and this run kept no exact maps for others; capture with "
                "layer_map= pairing these layers, or attention_samples= to keep exact maps")
        acc = attn.HeadDivergence(self.measure)
        t_array, s_array = self.run.teacher.attention(teacher_layer), self.run.student.attention(student_layer)
        per_sample = (t_array.shape[1] + s_array.shape[1]) * self.n_tokens ** 2
        for block in attn.sample_blocks(len(kept), per_sample):
            mask = None if self.run.attention_mask is None else self.run.attention_mask[kept[block]].astype(bool)
            acc.update(t_array[block], s_array[block], mask)
        return acc.result()

    def sample_head_divergence(self, teacher_layer: int, student_layer: int, sample: int) -> np.ndarray | None:
        """[H_t, H_s] head divergence of one layer pair on one sample: stored for the layer map's pairs, computed from
        exact maps for others; None when neither is there."""
        stored = self.run.attention_head_divergence(teacher_layer, student_layer)
        if stored is not None:
            return np.asarray(stored[sample], np.float64)
        if not self.has_exact(sample):
            return None
        mask = self.mask(sample)
        return attn.head_divergence(self.maps("teacher", teacher_layer, sample), self.maps("student", student_layer, sample),
                                    mask=None if mask is None else mask[None])

    def match(self, teacher_layer: int, student_layer: int) -> attn.HeadMatch:
        return attn.match_heads(self.pair_divergence(teacher_layer, student_layer))

    def follow(self, teacher_layer: int, teacher_head: int) -> tuple[int, int]:
        """The student (layer, head) to show beside a teacher head: the mapped layer (or the closest by divergence),
        and the matched head (or, for a teacher head left unmatched, the closest student head). A layer pair whose heads
        were never compared (not in the layer map, and no exact maps kept) shows the student's head 0."""
        s_layer = self.mapped_student_layer(teacher_layer)
        if s_layer is None:
            s_layer = int(self.layer_similarity()[teacher_layer].argmin())
        try:
            s_head = self.match(teacher_layer, s_layer).student_of(teacher_head)
        except MissingDataError:
            return s_layer, 0
        if s_head is None:
            s_head = int(self.pair_divergence(teacher_layer, s_layer)[teacher_head].argmin())
        return s_layer, s_head

    def matched_divergence(self, role: str) -> np.ndarray:
        """[L, H] each head's divergence to the head it is matched with in the mapped layer (NaN when its layer
        is not in the layer map or the head is left unmatched)."""
        out = _stack_ragged([np.full(h, np.nan) for h in self.heads(role)])
        for s_layer, t_layer in self.layer_map:
            match = self.match(t_layer, s_layer)
            for (t_head, s_head), cost in zip(match.pairs, match.costs, strict=True):
                if role == "teacher":
                    out[t_layer, t_head] = cost
                else:
                    out[s_layer, s_head] = cost
        return out

    def layer_similarity(self) -> np.ndarray:
        """[L_t, L_s] divergence of head-averaged attention between every teacher and student layer, over every sample."""
        self.require_attention()
        return self.memo.get(("layer_similarity",),
                             lambda: digest.weighted_mean(self.run.attention_layer_divergence[:], self.rows))

    def suggested_map(self) -> list[tuple[int, int]]:
        """The monotone (student, teacher) layer map with the lowest total divergence."""
        return [tuple(p) for p in suggest_layer_map(-self.layer_similarity())["pairs"]]

    # ---- CNN attention transfer ---------------------------------------------------------------
    @cached_property
    def spatial_pairs(self) -> list[tuple[str, str]]:
        """(teacher name, student name) of the attention-transfer maps to compare: the layer map's feature pairs
        when both sides have maps for them, else names present on both sides."""
        t_names, s_names = self.run.teacher.spatial_names, self.run.student.spatial_names
        if not t_names or not s_names:
            return []
        if self.run.meta["layer_map"].get("unit") == "features":
            t_feats, s_feats = self.run.teacher.feature_names, self.run.student.feature_names
            pairs = [(t_feats[t], s_feats[s]) for s, t in self.run.layer_map]
            pairs = [(t, s) for t, s in pairs if t in t_names and s in s_names]
            if pairs:
                return pairs
        return [(name, name) for name in t_names if name in s_names]

    def spatial(self, role: str, name: str, sample: int | slice) -> np.ndarray:
        return self.side(role).spatial(name)[sample]

    def at_distances(self, teacher_name: str, student_name: str) -> np.ndarray:
        """[N'] attention-transfer distance of every sample in the first ``max_samples``."""
        rows = slice(0, self.max_samples)
        return attn.at_distance(self.spatial("teacher", teacher_name, rows), self.spatial("student", student_name, rows))


def _stack_ragged(rows: list[np.ndarray]) -> np.ndarray:
    """[L, max H] from per-layer [H] arrays (NaN where a layer has fewer heads)."""
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), np.nan)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out
