"""CKA against independent float64 references written here (Gram-matrix HSIC formulas), plus hypothesis properties."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hsic_reference import ref_gram, ref_hsic_biased, ref_hsic_unbiased
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ortho_group

from kdviz.errors import InputError
from kdviz.metrics import features as fm


def ref_cka(x, y, unbiased):
    k, m = ref_gram(x), ref_gram(y)
    h = ref_hsic_unbiased if unbiased else ref_hsic_biased
    return h(k, m) / np.sqrt(h(k, k) * h(m, m))


@pytest.mark.parametrize("unbiased", [True, False])
def test_cka_matches_the_gram_matrix_reference(unbiased):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 12))
    y = x @ rng.normal(size=(12, 7)) + 0.5 * rng.normal(size=(40, 7))
    assert fm.cka(x, y, unbiased=unbiased) == pytest.approx(ref_cka(x, y, unbiased), rel=1e-10)
    k, m = ref_gram(x), ref_gram(y)
    assert fm.hsic(torch.tensor(k), torch.tensor(m), unbiased) == pytest.approx(
        (ref_hsic_unbiased if unbiased else ref_hsic_biased)(k, m), rel=1e-10)


def test_conv_features_are_flattened_per_sample():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(10, 3, 4, 4)), rng.normal(size=(10, 5))
    assert fm.cka(x, y) == pytest.approx(ref_cka(x.reshape(10, -1), y, True), rel=1e-10)


features = st.integers(6, 24).flatmap(
    lambda n: st.integers(2, 10).map(lambda d: np.random.default_rng(n * 100 + d).normal(size=(n, d)) * 3 + 1)
)


@given(features, st.booleans())
@settings(max_examples=40, deadline=None)
def test_cka_of_a_representation_with_itself_is_one(x, unbiased):
    assert fm.cka(x, x, unbiased=unbiased) == pytest.approx(1.0, abs=1e-10)


@given(features, st.floats(0.01, 100), st.booleans(), st.integers(0, 10_000))
@settings(max_examples=40, deadline=None)
def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling(x, scale, unbiased, seed):
    rng = np.random.default_rng(seed)
    y = np.tanh(x @ rng.normal(size=(x.shape[1], 4)))
    q = ortho_group.rvs(x.shape[1], random_state=seed) if x.shape[1] > 1 else np.ones((1, 1))
    base = fm.cka(x, y, unbiased=unbiased)
    assert fm.cka(scale * x @ q, y, unbiased=unbiased) == pytest.approx(base, abs=1e-9)


def test_cka_is_not_invariant_to_arbitrary_invertible_maps():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 6))
    y = x[:, :3] ** 2
    skew = np.diag([1.0, 1.0, 1.0, 30.0, 30.0, 30.0])
    assert abs(fm.cka(x, y) - fm.cka(x @ skew, y)) > 1e-3


@pytest.mark.parametrize("n", [32, 512])
def test_debiased_cka_is_near_zero_for_independent_wide_features_while_biased_is_inflated(n):
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(n, 512)), rng.normal(size=(n, 512))
    debiased, biased = fm.cka(x, y, unbiased=True), fm.cka(x, y, unbiased=False)
    assert abs(debiased) < 0.05
    assert biased > 0.5 if n == 32 else biased > 0.4  # about 0.94 at n=32


def test_negative_debiased_values_are_not_clamped():
    values = [fm.cka(np.random.default_rng(s).normal(size=(12, 50)), np.random.default_rng(s + 999).normal(size=(12, 50)))
              for s in range(20)]
    assert min(values) < 0


def test_float32_features_with_a_large_offset_match_float64():
    rng = np.random.default_rng(3)
    base = np.maximum(rng.normal(size=(256, 300)), 0)
    x64 = base + 500.0
    y64 = np.maximum(base @ rng.normal(size=(300, 200)) * 0.1, 0) + 500.0
    expected = fm.cka(x64, y64)
    got = fm.cka(x64.astype(np.float32), y64.astype(np.float32))
    assert np.isfinite(got) and got == pytest.approx(expected, abs=1e-4)
    mb = fm.MinibatchCKA(1, 1)
    for start in range(0, 256, 64):
        mb.update([x64[start:start + 64].astype(np.float32)], [y64[start:start + 64].astype(np.float32)])
    assert np.isfinite(mb.result()["cross"]).all()


def test_minibatch_cka_equals_the_mean_of_per_batch_reference_hsic():
    rng = np.random.default_rng(4)
    teacher = [rng.normal(size=(70, d)) for d in (8, 16, 5)]
    student = [teacher[0] @ rng.normal(size=(8, 6)), np.tanh(teacher[1][:, :4])]
    mb = fm.MinibatchCKA(3, 2)
    batches = [(0, 32), (32, 64), (64, 70)]  # uneven last batch of 6
    for a, b in batches:
        mb.update([t[a:b] for t in teacher], [s[a:b] for s in student])
    result = mb.result()

    def mean_hsic(u, v):
        return np.mean([ref_hsic_unbiased(ref_gram(u[a:b]), ref_gram(v[a:b])) for a, b in batches])

    for i, t in enumerate(teacher):
        for j, s in enumerate(student):
            expected = mean_hsic(t, s) / np.sqrt(mean_hsic(t, t) * mean_hsic(s, s))
            assert result["cross"][i, j] == pytest.approx(expected, rel=1e-9)
    np.testing.assert_allclose(np.diag(result["teacher"]), 1.0)
    assert result["teacher"][0, 1] == pytest.approx(mean_hsic(teacher[0], teacher[1]) / np.sqrt(
        mean_hsic(teacher[0], teacher[0]) * mean_hsic(teacher[1], teacher[1])), rel=1e-9)
    assert mb.n_samples == 70 and mb.n_batches == 3


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), sizes=st.lists(st.integers(4, 40), min_size=1, max_size=3), unbiased=st.booleans(),
       within=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]), offset=st.sampled_from([0.0, 500.0]))
def test_minibatch_cka_equals_the_float64_reference_for_any_batches_estimator_and_precision(seed, sizes, unbiased, within,
                                                                                          dtype, offset):
    """Every pair's HSIC comes from the raw Grams' terms (block triangles); the reference centres full float64 Grams
    of the very values MinibatchCKA was given (float32 rounding of the input is the input's, not the estimator's).
    Float32 features with a +500 offset still agree, since features are centred before the product."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    teacher = [rng.normal(size=(n, d)) for d in (3, 70)]
    student = [teacher[1][:, :20] @ rng.normal(size=(20, 9)) + 0.5 * rng.normal(size=(n, 9)), rng.normal(size=(n, 2, 3))]
    teacher, student = ([(x + offset).astype(dtype) for x in model] for model in (teacher, student))
    mb = fm.MinibatchCKA(2, 2, unbiased=unbiased, within=within)
    edges = np.cumsum([0, *sizes])
    for a, b in itertools.pairwise(edges):
        mb.update([t[a:b] for t in teacher], [v[a:b] for v in student])
    h = ref_hsic_unbiased if unbiased else ref_hsic_biased

    def mean_hsic(u, v):
        return np.mean([h(ref_gram(u[a:b]), ref_gram(v[a:b])) for a, b in itertools.pairwise(edges)])

    result = mb.result()
    # float32 Gram products: the debiased estimator's cancellation magnifies their rounding at a handful of samples
    tolerance = 1e-9 if dtype == np.float64 else (2e-4 if min(sizes) < 16 else 1e-5)
    for i, t in enumerate(teacher):
        for j, v in enumerate(student):
            denominator = mean_hsic(t, t) * mean_hsic(v, v)
            expected = mean_hsic(t, v) / np.sqrt(denominator)
            assert result["cross"][i, j] == pytest.approx(expected, rel=tolerance, abs=tolerance)
    if within:
        expected = mean_hsic(teacher[0], teacher[1]) / np.sqrt(mean_hsic(teacher[0], teacher[0]) * mean_hsic(teacher[1], teacher[1]))
        assert result["teacher"][0, 1] == pytest.approx(expected, rel=tolerance, abs=tolerance)


