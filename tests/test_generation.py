"""compare_generations on GPT-2s from configs: a model against itself forks nowhere and diverges by 0; stored
log-probabilities equal a plain forward pass recomputed in float64; forks, repetition and length ratio against
direct computations written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import gpt2_pair
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from kdviz.errors import InputError
from kdviz.generation import STATS, compare_generations
from kdviz.metrics.generation import fork_position, mean_by_position, repeated_ngram_rate

PROMPTS = ["w1 w2 w3", "w7 w7 w8 w9 w10"]


def word_tokenizer(vocab: int = 50) -> PreTrainedTokenizerFast:
    words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=words)


def test_a_model_against_itself_continues_identically_and_diverges_by_zero():
    teacher, _ = gpt2_pair()
    results = compare_generations(teacher, teacher, PROMPTS, tokenizer=word_tokenizer(), max_new_tokens=10,
                                  progress=False)
    for result in results:
        assert result.fork is None and result.length_ratio == 1.0
        np.testing.assert_array_equal(result.on_policy.ids, result.off_policy.ids)
        for continuation in (result.on_policy, result.off_policy):
            assert len(continuation.ids) == 10
            np.testing.assert_allclose(continuation.stats["kl"], 0.0, atol=1e-6)
            np.testing.assert_allclose(continuation.stats["reverse_kl"], 0.0, atol=1e-6)


def test_stored_logprobs_equal_a_plain_forward_pass_and_the_fork_is_where_the_paths_part():
    teacher, student = gpt2_pair()
    tokenizer = word_tokenizer()
    results = compare_generations(teacher, student, PROMPTS, tokenizer=tokenizer, max_new_tokens=12, progress=False)
    teacher.eval(), student.eval()
    for result in results:
        for continuation in (result.on_policy, result.off_policy):
            sequence = torch.tensor(np.concatenate([result.prompt_ids, continuation.ids]))[None]
            p = len(result.prompt_ids)
            for role, model in (("teacher", teacher), ("student", student)):
                with torch.no_grad():
                    logp = torch.log_softmax(model(sequence).logits[0].double(), -1)
                expected = logp[p - 1:-1].gather(-1, torch.tensor(continuation.ids)[:, None])[:, 0].numpy()
                np.testing.assert_allclose(continuation.stats[f"{role}_true_logprob"], expected, atol=1e-5)
            assert set(continuation.stats) == set(STATS)
            assert continuation.text == tokenizer.decode(continuation.ids)
        # greedy: the writer's own log-probability is its top choice at every step
        with torch.no_grad():
            logits = student(torch.tensor(np.concatenate([result.prompt_ids, result.on_policy.ids]))[None]).logits[0]
        p = len(result.prompt_ids)
        np.testing.assert_array_equal(logits[p - 1:-1].argmax(-1).numpy(), result.on_policy.ids)
        a, b = result.on_policy.ids, result.off_policy.ids
        differ = np.flatnonzero(a != b)
        assert result.fork == (int(differ[0]) if len(differ) else None)
    assert any(r.fork is not None for r in results)  # random models of different sizes do part


def test_sampling_is_reproducible_by_seed_and_n_draws_each():
    teacher, student = gpt2_pair()
    tokenizer = word_tokenizer()
    first = compare_generations(teacher, student, PROMPTS[:1], tokenizer=tokenizer, max_new_tokens=8, do_sample=True,
                                temperature=1.5, seed=3, n=3, progress=False)
    again = compare_generations(teacher, student, PROMPTS[:1], tokenizer=tokenizer, max_new_tokens=8, do_sample=True,
                                temperature=1.5, seed=3, n=3, progress=False)
    assert len(first) == 3
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x.on_policy.ids, y.on_policy.ids)
    assert len({tuple(r.on_policy.ids) for r in first}) > 1  # three seeds, not one sample thrice


def test_drift_signals_against_direct_counts():
    assert fork_position([1, 2, 3], [1, 2, 3]) is None
    assert fork_position([1, 2, 3], [1, 5, 3]) == 1
    assert fork_position([1, 2], [1, 2, 3]) == 2
    assert repeated_ngram_rate([1, 2, 1, 2, 1, 2], n=2) == pytest.approx(3 / 5)  # (1,2) (2,1) new, then 3 repeats
    assert repeated_ngram_rate([1, 2, 3, 4, 5], n=2) == 0.0
    assert np.isnan(repeated_ngram_rate([1, 2], n=4))
    mean, count = mean_by_position([np.array([1.0, 2.0, 3.0]), np.array([3.0, np.nan])])
    np.testing.assert_allclose(mean, [2.0, 2.0, 3.0])
    np.testing.assert_array_equal(count, [2, 1, 1])


def test_bad_inputs_are_refused_with_the_fix():
    teacher, student = gpt2_pair()
    with pytest.raises(InputError, match="list of non-empty strings"):
        compare_generations(teacher, student, "w1", tokenizer=word_tokenizer(), progress=False)
    with pytest.raises(InputError, match="no generate"):
        compare_generations(torch.nn.Linear(2, 2), student, PROMPTS, tokenizer=word_tokenizer(), progress=False)
    with pytest.raises(InputError, match="temperature > 0"):
        compare_generations(teacher, student, PROMPTS, tokenizer=word_tokenizer(), do_sample=True, temperature=0,
                            progress=False)
    with pytest.raises(InputError, match=r"reads token ids 0…49"):
        compare_generations(teacher, student, ["w1 w60"], tokenizer=word_tokenizer(100), progress=False)


def test_the_views_draw_the_means_and_mark_the_fork():
    from kdviz.views.generation import drift_by_position, fork_view

    teacher, student = gpt2_pair()
    results = compare_generations(teacher, student, PROMPTS, tokenizer=word_tokenizer(), max_new_tokens=12, progress=False)
    fig = drift_by_position(results)
    on, off = fig.data
    np.testing.assert_allclose(on.y, mean_by_position([r.on_policy.stats["kl"] for r in results])[0])
    np.testing.assert_allclose(off.y, mean_by_position([r.off_policy.stats["kl"] for r in results])[0])
    assert on.line.color != off.line.color and "on-policy" in on.name and "off-policy" in off.name
    forked = next(r for r in results if r.fork is not None)
    view = fork_view(forked, context=2)
    start = max(0, forked.fork - 2)
    assert [s.x0 for s in view.layout.shapes] == [forked.fork - start - 0.5]
    np.testing.assert_allclose(np.asarray(view.data[0].z, dtype=float)[0, :3],
                               forked.on_policy.stats["kl"][start:start + 3])


def test_on_policy_example_runs_on_the_trained_demo_pair(capsys):
    import runpy
    from pathlib import Path

    module = runpy.run_path(str(Path(__file__).resolve().parent.parent / "examples" / "on_policy.py"))
    generations = module["main"](3, 12)
    assert len(generations) == 3 and all(len(g.on_policy.ids) == 12 for g in generations)
    assert "mean KL(p_t‖p_s) on the student's own continuations" in capsys.readouterr().out


def test_the_character_tokenizer_round_trips_the_demo_text():
    from kdviz.demo import data as demo_data
    from kdviz.demo.tokenizers import character_tokenizer

    vocab = sorted(set(demo_data.corpus_text()))
    tokenizer = character_tokenizer(vocab)
    text = demo_data.corpus_text()[:300]
    ids = tokenizer(text)["input_ids"]
    assert ids == [vocab.index(c) for c in text] and tokenizer.decode(ids) == text
