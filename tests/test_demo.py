"""The shipped demo: committed weights, the five runs, retraining, and the `kdviz` command."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdviz.cli import main
from kdviz.demo import data as demo_data
from kdviz.demo.train import PAIRS, retrain, train_image_pair
from kdviz.demo.weights import assets_dir, load_pair


def test_demo_builds_five_runs_with_real_accuracies(demo_runs):
    assert sorted(demo_runs) == ["charlm", "cross-tokenizer", "digits-cnn", "digits-vit", "on-policy"]
    cnn, vit, lm = demo_runs["digits-cnn"], demo_runs["digits-vit"], demo_runs["charlm"]
    assert cnn.n_samples == vit.n_samples == demo_data.N_TEST_DIGITS
    # the committed weights are trained models, not random ones (random would be ~10%)
    assert cnn.teacher.description["accuracy"] > 0.97 and cnn.student.description["accuracy"] > 0.93
    assert vit.teacher.description["accuracy"] > 0.95 and vit.student.description["accuracy"] > 0.9
    assert lm.task == "tokens"
    assert lm.teacher.description["perplexity"] < lm.student.description["perplexity"] < 8
    assert cnn.class_names == [str(d) for d in range(10)]


def test_demo_accuracy_in_meta_is_what_the_models_score(demo_runs):
    teacher, _, _ = load_pair("cnn")
    digits = demo_data.load_digits()
    with torch.no_grad():
        accuracy = float((teacher(digits.x_test).argmax(1) == digits.y_test).float().mean())
    assert demo_runs["digits-cnn"].teacher.description["accuracy"] == pytest.approx(accuracy)


def test_demo_shapes(demo_runs):
    vit = demo_runs["digits-vit"]
    assert vit.teacher.heads == [4, 4, 4, 4] and vit.student.heads == [2, 2]
    assert vit.teacher.attention(0).shape == (500, 4, 17, 17)  # 2×2 patches of 8×8 digits + CLS
    assert vit.array("inputs/thumbnails").shape == (500, 8, 8)
    cnn = demo_runs["digits-cnn"]
    assert cnn.teacher.spatial("layer3").shape == (500, 4, 4)
    assert cnn.student.features("layer1").shape == (500, 8, 8, 8)
    lm = demo_runs["charlm"]
    assert lm.teacher.attention(3).shape == (64, 4, 64, 64)
    assert lm.teacher.logits.shape[0] == 8
    assert len(lm.tokens) == 64 and len(lm.tokens[0]) == 64


def test_committed_weights_are_small_safetensors():
    assets = assets_dir()
    files = sorted(assets.glob("*.safetensors"))
    assert len(files) == 9  # four pairs, and the CNN student's checkpoints
    assert (assets / "cnn_student.history.safetensors").stat().st_size < 300_000
    assert (assets / "charlm_teacher.safetensors").stat().st_size < 600_000  # clearly under 1 MB
    cross = [*assets.glob("crosslm_*.safetensors"), *assets.glob("crosslm_*.tokenizer.json")]
    assert len(cross) == 4 and sum(f.stat().st_size for f in cross) < 2_000_000  # the pair and its tokenizers
    assert not list(assets.glob("*.pt")) and not list(assets.glob("*.pkl"))


def test_training_is_reproducible_from_the_seed():
    first = train_image_pair("cnn", PAIRS["cnn"], fast=True, progress=False)
    second = train_image_pair("cnn", PAIRS["cnn"], fast=True, progress=False)
    for a, b in zip(first[:2], second[:2], strict=True):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert torch.equal(x, y), name
    (snapshots, weights, _), (again, weights_again, _) = first[2], second[2]
    assert snapshots == again and [s["epoch"] for s in snapshots] == [0, 1]  # fast: one epoch, kept at its end too
    assert all(torch.equal(weights[key], weights_again[key]) for key in weights)


def test_retrain_writes_loadable_weights(tmp_path):
    manifest = retrain(tmp_path, fast=True, progress=False)
    assert set(manifest["pairs"]) == {"cnn", "vit", "charlm", "crosslm"}
    teacher, _, _ = load_pair("vit", tmp_path)
    out = teacher(torch.rand(2, 1, 8, 8))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_info_command_prints_a_readable_summary(explained_demo_runs, capsys):
    run = explained_demo_runs["digits-cnn"]
    assert main(["info", str(run.path)]) == 0
    text = capsys.readouterr().out
    assert "digits-cnn" in text and "classification, 500 samples, 10 classes" in text
    assert f"accuracy {100 * run.teacher.description['accuracy']:.1f}%" in text
    assert "S0→T0" in text
    assert "attrib.  explaining teacher_pred: grad_cam (500), integrated_gradients (500), saliency (500)" in text


def test_demo_runs_carry_attributions_of_both_models(explained_demo_runs):
    """`kdviz demo` explains every demo run, so the served dashboard never computes a gradient."""
    from kdviz.demo.build import DEMO_ATTRIBUTIONS

    for name, run in explained_demo_runs.items():
        expected = {"teacher_pred": sorted(DEMO_ATTRIBUTIONS[name]["methods"])} if name in DEMO_ATTRIBUTIONS else {}
        assert run.attribution_targets() == expected  # the cross-tokenizer run's tokens are spans: nothing to explain
    lm = explained_demo_runs["charlm"].attribution("attention_x_gradient")
    assert lm.maps("teacher").shape == (explained_demo_runs["charlm"].n_samples, demo_data.SEQ_LEN)
    assert explained_demo_runs["digits-cnn"].attribution("grad_cam").attrs["layers"] == {"teacher": "layer3", "student": "layer3"}


def test_info_command_reports_errors_without_a_trace(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.kdviz")]) == 2
    assert "kdviz: error: no run at" in capsys.readouterr().err


def test_thumbnails_are_display_images(demo_runs):
    thumbs = demo_runs["digits-cnn"].array("inputs/thumbnails")[:10]
    assert thumbs.dtype == np.uint8 and thumbs.max() == 255 and thumbs.min() == 0


def test_the_cross_tokenizer_demo_pair_reads_its_own_tokenizers_and_was_distilled(demo_runs):
    """Two GPT-2 models with different trained tokenizers: the stored run compares them span by span, and the
    trained student is closer to its teacher than a fresh one of the same size (the distillation did something)."""
    from kdviz.cross_tokenizer import compare_texts
    from kdviz.demo.build import demo_pair
    from kdviz.demo.models import build
    from kdviz.demo.weights import load_tokenizers

    run = demo_runs["cross-tokenizer"]
    assert run.task == "tokens" and run.tokenizations == 2 and run.n_samples == 64
    tokenizers = load_tokenizers("crosslm")
    assert len(tokenizers["teacher"]) == 1024 and len(tokenizers["student"]) == 768
    assert tokenizers["teacher"].convert_ids_to_tokens(tokenizers["teacher"](" the")["input_ids"])[0].startswith("Ġ")
    assert tokenizers["student"].convert_ids_to_tokens(tokenizers["student"](" the")["input_ids"])[0].startswith("▁")
    teacher, student, texts = demo_pair("cross-tokenizer")
    mask = run.attention_mask[:].astype(bool)
    stored = run.pair_token_stat("kl")[:][mask]
    assert np.isfinite(stored).all() and (stored >= 0).all()
    entry = load_pair("crosslm")[2]
    torch.manual_seed(0)
    fresh = build("char_lm", entry["student"]["kwargs"]).eval()
    kl = {name: np.mean([c.boundary["kl"].mean() for c in compare_texts(
        teacher, model, texts[:8], tokenizer=tokenizers["teacher"], student_tokenizer=tokenizers["student"],
        progress=False)]) for name, model in (("trained", student), ("fresh", fresh))}
    assert kl["trained"] < 0.5 * kl["fresh"]


def test_the_on_policy_run_holds_both_models_continuations_of_held_out_prompts(demo_runs):
    from kdviz.demo.build import NEW_TOKENS, demo_prompts
    from kdviz.readers.generation import GenerationData

    run = demo_runs["on-policy"]
    data = GenerationData.from_run(run)
    prompts = demo_prompts()
    assert run.generated and run.n_samples == 2 * len(prompts) and data.settings["do_sample"] is False
    assert run.tokenizations == 2 and data.unit == "span"  # each model writes in its own tokenizer
    generations = data.generations()
    assert [g.prompt for g in generations] == prompts
    continuations = [c for g in generations for c in (g.on_policy, g.off_policy)]
    assert all(1 <= len(c.ids) <= NEW_TOKENS and len(c.pieces) > 0 for c in continuations)
    # the trained LMs write text: words of the held-out prose, not one repeated piece nor byte markers
    assert sum(len(set(c.text.split())) > 3 for c in continuations) > 0.75 * len(continuations)
    assert not any("▁" in c.text or "<0x" in c.text for c in continuations)
    assert sum(g.fork is not None for g in generations) > len(generations) // 2  # a smaller student parts from it


def test_the_digits_cnn_run_holds_the_distillation_that_made_the_committed_student(demo_runs):
    """The demo opens on a run with training history: every checkpoint `kdviz.distill` kept while distilling the
    committed student, replayed on the held-out digits. The last snapshot is the committed student itself, the first
    an untrained one, and the recorded losses are the retraining's."""
    from kdviz.demo.weights import read_manifest

    run = demo_runs["digits-cnn"]
    entry = read_manifest()["pairs"]["cnn"]["history"]
    assert run.steps == [s["step"] for s in entry["snapshots"]] and len(run.steps) == 11
    training = run.meta["extra"]["training"]
    assert training["epochs"] == 30 and training["losses"][0]["class"] == "KD" and training["steps"] == run.steps
    _, student, _ = load_pair("cnn")
    digits = demo_data.load_digits()
    with torch.no_grad():
        committed = student(digits.x_test).numpy()
    np.testing.assert_allclose(run.student.logits[:], committed, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run.at_step(run.steps[-1]).student.logits[:], committed, rtol=1e-5, atol=1e-5)
    accuracy = [run.step_info(step)["student_accuracy"] for step in run.steps]
    assert accuracy[0] < 0.3 < 0.95 < accuracy[-1]  # chance at step 0, trained at the end
    assert run.step_info(run.steps[-1])["losses"] == pytest.approx(entry["snapshots"][-1]["losses"])