def test_minibatch_cka_rejects_tiny_batches_and_mismatched_layers():
    mb = fm.MinibatchCKA(1, 1)
    with pytest.raises(InputError, match="n ≥ 4"):
        mb.update([np.zeros((3, 2))], [np.zeros((3, 2))])
    with pytest.raises(InputError, match="same samples"):
        mb.update([np.zeros((8, 2))], [np.zeros((6, 2))])
    with pytest.raises(InputError, match="expected 1 teacher"):
        mb.update([np.zeros((8, 2))] * 2, [np.zeros((8, 2))])
    with pytest.raises(InputError, match="no batches"):
        mb.result()
    fm.MinibatchCKA(1, 1, unbiased=False).update([np.random.rand(3, 2)], [np.random.rand(3, 2)])  # biased: fine


def test_nan_features_name_the_sample():
    x = np.ones((6, 3))
    x[4, 1] = np.nan
    with pytest.raises(InputError, match=r"sample index \[4\]"):
        fm.cka(x, np.ones((6, 3)))


def test_rbf_cka_is_one_for_identical_and_lower_for_unrelated():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 5))
    assert fm.cka(x, x, kernel="rbf") == pytest.approx(1.0)
    assert fm.cka(x, rng.normal(size=(60, 5)), kernel="rbf") < 0.2


