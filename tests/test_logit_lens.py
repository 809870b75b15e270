"""The logit lens of both models (issue 19) against a float64 reference built from Hugging Face's own hidden states,
the commit depth against a direct loop, the edge cases, and the view."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import gpt2_pair
from hypothesis import given, settings
from hypothesis import strategies as st
from test_generation import word_tokenizer

from kdviz.errors import InputError
from kdviz.lens import logit_lens
from kdviz.metrics.logit_lens import commit_layers

TEXTS = ["w1 w2 w3 w4 w5 w6", "w7 w7 w8 w9 w10 w11 w12 w2 w3"]


def llama_pair(vocab: int = 50, padded: int = 56):
    """Llama-architecture teacher 3 blocks with grouped-query attention (4 heads, 2 key-value heads) and a student
    of 2 blocks whose output layer is padded past the tokenizer's vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    common = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 64}
    teacher = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, num_hidden_layers=3, **common))
    student = LlamaForCausalLM(LlamaConfig(vocab_size=padded, num_hidden_layers=2, tie_word_embeddings=True, **common))
    return teacher, student


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _reference(model, norm, ids: list[int], vocab: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Per layer the lens's log-probabilities [T, vocab] in float64 from the model's own ``output_hidden_states``
    (which holds the embeddings and each block's output, the last one after the final norm), and its final
    log-probabilities."""
    model.eval()  # built from a config, a model is in training mode, and GPT-2's dropout would perturb it
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
        head = model.get_output_embeddings()
        rows = [head(norm(h))[0] for h in out.hidden_states[:-1]] + [out.logits[0]]
    lens = [_log_softmax(r.double().numpy()[:, :vocab]) for r in rows]
    return lens, lens[-1]


def _kl(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    return (np.exp(log_p) * (log_p - log_q)).sum(-1)


@pytest.mark.parametrize("pair", ["gpt2", "llama"])
def test_the_lens_equals_a_float64_reference_from_the_models_own_hidden_states(pair):
    teacher, student = gpt2_pair() if pair == "gpt2" else llama_pair()
    teacher, student = teacher.double(), student.double()
    norm = {"gpt2": lambda m: m.transformer.ln_f, "llama": lambda m: m.model.norm}[pair]
    tokenizer = word_tokenizer()
    lens = logit_lens(teacher, student, TEXTS, tokenizer=tokenizer, progress=False)
    columns = {"teacher": [], "student": []}
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        ref = {role: _reference(model, norm(model), ids, 50) for role, model in (("teacher", teacher), ("student", student))}
        teacher_final = ref["teacher"][1]
        for role, (layers, final) in ref.items():
            columns[role].append((np.stack([_kl(final, layer) for layer in layers]),
                                  np.stack([_kl(teacher_final, layer) for layer in layers]),
                                  np.stack([layer.argmax(-1) for layer in layers])))
    for role, model_lens in (("teacher", lens.teacher), ("student", lens.student)):
        own, to_teacher, top1 = (np.concatenate(parts, axis=1) for parts in zip(*columns[role], strict=True))
        assert model_lens.layers == {"teacher": teacher, "student": student}[role].config.num_hidden_layers
        np.testing.assert_allclose(model_lens.kl_to_own_final, own, atol=1e-10)
        np.testing.assert_allclose(model_lens.kl_to_teacher_final, to_teacher, atol=1e-10)
        np.testing.assert_array_equal(model_lens.top1, top1)
        np.testing.assert_allclose(model_lens.kl_to_own_final[-1], 0.0, atol=1e-10)  # the last block is the output
        assert (model_lens.kl_to_own_final >= -1e-12).all()
    np.testing.assert_allclose(lens.teacher.kl_to_teacher_final, lens.teacher.kl_to_own_final)
    np.testing.assert_array_equal(lens.text_of_token, np.repeat([0, 1], [6, 9]))
    assert lens.pieces[1][:3] == ["w7", "w7", "w8"]


def test_a_student_that_is_the_teacher_has_the_teachers_lens():
    teacher, _ = gpt2_pair()
    lens = logit_lens(teacher, teacher, TEXTS, tokenizer=word_tokenizer(), progress=False)
    np.testing.assert_allclose(lens.student.kl_to_teacher_final, lens.student.kl_to_own_final, atol=1e-6)
    np.testing.assert_array_equal(lens.student.commit_layer, lens.teacher.commit_layer)
    np.testing.assert_allclose(lens.student.depth, np.linspace(0, 1, 5))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 2), min_size=3, max_size=3), min_size=1, max_size=7))
def test_commit_depth_is_the_first_layer_from_which_the_top1_stays_final(rows):
    top1 = np.array(rows)  # [L + 1, M = 3]
    expected = []
    for token in range(top1.shape[1]):
        layer = top1.shape[0] - 1
        while layer > 0 and top1[layer - 1, token] == top1[-1, token]:
            layer -= 1
        expected.append(layer)
    np.testing.assert_array_equal(commit_layers(top1), expected)


def test_bad_inputs_are_refused_with_the_fix():
    teacher, student = gpt2_pair()
    tokenizer = word_tokenizer()
    with pytest.raises(InputError, match="list of non-empty strings"):
        logit_lens(teacher, student, "w1 w2", tokenizer=tokenizer)
    with pytest.raises(InputError, match="causal LMs"):
        logit_lens(torch.nn.Linear(4, 4), student, TEXTS, tokenizer=tokenizer, progress=False)
    with pytest.raises(InputError, match="vocab_size="):
        logit_lens(teacher, student, TEXTS, tokenizer=tokenizer, vocab_size=80, progress=False)
    with pytest.raises(InputError, match="holds id 70 at position 1; tokenize the text with the teacher"):
        logit_lens(teacher, student, ["w1 w70"], tokenizer=word_tokenizer(vocab=90), vocab_size=50, progress=False)


def test_the_view_draws_both_models_in_three_panels_with_the_measured_medians():
    from kdviz.views.lens import PANELS, logit_lens_view

    teacher, student = llama_pair()
    lens = logit_lens(teacher, student, TEXTS, tokenizer=word_tokenizer(), progress=False)
    fig = logit_lens_view(lens)
    assert [a.text for a in fig.layout.annotations][:3] == list(PANELS)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert {t.name for t in lines} == {"teacher", "student"} and len(lines) == 6
    own_student = next(t for t in lines if t.name == "student" and t.xaxis == "x")
    np.testing.assert_allclose(own_student.y, np.median(lens.student.kl_to_own_final, axis=1))
    np.testing.assert_allclose(own_student.x, [0, 0.5, 1])
    settled = [t for t in lines if t.xaxis == "x3"]
    assert settled[-1].y[-1] == 1.0  # every token is settled at its model's last block
    assert f"student {np.median(lens.student.commit_depth):.2f}" in fig.layout.title.text


def test_texts_longer_than_a_learned_position_table_are_refused_with_the_fix():
    from kdviz.generation import compare_generations

    teacher, student = gpt2_pair()  # 32 positions
    long_text = " ".join(f"w{i % 40 + 1}" for i in range(40))
    with pytest.raises(InputError, match="reads at most 32 positions, but the inputs hold 40 tokens; cut them to 32"):
        logit_lens(teacher, student, [long_text], tokenizer=word_tokenizer(), progress=False)
    assert len(logit_lens(teacher, student, [long_text], tokenizer=word_tokenizer(), max_length=32,
                          progress=False).text_of_token) == 32
    with pytest.raises(InputError, match=r"max_new_tokens ≤ 29"):
        compare_generations(teacher, student, ["w1 w2 w3"], tokenizer=word_tokenizer(), max_new_tokens=30, progress=False)