def test_the_demo_is_served_opening_on_digits_cnn(demo_runs):
    from kdviz.app.dashboard import Dashboard
    from kdviz.demo.build import DEMO_RUNS
    from kdviz.explore import RunLibrary

    assert DEMO_RUNS[0] == "digits-cnn"  # `kdviz demo` serves the runs in this order
    board = Dashboard(RunLibrary([demo_runs[name] for name in DEMO_RUNS]))
    assert board.selection.run == "digits-cnn" and board.step_menu.visible
    assert board.step_menu.options == {f"step {s}": s for s in demo_runs["digits-cnn"].steps}


def test_the_demo_runs_hold_the_cka_their_features_page_opens_with(demo_runs, monkeypatch):
    """A served dashboard never writes, so CKA it had to compute cost the first visitor of the Features page; the
    capture stores it (`kdviz.distill` at the last recorded step, for digits-cnn), and it equals a fresh computation."""
    from kdviz import run_cka
    from kdviz.explore.library import RunLibrary
    from kdviz.readers import features as readers

    fresh = {}
    for name in ("digits-cnn", "digits-vit", "charlm"):
        run = demo_runs[name]
        fresh[name] = readers.cka_matrix(run.at_step() if run.steps else run, cache=False)["cross"]

    def refuse(*args, **kwargs):
        raise AssertionError("CKA was computed, not read from the run")

    monkeypatch.setattr(run_cka, "MinibatchCKA", refuse)
    library = RunLibrary([demo_runs[name] for name in fresh])  # as `kdviz serve` opens them: read-only
    for name, cross in fresh.items():
        step = demo_runs[name].steps[-1] if demo_runs[name].steps else None
        np.testing.assert_allclose(library.cka(name, step)["cross"], cross, rtol=1e-6)
