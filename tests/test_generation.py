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
from kdviz.generation import compare_generations
from kdviz.metrics.generation import STATS, fork_position, mean_by_position, repeated_ngram_rate

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
            # the sample's text is what prompt + continuation decode to, cut where the continuation starts
            assert result.prompt == tokenizer.decode(result.prompt_ids.tolist())
            assert result.prompt + continuation.text == tokenizer.decode(sequence[0].tolist())
            assert continuation.text.strip() == tokenizer.decode(continuation.ids.tolist())
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


def test_generate_stores_both_writers_continuations_in_a_run_the_reader_gives_back(tmp_path):
    import kdviz
    from kdviz.readers.generation import GenerationData

    teacher, student = gpt2_pair()
    tokenizer = word_tokenizer()
    run = kdviz.generate(teacher, student, PROMPTS, tokenizer=tokenizer, max_new_tokens=6, do_sample=True,
                         temperature=1.3, seed=5, n=2, path=tmp_path / "gen.kdviz", progress=False, attentions=False)
    assert run.generated and run.task == "tokens" and run.n_samples == 2 * 2 * 2 and run.verify(progress=False) == []
    assert "generate 2 prompts × 2 draws" in str(run.info()) and "sampled (T=1.3" in str(run.info())
    data = GenerationData.from_run(run)
    assert data.unit == "token" and data.settings["temperature"] == 1.3 and data.settings["n"] == 2
    pairs = data.generations()
    assert [(g.prompt, g.draw) for g in pairs] == [(p, d) for p in PROMPTS for d in range(2)]
    ids, texts, mask = run.token_ids[:], run.texts(), run.attention_mask[:].astype(bool)
    for index, g in enumerate(pairs):
        for j, continuation in enumerate((g.on_policy, g.off_policy)):
            sample = 2 * index + j
            # the sample is the prompt and this writer's continuation, token for token and character for character
            full = np.concatenate([g.prompt_ids, continuation.ids])
            np.testing.assert_array_equal(ids[sample][mask[sample]], full)
            assert texts[sample] == tokenizer.decode(full.tolist()) == g.prompt + continuation.text
            assert continuation.pieces == [f"w{i}" for i in continuation.ids]
            # the stored statistics of the new tokens are the run's per-token rows P − 1 … P + G − 2
            p = len(g.prompt_ids)
            np.testing.assert_allclose(continuation.stats["kl"], run.pair_token_stat("kl")[sample][p - 1:len(full) - 1])
            assert continuation.writer == ("student", "teacher")[j]
        assert g.fork == fork_position(g.on_policy.ids.tolist(), g.off_policy.ids.tolist())
    # the same seed gives the same continuations as the live comparison
    live = compare_generations(teacher, student, PROMPTS, tokenizer=tokenizer, max_new_tokens=6, do_sample=True,
                               temperature=1.3, seed=5, n=2, progress=False, attentions=False)
    for stored, fresh in zip(pairs, live, strict=True):
        np.testing.assert_array_equal(stored.on_policy.ids, fresh.on_policy.ids)
        np.testing.assert_allclose(stored.off_policy.stats["reverse_kl"], fresh.off_policy.stats["reverse_kl"])


@pytest.fixture(scope="module")
def two_tokenizers():
    from test_cross_tokenizer import byte_level, lm, sentencepiece_like

    from kdviz.demo.tokenizers import as_hugging_face

    tok_t, tok_s = byte_level(400), sentencepiece_like(600)
    return lm(tok_t.get_vocab_size(), 0), lm(tok_s.get_vocab_size(), 1), as_hugging_face(tok_t), as_hugging_face(tok_s)


CROSS_PROMPTS = ["The teacher said that", "A small model can"]


