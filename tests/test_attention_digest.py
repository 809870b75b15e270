"""The attention digest capture stores for every sample (`metrics.attention_digest`, `attention_records`), checked
against float64 references on exact maps, and the views on samples that keep only their digest."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import bert_pair
from hypothesis import given, settings
from hypothesis import strategies as st

import kdviz
from kdviz.attention_records import EXACT_BUDGET, exact_count
from kdviz.errors import InputError, MissingDataError
from kdviz.metrics import attention as am
from kdviz.metrics import attention_digest as digest
from kdviz.readers.attention import AttentionData
from kdviz.views import attention as views


def _maps(rng: np.random.Generator, n: int, heads: int, t: int) -> np.ndarray:
    logits = rng.normal(size=(n, heads, t, t)) * 2
    a = np.exp(logits)
    return a / a.sum(-1, keepdims=True)


def _mask(rng: np.random.Generator, n: int, t: int) -> np.ndarray:
    lengths = rng.integers(2, t + 1, size=n)
    return np.arange(t)[None, :] < lengths[:, None]


# ---- formulas ------------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 4), t=st.integers(2, 12), measure=st.sampled_from(am.MEASURES))
def test_weighted_per_sample_divergences_equal_the_divergence_of_all_rows(seed, n, t, measure):
    rng = np.random.default_rng(seed)
    a_t, a_s, mask = _maps(rng, n, 3, t), _maps(rng, n, 2, t), _mask(rng, n, t)
    per_sample = am.per_sample_divergence(a_t, a_s, mask=mask, measure=measure)
    assert per_sample.shape == (n, 3, 2)
    together = am.head_divergence(a_t, a_s, mask=mask, measure=measure)
    np.testing.assert_allclose(digest.weighted_mean(per_sample, mask.sum(1)), together, rtol=1e-10, atol=1e-12)
    for i in range(n):
        np.testing.assert_allclose(per_sample[i], am.head_divergence(a_t[i], a_s[i], mask=mask[i:i + 1], measure=measure),
                                   rtol=1e-10, atol=1e-12)
    if measure == "kl":
        assert (per_sample >= 0).all()


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 3), t=st.integers(2, 40))
def test_capture_head_divergences_equal_the_float64_reference(seed, n, t):
    rng = np.random.default_rng(seed)
    a_t, a_s, mask = _maps(rng, n, 3, t), _maps(rng, n, 2, t), _mask(rng, n, t)
    got = digest.head_divergences(torch.as_tensor(a_t).half(), torch.as_tensor(a_s).half(), mask=mask)
    half = [torch.as_tensor(a).half().double().numpy() for a in (a_t, a_s)]  # the same float16 inputs, in float64
    reference = am.per_sample_divergence(*half, mask=mask)
    assert got.dtype == np.float32 and got.shape == (n, 3, 2)
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-6)


def test_a_head_compared_with_itself_diverges_by_zero():
    rng = np.random.default_rng(3)
    a = _maps(rng, 2, 3, 7)
    np.testing.assert_allclose(np.diagonal(am.per_sample_divergence(a, a), axis1=1, axis2=2), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.diagonal(digest.head_divergences(a, a), axis1=1, axis2=2), 0.0, atol=1e-6)


def test_layer_divergences_are_those_of_head_averaged_maps_per_sample():
    rng = np.random.default_rng(4)
    teacher, student = [_maps(rng, 3, 4, 9) for _ in range(3)], [_maps(rng, 3, 2, 9) for _ in range(2)]
    mask = _mask(rng, 3, 9)
    got = digest.layer_divergences([torch.as_tensor(a) for a in teacher], [torch.as_tensor(a) for a in student], mask=mask)
    assert got.shape == (3, 3, 2) and got.dtype == np.float32
    for n in range(3):
        for i, a_t in enumerate(teacher):
            for j, a_s in enumerate(student):
                t_mean, s_mean = a_t[n].mean(0), a_s[n].mean(0)  # float64 reference: head means, then KL per real query
                real = mask[n]
                t_rows = (t_mean[real][:, real] + am.EPS) / (t_mean[real][:, real] + am.EPS).sum(1, keepdims=True)
                s_rows = (s_mean[real][:, real] + am.EPS) / (s_mean[real][:, real] + am.EPS).sum(1, keepdims=True)
                expected = (t_rows * (np.log(t_rows) - np.log(s_rows))).sum(1).mean()
                assert got[n, i, j] == pytest.approx(expected, rel=1e-5)


def test_thumbnails_pool_each_sample_over_its_real_tokens():
    rng = np.random.default_rng(5)
    a, mask = _maps(rng, 3, 2, 40), np.ones((3, 40), bool)
    mask[1, 25:] = False
    mask[2, 9:] = False
    thumbs = digest.thumbnails(a, mask=mask, side=16)
    assert thumbs.shape == (3, 2, 16, 16) and thumbs.dtype == np.float16
    for n, length in enumerate((40, 25, 9)):
        real = a[n, :, :length, :length]
        real = real / real.sum(-1, keepdims=True)
        side = digest.thumbnail_side(length, 16)
        edges = digest.bin_starts(length, 16)
        counts = np.diff(np.append(edges, length))
        expected = np.add.reduceat(np.add.reduceat(real, edges, axis=-1), edges, axis=-2) / counts[:, None]
        np.testing.assert_allclose(thumbs[n, :, :side, :side], expected, atol=2e-3)
        np.testing.assert_allclose(thumbs[n, :, :side, :side].astype(np.float64).sum(-1), 1.0, atol=5e-3)
        assert not thumbs[n, :, side:, :].any() and not thumbs[n, :, :, side:].any()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.integers(2, 16), padding=st.sampled_from(["end", "start", "holes"]),
       causal=st.booleans())
def test_per_sample_summaries_are_head_summaries_of_each_sample(seed, t, padding, causal):
    """Padding at the end (the real block alone is summarised), at the start or in holes (the whole map, masked)."""
    rng = np.random.default_rng(seed)
    a, mask = _maps(rng, 3, 4, t), _mask(rng, 3, t)
    if padding == "start":
        mask = mask[:, ::-1].copy()
    elif padding == "holes":
        mask = rng.random((3, t)) < 0.7
        mask[:, 0] = True
    if causal:
        a = np.tril(a)
        a /= a.sum(-1, keepdims=True)
    got = digest.per_sample_summaries(a, mask=mask)
    assert got.shape == (3, 4, len(digest.SUMMARY_NAMES))
    for n in range(3):
        expected = am.head_summaries(a[n:n + 1], mask=mask[n:n + 1])
        for column, name in enumerate(digest.SUMMARY_NAMES):
            np.testing.assert_allclose(got[n, :, column], expected[name], rtol=1e-4, atol=1e-6)


# ---- which samples keep exact maps ----------------------------------------------------------------------------
def test_auto_keeps_exact_maps_within_half_a_megabyte_per_sample():
    bert_base_512 = 2 * 512 * 512 * (12 * 12 + 6 * 12)  # float16 maps of BERT-base and DistilBERT: 113 MB a sample
    assert exact_count("auto", n_samples=16, bytes_per_sample=bert_base_512) == 0
    assert exact_count("auto", n_samples=10_000, bytes_per_sample=bert_base_512) == 10_000 * EXACT_BUDGET // bert_base_512 == 46
    assert exact_count("auto", n_samples=500, bytes_per_sample=20_000) == 500  # short inputs: every sample
    assert exact_count("auto", n_samples=None, bytes_per_sample=20_000) >= 1 << 40
    assert exact_count("auto", n_samples=None, bytes_per_sample=bert_base_512) == 0
    assert exact_count([5, 2, 5], n_samples=10, bytes_per_sample=1) == [2, 5]
    assert exact_count(3, n_samples=10, bytes_per_sample=1) == 3
    for bad in ("some", -1, [1, -2], True):
        with pytest.raises(InputError, match="attention_samples"):
            exact_count(bad, n_samples=10, bytes_per_sample=1)


# ---- a capture with digest-only samples --------------------------------------------------------------------
@pytest.fixture(scope="module")
def bert_pair_runs(tmp_path_factory):
    """The same BERT pair and data captured three times: exact maps for sample 1 only, for every sample, for none."""
    teacher, student = bert_pair(max_positions=128)
    ids = torch.randint(1, 120, (5, 90), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[0, 70:] = 0
    mask[3, 20:] = 0
    data = {"input_ids": ids, "attention_mask": mask}
    root = tmp_path_factory.mktemp("digest")
    some = kdviz.capture(teacher, student, data, path=root / "some.kdviz", batch_size=2, progress=False, layers=[],
                         attention_samples=[1])
    every = kdviz.capture(teacher, student, data, path=root / "all.kdviz", batch_size=2, progress=False, layers=[],
                          attention_samples="all")
    none = kdviz.capture(teacher, student, data, path=root / "none.kdviz", batch_size=2, progress=False, layers=[],
                         attention_samples=0)
    with pytest.raises(MissingDataError, match="layer_map="):  # an unmapped pair, and no exact maps to compare it on
        AttentionData(none).pair_divergence(0, 0)
    closest = int(AttentionData(none).layer_similarity()[0].argmin())
    assert not none.has("teacher/attn/0") and AttentionData(none).follow(0, 1) == (closest, 0)
    return some, every


def test_a_digest_only_run_keeps_exact_maps_for_the_chosen_samples(bert_pair_runs):
    some, every = bert_pair_runs
    assert some.attention_samples == [1] and some.teacher.attention(0).shape[0] == 1
    np.testing.assert_array_equal(some.teacher.attention(2)[0], every.teacher.attention(2)[1])
    data, exact = AttentionData(some), AttentionData(every)
    assert data.has_exact(1) and not data.has_exact(0)
    # the dataset views average every sample's stored divergences: the same as the exact maps of every sample give
    mask = every.attention_mask[:].astype(bool)
    reference = am.layer_divergence([every.teacher.attention(i)[:] for i in range(4)],
                                    [every.student.attention(j)[:] for j in range(2)], mask=mask)
    np.testing.assert_allclose(data.layer_similarity(), reference, rtol=1e-4, atol=1e-6)  # float32 maps digested, float16 stored
    pair = some.meta["capture"]["attention_head_pairs"][0]
    reference = am.head_divergence(every.teacher.attention(pair[0])[:], every.student.attention(pair[1])[:], mask=mask)
    np.testing.assert_allclose(data.pair_divergence(*pair), reference, rtol=1e-4, atol=1e-6)
    assert [0, 0] not in some.meta["capture"]["attention_head_pairs"]  # an unmapped pair: from the exact sample kept
    np.testing.assert_allclose(data.pair_divergence(0, 0), am.head_divergence(
        every.teacher.attention(0)[1], every.student.attention(0)[1], mask=mask[1:2]), rtol=1e-10)
    for sample in (0, 3):  # per-head summaries and thumbnails of samples with no exact maps
        n_real = int(mask[sample].sum())
        maps = every.teacher.attention(1)[sample].astype(np.float64)[:, :n_real, :n_real]
        expected = am.head_summaries(maps, positions=am.token_positions(n_real))
        np.testing.assert_allclose(data.sample_summaries("teacher", sample, "entropy")[1], expected["entropy"], rtol=1e-4)
        np.testing.assert_allclose(data.sample_summaries("teacher", sample, "distance")[1], expected["distance"], rtol=1e-4)
        pooled, _ = digest.pool_map(maps / maps.sum(-1, keepdims=True), 32)
        np.testing.assert_allclose(data.thumbnails("teacher", 1, sample), pooled, atol=2e-3)
        np.testing.assert_allclose(exact.thumbnails("teacher", 1, sample), pooled, atol=2e-3)


def test_views_of_a_digest_only_sample_say_so(bert_pair_runs):
    some, _ = bert_pair_runs
    data = AttentionData(some)
    t_layer, s_layer = some.meta["capture"]["attention_head_pairs"][-1]
    fig = views.pair_view(data, (t_layer, 1), (s_layer, 0), 3)  # 20 real tokens: 20 bins, nothing pooled further
    assert len(fig.data[0].x) == 20
    fig = views.pair_view(data, (t_layer, 1), (s_layer, 0), 0)  # 70 real tokens pooled at capture into 32 bins
    assert len(fig.data[0].x) == 32 and "pooled at capture into 32 bins" in fig.layout.title.text
    assert "exact maps kept for sample 1: capture with attention_samples=" in fig.layout.title.text
    stored = some.attention_head_divergence(t_layer, s_layer)[0][1, 0]
    assert f"{stored:.3f} nats" in fig.layout.title.text
    np.testing.assert_allclose(np.asarray(fig.data[0].customdata, np.float64).sum(1), 1.0, atol=5e-3)
    with pytest.raises(InputError, match="no exact attention maps"):
        views.pair_view(data, (t_layer, 1), (s_layer, 0), 0, window=(0, 10))
    assert "only its digest" in views.rollout_view(data, 0).layout.annotations[0].text
    assert views.rollout_view(data, 1).data  # the exact sample rolls out
    grid = views.head_grid(data, 0)
    composite = next(t for t in grid.data if t.type == "heatmap")
    assert np.asarray(composite.z).shape == (4 * (32 + views.GAP) - views.GAP, 4 * (32 + views.GAP) - views.GAP)
    with pytest.raises(MissingDataError, match="attention_samples"):
        data.maps("teacher", 0, 0)


def test_the_overview_writes_long_lists_of_kept_samples_as_ranges():
    from kdviz.views.overview import plain

    assert plain(list(range(500))) == "0–499 (500 samples)"
    assert plain([1, 5, 9, 11, 12, 13, 14, 15, 16]) == "1, 5, 9, 11, 12, … (9 samples)"
    assert plain([0, 1]) == "[0, 1]"  # a short list stays as it is


def test_after_the_first_batch_layers_are_digested_as_the_models_compute_them(bert_pair_runs):
    """Every batch streams each Hugging Face attention layer into the digest (no model's every layer is held): the
    probes count the layers streamed, and the runs above, captured so, matched the exact maps sample by sample."""
    from kdviz.adapters.probe import ModelProbe
    from kdviz.capture import CaptureSession

    teacher, student = bert_pair("sdpa")
    ids = torch.randint(1, 120, (6, 20), generator=torch.Generator().manual_seed(3))
    probes = tuple(ModelProbe(model, role, layers=None, attentions=True, device=torch.device("cpu"))
                   for model, role in ((teacher, "teacher"), (student, "student")))
    session = CaptureSession(probes, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, batch_size=2,
                             progress=False)
    streamed = [(probes[0].streamed, probes[1].streamed, sorted(records)) for records in session]
    assert [s[:2] for s in streamed] == [(4, 2), (4, 2), (4, 2)]  # a first sample, scouted, taught the layers
    assert streamed[0][2] == streamed[1][2] == streamed[2][2]  # the same arrays either way
    assert teacher.config._attn_implementation == "sdpa"  # switched to eager for the capture and back
