"""`kdviz.attribute` on real models: the demo CNN and ViT pairs, Hugging Face BERT and GPT-2 pairs built from configs.
Shapes, finiteness, what is stored, that models are left exactly as they were, and the failure cases."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import TinyCNN, bert_pair, gpt2_pair, hook_count
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import kdviz
from kdviz.demo.models import Attention
from kdviz.demo.weights import load_pair
from kdviz.errors import CaptureError, InputError, KdvizError, MissingDataError, RunExistsError
from kdviz.metrics import attribution_agreement as ag

N = 40


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, digits):
    teacher, student, _ = load_pair("cnn")
    path = tmp_path_factory.mktemp("attr") / "cnn.kdviz"
    return kdviz.attribute(teacher, student, (digits.x_test, digits.y_test), path=path, samples=N, progress=False,
                           methods=["saliency", "integrated_gradients", "input_x_gradient", "grad_cam"],
                           class_names=digits.class_names)


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory, digits):
    teacher, student, _ = load_pair("vit")
    path = tmp_path_factory.mktemp("attr") / "vit.kdviz"
    return kdviz.attribute(teacher, student, (digits.x_test, digits.y_test), path=path, samples=N, progress=False,
                           methods=["saliency", "integrated_gradients", "attention_x_gradient"])


def bert_data(n: int = 10, length: int = 12):
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 120, (n, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[::3, -4:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 3, (n,), generator=generator)}


def test_cnn_pair_stores_finite_image_maps_for_every_method(cnn_run, digits):
    assert cnn_run.attribution_targets() == {"teacher_pred": ["grad_cam", "input_x_gradient", "integrated_gradients", "saliency"]}
    teacher_pred = cnn_run.teacher.logits[:N].argmax(1)
    for method in ("saliency", "integrated_gradients", "input_x_gradient", "grad_cam"):
        stored = cnn_run.attribution(method)
        assert stored.index.tolist() == list(range(N))
        assert stored.classes.tolist() == teacher_pred.tolist()
        for role in ("teacher", "student"):
            maps = stored.maps(role)[:]
            assert maps.shape == (N, 8, 8) and maps.dtype == np.float32 and np.isfinite(maps).all()
            assert np.abs(maps).sum() > 0
        assert stored.attrs["map_kind"] == "image" and stored.attrs["signed"] == (method in ("integrated_gradients", "input_x_gradient"))
    cam = cnn_run.attribution("grad_cam")
    assert cam.attrs["layers"] == {"teacher": "layer3.0", "student": "layer3.0"}  # each model's last Conv2d
    assert (cam.maps("teacher")[:] >= 0).all()  # ReLU, as in the paper
    assert (cnn_run.attribution("saliency").maps("student")[:] >= 0).all()
    assert cnn_run.attribution("integrated_gradients").attrs["n_steps"] == 32


def test_integrated_gradients_of_the_demo_cnn_are_complete(cnn_run, digits, tmp_path):
    """Σ map − (y(x) − y(0)) is the stored convergence delta, and it shrinks as the path gets more points."""
    teacher, student, _ = load_pair("cnn")
    stored = cnn_run.attribution("integrated_gradients")
    x, rows, cls = digits.x_test[:N], torch.arange(N), torch.as_tensor(stored.classes)
    with torch.no_grad():
        gap = (teacher(x)[rows, cls] - teacher(torch.zeros_like(x))[rows, cls]).numpy()
    sums = stored.maps("teacher")[:].sum(axis=(1, 2))
    np.testing.assert_allclose(sums - gap, stored.delta("teacher")[:], atol=2e-4)
    fine = kdviz.attribute(teacher, student, (digits.x_test, digits.y_test), run=cnn_run, samples=N, n_steps=256,
                           methods=["integrated_gradients"], target=0, progress=False).attribution("integrated_gradients", "class_0")
    assert np.abs(fine.delta("teacher")[:]).mean() < 0.25 * np.abs(stored.delta("teacher")[:]).mean()


def test_vit_pair_attention_x_gradient_lays_patch_relevance_on_the_image(vit_run):
    stored = vit_run.attribution("attention_x_gradient")
    teacher, student = stored.maps("teacher")[:], stored.maps("student")[:]
    assert teacher.shape == student.shape == (N, 8, 8) and np.isfinite(teacher).all()
    for maps in (teacher, student):  # 2×2 patches: each patch's value covers its four pixels
        np.testing.assert_array_equal(maps[:, ::2, ::2], maps[:, 1::2, 1::2])
        assert (maps >= 0).all()
    assert stored.heads("teacher").shape == (N, 4, 4) and stored.heads("student").shape == (N, 2, 2)
    assert stored.attrs["query"] == {"teacher": "CLS token", "student": "CLS token"}
    assert vit_run.attribution("saliency").maps("teacher").shape == (N, 8, 8)


def test_hf_bert_pair_token_attributions_with_padding(tmp_path):
    teacher, student = bert_pair(attn_implementation="eager")
    student.set_attn_implementation("sdpa")  # attention × gradient must switch it to eager and back
    data = bert_data()
    run = kdviz.attribute(teacher, student, data, path=tmp_path / "bert.kdviz", target="label", progress=False, batch_size=4,
                          methods=["saliency", "integrated_gradients", "input_x_gradient", "attention_x_gradient"])
    assert student.config._attn_implementation == "sdpa"
    mask = data["attention_mask"].numpy().astype(bool)
    for method in ("saliency", "integrated_gradients", "input_x_gradient", "attention_x_gradient"):
        stored = run.attribution(method, "label")
        assert stored.classes.tolist() == data["labels"].tolist()
        for role in ("teacher", "student"):
            maps = stored.maps(role)[:]
            assert maps.shape == (10, 12) and np.isfinite(maps).all()
            assert np.abs(maps[mask]).sum() > 0
        assert stored.attrs["map_kind"] == "tokens"
    assert np.abs(run.attribution("attention_x_gradient", "label").maps("teacher")[:][~mask]).max() < 1e-6  # padding gets none
    assert run.attribution("integrated_gradients", "label").attrs["layers"]["teacher"] == "bert.embeddings.word_embeddings"
    assert run.attribution("attention_x_gradient", "label").heads("teacher").shape == (10, 4, 4)


def test_hf_bert_integrated_gradients_are_complete_from_the_pad_token_baseline(tmp_path):
    teacher, student = bert_pair()
    data = bert_data(n=4)
    run = kdviz.attribute(teacher, student, data, path=tmp_path / "bert.kdviz", methods=["integrated_gradients"], n_steps=64,
                          progress=False)
    stored = run.attribution("integrated_gradients")
    ids, mask = data["input_ids"], data["attention_mask"]
    baseline = torch.where(mask.bool(), torch.zeros_like(ids), ids)  # pad id 0 at every real token
    teacher.eval()
    with torch.no_grad():
        rows, cls = torch.arange(4), torch.as_tensor(stored.classes)
        def logit(inputs: torch.Tensor) -> torch.Tensor:
            return teacher(input_ids=inputs, attention_mask=mask).logits[rows, cls]

        gap = logit(ids) - logit(baseline)
    np.testing.assert_allclose(stored.maps("teacher")[:].sum(1), gap.numpy(), rtol=0.05, atol=1e-4)


def test_models_are_left_exactly_as_they_were(tmp_path, digits):
    teacher, student, _ = load_pair("cnn")
    teacher.train()
    teacher.layer2[1].eval()  # a frozen BatchNorm inside a training model stays frozen
    for p in teacher.parameters():
        p.requires_grad_(False)  # a frozen teacher, as in KD
    student.head.requires_grad_(False)
    before = {name: (copy.deepcopy(model.state_dict()), [(n, m.training) for n, m in model.named_modules()],
                     [(n, p.requires_grad, p.grad) for n, p in model.named_parameters()])
              for name, model in (("teacher", teacher), ("student", student))}
    kdviz.attribute(teacher, student, (digits.x_test[:16], digits.y_test[:16]), path=tmp_path / "r.kdviz", progress=False,
                    methods=["saliency", "integrated_gradients", "grad_cam"])
    for name, model in (("teacher", teacher), ("student", student)):
        state, modes, flags = before[name]
        after = model.state_dict()
        assert all(torch.equal(state[k], after[k]) for k in state)
        assert [(n, m.training) for n, m in model.named_modules()] == modes
        assert [(n, p.requires_grad, p.grad) for n, p in model.named_parameters()] == flags
        assert hook_count(model) == 0
        assert next(model.parameters()).device.type == "cpu"


def test_a_model_agrees_with_itself_and_not_with_a_shuffled_map(tmp_path, digits):
    teacher, _student, _ = load_pair("cnn")
    run = kdviz.attribute(teacher, copy.deepcopy(teacher), (digits.x_test[:64], digits.y_test[:64]), path=tmp_path / "self.kdviz",
                          methods=["saliency", "grad_cam"], progress=False)
    for method in ("saliency", "grad_cam"):
        t, s = run.attribution(method).maps("teacher")[:], run.attribution(method).maps("student")[:]
        for metric, values in ag.agreement(t, s).items():
            np.testing.assert_allclose(values, 1.0, atol=1e-6, err_msg=f"{method} {metric}")
    t = run.attribution("saliency").maps("teacher")[:].reshape(64, -1)
    shuffled = np.random.default_rng(0).permuted(t, axis=1)
    assert abs(np.nanmean(ag.spearman(t, shuffled))) < 0.1


def test_attributing_into_an_existing_run_checks_the_data(tmp_path, digits):
    teacher, student, _ = load_pair("cnn")
    x, y = digits.x_test[:30], digits.y_test[:30]
    run = kdviz.capture(teacher, student, (x, y), path=tmp_path / "c.kdviz", progress=False, layers=["layer3"])
    run = kdviz.attribute(teacher, student, (x, y), run=run, methods=["saliency"], samples=[3, 7, 29], progress=False)
    assert run.attribution("saliency").index.tolist() == [3, 7, 29]
    assert run.teacher.feature_names == ["layer3"]  # the capture is untouched
    order = torch.randperm(30, generator=torch.Generator().manual_seed(0))
    with pytest.raises(InputError, match="differ from run"):
        kdviz.attribute(teacher, student, (x[order], y[order]), run=run, methods=["saliency"], progress=False)
    with pytest.raises(InputError, match="had 20 samples"):
        kdviz.attribute(teacher, student, (x[:20], y[:20]), run=run.path, methods=["saliency"], samples=5, progress=False)
    assert run.attribution("saliency").index.tolist() == [3, 7, 29]  # failed calls left the stored result alone


def test_an_interrupted_attribution_leaves_the_run_as_it_was(tmp_path, digits):
    teacher, student, _ = load_pair("cnn")
    x, y = digits.x_test[:40], digits.y_test[:40]
    run = kdviz.capture(teacher, student, (x, y), path=tmp_path / "c.kdviz", progress=False)

    def batches():
        yield x[:20], y[:20]
        raise RuntimeError("data loader died")

    with pytest.raises(RuntimeError, match="died"):
        kdviz.attribute(teacher, student, batches(), run=run, methods=["saliency"], progress=False)
    assert kdviz.Run.open(run.path).attribution_targets() == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.kdviz"]  # no temporary directory left behind


def test_rerunning_a_method_replaces_it_and_keeps_the_others(tmp_path, digits):
    teacher, student, _ = load_pair("cnn")
    data = (digits.x_test[:20], digits.y_test[:20])
    run = kdviz.attribute(teacher, student, data, path=tmp_path / "r.kdviz", methods=["saliency", "input_x_gradient"], progress=False)
    run = kdviz.attribute(teacher, student, data, run=run, methods=["saliency"], samples=5, progress=False)
    run = kdviz.attribute(teacher, student, data, run=run, methods=["grad_cam"], target=3, progress=False)
    assert run.attribution_targets() == {"class_3": ["grad_cam"], "teacher_pred": ["input_x_gradient", "saliency"]}
    assert len(run.attribution("saliency")) == 5 and len(run.attribution("input_x_gradient")) == 20
    assert set(run.attribution("grad_cam", "class_3").classes.tolist()) == {3}
    with pytest.raises(MissingDataError, match=r"kdviz\.attribute"):
        run.attribution("grad_cam")


def test_bad_requests_raise_kdviz_errors(tmp_path, digits):
    teacher, student, _ = load_pair("cnn")
    data = (digits.x_test[:8], digits.y_test[:8])
    cases = [
        ({"methods": ["lime"]}, "unknown attribution method"),
        ({"methods": []}, "methods is empty"),
        ({"target": "student_pred"}, "target must be"),
        ({"target": 12}, "outside the models' 10 classes"),
        ({"samples": [0, 99]}, r"sample indices must be in \[0, 8\)"),
        ({"layers": {"teacher": "nope"}, "methods": ["grad_cam"]}, "has no module 'nope'"),
        ({"methods": ["attention_x_gradient"]}, "attention_x_gradient is for transformers"),
        ({"baseline": torch.zeros(3, 3), "methods": ["integrated_gradients"]}, "baseline has shape"),
    ]
    for i, (kwargs, message) in enumerate(cases):
        with pytest.raises(KdvizError, match=message):
            kdviz.attribute(teacher, student, data, path=tmp_path / f"bad{i}.kdviz", progress=False, **kwargs)
    with pytest.raises(RunExistsError, match="pass run=that path"):
        kdviz.attribute(teacher, student, data, path=tmp_path, progress=False)  # an existing directory is never overwritten
    with pytest.raises(InputError, match="needs labels"):
        kdviz.attribute(teacher, student, digits.x_test[:8], path=tmp_path / "nolabels.kdviz", target="label", progress=False)
    with pytest.raises(InputError, match=r"no nn\.Conv2d"):
        mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        kdviz.attribute(mlp, copy.deepcopy(mlp), data, path=tmp_path / "mlp.kdviz", methods=["grad_cam"], progress=False)


def test_causal_lm_explains_one_position_and_ignores_later_tokens(tmp_path):
    teacher, student = gpt2_pair()
    ids = torch.randint(1, 50, (5, 10), generator=torch.Generator().manual_seed(0))
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    run = kdviz.attribute(teacher, student, data, path=tmp_path / "lm.kdviz", progress=False,
                          methods=["integrated_gradients", "attention_x_gradient"])
    stored = run.attribution("attention_x_gradient")
    assert run.array("attribution/teacher_pred/attention_x_gradient/position")[:].tolist() == [9] * 5  # last real token
    run = kdviz.attribute(teacher, student, data, run=run, position=4, progress=False, methods=["attention_x_gradient", "saliency"])
    stored = run.attribution("attention_x_gradient")
    maps = stored.maps("teacher")[:]
    assert maps.shape == (5, 10) and np.isfinite(maps).all()
    assert np.abs(maps[:, 5:]).max() == 0  # causal attention: tokens after position 4 cannot feed its prediction
    assert np.abs(run.attribution("saliency").maps("student")[:][:, 5:]).max() == 0
    with pytest.raises(InputError, match="position=20"):
        kdviz.attribute(teacher, student, data, run=run, position=20, methods=["saliency"], progress=False)


class RecomputeOnlyViT(nn.Module):
    """A ViT-like model whose blocks have no timm ``fused_attn`` flag: attention is only recomputed from qkv."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 16)
        self.attn = Attention(16, 2)
        del self.attn.fused_attn
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        tokens = self.embed(x)
        q, k, v = self.attn.qkv(tokens).reshape(len(x), -1, 3, 2, 8).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(len(x), -1, 16)
        return self.head(self.attn.proj(out).mean(1))


