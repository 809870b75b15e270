"""The run store: round trips, lazy reads, atomic creation, and clear errors for bad runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import kdviz
from kdviz import remote
from kdviz.errors import (
    CorruptRunError,
    InputError,
    KdvizError,
    MissingDataError,
    NotARunError,
    RunExistsError,
    RunNotFoundError,
    SchemaTooNewError,
)
from kdviz.store import SCHEMA_VERSION, LazyArray, Run, RunWriter


def small_run(tmp_path, cnn_pair, name="r.kdviz", **kwargs):
    teacher, student = cnn_pair
    x = torch.randn(40, 1, 8, 8)
    y = torch.randint(0, 5, (40,))
    run = kdviz.capture(teacher, student, (x, y), path=tmp_path / name, layers=["stem", "body"], batch_size=16,
                        progress=False, class_names=list("abcde"), **kwargs)
    return run, x, y


def test_round_trip_reads_back_what_was_written(tmp_path, cnn_pair):
    run, x, y = small_run(tmp_path, cnn_pair)
    reopened = Run.open(run.path)
    teacher, student = cnn_pair
    with torch.no_grad():
        np.testing.assert_allclose(reopened.teacher.logits[:], teacher(x).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(reopened.student.features("body")[:], student.body(student.stem(x)).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(reopened.labels[:], y.numpy())
    assert reopened.n_samples == 40
    assert reopened.class_names == list("abcde")
    assert reopened.task == "classification"
    assert reopened.meta["schema_version"] == SCHEMA_VERSION
    thumbs = reopened.array("inputs/thumbnails")
    assert thumbs.dtype == np.uint8 and thumbs.shape == (40, 8, 8)


def test_arrays_are_lazy_and_read_by_slice(tmp_path, cnn_pair):
    run, _, _ = small_run(tmp_path, cnn_pair)
    logits = run.teacher.logits
    assert isinstance(logits, LazyArray)
    assert logits.shape == (40, 5)
    assert logits[3:5].shape == (2, 5)
    assert np.asarray(logits).shape == (40, 5)


def test_open_reads_only_metadata(tmp_path, cnn_pair, monkeypatch):
    run, _, _ = small_run(tmp_path, cnn_pair)
    # Corrupt every chunk: opening must still work, because no array data is read until sliced.
    for chunk in (run.path / "teacher" / "logits" / "c").rglob("*"):
        if chunk.is_file():
            chunk.write_bytes(b"garbage")
    reopened = Run.open(run.path)
    assert reopened.teacher.logits.shape == (40, 5)
    with pytest.raises(Exception):  # noqa: B017 - the point is that the damage is only found on read
        reopened.teacher.logits[:]


def test_interrupted_capture_leaves_nothing_under_the_final_name(tmp_path, cnn_pair):
    teacher, student = cnn_pair

    def batches():
        for i in range(5):
            if i == 3:
                raise RuntimeError("data source failed")
            yield torch.randn(8, 1, 8, 8), torch.randint(0, 5, (8,))

    with pytest.raises(RuntimeError, match="data source failed"):
        kdviz.capture(teacher, student, batches(), path=tmp_path / "x.kdviz", progress=False)
    assert not (tmp_path / "x.kdviz").exists()
    assert list(tmp_path.iterdir()) == []  # the temporary sibling is gone too


def test_existing_run_is_not_overwritten_without_consent(tmp_path, cnn_pair):
    run, _, _ = small_run(tmp_path, cnn_pair)
    with pytest.raises(RunExistsError, match="overwrite=True"):
        small_run(tmp_path, cnn_pair)
    again, _, _ = small_run(tmp_path, cnn_pair, overwrite=True)
    assert again.path == run.path and Run.open(run.path).n_samples == 40


def test_missing_path(tmp_path):
    with pytest.raises(RunNotFoundError, match="does not exist"):
        Run.open(tmp_path / "nope.kdviz")


def test_urls_are_opened_through_fsspec_with_clear_errors(tmp_path, cnn_pair):
    with pytest.raises(RunNotFoundError, match=r"no run at 'memory://nowhere/x\.kdviz'"):
        Run.open("memory://nowhere/x.kdviz")
    with pytest.raises(InputError, match="not a URL fsspec knows"):
        Run.open("nosuchprotocol://bucket/x.kdviz")
    run, _, _ = small_run(tmp_path, cnn_pair)  # a run published to fsspec's in-memory filesystem reads back the same
    url = remote.upload(run.path, "memory://published/r.kdviz")
    again = Run.open(url)
    assert again.name == "r" and again.remote and not run.remote
    np.testing.assert_array_equal(again.teacher.logits[:], run.teacher.logits[:])
    # a prefix that holds other runs is never taken for a run, nor emptied
    with pytest.raises(RunExistsError, match="not a kdviz run"):
        remote.upload(run.path, "memory://published", overwrite=True)
    assert Run.open(url).n_samples == run.n_samples


def test_directory_that_is_not_a_run(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotARunError, match="not a kdviz run"):
        Run.open(tmp_path / "plain")


def test_corrupt_meta(tmp_path, cnn_pair):
    run, _, _ = small_run(tmp_path, cnn_pair)
    (run.path / "meta.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CorruptRunError, match="not valid JSON"):
        Run.open(run.path)


def test_meta_without_required_fields(tmp_path, cnn_pair):
    run, _, _ = small_run(tmp_path, cnn_pair)
    (run.path / "meta.json").write_text(json.dumps({"schema_version": 1}), encoding="utf-8")
    with pytest.raises(CorruptRunError, match="does not follow the run schema") as error:
        Run.open(run.path)
    for field in ("task", "n_samples", "teacher", "student", "layer_map"):  # every missing field is named
        assert f"{field}: Field required" in str(error.value)


def test_schema_newer_than_this_kdviz(tmp_path, cnn_pair):
    run, _, _ = small_run(tmp_path, cnn_pair)
    meta = json.loads((run.path / "meta.json").read_text())
    meta["schema_version"] = SCHEMA_VERSION + 1
    (run.path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(SchemaTooNewError, match="upgrade kdviz"):
        Run.open(run.path)


def test_errors_are_kdviz_errors_and_name_the_fix(tmp_path, cnn_pair):
    run, _, _ = small_run(tmp_path, cnn_pair)
    with pytest.raises(MissingDataError, match="attentions=True") as info:
        run.teacher.attention(0)
    assert isinstance(info.value, KdvizError)
    with pytest.raises(MissingDataError, match="layers="):
        run.teacher.features("nope")


def test_no_pickle_anywhere_in_a_run(tmp_path, cnn_pair):
    run, _, _ = small_run(tmp_path, cnn_pair)
    for path in run.path.rglob("*"):
        if path.is_file():
            assert not path.read_bytes().startswith(b"\x80"), f"{path} looks like a pickle"
            assert path.suffix not in (".pkl", ".pickle", ".pt")


def test_writer_streams_uneven_batches_into_whole_chunks(tmp_path):
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(n, 3)).astype(np.float32) for n in (5, 17, 1, 9)]
    with RunWriter(tmp_path / "w.kdviz") as writer:
        writer.configure("values", chunk_rows=4)
        for part in parts:
            writer.append("values", part)
        writer.commit({"task": "classification", "n_samples": 32, "teacher": {"name": "t"}, "student": {"name": "s"},
                       "layer_map": {"pairs": []}})
    run = Run.open(tmp_path / "w.kdviz")
    np.testing.assert_array_equal(run.array("values")[:], np.concatenate(parts))
