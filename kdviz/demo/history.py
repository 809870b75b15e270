"""The digits-cnn demo run's training history. ``kdviz demo --retrain`` distils the CNN student with `kdviz.distill`
and keeps its weights every `RECORD_EVERY` epochs (``assets/cnn_student.history.safetensors``) with each epoch's
loss components (``demo.json``). The build replays those checkpoints through the `Recorder` that
``distill(record=...)`` uses, so the run's history is the training that produced the committed student, exactly and
on any machine (a fresh distillation would differ with the thread count)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from kdviz.demo import data as demo_data
from kdviz.losses import KD
from kdviz.store import Run, refuse_existing
from kdviz.train import Recorder, distill, training_settings

HISTORY_FILE = "cnn_student.history.safetensors"
RECORD_EVERY = 3  # epochs between checkpoints: 11 snapshots over the 30 epochs


def distill_with_checkpoints(teacher: nn.Module, student: nn.Module, train: dict[str, Any], *, epochs: int,
                             progress: bool = True) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor], dict[str, Any]]:
    """Distil ``student`` from ``teacher`` on the digits training split by Hinton KD (``train``: T, alpha, lr,
    batch_size), keeping its weights at step 0 and every `RECORD_EVERY` epochs. Returns (snapshots: step, epoch and
    loss components of each; weights: ``"<step>/<name>"`` → tensor; the training settings as `distill` records them)."""
    digits = demo_data.load_digits()
    snapshots: list[dict[str, Any]] = []
    weights: dict[str, torch.Tensor] = {}

    def keep(step: int, epoch: int, losses: dict[str, float], model: nn.Module) -> None:
        snapshots.append({"step": step, "epoch": epoch, "losses": dict(losses)})
        weights.update({f"{step}/{name}": value.detach().clone().contiguous() for name, value in model.state_dict().items()})

    loss = KD(T=train["T"], alpha=train["alpha"])
    distill(teacher, student, (digits.x_train, digits.y_train), losses=[loss], epochs=epochs, lr=train["lr"],
            batch_size=train["batch_size"], record_every=RECORD_EVERY, checkpoint=keep, progress=progress, device="cpu")
    steps_per_epoch = snapshots[1]["step"] // snapshots[1]["epoch"] if len(snapshots) > 1 else None
    training = training_settings([loss], epochs=epochs, lr=train["lr"], batch_size=train["batch_size"],
                                 steps_per_epoch=steps_per_epoch, optimizer="AdamW", record_every=RECORD_EVERY)
    return snapshots, weights, training


def save_history(directory: Path, weights: dict[str, torch.Tensor]) -> str:
    """Write the checkpoints into ``directory`` (safetensors, never pickle); returns the file's name."""
    save_file(weights, str(directory / HISTORY_FILE))
    return HISTORY_FILE


def record_history(path: Path, teacher: nn.Module, student: nn.Module, data: Any, entry: dict[str, Any],
                   directory: Path, *, overwrite: bool, progress: bool, **options: Any) -> Run:
    """The run at ``path``: every checkpoint of ``entry["history"]`` captured on ``data`` as a snapshot, then the
    teacher and ``student`` (the final weights) as the run. ``options``: `Recorder`'s (layers, class_names, names…)."""
    refuse_existing(path, overwrite)
    history = entry["history"]
    weights = load_file(str(directory / history["file"]))
    final = {name: value.detach().clone() for name, value in student.state_dict().items()}
    recorder = Recorder(path, teacher, student, data, device="cpu", **options)
    with recorder:
        for snapshot in tqdm(history["snapshots"], desc="kdviz demo history", unit="snapshot", disable=not progress):
            prefix = f"{snapshot['step']}/"
            student.load_state_dict({name[len(prefix):]: value for name, value in weights.items() if name.startswith(prefix)})
            recorder.snapshot(snapshot["step"], snapshot["epoch"], snapshot["losses"])
        student.load_state_dict(final)
        return recorder.finish(history["training"])
