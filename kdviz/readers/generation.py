"""`GenerationData`: a run of generated continuations (`kdviz.generate`) read back as
`metrics.generation.PromptGenerations`, one per prompt and draw, which `views.generation` draws."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kdviz.errors import CorruptRunError, MissingDataError
from kdviz.metrics.generation import WRITERS, Continuation, PromptGenerations
from kdviz.store import Run

UNITS = ("token", "span")
SETTINGS = {"max_new_tokens": int, "do_sample": bool, "temperature": float, "top_p": float, "seed": int, "n": int,
            "prompts": int}


@dataclass
class GenerationData:
    """The continuations of a generation run: per sample its ``prompt``, ``draw``, ``writer`` (index into
    `WRITERS`), ``start`` and ``units`` (its new units' rows in the per-token statistics) and ``fork``, all [N];
    ``unit`` is what the statistics are per ("token", or "span" with two tokenizers); ``settings`` how it was
    generated (checked types; None where unset)."""

    run: Run
    unit: str
    settings: dict[str, Any]
    columns: dict[str, np.ndarray]
    texts: list[str]
    _cache: dict[int, PromptGenerations] = field(default_factory=dict, repr=False)

    @classmethod
    def from_run(cls, run: Run) -> GenerationData:
        if not run.generated:
            raise MissingDataError(f"run {run.name!r} holds no generated continuations; make one with kdviz.generate")
        attrs = run.generation_settings()
        unit = attrs.get("unit")
        if unit not in UNITS:
            raise CorruptRunError(f"run {run.name!r} says its continuations are scored per {unit!r}; expected one of "
                                  f"{list(UNITS)}. Make the run again with kdviz.generate")
        settings = {}
        for name, kind in SETTINGS.items():  # only numbers, booleans and None are read from the run's attributes
            value = (attrs.get("settings") or {}).get(name)
            ok = value is None or (isinstance(value, bool) if kind is bool else
                                   isinstance(value, int | float) and not isinstance(value, bool))
            if not ok:
                raise CorruptRunError(f"run {run.name!r} records the generation setting {name!r} as {type(value).__name__}; "
                                      "make the run again with kdviz.generate")
            settings[name] = value
        columns = {name: run.generation(name)[:].astype(np.int64)
                   for name in ("prompt", "draw", "writer", "prompt_tokens", "prompt_chars", "start", "units", "fork")}
        if run.n_samples % 2 or (columns["writer"] != np.arange(run.n_samples) % 2).any():
            raise CorruptRunError(f"run {run.name!r} does not hold its continuations in student, teacher pairs; make "
                                  "it again with kdviz.generate")
        texts = run.texts()
        if texts is None:
            raise CorruptRunError(f"run {run.name!r} keeps generated continuations but not their texts; make it again "
                                  "with kdviz.generate")
        return cls(run, unit, settings, columns, texts)

    @property
    def n_pairs(self) -> int:
        return self.run.n_samples // 2

    def pair_of(self, sample: int) -> int:
        """The prompt-and-draw pair that sample ``sample`` belongs to."""
        return int(sample) // 2

    def generations(self) -> list[PromptGenerations]:
        """Every pair, in prompt and draw order."""
        return [self.pair(i) for i in range(self.n_pairs)]

    def pair(self, index: int) -> PromptGenerations:
        """Pair ``index`` (samples 2·index, the student's continuation, and 2·index + 1, the teacher's)."""
        if not 0 <= index < self.n_pairs:
            raise MissingDataError(f"pair {index} is not in this run; it holds {self.n_pairs}")
        if index not in self._cache:
            student, _ = self._continuation(2 * index)
            sample = 2 * index + 1  # the prompt as the teacher's tokenizer read it
            teacher, prompt_ids = self._continuation(sample)
            self._cache[index] = PromptGenerations(
                self.texts[sample][: self.columns["prompt_chars"][sample]], prompt_ids, student, teacher,
                student.fork, self.unit, int(self.columns["draw"][sample]))
        return self._cache[index]

    def _continuation(self, sample: int) -> tuple[Continuation, np.ndarray]:
        """Sample ``sample``'s continuation, and its writer's ids of the prompt [P]."""
        c, run = self.columns, self.run
        start, units = int(c["start"][sample]), int(c["units"][sample])
        rows = slice(start, start + units)
        stats = {name: run.pair_token_stat(name)[sample][rows].astype(np.float64) for name in ("kl", "reverse_kl")}
        for side in (run.teacher, run.student):
            stats[f"{side.role}_entropy"] = side.token("entropy")[sample][rows].astype(np.float64)
            if self.unit == "span":  # the next span's log-probability, kept in float64
                logprob = run.text_alignment(f"{side.role}_span_logprob")[sample][start + 1:start + 1 + units]
            else:
                with np.errstate(divide="ignore"):
                    logprob = np.log(side.token("true_prob")[sample][rows].astype(np.float64))
            stats[f"{side.role}_true_logprob"] = np.asarray(logprob, dtype=np.float64)
        sequence = run.generation("sequence")[sample].astype(np.int64)
        prompt_ids, ids = sequence[: c["prompt_tokens"][sample]], sequence[c["prompt_tokens"][sample]:]
        tokens = (run.tokens or [[]] * run.n_samples)[sample]
        pieces = [str(p) for p in tokens[start + 1:start + 1 + units]]
        fork = int(c["fork"][sample])
        return Continuation(WRITERS[int(c["writer"][sample])], ids[ids >= 0], self.texts[sample][c["prompt_chars"][sample]:],
                            stats, pieces, None if fork < 0 else fork), prompt_ids
