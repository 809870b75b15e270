"""`TextData`: the texts of a run made from texts (`kdviz.capture_text`) and, for a two-tokenizer run, each text's
alignment as a `metrics.token_alignment.TextComparison`, which `views.tokenizers.alignment_view` draws."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdviz.errors import MissingDataError
from kdviz.metrics.token_alignment import Alignment, TextComparison
from kdviz.store import Run

ROLES = ("teacher", "student")


@dataclass
class TextData:
    """``texts`` [N] of a text run; `comparison` rebuilds one text's two tokenizations, read one sample at a time."""

    run: Run
    texts: list[str]

    @classmethod
    def from_run(cls, run: Run) -> TextData:
        texts = run.texts()
        if texts is None:
            raise MissingDataError(f"run {run.name!r} was not made from texts; capture it with kdviz.capture_text")
        return cls(run, texts)

    @property
    def tokenizations(self) -> int:
        return self.run.tokenizations

    def comparison(self, index: int) -> TextComparison:
        """Text ``index`` as both models tokenized and scored it (pieces are shown as the text they cover)."""
        if self.tokenizations != 2:
            raise MissingDataError("the alignment view needs a run of two tokenizers (capture_text with student_tokenizer=)")
        text, run = self.texts[index], self.run
        real = run.text_alignment("boundaries")[index] >= 0
        offsets = {}
        for role in ROLES:
            rows = run.text_alignment(f"{role}_offsets")[index]
            offsets[role] = rows[rows[:, 0] >= 0].astype(np.int64)
        alignment = Alignment(*(run.text_alignment(name)[index][real].astype(np.int64)
                                for name in ("boundaries", "teacher_piece", "student_piece")))
        spans = {role: run.text_alignment(f"{role}_span_logprob")[index][real].astype(np.float64) for role in ROLES}
        spans["difference"] = spans["teacher"] - spans["student"]
        boundary = {name: run.pair_token_stat(name)[index][real].astype(np.float64) for name in ("kl", "reverse_kl")}
        for side in (run.teacher, run.student):
            for stat in ("entropy", "outside_mass"):
                boundary[f"{side.role}_{stat}"] = side.token(stat)[index][real].astype(np.float64)
        pieces = {role: [text[a:b] for a, b in offsets[role].tolist()] for role in ROLES}
        return TextComparison(text, pieces, offsets, alignment, boundary, spans)
