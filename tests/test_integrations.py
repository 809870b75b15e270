"""Recording callbacks with real training loops: 🤗 transformers' Trainer and Lightning, on small models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import bert_pair, hook_count

import kdviz
from kdviz.errors import RunExistsError


def test_hf_trainer_callback_records_snapshots(tmp_path):
    from transformers import Trainer, TrainingArguments

    from kdviz.integrations.hf import KdvizCallback

    teacher, student = bert_pair()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 120, (32, 16), generator=generator)
    labels = torch.randint(0, 3, (32,), generator=generator)
    train = [{"input_ids": ids[i], "attention_mask": torch.ones(16, dtype=torch.long), "labels": labels[i]} for i in range(32)]
    probe = {"input_ids": ids[:12], "attention_mask": torch.ones(12, 16, dtype=torch.long), "labels": labels[:12]}
    callback = KdvizCallback(teacher, probe, tmp_path / "hf.kdviz", every_n_steps=1)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=8, learning_rate=5e-3,
                             use_cpu=True, report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True)
    Trainer(model=student, args=args, train_dataset=train, callbacks=[callback]).train()
    run = kdviz.Run.open(tmp_path / "hf.kdviz")
    assert run.steps == [0, 1, 2] and callback.run is not None
    first, last = run.at_step(0).student.logits[:], run.at_step(2).student.logits[:]
    assert first.shape == (12, 3) and not np.allclose(first, last)  # the student moved
    assert run.at_step(2).student.attention(0).shape == (12, 2, 16, 16)
    assert "loss" in run.step_info(2)["losses"] and run.meta["extra"]["training"]["trainer"] == "transformers.Trainer"
    # transformers installs output-recording hooks of its own (output_attentions); none of kdviz's remain
    assert hook_count(student, only_kdviz=True) == 0 and hook_count(teacher, only_kdviz=True) == 0
    with pytest.raises(RunExistsError):
        KdvizCallback(teacher, probe, tmp_path / "hf.kdviz")


def test_lightning_callback_records_snapshots(tmp_path):
    pl = pytest.importorskip("pytorch_lightning")

    from kdviz.demo.data import load_digits
    from kdviz.demo.models import DigitsCNN
    from kdviz.demo.weights import load_pair
    from kdviz.integrations.lightning import KdvizCallback
    from kdviz.losses import KD, StepOutputs

    teacher, _, _ = load_pair("cnn")
    digits = load_digits()

    class Distil(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.student = DigitsCNN((8, 16, 16))
            self.loss = KD(T=4, alpha=0.5)

        def training_step(self, batch, _index):
            x, y = batch
            with torch.no_grad():
                z_t = teacher(x)
            parts = self.loss(StepOutputs(z_t, self.student(x), y))
            total = sum(parts.values())
            self.log("kd_total", total)
            return total

        def configure_optimizers(self):
            return torch.optim.AdamW(self.student.parameters(), lr=3e-3)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(digits.x_train[:512], digits.y_train[:512]), batch_size=64)
    callback = KdvizCallback(teacher.eval(), (digits.x_test[:100], digits.y_test[:100]), tmp_path / "pl.kdviz",
                             student_attribute="student", layers=["layer3"])
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[callback])
    trainer.fit(Distil(), loader)
    run = kdviz.Run.open(tmp_path / "pl.kdviz")
    assert run.steps == [0, 8, 16]  # 512 samples / 64 per batch = 8 steps per epoch
    assert "kd_total" in run.step_info(16)["losses"] and run.at_step(8).student.features("layer3").shape[0] == 100
    kl = [float(kdviz.metrics.logits.kl(run.teacher.logits[:], run.at_step(s).student.logits[:]).mean()) for s in run.steps]
    assert kl[-1] < kl[0]


@pytest.mark.parametrize("trainer", ["distillation", "gkd"])
def test_trl_distillation_trainers_are_recorded_by_the_callback(tmp_path, trainer, capsys):
    """TRL's DistillationTrainer and GKDTrainer (transformers.Trainer subclasses) on the demo character LMs, through
    the runnable example: a snapshot per step, the student moving, the Trainer's loss kept with each."""
    import runpy
    from pathlib import Path

    module = runpy.run_path(str(Path(__file__).resolve().parent.parent / "examples" / "trl_distillation.py"))
    run = module["main"](trainer, str(tmp_path), steps=2)
    assert run.steps == [0, 1, 2] and run.task == "tokens"
    before = np.asarray(run.at_step(0).student.token("entropy")[:])
    after = np.asarray(run.at_step(2).student.token("entropy")[:])
    assert before.shape == (8, 32) and not np.allclose(before, after)  # the student was trained between snapshots
    np.testing.assert_allclose(np.asarray(run.at_step(0).teacher.token("entropy")[:]),
                               np.asarray(run.at_step(2).teacher.token("entropy")[:]))  # the teacher is frozen
    assert "loss" in run.step_info(2)["losses"]
    assert "recorded steps [0, 1, 2]" in capsys.readouterr().out
    # teacher hacking on a language model: the proxy (KL to the teacher) against the ground truth (the student's
    # held-out NLL of the next token), one point per snapshot, as computed here from the stored per-token rows
    from kdviz.readers.training import TrainingData
    from kdviz.views.training import teacher_hacking_view

    figure = teacher_hacking_view(TrainingData.from_run(run))
    proxy, truth = [], []
    for step in run.steps:
        at = run.at_step(step)
        mask = at.attention_mask[:].astype(bool)
        proxy.append(np.asarray(at.pair_token_stat("kl")[:], dtype=np.float64)[mask].mean())
        p = np.asarray(at.student.token("true_prob")[:], dtype=np.float64)
        truth.append(-np.log(p[p > 0]).mean())
    np.testing.assert_allclose(figure.data[0].x, proxy, rtol=1e-6)
    np.testing.assert_allclose(figure.data[0].y, truth, rtol=1e-6)
    assert list(figure.data[0].customdata) == run.steps and len(set(np.round(truth, 6))) > 1  # the NLL moved