def test_layer_map_suggestion_recovers_the_diagonal_of_a_copying_student():
    rng = np.random.default_rng(6)
    teacher = [rng.normal(size=(64, 20))]
    for _ in range(5):  # each teacher layer a different nonlinear function of the previous one
        teacher.append(np.tanh(teacher[-1] @ rng.normal(size=(20, 20)) * 0.7))
    copies = [1, 3, 5]  # the student copies teacher layers 1, 3 and 5, with noise
    student = [teacher[j] @ ortho_group.rvs(20, random_state=j) + 0.05 * rng.normal(size=(64, 20)) for j in copies]
    mb = fm.MinibatchCKA(6, 3)
    for a in range(0, 64, 32):
        mb.update([t[a:a + 32] for t in teacher], [s[a:a + 32] for s in student])
    suggestion = fm.suggest_layer_map(mb.result()["cross"])
    assert suggestion["pairs"] == [(0, 1), (1, 3), (2, 5)]
    assert suggestion["total"] >= fm.map_total(mb.result()["cross"], [(0, 1), (1, 3), (2, 5)]) - 1e-12


def test_layer_map_suggestion_is_monotone_and_optimal_by_brute_force():
    import itertools

    rng = np.random.default_rng(7)
    s = rng.random((5, 3))
    best = max((sum(s[t, i] for i, t in enumerate(path)), path)
               for path in itertools.product(range(5), repeat=3) if list(path) == sorted(path))
    suggestion = fm.suggest_layer_map(s)
    assert suggestion["total"] == pytest.approx(best[0])
    assert [t for _, t in suggestion["pairs"]] == sorted(t for _, t in suggestion["pairs"])


# ---- other similarities ----
from scipy.linalg import orthogonal_procrustes  # noqa: E402

from kdviz.metrics import relations as rel  # noqa: E402


def test_procrustes_distance_matches_scipy_and_is_invariant():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(30, 6)), rng.normal(size=(30, 6))
    xc, yc = x - x.mean(0), y - y.mean(0)
    xc, yc = xc / np.linalg.norm(xc), yc / np.linalg.norm(yc)
    q, _ = orthogonal_procrustes(yc, xc)
    assert rel.procrustes_distance(x, y) == pytest.approx(np.linalg.norm(xc - yc @ q) ** 2, rel=1e-10)
    rotated = 3.0 * x @ ortho_group.rvs(6, random_state=1) + 7.0
    assert rel.procrustes_distance(x, rotated) == pytest.approx(0.0, abs=1e-10)


def test_mutual_knn_against_a_loop():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(40, 5))
    y = x + 0.5 * rng.normal(size=(40, 5))
    k = 5

    def neighbours(m, i):
        u = m / np.linalg.norm(m, axis=1, keepdims=True)
        s = u @ u[i]
        s[i] = -np.inf
        return set(np.argsort(-s, kind="stable")[:k])

    expected = np.mean([len(neighbours(x, i) & neighbours(y, i)) / k for i in range(40)])
    assert rel.mutual_knn(x, y, k=k) == pytest.approx(expected)
    assert rel.mutual_knn(x, 2.5 * x, k=k) == 1.0


def test_rkd_terms_are_zero_for_similar_geometry_and_positive_otherwise():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(20, 4))
    similar = 4.0 * x @ ortho_group.rvs(4, random_state=2) + 1.0
    assert rel.rkd_distance(x, similar) == pytest.approx(0.0, abs=1e-12)
    assert rel.rkd_angle(x, similar) == pytest.approx(0.0, abs=1e-12)
    other = rng.normal(size=(20, 4))
    assert rel.rkd_distance(x, other) > 0.01 and rel.rkd_angle(x, other) > 0.01


def test_projector_fit_r2():
    rng = np.random.default_rng(11)
    student = rng.normal(size=(200, 8))
    teacher = student @ rng.normal(size=(8, 5))
    assert rel.projector_fit(student, teacher, alpha=1e-6) == pytest.approx(1.0, abs=1e-6)
    assert rel.projector_fit(rng.normal(size=(200, 8)), teacher) < 0.1
    # both the primal (d ≤ n) and the dual (d > n) form agree with scikit-learn's Ridge on the same folds
    from sklearn.linear_model import Ridge

    for x, y in ((rng.normal(size=(60, 8)), rng.normal(size=(60, 3))), (rng.normal(size=(40, 100)), rng.normal(size=(40, 3)))):
        y = y + x[:, :3]
        order = np.random.default_rng(0).permutation(len(x))
        sse = sst = 0.0
        for held in np.array_split(order, 5):
            train = np.setdiff1d(order, held)
            prediction = Ridge(alpha=2.0).fit(x[train], y[train]).predict(x[held])
            sse += ((y[held] - prediction) ** 2).sum()
            sst += ((y[held] - y[train].mean(0)) ** 2).sum()
        assert rel.projector_fit(x, y, alpha=2.0) == pytest.approx(1 - sse / sst, rel=1e-8)
    with pytest.raises(InputError, match="same samples"):
        rel.projector_fit(student, teacher[:10])
