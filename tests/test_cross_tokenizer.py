"""compare_texts on real GPT-2 models from configs and real `tokenizers` models trained here: a student that is the
teacher with its vocabulary permuted (and a tokenizer mapping the same strings to the permuted ids) diverges by 0 at
every shared boundary and span; two different tokenizers give a full, finite comparison."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from transformers import GPT2Config, GPT2LMHeadModel

from kdviz.cross_tokenizer import compare_texts, vocabulary_pieces
from kdviz.demo.data import corpus_text
from kdviz.demo.tokenizers import as_hugging_face, train_byte_level, train_sentencepiece_like
from kdviz.errors import InputError
from kdviz.metrics import token_alignment as ta

CORPUS = corpus_text(40_000)
TEXTS = [CORPUS[2_000:2_300], CORPUS[5_000:5_150] + " naïve — café"]


def byte_level(size: int):
    return train_byte_level(CORPUS, size)


def sentencepiece_like(size: int):
    return train_sentencepiece_like(CORPUS, size)


def lm(vocab: int, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=512, n_layer=2, n_head=2, n_embd=32,
                                      bos_token_id=0, eos_token_id=0)).eval()


def permuted(tokenizer: Tokenizer, perm: np.ndarray) -> Tokenizer:
    """The same tokenizer with piece ids renumbered: student id j is teacher id perm[j]."""
    spec = json.loads(tokenizer.to_str())
    inverse = np.argsort(perm)
    spec["model"]["vocab"] = {piece: int(inverse[i]) for piece, i in spec["model"]["vocab"].items()}
    return Tokenizer.from_str(json.dumps(spec))


def permuted_pair(tokenizer: Tokenizer) -> tuple[GPT2LMHeadModel, GPT2LMHeadModel, np.ndarray]:
    """(teacher, student, perm): the student is the teacher with its embedding (tied to its head) rows renumbered,
    student id j being teacher id perm[j], for `permuted(tokenizer, perm)`."""
    vocab = tokenizer.get_vocab_size()
    perm = np.random.default_rng(0).permutation(vocab)
    teacher, student = lm(vocab, 0), lm(vocab, 1)
    with torch.no_grad():
        student.load_state_dict(teacher.state_dict())
        student.transformer.wte.weight.copy_(teacher.transformer.wte.weight[torch.from_numpy(perm)])
    return teacher, student, perm


def test_a_permuted_vocabulary_gives_divergence_zero_at_every_boundary_and_span():
    teacher_tokenizer = byte_level(400)
    teacher, student, perm = permuted_pair(teacher_tokenizer)
    results = compare_texts(teacher, student, TEXTS, tokenizer=as_hugging_face(teacher_tokenizer),
                            student_tokenizer=as_hugging_face(permuted(teacher_tokenizer, perm)), progress=False)
    for result in results:
        assert result.pieces["teacher"] == result.pieces["student"]  # the same strings, other ids
        ends = ta.piece_ends(result.offsets["teacher"])
        np.testing.assert_array_equal(result.alignment.boundaries, np.unique(ends[ends >= 0]))  # every one shared
        np.testing.assert_array_equal(result.alignment.teacher_piece, result.alignment.student_piece)
        for name in ("kl", "reverse_kl", "teacher_outside_mass", "student_outside_mass"):
            np.testing.assert_allclose(result.boundary[name], 0.0, atol=1e-6)
        np.testing.assert_allclose(result.spans["difference"][1:], 0.0, atol=1e-4)
    # matched by id instead, the same pair would diverge: the zero above is the string match's doing
    by_id = compare_texts(teacher, student, TEXTS[:1], tokenizer=as_hugging_face(teacher_tokenizer), progress=False)[0]
    assert by_id.boundary["kl"].mean() > 0.01


def test_two_different_tokenizers_are_compared_over_the_whole_text():
    teacher_tokenizer, student_tokenizer = as_hugging_face(byte_level(300)), as_hugging_face(sentencepiece_like(700))
    teacher, student = lm(len(teacher_tokenizer), 0), lm(len(student_tokenizer) + 6, 1)  # a padded student head
    results = compare_texts(teacher, student, TEXTS, tokenizer=teacher_tokenizer, student_tokenizer=student_tokenizer,
                            progress=False)
    for text, result in zip(TEXTS, results, strict=True):
        assert result.alignment.boundaries[-1] == len(text)
        assert len(result.pieces["teacher"]) != len(result.pieces["student"])
        for k in range(1, len(result.alignment.boundaries)):  # each span is the same text in both tokenizations
            assert result.span_text(k) == text[result.alignment.boundaries[k - 1]:result.alignment.boundaries[k]]
        assert (result.boundary["kl"] >= 0).all() and np.isfinite(result.boundary["kl"]).all()
        outside = result.boundary["student_outside_mass"]
        assert ((outside > 0) & (outside < 1)).all()  # the student's pieces the teacher lacks, its padding rows not
        assert np.isfinite(result.spans["difference"][1:]).all()
    pieces = vocabulary_pieces(student_tokenizer, len(student_tokenizer) + 6)
    assert pieces[-6:] == [None] * 6 and pieces[0] is not None


def test_bad_inputs_are_refused():
    tokenizer = as_hugging_face(byte_level(300))
    teacher = lm(len(tokenizer), 0)
    with pytest.raises(InputError, match="list of strings"):
        compare_texts(teacher, teacher, "one text", tokenizer=tokenizer, progress=False)
    with pytest.raises(InputError, match="no tokens"):
        compare_texts(teacher, teacher, [""], tokenizer=tokenizer, progress=False)
    small = lm(100, 2)  # an embedding of 100 rows for a 300-piece tokenizer: named, not an IndexError
    with pytest.raises(InputError, match=r"the student .* reads token ids 0…99"):
        compare_texts(teacher, small, TEXTS[:1], tokenizer=tokenizer, progress=False)


def test_the_alignment_view_colours_each_span_in_both_lanes_and_joins_only_shared_boundaries():
    from kdviz.views.tokenizers import LANE_ROWS, alignment_view

    teacher_tokenizer, student_tokenizer = as_hugging_face(byte_level(300)), as_hugging_face(sentencepiece_like(700))
    result = compare_texts(lm(len(teacher_tokenizer), 0), lm(len(student_tokenizer), 1), TEXTS[1:],
                           tokenizer=teacher_tokenizer, student_tokenizer=student_tokenizer, progress=False)[0]
    fig = alignment_view(result, chars_per_line=40)
    z = np.asarray(fig.data[0].z, dtype=float)
    spans = np.searchsorted(result.alignment.boundaries, np.arange(len(result.text)), side="right")
    for position in range(len(result.text)):
        row, column = divmod(position, 40)
        for lane in (0, 1):  # both lanes of a character carry its span's difference (NaN for the first span)
            expected = result.spans["difference"][spans[position]] if spans[position] < len(result.spans["difference"]) else np.nan
            np.testing.assert_equal(z[row * LANE_ROWS + lane, column], expected)
    shared = set(result.alignment.boundaries.tolist())
    joined = [s for s in fig.layout.shapes if s.y1 - s.y0 > 1.5]  # lines across both lanes
    assert len(joined) == len(shared)
    single = [s for s in fig.layout.shapes if s.y1 - s.y0 <= 1.5]
    ends = {role: {int(e) for _, e in result.offsets[role] if e > 0} - shared for role in ("teacher", "student")}
    assert len(single) == len(ends["teacher"]) + len(ends["student"])
    assert "shared boundaries" in fig.layout.title.text
