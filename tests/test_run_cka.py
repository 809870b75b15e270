"""`kdviz.run_cka`: CKA of a run's stored layers, stored by `kdviz.capture` as soon as the run is written, and batches
that always hold enough samples for the debiased estimator."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import TinyCNN
from hypothesis import assume, given
from hypothesis import strategies as st

import kdviz
from kdviz import run_cka
from kdviz.explore.library import RunLibrary
from kdviz.metrics import features as fm

LAYERS = ["stem.0", "body.0"]


def tiny_capture(tmp_path, n: int, **options):
    torch.manual_seed(0)
    images = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(n) % 5
    return kdviz.capture(TinyCNN(8), TinyCNN(4), (images, labels), path=tmp_path / f"tiny-{n}.kdviz", layers=LAYERS,
                         attentions=False, progress=False, batch_size=16, **options)


def refuse(*args, **kwargs):
    raise AssertionError("CKA was computed, not read from the run")


def test_a_capture_stores_the_cka_its_features_page_opens_with(tmp_path, monkeypatch):
    """A served library never writes: what `kdviz.capture` stored is what the Features page shows, with nothing
    computed on the first open; ``cka=False`` stores none."""
    stored, bare = tiny_capture(tmp_path, 40), tiny_capture(tmp_path, 41, cka=False)
    fresh = run_cka.cka_matrix(stored, cache=False)
    monkeypatch.setattr(run_cka, "MinibatchCKA", refuse)
    served = RunLibrary([stored, bare])  # read-only, as `kdviz serve` opens runs
    np.testing.assert_allclose(served.cka(stored.name)["cross"], fresh["cross"], rtol=1e-12)
    assert served.cka(stored.name)["teacher_layers"] == LAYERS
    with pytest.raises(AssertionError, match="computed, not read"):
        served.cka(bare.name)


def test_a_run_without_features_of_both_models_stores_no_cka(tmp_path):
    torch.manual_seed(0)
    run = kdviz.capture(TinyCNN(8), TinyCNN(4), torch.rand(12, 1, 8, 8), path=tmp_path / "none.kdviz",
                        layers={"teacher": ["stem.0"], "student": []}, attentions=False, progress=False)
    assert not run_cka.store_opening_cka(run)
    assert not any(key.startswith("cache/") for key in run.array_keys())


def test_a_last_batch_too_small_for_the_debiased_estimator_joins_the_one_before(tmp_path):
    """10 samples in batches of 4: the last batch (2 samples) cannot give a debiased HSIC (n ≥ 4), so CKA used to fail
    for such runs; it is now taken over batches [0, 4) and [4, 10), as an independent computation confirms."""
    run = tiny_capture(tmp_path, 10, cka=False)
    result = run_cka.cka_matrix(run, batch_size=4, cache=False)
    assert result["n_batches"] == 2 and result["n"] == 10
    reference = fm.MinibatchCKA(1, 1)
    teacher, student = run.teacher.features("body.0")[:], run.student.features("stem.0")[:]
    for rows in (slice(0, 4), slice(4, 10)):
        reference.update([fm.pool_features(teacher[rows])], [fm.pool_features(student[rows])])
    assert result["cross"][1, 0] == pytest.approx(float(reference.result()["cross"][0, 0]), rel=1e-5)  # float32 Grams


@given(n=st.integers(1, 2_000), batch_size=st.integers(1, 600), smallest=st.integers(1, 4))
def test_batch_bounds_cover_every_sample_once_with_no_batch_too_small(n, batch_size, smallest):
    assume(batch_size >= smallest)  # smaller batches are all too small: MinibatchCKA says so
    bounds = run_cka.batch_bounds(n, batch_size, smallest=smallest)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(stop == next_start for (_, stop), (next_start, _) in itertools.pairwise(bounds))
    sizes = [stop - start for start, stop in bounds]
    assert all(size >= smallest for size in sizes) or len(bounds) == 1
    assert all(size <= batch_size for size in sizes[:-1]) and sizes[-1] < batch_size + smallest


def test_a_distilled_run_holds_its_training_pages_cka_curves(demo_runs, monkeypatch):
    """`kdviz.distill` stores the debiased CKA of each layer-map pair at every step (1.9 s of the Training page's
    first open on digits-cnn); the stored curves equal a fresh computation, checked pair by pair against `fm.cka`."""
    from kdviz.readers.training import TrainingData

    run = demo_runs["digits-cnn"]
    fresh = run_cka.cka_along_steps(run, cache=False)
    assert len(fresh) == len(run.layer_map) and all(len(v) == len(run.steps) for v in fresh.values())
    s, t = run.layer_map[-1]
    n = min(run.n_samples, 512)
    last = run.at_step(run.steps[-1])
    expected = fm.cka(run_cka.pooled_features(run, "teacher", run.teacher.feature_names[t], slice(0, n)),
                      run_cka.pooled_features(last, "student", run.student.feature_names[s], slice(0, n)))
    assert fresh[f"{run.teacher.feature_names[t]} ↔ {run.student.feature_names[s]}"][-1] == pytest.approx(expected, rel=1e-12)
    monkeypatch.setattr(run_cka.fm, "cka", refuse)
    stored = TrainingData.from_run(run).cka
    assert stored.keys() == fresh.keys()
    for label, values in fresh.items():
        np.testing.assert_allclose(stored[label], values, rtol=1e-12)


def test_a_run_whose_cka_cannot_be_computed_is_still_written_with_a_warning_that_names_it(tmp_path):
    with pytest.warns(UserWarning, match=r"run 'tiny-3' was captured, but its CKA could not be stored: .*needs n ≥ 4"):
        run = tiny_capture(tmp_path, 3)
    assert run.n_samples == 3 and not any(key.startswith("cache/") for key in run.array_keys())