def test_attention_x_gradient_refuses_attention_outside_the_graph(tmp_path):
    model = RecomputeOnlyViT()
    with pytest.raises(CaptureError, match="outside the model's graph"):
        kdviz.attribute(model, copy.deepcopy(model), torch.randn(6, 5, 4), path=tmp_path / "v.kdviz",
                        methods=["attention_x_gradient"], progress=False)
    assert hook_count(model) == 0


def test_tiny_cnn_features_input_and_progress_bar(tmp_path, capsys):
    torch.manual_seed(0)
    teacher, student = TinyCNN(8), TinyCNN(4)
    run = kdviz.attribute(teacher, student, torch.randn(12, 1, 6, 6), path=tmp_path / "t.kdviz", methods=["input_x_gradient"],
                          batch_size=5)
    assert run.attribution("input_x_gradient").maps("student").shape == (12, 6, 6)
    assert "kdviz attribute input_x_gradient" in capsys.readouterr().err


# ---- memory bound (max_memory) -------------------------------------------------------------------------------
def test_saved_bytes_counts_what_autograd_keeps_for_backward_without_the_parameters():
    from kdviz.metrics.graph_memory import saved_bytes

    layer = nn.Linear(100, 50)
    for batch in (1, 3):
        x = torch.randn(batch, 100, requires_grad=True)
        # addmm keeps its input x (float32, batch × 100) and a view of the weight (left out); relu keeps its output
        assert saved_bytes(lambda x=x: torch.relu(layer(x)), exclude=layer.parameters()) == 4 * batch * (100 + 50)
    with torch.no_grad():  # no graph, nothing kept
        assert saved_bytes(lambda: torch.relu(layer(torch.randn(2, 100))), exclude=layer.parameters()) == 0