def test_two_tokenizers_score_each_continuation_on_the_spans_compare_texts_finds(two_tokenizers, tmp_path):
    import kdviz
    from kdviz.cross_tokenizer import compare_texts
    from kdviz.readers.generation import GenerationData

    teacher, student, tok_t, tok_s = two_tokenizers
    run = kdviz.generate(teacher, student, CROSS_PROMPTS, tokenizer=tok_t, student_tokenizer=tok_s, max_new_tokens=10,
                         path=tmp_path / "cross.kdviz", progress=False)
    data = GenerationData.from_run(run)
    assert run.tokenizations == 2 and data.unit == "span" and run.verify(progress=False) == []
    texts = run.texts()
    live = compare_texts(teacher, student, texts, tokenizer=tok_t, student_tokenizer=tok_s, progress=False)
    scored = 0
    for index, g in enumerate(data.generations()):
        assert g.prompt == CROSS_PROMPTS[index]
        ends: dict[int, np.ndarray] = {}
        for j, (continuation, tokenizer) in enumerate(((g.on_policy, tok_s), (g.off_policy, tok_t))):
            sample = 2 * index + j
            assert texts[sample] == g.prompt + continuation.text
            # each writer generated in its own tokenizer; its ids decode to its continuation (control tokens aside)
            control = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
            assert tokenizer.decode([i for i in continuation.ids.tolist() if i not in control]) == continuation.text
            boundaries = live[sample].alignment.boundaries
            new = np.flatnonzero(boundaries > len(g.prompt))  # the spans that end after the prompt
            ends[j] = boundaries[new]
            if len(new) == 0:  # a continuation of no characters (a random model's byte piece): nothing to score
                assert continuation.text == "" and continuation.stats["kl"].size == 0 and continuation.pieces == []
                continue
            scored += 1
            rows = np.arange(new[0] - 1, new[-1])  # each new span is predicted at the boundary before it
            np.testing.assert_allclose(continuation.stats["kl"], live[sample].boundary["kl"][rows], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(continuation.stats["student_true_logprob"], live[sample].spans["student"][new],
                                       rtol=1e-9)
            starts = np.r_[0, boundaries[:-1]]
            assert continuation.pieces == [texts[sample][a:b] for a, b in zip(starts[new], boundaries[new], strict=True)]
        character = fork_position(g.on_policy.text, g.off_policy.text)
        if character is None:
            assert g.fork is None
        elif len(ends[0]):  # the fork is the student's new span that holds the first character that differs
            assert g.fork == min(int(np.searchsorted(ends[0], len(g.prompt) + character, side="right")), len(ends[0]) - 1)
    assert scored >= 2


def test_a_student_that_is_the_teacher_with_its_vocabulary_permuted_continues_alike_and_diverges_by_zero(tmp_path):
    from test_cross_tokenizer import byte_level, permuted, permuted_pair

    import kdviz
    from kdviz.demo.tokenizers import as_hugging_face
    from kdviz.readers.generation import GenerationData

    tokenizer = byte_level(400)
    teacher, student, perm = permuted_pair(tokenizer)
    run = kdviz.generate(teacher, student, CROSS_PROMPTS, tokenizer=as_hugging_face(tokenizer),
                         student_tokenizer=as_hugging_face(permuted(tokenizer, perm)), max_new_tokens=12,
                         path=tmp_path / "perm.kdviz", progress=False)
    for g in GenerationData.from_run(run).generations():
        assert g.fork is None and g.on_policy.text == g.off_policy.text and g.length_ratio == 1.0
        np.testing.assert_array_equal(perm[g.on_policy.ids], g.off_policy.ids)  # the same pieces, renumbered
        for continuation in (g.on_policy, g.off_policy):
            assert len(continuation.pieces) > 0
            np.testing.assert_allclose(continuation.stats["kl"], 0.0, atol=1e-6)
            np.testing.assert_allclose(continuation.stats["teacher_true_logprob"],
                                       continuation.stats["student_true_logprob"], atol=1e-5)


def test_the_tokens_page_of_a_generation_run_shows_the_drift_and_the_open_pairs_fork(tmp_path):
    import kdviz
    from kdviz.readers.generation import GenerationData
    from kdviz.widgets import TokenExplorer

    teacher, student = gpt2_pair()
    run = kdviz.generate(teacher, student, PROMPTS, tokenizer=word_tokenizer(), max_new_tokens=8,
                         path=tmp_path / "page.kdviz", progress=False, attentions=False)
    explorer = TokenExplorer(run, sample=3)  # the teacher's continuation of the second prompt
    figures = explorer.figures()
    assert {"drift", "fork"} <= set(figures)
    pair = GenerationData.from_run(run).pair(1)
    assert pair.prompt[-20:] in figures["fork"].layout.title.text
    # the strip marks where the continuation starts: after the prompt's 5 tokens
    strip = figures["strip"]
    assert "tokens 0–4 are the prompt" in strip.layout.title.text and [s.x0 for s in strip.layout.shapes] == [4.5]
    assert "token 5 (continuation)" in strip.data[0].customdata[0][5] and "(prompt)" in strip.data[0].customdata[0][4]
    on = figures["drift"].data[0]
    np.testing.assert_allclose(on.y, mean_by_position([g.on_policy.stats["kl"] for g in
                                                       GenerationData.from_run(run).generations()])[0])
    explorer.selection.sample = 0
    assert PROMPTS[0] in explorer.figures()["fork"].layout.title.text


def test_a_generation_run_with_altered_settings_is_refused(tmp_path):
    import zarr

    import kdviz
    from kdviz.errors import CorruptRunError
    from kdviz.readers.generation import GenerationData

    teacher, student = gpt2_pair()
    run = kdviz.generate(teacher, student, PROMPTS[:1], tokenizer=word_tokenizer(), max_new_tokens=4,
                         path=tmp_path / "bad.kdviz", progress=False, attentions=False)
    group = zarr.open_group(store=str(run.path / "generation" / "continuations"), mode="a", zarr_format=3)
    group.attrs["settings"] = {**group.attrs["settings"], "temperature": "<script>alert(1)</script>"}
    with pytest.raises(CorruptRunError, match="temperature"):
        GenerationData.from_run(kdviz.Run.open(run.path))
    group.attrs["unit"] = "word"
    with pytest.raises(CorruptRunError, match="scored per 'word'"):
        GenerationData.from_run(kdviz.Run.open(run.path))


def test_token_offsets_cover_the_decoded_text_piece_by_piece():
    from test_cross_tokenizer import byte_level, sentencepiece_like

    from kdviz.demo.tokenizers import as_hugging_face
    from kdviz.generation import token_offsets

    text = "A naïve café — über 3 km, said the teacher."
    for tokenizer in (as_hugging_face(byte_level(400)), as_hugging_face(sentencepiece_like(600)), word_tokenizer()):
        ids = tokenizer(text if tokenizer.vocab_size > 60 else "w1 w2 w30 w4")["input_ids"]
        decoded = tokenizer.decode(ids)
        offsets = token_offsets(tokenizer, ids)
        assert offsets.shape == (len(ids), 2) and offsets[0, 0] == 0 and offsets[-1, 1] == len(decoded)
        np.testing.assert_array_equal(offsets[1:, 0], offsets[:-1, 1])  # contiguous, in order
        # every prefix of whole pieces is the decoded prefix of those ids, wherever a character ends
        for i in range(len(ids)):
            prefix = tokenizer.decode(ids[: i + 1])
            if "\ufffd" not in prefix:
                assert decoded[: offsets[i, 1]] == prefix


def test_generate_refuses_bad_settings_and_an_existing_run_before_it_generates(tmp_path):
    import kdviz
    from kdviz.errors import RunExistsError

    teacher, student = gpt2_pair()
    tokenizer = word_tokenizer()
    (tmp_path / "there.kdviz").mkdir()
    with pytest.raises(RunExistsError, match="overwrite=True"):
        kdviz.generate(teacher, student, PROMPTS, tokenizer=tokenizer, path=tmp_path / "there.kdviz", progress=False)
    with pytest.raises(InputError, match=r"\['attentions'\] do not apply"):
        kdviz.generate(teacher, student, PROMPTS, tokenizer=tokenizer, student_tokenizer=word_tokenizer(), attentions=True,
                       path=tmp_path / "x.kdviz", progress=False)
    with pytest.raises(InputError, match="non-empty list"):
        kdviz.generate(teacher, student, [], tokenizer=tokenizer, progress=False)
    with pytest.raises(InputError, match="max_new_tokens ≤"):  # GPT-2 from conftest reads 32 positions
        kdviz.generate(teacher, student, PROMPTS, tokenizer=tokenizer, max_new_tokens=40, progress=False)
    assert not (tmp_path / "x.kdviz").exists()
