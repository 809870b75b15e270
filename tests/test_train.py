"""`kdviz.distill` on the digits demo and on HF BERT from configs: it trains, records history, and leaves the
teacher untouched."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import bert_pair, hook_count

import kdviz
from kdviz.demo.models import DigitsCNN
from kdviz.demo.weights import load_pair
from kdviz.errors import InputError, MissingDataError, RunExistsError
from kdviz.losses import KD, AttentionKL, AttentionTransfer, Hint
from kdviz.metrics import logits as lm


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """A 3-epoch distillation of a fresh CNN student from the demo teacher, snapshots every 2 epochs."""
    teacher, _, _ = load_pair("cnn")
    teacher.train()
    teacher.layer1[1].eval()
    torch.manual_seed(0)
    student = DigitsCNN((8, 16, 16))
    before = {"state": copy.deepcopy(teacher.state_dict()), "modes": [m.training for m in teacher.modules()],
              "student": copy.deepcopy(student.state_dict())}
    path = tmp_path_factory.mktemp("train") / "cnn.kdviz"
    out = kdviz.distill(teacher, student, (digits.x_train, digits.y_train), epochs=3, record_every=2, record=path, lr=3e-3,
                        probe=(digits.x_test[:200], digits.y_test[:200]), record_layers=["layer2", "layer3"], batch_size=128,
                        losses=[KD(T=4, alpha=0.5), AttentionTransfer([("layer2", "layer2")]), Hint([("layer3", "layer3")], weight=0.1)],
                        class_names=digits.class_names, progress=False)
    return {"teacher": teacher, "student": student, "out": out, "run": kdviz.Run.open(path), "before": before}


def test_distill_records_the_expected_snapshots_and_the_run_reopens(trained):
    run = trained["run"]
    per_epoch = -(-1297 // 128)  # 11 batches per epoch over the 1,297 training digits
    assert run.steps == [0, 2 * per_epoch, 3 * per_epoch]  # step 0, every 2 epochs, and the last epoch
    info = run.step_info(run.steps[-1])
    assert info["epoch"] == 3 and set(info["losses"]) == {"kd/kd", "kd/ce", "at/at", "hint/hint", "total"}
    assert run.meta["extra"]["training"]["losses"][0] == {"name": "kd", "class": "KD", "weight": 1.0, "T": 4.0, "alpha": 0.5}
    for step in run.steps:
        at = run.at_step(step)
        assert at.student.logits.shape == (200, 10) and at.student.features("layer3").shape[0] == 200
        np.testing.assert_array_equal(at.teacher.logits[:], run.teacher.logits[:])  # the teacher is captured once
    np.testing.assert_allclose(run.at_step().student.logits[:], run.student.logits[:], atol=1e-5)  # last snapshot = the run's student
    assert "history  3 snapshots of the student" in run.info()


def test_distillation_lowers_the_student_teacher_kl(trained):
    run = trained["run"]
    kl = [float(lm.kl(run.teacher.logits[:], run.at_step(s).student.logits[:], T=1).mean()) for s in run.steps]
    accuracy = [run.at_step(s).meta["student"]["accuracy"] for s in run.steps]
    # measured here: KL 2.23 → 2.07 → 1.77 nats, probe accuracy 10.5% → 28% → 57.5% (33 steps of batch 128)
    assert kl[0] > kl[1] > kl[2] and kl[-1] < 0.9 * kl[0]
    assert accuracy[-1] > accuracy[0] + 0.25


def test_the_teacher_is_untouched_and_the_student_trained(trained):
    teacher, student, before = trained["teacher"], trained["student"], trained["before"]
    assert trained["out"] is student and not student.training
    assert all(torch.equal(before["state"][k], v) for k, v in teacher.state_dict().items())
    assert [m.training for m in teacher.modules()] == before["modes"]
    assert all(p.requires_grad for p in teacher.parameters())
    assert not all(torch.equal(before["student"][k], v) for k, v in student.state_dict().items())
    assert hook_count(teacher) == 0 and hook_count(student) == 0


def test_a_failed_training_leaves_no_run_behind(tmp_path, digits):
    teacher, _, _ = load_pair("cnn")
    student = DigitsCNN((8, 16, 16))
    with pytest.raises(InputError, match="lower the learning rate"):
        kdviz.distill(teacher, student, (digits.x_train[:256] * float("nan"), digits.y_train[:256]), record=tmp_path / "r.kdviz",
                      probe=(digits.x_test[:32], digits.y_test[:32]), progress=False, losses=[KD(alpha=0.0)])
    assert list(tmp_path.iterdir()) == []
    assert hook_count(teacher) == 0 and hook_count(student) == 0


def test_building_lazy_loss_parts_leaves_the_students_batchnorm_alone(digits):
    from kdviz.batching import iter_batches
    from kdviz.losses import Needs
    from kdviz.train import _Trainer

    teacher, _, _ = load_pair("cnn")
    student = DigitsCNN((8, 16, 16)).train()
    buffers = [b.clone() for b in student.buffers()]
    _Trainer(teacher, student, [KD()], Needs(), torch.device("cpu")).setup(next(iter_batches((digits.x_train, digits.y_train), 64)))
    assert all(torch.equal(a, b) for a, b in zip(buffers, student.buffers(), strict=True)) and student.training


def test_bad_arguments_raise(tmp_path, digits):
    teacher, student, _ = load_pair("cnn")
    data = (digits.x_train[:64], digits.y_train[:64])
    with pytest.raises(InputError, match="epochs"):
        kdviz.distill(teacher, student, data, epochs=0, progress=False)
    with pytest.raises(InputError, match=r"kdviz\.losses"):
        kdviz.distill(teacher, student, data, losses=[torch.nn.MSELoss()], progress=False)
    (tmp_path / "x.kdviz").mkdir()
    with pytest.raises(RunExistsError):
        kdviz.distill(teacher, student, data, record=tmp_path / "x.kdviz", progress=False)
    with pytest.raises(MissingDataError, match="no training history"):
        kdviz.capture(teacher, student, data, path=tmp_path / "plain.kdviz", progress=False).at_step()


def test_minilm_attention_kl_trains_a_bert_student(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    teacher, two_head_student = bert_pair()
    torch.manual_seed(1)
    student = BertForSequenceClassification(BertConfig(num_hidden_layers=2, num_attention_heads=4, hidden_size=16,
                                                       intermediate_size=32, vocab_size=120, max_position_embeddings=64,
                                                       num_labels=3, attn_implementation="sdpa"))
    # sdpa returns no attention weights: the student is switched to eager for training, and back
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 120, (48, 16), generator=generator)
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 3, (48,), generator=generator)}
    before = copy.deepcopy(student.state_dict())
    kdviz.distill(teacher, student, data, losses=[KD(alpha=0.5), AttentionKL([(1, 0), (3, 1)])], epochs=1,
                  batch_size=16, progress=False)
    assert student.config._attn_implementation == "sdpa"
    assert not all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    with pytest.raises(InputError, match="one shape"):  # heads must match within a pair: 4 teacher heads, 2 student heads
        kdviz.distill(teacher, two_head_student, data, losses=[AttentionKL([(0, 0)])], epochs=1, batch_size=16, progress=False)


def test_without_a_probe_the_first_training_samples_are_recorded(tmp_path, digits):
    teacher, _, _ = load_pair("cnn")
    student = DigitsCNN((4, 8, 8))
    x, y = digits.x_train[:700], digits.y_train[:700]
    kdviz.distill(teacher, student, (x, y), record=tmp_path / "r.kdviz", epochs=1, batch_size=100, progress=False)
    run = kdviz.Run.open(tmp_path / "r.kdviz")
    assert run.n_samples == 512 and np.array_equal(run.labels[:], y[:512].numpy()) and run.steps == [0, 7]


def test_a_checkpoint_callback_gets_the_student_at_each_recorded_step(tmp_path, digits):
    """``checkpoint=`` sees the student at step 0 and every ``record_every`` epochs, with that epoch's losses; the
    weights it keeps at the last step are the trained student's, and the recorded snapshots are the same steps."""
    teacher, _, _ = load_pair("cnn")
    torch.manual_seed(0)
    student = DigitsCNN((8, 16, 16))
    seen = []

    def keep(step, epoch, losses, model):
        assert model is student
        seen.append((step, epoch, dict(losses), copy.deepcopy(model.state_dict())))

    data = (digits.x_train[:256], digits.y_train[:256])
    kdviz.distill(teacher, student, data, epochs=4, record_every=2, batch_size=64, checkpoint=keep, progress=False,
                  record=tmp_path / "r.kdviz", probe=(digits.x_test[:64], digits.y_test[:64]))
    assert [(step, epoch) for step, epoch, _, _ in seen] == [(0, 0), (8, 2), (16, 4)]  # 256 / 64 = 4 steps an epoch
    assert seen[0][2] == {} and set(seen[1][2]) == {"kd/kd", "kd/ce", "total"}
    run = kdviz.Run.open(tmp_path / "r.kdviz")
    assert run.steps == [step for step, *_ in seen]
    assert all(run.step_info(step)["losses"] == pytest.approx(losses) for step, _, losses, _ in seen)
    for name, value in student.state_dict().items():
        assert torch.equal(seen[-1][3][name], value), name
    assert not torch.equal(seen[0][3]["fc.weight"] if "fc.weight" in seen[0][3] else next(iter(seen[0][3].values())),
                           next(iter(student.state_dict().values())))  # the student moved from its step-0 weights