@given(point=st.integers(1, 10**7), budget=st.integers(1, 10**10), n=st.integers(1, 64),
       steps=st.one_of(st.none(), st.integers(2, 128)), preferred=st.integers(1, 512))
def test_a_pass_plan_stays_within_its_budget_and_keeps_captums_two_points_per_sample(point, budget, n, steps, preferred):
    from kdviz.metrics.graph_memory import OVERHEAD, plan_passes

    plan = plan_passes(point, budget, n, steps, preferred)
    assert 1 <= plan.samples <= n
    held = (plan.points if steps else plan.samples) * point * OVERHEAD
    smallest = (2 if steps else 1) * point * OVERHEAD
    assert held <= budget + 1 or (plan.samples == 1 and smallest > budget)
    if steps:
        assert 2 * plan.samples <= plan.points <= plan.samples * steps


def test_max_memory_splits_a_batch_into_passes_and_gives_the_same_maps(tmp_path, digits):
    from kdviz.adapters.probe import ModelProbe
    from kdviz.attribute import graph_bytes_per_sample, model_call
    from kdviz.metrics.graph_memory import OVERHEAD

    teacher, student, _ = load_pair("cnn")
    data = (digits.x_test[:12], digits.y_test[:12])
    free = kdviz.attribute(teacher, student, data, path=tmp_path / "free.kdviz", max_memory=None, batch_size=12,
                           methods=["integrated_gradients", "saliency"], progress=False)
    with ModelProbe(teacher, "teacher", layers=[], attentions=False, device=torch.device("cpu"), spatial_p=None,
                    keep_graph=True) as probe:
        point = graph_bytes_per_sample(probe, model_call(probe, digits.x_test[:12]))
    assert point > 0
    budget = int(6.5 * point * OVERHEAD)  # 6 points: 3 samples × 2 path points for IG, 6 samples for saliency
    bounded = kdviz.attribute(teacher, student, data, path=tmp_path / "bounded.kdviz", max_memory=budget, batch_size=12,
                              methods=["integrated_gradients", "saliency"], progress=False)
    ig = bounded.attribution("integrated_gradients")
    assert ig.attrs["samples_per_pass"]["teacher"] == 3 and ig.attrs["points_per_pass"]["teacher"] == 6
    assert ig.attrs["graph_bytes_per_sample"]["teacher"] == point and ig.attrs["max_memory"] == budget
    assert bounded.attribution("saliency").attrs["samples_per_pass"]["teacher"] == 6
    for method in ("integrated_gradients", "saliency"):
        for role in ("teacher", "student"):
            np.testing.assert_allclose(bounded.attribution(method).maps(role)[:], free.attribution(method).maps(role)[:],
                                       rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ig.delta("teacher")[:], free.attribution("integrated_gradients").delta("teacher")[:], atol=1e-5)


