"""Capture on plain nn.Modules: hooks by path and glob, per-call features, spatial maps, inputs, hook hygiene."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TinyCNN, hook_count
from torch import nn

import kdviz
from kdviz.errors import CaptureError, InputError


def test_features_by_glob_pattern_and_logits_match_a_direct_forward(tmp_path, cnn_pair):
    teacher, student = cnn_pair
    x = torch.randn(30, 1, 8, 8)
    run = kdviz.capture(teacher, student, x, path=tmp_path / "r.kdviz", layers=["stem", "body.?"], batch_size=7, progress=False)
    assert run.teacher.feature_names == ["stem", "body.0", "body.1", "body.2"]
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(run.student.logits[:]), student(x), atol=1e-6)
        conv = teacher.body[0](teacher.stem(x))
    assert torch.allclose(torch.from_numpy(run.teacher.features("body.0")[:]), conv, atol=1e-5)


def test_star_matches_one_path_segment_and_double_star_many():
    from kdviz.adapters.hooks import resolve_modules

    model = nn.Sequential()
    model.add_module("encoder", nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2))))
    assert resolve_modules(model, ["encoder.*"], "teacher") == ["encoder.0", "encoder.1"]
    assert resolve_modules(model, ["encoder.**"], "teacher") == ["encoder.0", "encoder.1", "encoder.1.0"]
    with pytest.raises(InputError, match="no teacher module matches 'decoder"):
        resolve_modules(model, ["decoder.*"], "teacher")


def test_spatial_attention_of_conv_features_matches_the_at_formula(tmp_path, cnn_pair):
    teacher, student = cnn_pair
    x = torch.randn(12, 1, 8, 8)
    run = kdviz.capture(teacher, student, x, path=tmp_path / "r.kdviz", layers=["stem"], spatial_p=3, progress=False)
    with torch.no_grad():
        fmap = teacher.stem(x).double().numpy()
    # Independent reference: Q = mean_c |A|^p, flattened and divided by its L2 norm.
    q = np.mean(np.abs(fmap) ** 3, axis=1).reshape(12, -1)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(run.teacher.spatial("stem")[:].reshape(12, -1), q, rtol=1e-5, atol=1e-7)


class SharedBlock(nn.Module):
    """Applies the same block twice per forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(torch.relu(self.block(x))))


def test_module_called_twice_is_stored_per_call(tmp_path):
    torch.manual_seed(0)
    teacher, student = SharedBlock(), SharedBlock()
    x = torch.randn(10, 4)
    run = kdviz.capture(teacher, student, x, path=tmp_path / "r.kdviz", layers=["block"], progress=False)
    assert run.teacher.feature_names == ["block@0", "block@1"]
    with torch.no_grad():
        first = teacher.block(x)
        second = teacher.block(torch.relu(first))
    assert torch.allclose(torch.from_numpy(run.teacher.features("block@0")[:]), first, atol=1e-6)
    assert torch.allclose(torch.from_numpy(run.teacher.features("block@1")[:]), second, atol=1e-6)


