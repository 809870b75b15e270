"""What a dashboard session or a notebook has selected, shared by every explorer: the run, its training step, the
sample and the temperature T.

Picking a sample in any explorer sets ``sample`` here, and every explorer that shares the selection shows it.
"""

from __future__ import annotations

from collections.abc import Sequence

import param

from kdviz.errors import InputError
from kdviz.store import Run

TEMPERATURES = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0)


class Selection(param.Parameterized):
    """One selection, shared by the explorers of a dashboard session or a notebook; they watch it and redraw what
    depends on what changed."""

    run = param.Selector(objects=[], doc="name of the run shown")
    step = param.Integer(default=None, allow_None=True, doc="recorded training step shown (None: the final run)")
    sample = param.Integer(default=0, bounds=(0, None), doc="sample index shown in per-sample views")
    T = param.Selector(default=4.0, objects=list(TEMPERATURES), doc="softmax temperature of the logit views")

    @classmethod
    def for_run(cls, run: Run, names: Sequence[str] | None = None, *, step: int | None = None, sample: int = 0,
                T: float | None = None) -> Selection:
        """A selection of ``run`` (among ``names``, default: it alone) at ``step`` (default: its last recorded one),
        ``sample`` and ``T``; a step, sample or T the run does not have is refused with the fix."""
        selection = cls()
        selection.param.run.objects = list(names or [run.name])
        selection.choose(run.name, run.n_samples, run.steps)
        if step is not None:
            if int(step) not in run.steps:
                raise InputError(f"step {step} was not recorded in run {run.name!r}; recorded steps: {run.steps}")
            selection.step = int(step)
        if not 0 <= int(sample) < run.n_samples:
            raise InputError(f"sample {sample} is outside run {run.name!r} ({run.n_samples} samples)")
        selection.sample = int(sample)
        if T is not None:
            selection.allow_temperature(T)
        return selection

    def choose(self, run: str, n_samples: int, steps: list[int]) -> None:
        """Switch to another run: keep the sample when the run has it, start at its last recorded step."""
        with param.parameterized.batch_call_watchers(self):
            self.step = steps[-1] if steps else None
            self.sample = self.sample if self.sample < n_samples else 0
            self.run = run

    def allow_temperature(self, T: float) -> None:
        """Offer ``T`` on the temperature control too (a notebook may ask for any positive T) and select it."""
        if not T > 0:
            raise InputError(f"temperature must be positive, got T={T}")
        T = float(T)
        if T not in self.param.T.objects:
            self.param.T.objects = sorted({*self.param.T.objects, T})
        self.T = T
