"""kdviz.capture_text on real GPT-2 models from configs and real `tokenizers` models trained here: with two
tokenizers the stored run is what compare_texts computes live, span by span; with one it is kdviz.capture on the
same ids, plus the texts and offsets; the readers and the token views work on both."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_cross_tokenizer import CORPUS, TEXTS, byte_level, lm, permuted, permuted_pair, sentencepiece_like

import kdviz
from kdviz.cross_tokenizer import compare_texts
from kdviz.demo.tokenizers import as_hugging_face
from kdviz.errors import InputError, MissingDataError
from kdviz.readers.logits import LogitData
from kdviz.readers.text import TextData
from kdviz.text import display_token, escape_label

THREE = [*TEXTS, CORPUS[9_000:9_400]]


@pytest.fixture(scope="module")
def cross_pair():
    teacher_tokenizer, student_tokenizer = byte_level(400), sentencepiece_like(600)
    return (lm(teacher_tokenizer.get_vocab_size(), 0), lm(student_tokenizer.get_vocab_size(), 1),
            as_hugging_face(teacher_tokenizer), as_hugging_face(student_tokenizer))


def test_a_two_tokenizer_run_stores_per_span_what_compare_texts_computes(cross_pair, tmp_path):
    teacher, student, tok_t, tok_s = cross_pair
    run = kdviz.capture_text(teacher, student, THREE, tokenizer=tok_t, student_tokenizer=tok_s,
                             path=tmp_path / "cross.kdviz", progress=False)
    live = compare_texts(teacher, student, THREE, tokenizer=tok_t, student_tokenizer=tok_s, progress=False)
    assert run.task == "tokens" and run.tokenizations == 2 and run.n_samples == 3 and run.verify(progress=False) == []
    data = TextData.from_run(run)
    assert data.texts == THREE  # non-ASCII ("naïve — café") round-trips
    mask = run.attention_mask[:].astype(bool)
    for i, result in enumerate(live):
        k = len(result.alignment.boundaries)
        assert mask[i].sum() == k and "".join(run.tokens[i]) == THREE[i][: result.alignment.boundaries[-1]]
        assert len(run.tokens[i]) == mask.shape[1] and run.tokens[i][k:] == [""] * (mask.shape[1] - k)
        for stat in ("kl", "reverse_kl"):
            np.testing.assert_allclose(run.pair_token_stat(stat)[i][:k], result.boundary[stat], rtol=1e-5, atol=1e-7)
        for side in (run.teacher, run.student):
            np.testing.assert_allclose(side.token("entropy")[i][:k], result.boundary[f"{side.role}_entropy"], rtol=1e-5)
            # the probability of the next span, read at the boundary that ends this one (chain rule)
            np.testing.assert_allclose(side.token("true_prob")[i][: k - 1], np.exp(result.spans[side.role][1:]), rtol=1e-5)
            assert np.isnan(side.token("true_prob")[i][k - 1])
        stored = data.comparison(i)
        np.testing.assert_array_equal(stored.alignment.boundaries, result.alignment.boundaries)
        np.testing.assert_array_equal(stored.alignment.student_piece, result.alignment.student_piece)
        np.testing.assert_allclose(stored.spans["difference"], result.spans["difference"], equal_nan=True)
        for role in ("teacher", "student"):
            np.testing.assert_array_equal(stored.offsets[role], result.offsets[role])
    # the token views read it like any language-model run: per-sample means, the map, the strip without top-k
    logit_data = LogitData.from_run(run)
    means = logit_data.per_sample("kl")
    np.testing.assert_allclose(means, [r.boundary["kl"].mean() for r in live], rtol=1e-5)
    points = logit_data.token_points("kl")
    assert len(points["divergence"]) == mask.sum() and points["shared_mass"] is None
    from kdviz.views.logits import sample_detail

    # each span ends where both models predict their next piece: both top-k lists, each in its own vocabulary
    for i, result in enumerate(live):
        k = len(result.alignment.boundaries)
        for side in (run.teacher, run.student):
            np.testing.assert_array_equal(side.token("topk_ids")[i][:k], result.boundary[f"{side.role}_topk_ids"])
            np.testing.assert_allclose(side.token("topk_probs")[i][:k], result.boundary[f"{side.role}_topk_probs"],
                                       rtol=1e-6)
            assert (np.diff(side.token("topk_probs")[i][:k], axis=-1) <= 1e-7).all()  # most probable first
    with torch.no_grad():  # and the teacher's are its own top 10 at the pieces that end there, from a plain forward
        logits = teacher(torch.tensor([tok_t(THREE[0])["input_ids"]])).logits[0]
    top = torch.topk(logits, 10, dim=-1).indices[torch.from_numpy(live[0].alignment.teacher_piece)]
    np.testing.assert_array_equal(run.teacher.token("topk_ids")[0][: len(top)], top.numpy())
    hover = sample_detail(logit_data, 0).data[0].customdata[0][0]
    first = int(run.student.token("topk_ids")[0][0][0])
    assert "teacher next piece:" in hover and "student next piece:" in hover
    assert escape_label(display_token(logit_data.vocab("student")[first])) in hover.split("student next piece:")[1]
    assert logit_data.vocab("student") != logit_data.vocab("teacher")


def test_a_permuted_vocabulary_stores_divergence_zero_at_every_span(tmp_path):
    teacher_tokenizer = byte_level(400)
    teacher, student, perm = permuted_pair(teacher_tokenizer)
    run = kdviz.capture_text(teacher, student, THREE, tokenizer=as_hugging_face(teacher_tokenizer),
                             student_tokenizer=as_hugging_face(permuted(teacher_tokenizer, perm)),
                             path=tmp_path / "perm.kdviz", progress=False)
    mask = run.attention_mask[:].astype(bool)
    for stat in ("kl", "reverse_kl"):
        np.testing.assert_allclose(run.pair_token_stat(stat)[:][mask], 0.0, atol=1e-6)
    np.testing.assert_allclose(run.teacher.token("true_prob")[:][mask], run.student.token("true_prob")[:][mask],
                               rtol=1e-5, equal_nan=True)


def test_one_tokenizer_gives_capture_on_the_same_ids_plus_texts_and_offsets(cross_pair, tmp_path):
    teacher, _, tok_t, _ = cross_pair
    student = lm(len(tok_t), 3)
    run = kdviz.capture_text(teacher, student, THREE, tokenizer=tok_t, path=tmp_path / "one.kdviz", progress=False,
                             attentions=False, batch_size=2)
    assert run.tokenizations == 1 and TextData.from_run(run).texts == THREE
    offsets = run.text_alignment("teacher_offsets")[:]
    for i, text in enumerate(THREE):
        encoding = tok_t(text, return_offsets_mapping=True)
        n = len(encoding["input_ids"])
        np.testing.assert_array_equal(run.token_ids[i][:n], encoding["input_ids"])
        np.testing.assert_array_equal(offsets[i][:n], encoding["offset_mapping"])
        assert (offsets[i][n:] == -1).all()
        direct = kdviz.capture(teacher, student, {"input_ids": torch.tensor([encoding["input_ids"]])},
                               attentions=False, path=tmp_path / f"direct{i}.kdviz", progress=False)
        np.testing.assert_allclose(run.pair_token_stat("kl")[i][: n - 1], direct.pair_token_stat("kl")[0][: n - 1], rtol=1e-4, atol=1e-6)
    with pytest.raises(MissingDataError, match="two tokenizers"):
        TextData.from_run(run).comparison(0)


def test_bad_inputs_are_refused_with_the_fix(cross_pair, tmp_path):
    teacher, student, tok_t, tok_s = cross_pair
    with pytest.raises(InputError, match="non-empty list of non-empty strings"):
        kdviz.capture_text(teacher, student, "one text", tokenizer=tok_t)
    with pytest.raises(InputError, match=r"\['attentions'\] do not apply"):
        kdviz.capture_text(teacher, student, THREE, tokenizer=tok_t, student_tokenizer=tok_s, attentions=True)
    run = kdviz.capture(teacher, teacher.__class__(teacher.config), {"input_ids": torch.tensor([[1, 2, 3]])},
                        attentions=False, path=tmp_path / "ids.kdviz", progress=False)
    with pytest.raises(MissingDataError, match="capture_text"):
        TextData.from_run(run)


def test_the_tokens_page_shows_the_stored_alignment_of_the_open_text(cross_pair, tmp_path):
    from kdviz.widgets import TokenExplorer

    teacher, student, tok_t, tok_s = cross_pair
    run = kdviz.capture_text(teacher, student, THREE, tokenizer=tok_t, student_tokenizer=tok_s,
                             path=tmp_path / "page.kdviz", progress=False)
    explorer = TokenExplorer(run, sample=1)
    assert explorer.two_tokenizers and set(explorer.figures()) == {"strip", "alignment", "token_map"}
    comparison = TextData.from_run(run).comparison(1)
    k = len(comparison.alignment.boundaries)
    assert f"{k} shared boundaries" in explorer.figures()["alignment"].layout.title.text
    assert f"per span at T=1 ({k:,} spans" in explorer.figures()["strip"].layout.title.text  # its tokens are spans
    strip = np.asarray(explorer.figures()["strip"].data[0].z, dtype=float).reshape(-1)
    np.testing.assert_allclose(strip[:k], comparison.boundary["kl"], rtol=1e-6)  # the text's real spans only
    assert np.isnan(strip[k:]).all()
    assert any(THREE[0][:20].replace("\n", " ").strip()[:10] in label for label in explorer.samples.options)
    explorer.selection.sample = 2
    assert f"{len(TextData.from_run(run).comparison(2).alignment.boundaries)} shared boundaries" in \
        explorer.figures()["alignment"].layout.title.text
