"""`distill`: a small, readable, correct KD loop that records how the student moves toward the teacher.

Not a framework: one optimizer, a weighted sum of `kdviz.losses`, a frozen teacher in eval mode. With ``record=``,
a fixed ``probe`` set is captured at every snapshot (`Recorder`), and the run keeps the student's logits,
attentions and features per step under ``history/<step>/`` with the loss components, so every view can scrub
through training (`Run.steps`, `Run.at_step`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from kdviz import layout, remote
from kdviz.adapters.probe import ModelProbe, ProbeOutput
from kdviz.batching import Batch, attention_mask, iter_batches, take_rows, to_device
from kdviz.capture import CaptureSession, capture, resolve_device, split_layers, store_cka
from kdviz.errors import InputError
from kdviz.losses import KD, DistillLoss, Needs, StepOutputs
from kdviz.store import GroupWriter, Run, history_key, move_into_place, refuse_existing


def distill(
    teacher: nn.Module,
    student: nn.Module,
    train_data: Any,
    *,
    losses: Sequence[DistillLoss] | None = None,
    epochs: int = 1,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    record: str | os.PathLike | None = None,
    probe: Any = None,
    record_every: int = 1,
    record_layers: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    batch_size: int = 64,
    labels: Any = None,
    class_names: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    overwrite: bool = False,
    checkpoint: Callable[[int, int, Mapping[str, float], nn.Module], None] | None = None,
) -> nn.Module:
    """Train ``student`` to imitate the frozen ``teacher`` on ``train_data`` and return it (trained in place).

    - ``losses``: `kdviz.losses` modules, minimised as Σ weight × components (default ``[KD(T=4, alpha=0.5)]``).
      Losses on features or attentions hook the modules they name; learnable parts (Hint regressors) are trained.
    - ``optimizer``: default AdamW(lr) over the student's parameters and the losses' own.
    - ``record``: a run path. The snapshot at step 0 and one every ``record_every`` epochs capture ``probe`` (default:
      the first 512 training samples): the student's logits, attentions (``attentions`` of HF/timm models) and
      ``record_layers`` features, plus loss components and probe accuracy. The run appears when training ends.
    - ``checkpoint``: called as ``checkpoint(step, epoch, losses, student)`` at step 0 and every ``record_every``
      epochs (with or without ``record``; ``losses``: the epoch's mean loss components, empty at step 0), to save the
      student's weights there; it must not change the student.
    - The teacher runs under no_grad in eval mode with its parameters frozen; afterwards both models are back on
      their devices, the teacher's ``requires_grad`` flags and mode are restored, and the student is in eval mode.
    ``train_data`` is read once per epoch (and its first batch once more to build lazy loss parts), so it must be
    re-iterable: a tensor, an (inputs, labels) pair, a dict of tensors or a DataLoader.
    """
    if epochs < 1 or record_every < 1:
        raise InputError(f"epochs and record_every must be at least 1, got {epochs} and {record_every}")
    losses = list(losses) if losses is not None else [KD()]
    if not losses or not all(isinstance(loss, DistillLoss) for loss in losses):
        raise InputError("losses must be a non-empty list of kdviz.losses modules (KD, DKD, CE, AttentionTransfer, Hint, AttentionKL)")
    if record is not None and remote.is_url(record):
        raise InputError(f"training history is recorded into a local run, not {os.fspath(record)!r} on object storage: "
                         "record locally, then publish the run with `kdviz upload`")
    if record is not None:
        refuse_existing(record, overwrite)
    target_device = resolve_device(device)
    needs = Needs()
    for loss in losses:
        needs = needs.merge(loss.needs())
    trainer = _Trainer(teacher, student, losses, needs, target_device)
    recorder = None
    if record is not None:
        recorder = Recorder(record, teacher, student, probe if probe is not None else _first_samples(train_data, 512, labels),
                            layers=record_layers, batch_size=batch_size, class_names=class_names, device=target_device)
    steps_per_epoch = None
    with contextlib.ExitStack() as stack:
        if recorder is not None:
            stack.enter_context(recorder)
        stack.enter_context(_frozen(teacher))
        optimizer = optimizer or torch.optim.AdamW(
            [*student.parameters(), *trainer.setup(next(iter_batches(train_data, batch_size, labels)))], lr=lr)
        if recorder is not None:
            recorder.snapshot(0, 0, {})
        if checkpoint is not None:
            checkpoint(0, 0, {}, student)
        bar = stack.enter_context(tqdm(total=epochs, unit="epoch", desc="kdviz distill", disable=not progress))
        step = 0
        for epoch in range(1, epochs + 1):
            sums: dict[str, float] = {}
            batches = 0
            with trainer.session():
                for batch in iter_batches(train_data, batch_size, labels):
                    components = trainer.step(batch, optimizer)
                    for name, value in components.items():
                        sums[name] = sums.get(name, 0.0) + value
                    batches += 1
                    step += 1
            steps_per_epoch = steps_per_epoch or batches
            means = {name: total / max(1, batches) for name, total in sums.items()}
            bar.set_postfix(loss=f"{means.get('total', float('nan')):.4f}")
            bar.update(1)
            if epoch % record_every == 0 or epoch == epochs:
                if recorder is not None:
                    recorder.snapshot(step, epoch, means)
                if checkpoint is not None:
                    checkpoint(step, epoch, means, student)
        if recorder is not None:
            recorder.finish(training_settings(losses, epochs=epochs, lr=lr, batch_size=batch_size,
                                              steps_per_epoch=steps_per_epoch, optimizer=type(optimizer).__name__,
                                              record_every=record_every))
    student.eval()
    return student


class _Trainer:
    """One optimisation step at a time: teacher (no grad, eval) and student (train mode) through probes that hook
    what the losses need; the probes are entered per epoch so snapshots run on unhooked models."""

    def __init__(self, teacher: nn.Module, student: nn.Module, losses: list[DistillLoss], needs: Needs, device: torch.device) -> None:
        self.losses = losses
        self.device = device
        self.probes = (
            ModelProbe(teacher, "teacher", layers=needs.teacher, attentions=needs.attentions, device=device, spatial_p=None),
            ModelProbe(student, "student", layers=needs.student, attentions=needs.attentions, device=device, spatial_p=None,
                       keep_graph=True, eval_mode=False),
        )

    def setup(self, first: Batch) -> list[nn.Parameter]:
        """Build the losses' lazy parts (regressor shapes) from a first batch; returns their parameters. The student
        runs in eval mode here (restored on exit), so this look at the data leaves no trace in its BatchNorm statistics."""
        with self.probes[0], self.probes[1], torch.no_grad():
            self.probes[1].model.eval()
            outputs = self._outputs(first)
        for loss in self.losses:
            loss.setup(outputs)
            loss.to(self.device)
        return [p for loss in self.losses for p in loss.parameters()]

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Both models hooked and on the device, the student in train mode; all undone on exit, errors included."""
        with self.probes[0], self.probes[1]:
            self.probes[1].model.train()
            yield

    def _outputs(self, batch: Batch) -> StepOutputs:
        inputs = to_device(batch.inputs, self.device)
        with torch.no_grad():
            out_t = self.probes[0].forward(inputs)
        out_s = self.probes[1].forward(inputs)
        mask = attention_mask(inputs)
        labels = None if batch.labels is None else batch.labels.to(self.device)
        return _step_outputs(out_t, out_s, labels, mask)

    def step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        outputs = self._outputs(batch)
        total = outputs.z_s.new_zeros(())
        components: dict[str, float] = {}
        for loss in self.losses:
            for name, value in loss(outputs).items():
                if not torch.isfinite(value):
                    raise InputError(f"the {loss.name} loss component {name!r} is {value.item()}; lower the learning rate "
                                     "or check the inputs")
                total = total + loss.weight * value
                components[f"{loss.name}/{name}"] = float(value.detach())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        components["total"] = float(total.detach())
        return components


def _step_outputs(out_t: ProbeOutput, out_s: ProbeOutput, labels: torch.Tensor | None, mask: torch.Tensor | None) -> StepOutputs:
    return StepOutputs(z_t=out_t.logits, z_s=out_s.logits, labels=labels, features_t=out_t.features, features_s=out_s.features,
                       attentions_t=out_t.attentions, attentions_s=out_s.attentions, mask=mask)


class Recorder:
    """Records a fixed probe set while a student trains, into one run.

    `snapshot` captures the probe with both models (the teacher is recomputed, which keeps the code one path) and
    streams the student's arrays into ``history/<step>/`` beside the run; `finish` captures the teacher and the
    final student as the run itself and moves the history in. Training callbacks (`kdviz.integrations`) use it too.
    Use as a context manager: an exception leaves nothing under the run's path.
    """

    def __init__(self, path: str | os.PathLike, teacher: nn.Module, student: nn.Module, probe: Any, *,
                 layers: Sequence[str] | Mapping[str, Sequence[str]] | None = None, batch_size: int = 64,
                 class_names: Sequence[str] | None = None, device: torch.device | str | None = None,
                 names: tuple[str, str] | None = None, extra_meta: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path).expanduser().absolute()
        self.names, self.extra_meta = names, dict(extra_meta or {})
        self.teacher, self.student, self.probe = teacher, student, probe
        self.layers = layers
        self.batch_size = batch_size
        self.class_names = class_names
        self.device = resolve_device(device)
        self.writer = GroupWriter(self.path, layout.HISTORY, require_run=False)
        self.attrs: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.writer.abort()

    def _probes(self) -> tuple[ModelProbe, ModelProbe]:
        teacher_layers, student_layers = split_layers(self.layers)
        return (ModelProbe(self.teacher, "teacher", layers=teacher_layers, attentions=True, device=self.device),
                ModelProbe(self.student, "student", layers=student_layers, attentions=True, device=self.device))

    def snapshot(self, step: int, epoch: int, losses: Mapping[str, float]) -> None:
        """Capture the probe set with the student as it is now, as the snapshot of ``step``."""
        name = history_key(step).split("/", 1)[1]
        session = CaptureSession(self._probes(), self.probe, batch_size=self.batch_size, progress=False)
        for records in session:
            self.writer.append_batch({f"{name}/{key}": rows for key, rows in records.items() if key.startswith(layout.SNAPSHOT_PREFIXES)})
        quality = session.quality("student")
        self.attrs[name] = {
            "step": int(step), "epoch": int(epoch), "losses": {k: float(v) for k, v in losses.items()},
            "student_accuracy": quality["accuracy"], "student_perplexity": quality["perplexity"],
        }

    def finish(self, training: Mapping[str, Any]) -> Run:
        """Capture the teacher and the final student as the run, then move every snapshot into it."""
        tmp = self.path.with_name(f".{self.path.name}.capture-{uuid.uuid4().hex[:8]}")
        capture(self.teacher, self.student, self.probe, path=tmp, layers=self.layers, batch_size=self.batch_size,
                class_names=self.class_names, device=self.device, progress=False, distributed=False, names=self.names,
                cka=False,  # stored below, for the last step, which the Features page opens at
                extra_meta={**self.extra_meta,
                            "training": {**training, "steps": sorted(a["step"] for a in self.attrs.values())}})
        try:
            self.writer.commit(self.attrs, run_path=tmp)  # history into the fresh run, which then takes the final name
            move_into_place(tmp, self.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        run = Run.open(self.path)
        store_cka(run, False, run.name)
        return run


def _first_samples(data: Any, n: int, labels: Any) -> Any:
    """The first ``n`` samples of ``data`` as one (inputs, labels) pair or dict: the default probe set."""
    inputs, targets, count = [], [], 0
    for batch in iter_batches(data, n, labels):
        keep = torch.arange(min(batch.size, n - count))
        inputs.append(take_rows(batch.inputs, keep))
        if batch.labels is not None:
            targets.append(batch.labels[keep])
        count += len(keep)
        if count >= n:
            break
    if isinstance(inputs[0], dict):
        merged: Any = {k: torch.cat([part[k] for part in inputs]) for k in inputs[0] if isinstance(inputs[0][k], torch.Tensor)}
        if targets:
            merged["labels"] = torch.cat(targets)
        return merged
    return (torch.cat(inputs), torch.cat(targets)) if targets else torch.cat(inputs)


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """The teacher is not trained: parameters frozen for the run, their flags restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def training_settings(losses: Sequence[DistillLoss], *, epochs: int, lr: float, batch_size: int,
                      steps_per_epoch: int | None, optimizer: str, record_every: int) -> dict[str, Any]:
    """How a student was trained, as a run's ``training`` metadata records it (`Recorder.finish`)."""
    return {"losses": [_describe(loss) for loss in losses], "epochs": epochs, "lr": lr, "batch_size": batch_size,
            "steps_per_epoch": steps_per_epoch, "optimizer": optimizer, "record_every": record_every}


def _describe(loss: DistillLoss) -> dict[str, Any]:
    settings = {k: v for k, v in vars(loss).items()
                if not k.startswith("_") and k != "training" and isinstance(v, int | float | str | list)}
    return {"name": loss.name, "class": type(loss).__name__, **settings}

