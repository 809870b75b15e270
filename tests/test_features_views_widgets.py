"""Feature-alignment views and the AlignmentExplorer on the demo runs (CNN, ViT, language model) and an HF BERT pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import bert_pair

import kdviz
from kdviz.errors import InputError, MissingDataError
from kdviz.metrics import features as fm
from kdviz.metrics import relations
from kdviz.readers.features import cka_matrix
from kdviz.views import features as views
from kdviz.widgets import AlignmentExplorer


@pytest.mark.parametrize("name", ["digits-cnn", "digits-vit", "charlm"])
def test_cka_matrix_of_the_demo_runs_matches_a_direct_minibatch_computation(demo_runs, name):
    run = demo_runs[name]
    result = cka_matrix(run, cache=False, batch_size=128)
    assert result["cross"].shape == (len(run.teacher.feature_names), len(run.student.feature_names))
    # independent recomputation for one pair: pooled features, batches of 128, the same estimator
    t_name, s_name = run.teacher.feature_names[-1], run.student.feature_names[-1]
    mb = fm.MinibatchCKA(1, 1)
    mask = run.array("inputs/attention_mask")[:] if run.has("inputs/attention_mask") else None
    for start in range(0, run.n_samples, 128):
        rows = slice(start, start + 128)
        if run.n_samples - start < 4:
            break
        mb.update([fm.pool_features(run.teacher.features(t_name)[rows], mask=None if mask is None else mask[rows])],
                  [fm.pool_features(run.student.features(s_name)[rows], mask=None if mask is None else mask[rows])])
    assert result["cross"][-1, -1] == pytest.approx(mb.result()["cross"][0, 0], rel=1e-6)
    fig = views.cka_heatmap(result, suggested=fm.suggest_layer_map(result["cross"])["pairs"], layer_map=run.layer_map
                            if run.meta["layer_map"]["unit"] == "features" else None)
    assert np.asarray(fig.data[0].z).shape == result["cross"].shape
    assert f"n={result['n']}" in fig.data[0].hovertemplate


def test_cka_matrix_is_cached_in_the_run(demo_runs):
    run = demo_runs["digits-cnn"]
    first = cka_matrix(run, conv="pool")
    assert any(key.startswith("cache/cka-unbiased-pool") for key in kdviz.Run.open(run.path).array_keys())
    again = cka_matrix(kdviz.Run.open(run.path), conv="pool")  # a new process-like open reads the cache
    np.testing.assert_array_equal(first["cross"], again["cross"])
    assert again["teacher_layers"] == first["teacher_layers"]


def test_token_pooling_modes(tmp_path):
    teacher, student = bert_pair()
    ids = torch.randint(1, 120, (12, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[:, 7:] = 0
    data = {"input_ids": ids, "attention_mask": mask}
    run = kdviz.capture(teacher, student, data, path=tmp_path / "b.kdviz", attentions=False, progress=False,
                        token_features="tokens")
    mean = cka_matrix(run, tokens="mean", cache=False)
    per_token = cka_matrix(run, tokens="tokens", cache=False)
    first = cka_matrix(run, tokens="summary", cache=False)
    assert mean["n"] == 12 and per_token["n"] == 12 * 7 and first["n"] == 12  # only the valid tokens are samples
    pooled = fm.pool_features(run.teacher.features("hidden.1")[:], mask=mask.numpy())
    np.testing.assert_allclose(pooled[0].numpy(), run.teacher.features("hidden.1")[0, :7].mean(0), rtol=1e-5)
    # pooled while capturing (the default), the same CKA comes out of a run 10 tokens smaller per sample
    small = kdviz.capture(teacher, student, data, path=tmp_path / "p.kdviz", attentions=False, progress=False)
    np.testing.assert_allclose(cka_matrix(small, tokens="mean", cache=False)["cross"], mean["cross"], atol=1e-6)
    np.testing.assert_allclose(cka_matrix(small, tokens="summary", cache=False)["cross"], first["cross"], atol=1e-6)
    with pytest.raises(InputError, match="token_features='tokens'"):
        cka_matrix(small, tokens="tokens", cache=False)


def test_relation_views_and_projection(demo_runs):
    run = demo_runs["digits-cnn"]
    x_t = fm.pool_features(run.teacher.features("layer3")[:150]).numpy()
    x_s = fm.pool_features(run.student.features("layer3")[:150]).numpy()
    labels = run.labels[:150]
    rel = views.relation_matrices(x_t, x_s, labels, teacher_name="layer3", student_name="layer3")
    assert np.asarray(rel.data[0].z).shape == (150, 150)
    projection = views.joint_projection(x_t, x_s, labels, run.class_names)
    points = [t for t in projection.data if t.mode == "markers"]
    assert sum(len(t.x) for t in points) == 300  # every sample, once for each model
    bars = views.pair_scores([{"teacher": "layer3", "student": "layer3", "r2": relations.projector_fit(x_s, x_t),
                               "knn": relations.mutual_knn(x_t, x_s)}])
    assert 0 < bars.data[0].y[0] <= 1 and 0 < bars.data[1].y[0] <= 1


def test_the_features_page_of_a_language_model_run_makes_sense_without_classes(demo_runs):
    """A language model's texts have no classes: the projection colours each model (teacher blue, student orange)
    instead of one "class 0", the relations are in sample order, not "sorted by class", and both say a point is a
    text averaged over its tokens; a classification run says when it shows only its first samples."""
    from kdviz.views import theme

    lm = AlignmentExplorer(demo_runs["charlm"])
    projection, relations_fig = lm.figures()["projection"], lm.figures()["relations"]
    points = {t.name: t for t in projection.data if t.mode == "markers"}
    assert set(points) == {"teacher", "student"}
    assert points["teacher"].marker.color == theme.TEACHER and points["student"].marker.color == theme.STUDENT
    assert len(points["teacher"].x) == demo_runs["charlm"].n_samples
    assert "in sample order" in relations_fig.layout.title.text and "class" not in relations_fig.layout.title.text
    assert all("averaged over its real tokens" in f.layout.title.text for f in (projection, relations_fig))
    cnn = AlignmentExplorer(demo_runs["digits-cnn"], samples=120)
    title = cnn.figures()["relations"].layout.title.text
    assert "sorted by class" in title and "the first 120 of 500 samples" in title
    assert "tokens" not in title
    # the cosine scale holds neither role colour: beside a teacher − student map, blue would read "teacher higher"
    colours = {str(c).lower() for _, c in cnn.figures()["relations"].data[0].colorscale}
    assert not colours & {theme.TEACHER.lower(), theme.STUDENT.lower()}


def test_alignment_explorer_reacts_to_controls(demo_runs):
    run = demo_runs["digits-cnn"]
    explorer = AlignmentExplorer(run, samples=120)
    assert explorer.suggestion["pairs"] == [(0, 0), (1, 1), (2, 2)]  # the distilled CNN student follows its teacher
    unbiased = np.asarray(explorer.figures()["cka"].data[0].z).copy()
    explorer.estimator.value = False
    assert explorer.unbiased is False
    biased = np.asarray(explorer.figures()["cka"].data[0].z)
    assert not np.allclose(unbiased, biased)
    assert "biased linear CKA" in explorer.figures()["cka"].layout.title.text
    explorer.select("layer1", "layer3")
    assert explorer.teacher_menu.value == "layer1" and explorer.student_menu.value == "layer3"
    assert "layer1" in explorer.figures()["relations"].layout.annotations[0].text
    explorer.panes["cka"].click_data = {"points": [{"x": "layer2", "y": "layer2", "curveNumber": 0}]}  # a heatmap cell
    assert (explorer.teacher_layer, explorer.student_layer) == ("layer2", "layer2")
    assert len(explorer.pair_scores()) == 3
    assert run.has("cache")  # a notebook explorer stores the CKA it computed in the run's cache


def test_alignment_explorer_says_when_token_features_were_pooled(tmp_path):
    teacher, student = bert_pair()
    ids = torch.randint(1, 120, (12, 10), generator=torch.Generator().manual_seed(1))
    pooled = kdviz.capture(teacher, student, ids, path=tmp_path / "p.kdviz", attentions=False, progress=False)
    explorer = AlignmentExplorer(pooled)
    assert list(explorer.tokens_menu.options) == ["mean over tokens", "first token (CLS)"]
    assert any("pooled while capturing" in str(getattr(part, "object", "")) for part in explorer.view.objects)
    explorer.tokens_menu.value = "summary"
    assert explorer.result["tokens"] == "summary"
    whole = kdviz.capture(teacher, student, ids, path=tmp_path / "t.kdviz", attentions=False, progress=False,
                          token_features="tokens")
    explorer = AlignmentExplorer(whole)
    assert "tokens as samples" in explorer.tokens_menu.options
    assert not any("pooled while capturing" in str(getattr(part, "object", "")) for part in explorer.view.objects)


def test_alignment_explorer_needs_features(tmp_path):
    from conftest import TinyCNN

    run = kdviz.capture(TinyCNN(4), TinyCNN(2), torch.randn(8, 1, 8, 8), path=tmp_path / "r.kdviz", progress=False)
    with pytest.raises(MissingDataError, match="layers="):
        AlignmentExplorer(run)
    with pytest.raises(InputError, match="layers="):
        cka_matrix(run)


def test_live_cka_from_the_models_equals_cka_of_the_stored_run(demo_runs):
    from kdviz.capture import live_cka
    from kdviz.demo.data import load_digits
    from kdviz.demo.weights import load_pair

    teacher, student, _ = load_pair("cnn")
    digits = load_digits()
    live = live_cka(teacher, student, (digits.x_test, digits.y_test), layers=["layer1", "layer2", "layer3"], batch_size=100,
                    progress=False, device="cpu")
    stored = cka_matrix(demo_runs["digits-cnn"], batch_size=100, cache=False)
    assert live["teacher_layers"] == stored["teacher_layers"] and live["n"] == stored["n"] == 500
    np.testing.assert_allclose(live["cross"], stored["cross"], atol=1e-6)


def test_the_features_page_offers_only_the_menus_that_change_something(demo_runs):
    """An image run has no tokens to pool and a language model no conv maps: each menu shows where it applies."""
    cnn, lm = AlignmentExplorer(demo_runs["digits-cnn"], samples=60), AlignmentExplorer(demo_runs["charlm"])
    assert cnn.conv_menu.visible and not cnn.tokens_menu.visible
    assert lm.tokens_menu.visible and not lm.conv_menu.visible
