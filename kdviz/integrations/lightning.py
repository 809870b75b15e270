"""`KdvizCallback` for Lightning: records the student (the LightningModule, or one of its attributes) on a fixed probe
set, with a frozen teacher, into a kdviz run: the same history `kdviz.distill(record=...)` writes.

    trainer = pl.Trainer(max_epochs=10, callbacks=[KdvizCallback(teacher, probe=(x, y), record="runs/x.kdviz",
                                                                 student_attribute="student")])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from kdviz.errors import OptionalDependencyError
from kdviz.integrations._recording import RecordingSession

try:
    import lightning.pytorch as pl
except ImportError:
    try:
        import pytorch_lightning as pl
    except ImportError as exc:
        raise OptionalDependencyError(
            "kdviz.integrations.lightning needs Lightning: pip install lightning (or pytorch-lightning); "
            "without it, record with kdviz.distill(record=...) or the 🤗 Trainer callback"
        ) from exc


class KdvizCallback(pl.Callback):
    """Snapshot the student at step 0, after every ``every_n_epochs`` training epochs and at the end; the Trainer's
    logged metrics (``trainer.callback_metrics``) are recorded with each snapshot. ``student_attribute`` names the
    attribute of the LightningModule that holds the student (default: the module itself)."""

    def __init__(self, teacher: nn.Module, probe: Any, record: str | os.PathLike, *, every_n_epochs: int = 1,
                 student_attribute: str | None = None, layers: Sequence[str] | None = None, batch_size: int = 32,
                 class_names: Sequence[str] | None = None, overwrite: bool = False) -> None:
        super().__init__()
        self.session = RecordingSession(teacher, probe, record, layers=layers, batch_size=batch_size, class_names=class_names,
                                        overwrite=overwrite)
        self.every_n_epochs = every_n_epochs
        self.student_attribute = student_attribute

    @property
    def run(self):
        """The recorded run, once training has ended."""
        return self.session.run

    def _student(self, pl_module: nn.Module) -> nn.Module:
        return getattr(pl_module, self.student_attribute) if self.student_attribute else pl_module

    def on_train_start(self, trainer, pl_module) -> None:
        self.session.start(self._student(pl_module))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every_n_epochs == 0:
            self.session.snapshot(trainer.global_step, epoch, _metrics(trainer))

    def on_train_end(self, trainer, pl_module) -> None:
        self.session.snapshot(trainer.global_step, trainer.current_epoch, _metrics(trainer))
        self.session.finish({"trainer": "lightning", "max_epochs": trainer.max_epochs, "every_n_epochs": self.every_n_epochs})


def _metrics(trainer) -> dict[str, float]:
    out = {}
    for name, value in trainer.callback_metrics.items():
        try:
            out[str(name)] = float(value)
        except (TypeError, ValueError):
            continue
    return out
