"""Attribution methods (captum wiring) and agreement metrics, against float64 reference code written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import spearmanr
from torch import nn

from kdviz.errors import InputError
from kdviz.metrics import attribution as am
from kdviz.metrics import attribution_agreement as ag

torch.set_default_dtype(torch.float32)


# ---- references -------------------------------------------------------------------------------------------
def ref_spearman(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(spearmanr(a, b).statistic)


def ref_cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
    return math.nan if na == 0 or nb == 0 else sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)


def ref_top(values: np.ndarray, fraction: float) -> set[int]:
    k = max(1, math.ceil(fraction * len(values)))
    kth = sorted((abs(v) for v in values), reverse=True)[k - 1]
    return {i for i, v in enumerate(values) if abs(v) >= kth and abs(v) > 0}


def ref_iou(a: np.ndarray, b: np.ndarray, fraction: float = 0.1) -> float:
    sa, sb = ref_top(a, fraction), ref_top(b, fraction)
    return math.nan if not (sa | sb) else len(sa & sb) / len(sa | sb)


maps_strategy = arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(4, 30)),
                       elements=st.floats(-5, 5, allow_nan=False, width=32))


def assert_close_nan(x: np.ndarray, y: np.ndarray, atol: float = 1e-9) -> None:
    x, y = np.asarray(x, float), np.asarray(y, float)
    assert np.array_equal(np.isnan(x), np.isnan(y)), (x, y)
    np.testing.assert_allclose(x[~np.isnan(x)], y[~np.isnan(y)], atol=atol)


# ---- agreement against references ------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(maps_strategy, st.data())
def test_agreement_matches_references(a, data):
    b = data.draw(arrays(np.float64, a.shape, elements=st.floats(-5, 5, allow_nan=False, width=32)))
    assert_close_nan(ag.spearman(a, b), [ref_spearman(x, y) for x, y in zip(a, b, strict=True)])
    assert_close_nan(ag.cosine(a, b), [ref_cosine(x, y) for x, y in zip(a, b, strict=True)])
    assert_close_nan(ag.topk_iou(a, b), [ref_iou(x, y) for x, y in zip(a, b, strict=True)])


def test_agreement_with_padding_mask_uses_only_real_positions():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 20)), rng.normal(size=(6, 20))
    lengths = [20, 15, 7, 20, 4, 11]
    mask = np.arange(20)[None] < np.array(lengths)[:, None]
    poisoned_a, poisoned_b = np.where(mask, a, 1e6), np.where(mask, b, -1e6)  # padding must not leak in
    for metric, ref in (("spearman", ref_spearman), ("cosine", ref_cosine), ("topk_iou", ref_iou)):
        got = ag.agreement(poisoned_a, poisoned_b, mask, metrics=[metric])[metric]
        assert_close_nan(got, [ref(a[i, :n], b[i, :n]) for i, n in enumerate(lengths)])


def test_image_maps_are_compared_over_all_pixels():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 8, 8)), rng.normal(size=(3, 8, 8))
    assert_close_nan(ag.spearman(a, b), [ref_spearman(x.ravel(), y.ravel()) for x, y in zip(a, b, strict=True)])


# ---- properties --------------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(maps_strategy)
def test_a_map_agrees_perfectly_with_itself(a):
    varied = np.ptp(a, axis=1) > 0
    np.testing.assert_allclose(ag.spearman(a, a)[varied], 1.0, atol=1e-9)
    nonzero = np.abs(a).sum(1) > 0
    np.testing.assert_allclose(ag.cosine(a, a)[nonzero], 1.0, atol=1e-9)
    np.testing.assert_allclose(ag.topk_iou(a, a)[nonzero], 1.0)
    assert np.isnan(ag.spearman(a, a)[~varied]).all() and np.isnan(ag.topk_iou(a, a)[~nonzero]).all()


@settings(max_examples=60, deadline=None)
@given(maps_strategy, st.data())
def test_agreement_is_symmetric_and_bounded(a, data):
    b = data.draw(arrays(np.float64, a.shape, elements=st.floats(-5, 5, allow_nan=False, width=32)))
    for fn, lo in ((ag.spearman, -1), (ag.cosine, -1), (ag.topk_iou, 0)):
        ab, ba = fn(a, b), fn(b, a)
        assert_close_nan(ab, ba)
        finite = ab[np.isfinite(ab)]
        assert ((finite >= lo - 1e-9) & (finite <= 1 + 1e-9)).all()


# values on a grid of 1/8: an increasing transform stays strictly increasing in floating point (no denormal ties)
grid_maps = arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(4, 30)), elements=st.integers(-40, 40).map(lambda v: v / 8))


@settings(max_examples=40, deadline=None)
@given(grid_maps, st.floats(0.01, 100))
def test_rank_and_cosine_ignore_each_models_scale(a, scale):
    b = np.roll(a, 1, axis=1)
    assert_close_nan(ag.spearman(a, b), ag.spearman(a, np.exp(b / 5) * scale))  # any increasing transform
    assert_close_nan(ag.cosine(a, b), ag.cosine(a, b * scale), atol=1e-9)
    assert_close_nan(ag.topk_iou(a, b), ag.topk_iou(a * scale, b))


def test_a_randomly_permuted_map_scores_near_zero():
    rng = np.random.default_rng(0)
    a = rng.gamma(2.0, size=(2000, 64))  # positive saliency-like maps
    shuffled = rng.permuted(a, axis=1)
    assert abs(np.nanmean(ag.spearman(a, shuffled))) < 0.01
    centred = a - a.mean(1, keepdims=True)
    assert abs(np.nanmean(ag.cosine(centred, rng.permuted(centred, axis=1)))) < 0.01
    # top-10% of 64 positions = 7: random sets overlap by about k/P / (2 − k/P)
    assert abs(np.nanmean(ag.topk_iou(a, shuffled)) - (7 / 64) / (2 - 7 / 64)) < 0.01
    assert (ag.spearman(a, a) == 1).all()


def test_ties_at_the_threshold_are_all_kept_and_zeros_never_count():
    a = np.array([[3.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])  # k = 2: {0} plus the three tied 1s
    assert ag.top_set(a, 0.1).tolist() == [[True, True, True, True] + [False] * 7]
    zeros = np.zeros((1, 11))
    assert ag.top_set(zeros, 0.5).sum() == 0 and np.isnan(ag.topk_iou(zeros, zeros)[0])


def test_bad_maps_raise_input_errors():
    with pytest.raises(InputError, match="share one shape"):
        ag.spearman(np.zeros((2, 5)), np.zeros((2, 6)))
    with pytest.raises(InputError, match="NaN or inf"):
        ag.cosine(np.array([[1.0, np.nan]]), np.ones((1, 2)))
    with pytest.raises(InputError, match="unknown agreement"):
        ag.agreement(np.ones((1, 4)), np.ones((1, 4)), metrics=["pearson"])
    with pytest.raises(InputError, match="fraction"):
        ag.topk_iou(np.ones((1, 4)), np.ones((1, 4)), fraction=0)


# ---- per class, margin, fidelity ----------------------------------------------------------------------------------
def test_per_class_summary_matches_a_loop_and_skips_undefined_values():
    rng = np.random.default_rng(2)
    values = rng.normal(size=50)
    values[[3, 7, 11]] = np.nan
    classes = rng.integers(0, 4, 50)
    classes[classes == 3] = 2  # class 3 has no sample
    got = ag.per_class_summary(values, classes, 4)
    for c in range(4):
        v = values[(classes == c) & np.isfinite(values)]
        assert got["count"][c] == len(v)
        if len(v) > 1:
            assert got["mean"][c] == pytest.approx(v.mean())
            assert got["sem"][c] == pytest.approx(v.std(ddof=1) / math.sqrt(len(v)))
        else:
            assert np.isnan(got["mean"][c]) and np.isnan(got["sem"][c])


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 8), st.integers(2, 6)), elements=st.floats(-20, 20, width=32)), st.data())
def test_answer_margin_is_the_log_probability_gap_and_its_sign_is_agreement(z, data):
    c = np.array([data.draw(st.integers(0, z.shape[1] - 1)) for _ in range(len(z))])
    margin = ag.answer_margin(z, c)
    log_p = torch.log_softmax(torch.as_tensor(z), dim=1).numpy()
    for i in range(len(z)):
        others = [log_p[i, j] for j in range(z.shape[1]) if j != c[i]]
        assert margin[i] == pytest.approx(log_p[i, c[i]] - max(others), abs=1e-9)
        if margin[i] > 0:
            assert z[i].argmax() == c[i]
        if margin[i] < 0:
            assert z[i].argmax() != c[i]


def test_fidelity_table_quadrants_and_accuracy():
    z_t = np.array([[5.0, 0, 0], [5, 0, 0], [0, 5, 0], [0, 5, 0]])
    z_s = np.array([[4.0, 1, 0], [4, 1, 0], [5, 0, 0], [5, 0, 0]])
    agreement = np.array([0.9, 0.1, 0.8, np.nan])
    table = ag.fidelity_table(z_t, z_s, agreement, labels=[0, 0, 1, 0], threshold=0.5)
    assert table["same_answer"].tolist() == [True, True, False, False]
    assert table["same_reason"].tolist() == [True, False, True, False]  # undefined agreement is not "the same reason"
    assert [ag.QUADRANTS[q] for q in table["quadrant"]] == list(ag.QUADRANTS)
    counts = ag.quadrant_counts(table)
    assert counts["different answer, different reason"] == {"count": 1, "student_accuracy": 1.0}
    assert counts["different answer, same reason"]["student_accuracy"] == 0.0
    assert (table["margin"] > 0).tolist() == table["same_answer"].tolist()


# ---- captum wiring on models with known answers ---------------------------------------------------------------------
class Linear(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


@pytest.fixture
def linear_image_model():
    torch.manual_seed(0)
    model = Linear(torch.randn(4, 2 * 3 * 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64))
    x = torch.randn(5, 2, 3, 3, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 3, 1])
    return model, x, target


def test_integrated_gradients_on_a_linear_model_is_gradient_times_input(linear_image_model):
    model, x, target = linear_image_model
    w = model.weight.detach()[target].reshape(5, 2, 3, 3)
    got = am.input_attribution("integrated_gradients", model, x, target, n_steps=8)
    np.testing.assert_allclose(got.numpy(), (w * x).sum(1).numpy(), atol=1e-10)  # summed over the 2 channels
    baseline = torch.full((2, 3, 3), 0.5, dtype=torch.float64)
    got = am.input_attribution("integrated_gradients", model, x, target, baseline=baseline, n_steps=8)
    np.testing.assert_allclose(got.numpy(), (w * (x - 0.5)).sum(1).numpy(), atol=1e-10)
    np.testing.assert_allclose(am.input_attribution("input_x_gradient", model, x, target).numpy(), (w * x).sum(1).numpy(), atol=1e-12)
    np.testing.assert_allclose(am.input_attribution("saliency", model, x, target).numpy(), w.norm(dim=1).numpy(), atol=1e-12)


def test_integrated_gradients_are_complete_on_a_nonlinear_model():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    x = torch.randn(6, 3, 2, 2, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    got = am.input_attribution("integrated_gradients", model, x, target, n_steps=64, internal_batch_size=50)
    with torch.no_grad():
        gap = model(x)[torch.arange(6), target] - model(torch.zeros_like(x))[torch.arange(6), target]
    np.testing.assert_allclose(got.sum(dim=(1, 2)).numpy(), gap.numpy(), atol=1e-6)


class BagOfEmbeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4).double()
        self.out = nn.Linear(4, 3).double()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(ids).mean(1))


def test_token_attributions_at_the_embedding_layer_are_analytic():
    torch.manual_seed(2)
    model = BagOfEmbeddings()
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    target = torch.tensor([0, 2])
    e, w, base = model.embed.weight.detach(), model.out.weight.detach()[target], torch.full_like(ids, 9)
    expected_ig = ((e[ids] - e[base]) * w[:, None, :] / 4).sum(-1)  # the model is linear in the embeddings
    got = am.embedding_attribution("integrated_gradients", model, ids, target, model.embed, baseline_ids=base, n_steps=4)
    np.testing.assert_allclose(got.numpy(), expected_ig.numpy(), atol=1e-10)
    got = am.embedding_attribution("input_x_gradient", model, ids, target, model.embed)
    np.testing.assert_allclose(got.numpy(), (e[ids] * w[:, None, :] / 4).sum(-1).numpy(), atol=1e-12)
    saliency = am.embedding_attribution("saliency", model, ids, target, model.embed)
    np.testing.assert_allclose(saliency.numpy(), (w / 4).norm(dim=1)[:, None].expand(2, 4).numpy(), atol=1e-12)


def test_grad_cam_matches_the_paper_formula():
    torch.manual_seed(3)
    body = nn.Sequential(nn.Conv2d(1, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    model = nn.Sequential(body, nn.Conv2d(5, 6, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).double()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 1])
    got = am.grad_cam(model, x, target, model[1])
    activation = model[1](model[0](x)).detach().requires_grad_(True)
    score = model[4](model[3](model[2](activation)))[torch.arange(4), target].sum()
    (grad,) = torch.autograd.grad(score, activation)
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * activation.detach()).sum(1, keepdim=True))
    expected = F.interpolate(cam, size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-12)
    with pytest.raises(InputError, match=r"\[B, C, h, w\]"):
        am.grad_cam(model, x, target, model[3], layer_name="flatten")


def test_attention_gradient_matches_a_loop_reference():
    torch.manual_seed(4)
    batch, heads, tokens = 2, 3, 5
    maps = [torch.softmax(torch.randn(batch, heads, tokens, tokens, dtype=torch.float64), -1).requires_grad_(True) for _ in range(3)]
    weights = [torch.randn(heads, tokens, tokens, dtype=torch.float64) for _ in range(3)]
    score = sum((a * w).sum(dim=(1, 2, 3)) for a, w in zip(maps, weights, strict=True))  # ∂score/∂A_l = w_l
    relevance, head_scores = am.attention_gradient(score, maps)
    for b in range(batch):
        r = np.eye(tokens)
        for layer, (a, w) in enumerate(zip(maps, weights, strict=True)):
            cam = a[b].detach().numpy() * w.numpy()
            np.testing.assert_allclose(head_scores[b, layer].numpy(), cam.sum(axis=(1, 2)), atol=1e-12)
            r = r + np.maximum(cam, 0).mean(0) @ r
        np.testing.assert_allclose(relevance[b].numpy(), r, atol=1e-12)
    rows = am.relevance_row(relevance, torch.tensor([0, -1]))
    np.testing.assert_allclose(rows[0].numpy(), (relevance[0] - torch.eye(tokens, dtype=torch.float64))[0].numpy())
    np.testing.assert_allclose(rows[1].numpy(), (relevance[1] - torch.eye(tokens, dtype=torch.float64)).mean(0).numpy())
    with pytest.raises(InputError, match="autograd graph"):
        am.attention_gradient(score, [m.detach() for m in maps])


def test_tokens_to_image_lays_patches_on_the_grid():
    values = torch.arange(1 + 4, dtype=torch.float64)[None]  # CLS, then a 2×2 grid
    image = am.tokens_to_image(values, 1, (2, 2), (4, 4))[0].numpy()
    assert image.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    with pytest.raises(InputError, match="patch grid"):
        am.tokens_to_image(values, 0, (2, 2), (4, 4))


def test_bad_method_and_token_inputs_raise():
    with pytest.raises(InputError, match="unknown attribution method"):
        am.check_method("lime")
    with pytest.raises(InputError, match="embedding layer"):
        am.input_attribution("saliency", BagOfEmbeddings(), torch.tensor([[1, 2]]), torch.tensor([0]))