def test_a_max_memory_below_one_sample_or_not_a_size_is_refused(tmp_path, digits):
    from kdviz.adapters.probe import ModelProbe
    from kdviz.attribute import graph_bytes_per_sample, model_call
    from kdviz.metrics.graph_memory import OVERHEAD

    teacher, student, _ = load_pair("cnn")
    data = (digits.x_test[:4], digits.y_test[:4])
    with pytest.raises(InputError, match="raise max_memory, or pass max_memory=None"):
        kdviz.attribute(teacher, student, data, path=tmp_path / "a.kdviz", max_memory="1KB", progress=False)
    # the refusal counts what the plan counts: one sample's two path points with the graph's overhead, so a budget
    # above the bare graph of that pass but below it with the overhead is refused, not silently overrun
    with ModelProbe(teacher, "teacher", layers=[], attentions=False, device=torch.device("cpu"), spatial_p=None,
                    keep_graph=True) as probe:
        point = graph_bytes_per_sample(probe, model_call(probe, digits.x_test[:4]))
    assert OVERHEAD > 1.5
    with pytest.raises(InputError, match="one sample's integrated_gradients pass through the teacher"):
        kdviz.attribute(teacher, student, data, path=tmp_path / "c.kdviz", max_memory=int(3 * point),
                        methods=["integrated_gradients"], progress=False)
    for bad in ("lots", "-2GB", 0, "2 parsecs"):
        with pytest.raises(InputError, match="is not a size"):
            kdviz.attribute(teacher, student, data, path=tmp_path / "b.kdviz", max_memory=bad, progress=False)
    from kdviz.cost import parse_bytes

    assert parse_bytes("2GB", "m") == 2 * 10**9 and parse_bytes("512 mb", "m") == 512 * 10**6
    assert parse_bytes("1.5GiB", "m") == int(1.5 * 2**30) and parse_bytes(4096, "m") == 4096