class Unrolled(nn.Module):
    """Calls its cell as many times as the input's first value says: the call count changes between batches."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(int(x[0, 0].item())):
            x = self.cell(x)
        return x


def test_changing_call_count_is_refused_not_mislabelled(tmp_path):
    x = torch.ones(8, 3)
    x[4:, 0] = 2.0  # the second batch calls the cell twice, the first once
    x[:4, 0] = 1.0
    with pytest.raises(CaptureError, match="different number of times"):
        kdviz.capture(Unrolled(), Unrolled(), x, path=tmp_path / "r.kdviz", layers=["cell"], batch_size=4, progress=False)
    assert not (tmp_path / "r.kdviz").exists()


class Exploding(TinyCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if x.shape[0] == 3:
            raise RuntimeError("boom inside forward")
        return out


def test_hooks_removed_and_state_restored_when_forward_raises(tmp_path):
    teacher, student = Exploding(8), TinyCNN(4)
    teacher.train()
    teacher.body.eval()  # a mixed-mode model (for example frozen BatchNorm) must come back mixed
    student.eval()
    x = torch.randn(11, 1, 8, 8)  # batches of 4, 4, 3: the last one raises
    with pytest.raises(RuntimeError, match="boom"):
        kdviz.capture(teacher, student, x, path=tmp_path / "r.kdviz", layers=["stem", "body"], batch_size=4, progress=False)
    assert hook_count(teacher) == 0 and hook_count(student) == 0
    assert teacher.training and teacher.stem.training and not teacher.body.training  # modes restored as they were
    assert not student.training
    assert not (tmp_path / "r.kdviz").exists()


def test_hooks_removed_after_success(tmp_path, cnn_pair):
    teacher, student = cnn_pair
    kdviz.capture(teacher, student, torch.randn(5, 1, 8, 8), path=tmp_path / "r.kdviz", layers=["stem"], progress=False)
    assert hook_count(teacher) == 0 and hook_count(student) == 0


def test_inputs_dataloader_dict_and_labels_argument(tmp_path, cnn_pair):
    teacher, student = cnn_pair
    x, y = torch.randn(20, 1, 8, 8), torch.randint(0, 5, (20,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=6)
    from_loader = kdviz.capture(teacher, student, loader, path=tmp_path / "a.kdviz", progress=False)
    np.testing.assert_array_equal(from_loader.labels[:], y.numpy())

    class Keyword(TinyCNN):
        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return super().forward(pixels)

    kw_t, kw_s = Keyword(8), Keyword(4)
    from_dict = kdviz.capture(kw_t, kw_s, {"pixels": x}, labels=y, path=tmp_path / "b.kdviz", progress=False)
    np.testing.assert_array_equal(from_dict.labels[:], y.numpy())
    assert from_dict.teacher.description["accuracy"] == pytest.approx(float((kw_t(x).argmax(1) == y).float().mean()))


def test_bad_inputs_raise_clear_errors(tmp_path, cnn_pair):
    teacher, student = cnn_pair
    with pytest.raises(InputError, match="not supported"):
        kdviz.capture(teacher, student, 42, path=tmp_path / "a.kdviz", progress=False)
    with pytest.raises(InputError, match="no samples"):
        kdviz.capture(teacher, student, torch.randn(0, 1, 8, 8), path=tmp_path / "b.kdviz", progress=False)
    with pytest.raises(InputError, match="labels= has 3 entries"):
        kdviz.capture(teacher, student, torch.randn(5, 1, 8, 8), labels=[0, 1, 2], path=tmp_path / "c.kdviz", progress=False)
    with pytest.raises(InputError, match="same classes"):
        kdviz.capture(teacher, TinyCNN(4, n_classes=7), torch.randn(5, 1, 8, 8), path=tmp_path / "d.kdviz", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_nan_logits_name_the_sample(tmp_path, cnn_pair):
    teacher, student = cnn_pair
    x = torch.randn(10, 1, 8, 8)
    x[7] = float("nan")
    with pytest.raises(InputError, match=r"sample index \[7\]"):
        kdviz.capture(teacher, student, x, path=tmp_path / "r.kdviz", batch_size=4, progress=False)


def test_progress_bar_can_be_turned_off(tmp_path, cnn_pair, capsys):
    teacher, student = cnn_pair
    kdviz.capture(teacher, student, torch.randn(5, 1, 8, 8), path=tmp_path / "a.kdviz", progress=False)
    assert "kdviz capture" not in capsys.readouterr().err
    kdviz.capture(teacher, student, torch.randn(5, 1, 8, 8), path=tmp_path / "b.kdviz", progress=True)
    assert "kdviz capture" in capsys.readouterr().err


def test_data_is_streamed_one_batch_at_a_time(tmp_path, cnn_pair):
    teacher, student = cnn_pair
    pulled = []

    def batches():
        for i in range(6):
            pulled.append(i)
            yield torch.randn(4, 1, 8, 8)

    seen_when_forwarding = []
    teacher.register_forward_pre_hook(lambda m, a: seen_when_forwarding.append(len(pulled)))
    kdviz.capture(teacher, student, batches(), path=tmp_path / "r.kdviz", progress=False)
    assert seen_when_forwarding == [1, 2, 3, 4, 5, 6]  # never reads ahead: memory is one batch


def test_labels_in_some_batches_only_are_refused(tmp_path, cnn_pair):
    teacher, student = cnn_pair
    batches = [(torch.randn(4, 1, 8, 8), torch.randint(0, 5, (4,))), torch.randn(4, 1, 8, 8)]
    with pytest.raises(InputError, match="lacks labels, unlike the first batch"):
        kdviz.capture(teacher, student, batches, path=tmp_path / "r.kdviz", progress=False)


def test_token_batches_of_different_lengths_are_stored_at_the_longest_with_their_mask(tmp_path):
    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.EmbeddingBag(20, 3)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.embed(ids)

    batches = [torch.randint(0, 20, (2, 6)), torch.randint(0, 20, (2, 9))]
    run = kdviz.capture(Bag(), Bag(), batches, path=tmp_path / "r.kdviz", progress=False)
    assert run.token_ids.shape == (4, 9)
    np.testing.assert_array_equal(run.token_ids[:2, :6], batches[0].numpy())
    np.testing.assert_array_equal(run.attention_mask[:].sum(1), [6, 6, 9, 9])
    with pytest.raises(InputError, match="padding='max_length'"):  # an iterator cannot be read ahead for the longest
        kdviz.capture(Bag(), Bag(), iter(batches), path=tmp_path / "i.kdviz", progress=False)


class SpoiledLM(nn.Module):
    """A plain language model whose logits at one (sample, position) hold ``value`` (NaN or ±inf) in one entry."""

    def __init__(self, sample: int, position: int, value: float, vocab: int = 11) -> None:
        super().__init__()
        self.embed, self.head = nn.Embedding(vocab, 8), nn.Linear(8, vocab)
        self.sample, self.position, self.value = sample, position, value

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        z = self.head(self.embed(ids)).clone()
        start = getattr(self, "offset", 0)
        row = self.sample - start
        if 0 <= row < len(z):
            z[row, self.position, 3] = self.value
        self.offset = start + len(z)
        return z


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_token_logit_names_the_sample_without_a_pass_over_the_vocabulary(tmp_path, value):
    torch.manual_seed(0)
    ids = torch.randint(0, 11, (9, 6))
    with pytest.raises(InputError, match=r"student logits contain NaN or inf at sample index \[6\]"):
        kdviz.capture(SpoiledLM(100, 0, 0.0), SpoiledLM(6, 2, value), ids, path=tmp_path / "r.kdviz", batch_size=4,
                      progress=False)
    assert not (tmp_path / "r.kdviz").exists()
