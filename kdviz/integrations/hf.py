"""`KdvizCallback` for 🤗 transformers' `Trainer`: records the model being trained (the student) on a fixed probe set,
with a frozen teacher, into a kdviz run: the same history `kdviz.distill(record=...)` writes.

    trainer = Trainer(model=student, args=args, train_dataset=train, callbacks=[
        KdvizCallback(teacher, probe={"input_ids": ids, "attention_mask": mask, "labels": y}, record="runs/x.kdviz",
                      every_n_steps=100)])
    trainer.train()          # the run appears at runs/x.kdviz when training ends; kdviz.Run.open(...).steps
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from kdviz.demo.optional import require_transformers
from kdviz.integrations._recording import RecordingSession

transformers = require_transformers("kdviz.integrations.hf.KdvizCallback")


class KdvizCallback(transformers.TrainerCallback):
    """Snapshot the student at step 0, every ``every_n_steps`` optimizer steps (default: at each epoch's end) and at
    the end of training; the training loss last logged by the Trainer is recorded with each snapshot."""

    def __init__(self, teacher: nn.Module, probe: Any, record: str | os.PathLike, *, every_n_steps: int | None = None,
                 layers: Sequence[str] | None = None, batch_size: int = 32, class_names: Sequence[str] | None = None,
                 overwrite: bool = False) -> None:
        self.session = RecordingSession(teacher, probe, record, layers=layers, batch_size=batch_size, class_names=class_names,
                                        overwrite=overwrite)
        self.every_n_steps = every_n_steps

    @property
    def run(self):
        """The recorded run, once training has ended."""
        return self.session.run

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.session.start(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every_n_steps and state.global_step % self.every_n_steps == 0:
            self.session.snapshot(state.global_step, state.epoch or 0, _last_loss(state))

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if not self.every_n_steps:
            self.session.snapshot(state.global_step, state.epoch or 0, _last_loss(state))

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.session.snapshot(state.global_step, state.epoch or 0, _last_loss(state))
        self.session.finish({"trainer": "transformers.Trainer", "max_steps": state.max_steps,
                             "learning_rate": args.learning_rate, "every_n_steps": self.every_n_steps})


def _last_loss(state) -> dict[str, float]:
    for entry in reversed(state.log_history):
        if "loss" in entry:
            return {"loss": float(entry["loss"])}
    return {}
