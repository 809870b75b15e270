"""What both callbacks share: a `kdviz.train.Recorder` started at the first step, fed snapshots, finished at the end."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from kdviz.store import Run, refuse_existing
from kdviz.train import Recorder


class RecordingSession:
    """Snapshots of a student trained by someone else's loop, into one run at ``record``.

    `start` captures step 0; `snapshot` adds a step unless it is already recorded; `finish` captures the teacher
    and the final student as the run and moves the snapshots in (nothing appears at ``record`` before that).
    """

    def __init__(self, teacher: nn.Module, probe: Any, record: str | os.PathLike, *, layers: Sequence[str] | None = None,
                 batch_size: int = 32, class_names: Sequence[str] | None = None, overwrite: bool = False) -> None:
        refuse_existing(record, overwrite)
        self.teacher, self.probe, self.record = teacher, probe, record
        self.layers, self.batch_size, self.class_names = layers, batch_size, class_names
        self.recorder: Recorder | None = None
        self.recorded: set[int] = set()
        self.run: Run | None = None

    def start(self, student: nn.Module) -> None:
        device = next(student.parameters()).device
        self.recorder = Recorder(self.record, self.teacher, student, self.probe, layers=self.layers, batch_size=self.batch_size,
                                 class_names=self.class_names, device=device)
        self.snapshot(0, 0, {})

    def snapshot(self, step: int, epoch: float, losses: Mapping[str, float]) -> None:
        if self.recorder is not None and step not in self.recorded:
            self.recorder.snapshot(step, int(epoch), losses)
            self.recorded.add(step)

    def finish(self, training: Mapping[str, Any]) -> Run | None:
        if self.recorder is None:
            return None
        self.run = self.recorder.finish(training)
        self.recorder = None
        return self.run
