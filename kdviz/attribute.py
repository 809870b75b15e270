"""`attribute`: explain the teacher's and the student's predictions on the same samples and store the maps in a run.

Both models are explained for the same target class of each sample, on the same inputs, so their maps compare
position by position (`kdviz.metrics.attribution_agreement`). Results go to ``attribution/<target>/<method>/`` in
the run, so a served dashboard never computes a gradient.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from kdviz import cost, layout, remote
from kdviz._version import __version__
from kdviz.adapters.outputs import extract_logits
from kdviz.adapters.probe import ModelProbe
from kdviz.batching import Batch, attention_mask, iter_batches, main_input_key, take_rows, to_device
from kdviz.capture import ROLES, capture, resolve_device, thumbnails
from kdviz.errors import InputError, MissingDataError, RunExistsError
from kdviz.metrics import attribution as am
from kdviz.metrics.graph_memory import OVERHEAD, PassPlan, plan_passes, saved_bytes
from kdviz.store import GroupWriter, Run

TARGETS = ("teacher_pred", "label")
AUTO_PATH_POINTS = 256  # integrated-gradients path points per forward pass unless internal_batch_size says otherwise
MAX_MEMORY = "2GB"  # default bound on one gradient pass's graph: both models run one after the other, so a 24 GB machine keeps room


def attribute(
    teacher: nn.Module,
    student: nn.Module,
    data: Any,
    *,
    methods: Sequence[str] = ("saliency", "integrated_gradients"),
    target: str | int = "teacher_pred",
    samples: int | Sequence[int] | None = None,
    run: Run | str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
    layers: str | Mapping[str, str] | None = None,
    embedding: str | Mapping[str, str] | None = None,
    baseline: float | int | torch.Tensor | None = None,
    n_steps: int = 32,
    internal_batch_size: int | None = None,
    max_memory: int | str | None = MAX_MEMORY,
    position: int | None = None,
    batch_size: int = 32,
    labels: Any = None,
    class_names: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> Run:
    """Attribute both models' predictions for one target class per sample and store the maps; returns the run.

    - ``methods``: any of ``saliency``, ``integrated_gradients``, ``input_x_gradient`` (on the input, or for token
      ids at the embedding layer's output), ``grad_cam`` (CNNs, on ``layers``), ``attention_x_gradient``
      (transformers: Hugging Face eager attention or timm-style blocks). See `kdviz.metrics.attribution.METHODS`.
    - ``target``: ``"teacher_pred"`` (the teacher's top class), ``"label"``, or a class index; both models explain
      the same class of each sample.
    - ``samples``: the first K samples, a list of sample indices, or None for all.
    - ``run``: an existing run (or its path) captured from the same ``data`` in the same order; the inputs are
      checked against it. Without one, a run with the logits is first captured at ``path`` (default: a temporary dir).
    - ``layers``: Grad-CAM layer, one module path for both models or ``{"teacher": ..., "student": ...}``
      (default: each model's last Conv2d). ``embedding``: the embedding module of a non-Hugging-Face text model
      (default: its first nn.Embedding).
    - ``baseline``: integrated gradients' starting point: a number or a tensor like one input (images, default 0);
      a token id for text (default: the model's pad token id, else 0). ``n_steps`` path points;
      ``internal_batch_size`` bounds the path points per forward pass (memory); by default about
      `AUTO_PATH_POINTS` (at least two steps per sample), which on CPUs is also faster than one huge pass.
    - ``max_memory``: the most one gradient pass may hold (bytes, or ``"2GB"``, ``"512MB"``; None: no bound). The
      graph of one sample is measured on each batch (the tensors autograd saves), and the batch goes through in as
      many passes as the bound needs, with fewer path points per forward; the maps do not change. Default
      `MAX_MEMORY`. An explicit ``internal_batch_size`` is used as given.
    - ``position``: for sequence outputs [B, T, V], the position explained (default: the last real token).
    Models are used in eval mode on ``device`` (default: CUDA when available) and left exactly as they were:
    mode, device, ``requires_grad``, ``.grad`` and attention implementation (gradients are taken with respect to
    inputs only, through torch.autograd.grad, which never accumulates into parameters).
    """
    for method in methods:
        am.check_method(method)
    if not methods:
        raise InputError("methods is empty; ask for at least one of " + ", ".join(am.METHODS))
    target_name = _target_name(target)
    budget = None if max_memory is None else cost.parse_bytes(max_memory, "max_memory")
    if run is None:
        if path is not None and remote.is_url(path):
            raise InputError(f"attributions are added to a local run, not to {os.fspath(path)!r} on object storage: "
                             "give a local path, then publish the run with `kdviz upload`")
        if path is not None and Path(path).expanduser().exists():
            raise RunExistsError(f"something already exists at {str(path)!r}; to add attributions to a run there, pass "
                                 "run=that path; to start a new run, choose another path")
        run = capture(teacher, student, data, layers=[], attentions=False, batch_size=batch_size, labels=labels,
                      class_names=class_names, device=device, progress=progress,
                      path=path)  # None: capture's new temporary run
    elif not isinstance(run, Run):
        run = Run.open(run)
    wanted = _sample_selection(samples, run.n_samples)
    settings = AttributionSettings(
        methods=list(dict.fromkeys(methods)), target=target, layers=_per_role(layers, "layers"),
        embedding=_per_role(embedding, "embedding"), baseline=baseline, n_steps=n_steps,
        internal_batch_size=internal_batch_size, position=position, max_memory=budget,
    )
    target_device = resolve_device(device)
    needs_attention = "attention_x_gradient" in settings.methods
    probes = tuple(ModelProbe(model, role, layers=[], attentions=needs_attention, device=target_device, spatial_p=None,
                              keep_graph=True) for model, role in ((teacher, "teacher"), (student, "student")))
    seconds = dict.fromkeys(settings.methods, 0.0)
    shapes: dict[str, Any] = {}
    bar = tqdm(total=len(wanted), unit="sample", desc=f"kdviz attribute {'+'.join(settings.methods)}", disable=not progress)
    with GroupWriter(run.path, layout.attribution(target_name)) as writer, probes[0], probes[1], bar:
        offset = 0
        for batch in iter_batches(data, batch_size, labels):
            rows = wanted[(wanted >= offset) & (wanted < offset + batch.size)]
            if len(rows):
                selected = _select(batch, torch.as_tensor(rows - offset))
                _check_matches_run(run, selected, rows)
                records, batch_seconds = _attribute_batch(probes, selected, rows, settings, shapes)
                writer.append_batch(records)
                for method, spent in batch_seconds.items():
                    seconds[method] += spent
                bar.update(len(rows))
            offset += batch.size
        if offset != run.n_samples:
            raise InputError(f"the data had {offset} samples but run {run.name!r} has {run.n_samples}; pass the data "
                             "the run was captured from, in the same order")
        created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        writer.commit({method: settings.attrs(method, target_name, shapes, seconds[method], len(wanted), created,
                                              str(target_device)) for method in settings.methods})
    return Run.open(run.path)


@dataclass
class AttributionSettings:
    """What `attribute` was asked to compute; ``attrs`` is what each method group records in the run."""

    methods: list[str]
    target: str | int
    layers: dict[str, str | None]
    embedding: dict[str, str | None]
    baseline: float | int | torch.Tensor | None
    n_steps: int
    internal_batch_size: int | None
    position: int | None
    max_memory: int | None = None
    passes: dict[str, dict[str, PassPlan]] = field(default_factory=dict)  # method -> role -> the largest batch's plan
    point_bytes: dict[str, int] = field(default_factory=dict)  # role -> measured graph bytes of one sample

    def attrs(self, method: str, target_name: str, shapes: Mapping[str, Any], seconds: float, n: int, created: str,
              device: str) -> dict[str, Any]:
        info = shapes.get(method, {})
        baseline = self.baseline
        return {
            "method": method,
            "description": am.METHODS[method],
            "target": target_name,
            "signed": method in am.SIGNED,
            "map_kind": info.get("kind"),
            "map_shape": info.get("shape"),
            "n_samples": n,
            "n_steps": self.n_steps if method == "integrated_gradients" else None,
            "internal_batch_size": self.internal_batch_size if method == "integrated_gradients" else None,
            "max_memory": self.max_memory,
            "graph_bytes_per_sample": dict(self.point_bytes) or None,
            "samples_per_pass": {role: plan.samples for role, plan in self.passes.get(method, {}).items()} or None,
            "points_per_pass": {role: plan.points for role, plan in self.passes.get(method, {}).items()
                                if plan.points is not None} or None,
            "baseline": (None if baseline is None else baseline if isinstance(baseline, int | float) else "tensor")
            if method == "integrated_gradients" else None,
            "layers": info.get("layers"),
            "query": info.get("query"),
            "position": self.position,
            "seconds": round(seconds, 4),
            "device": device,
            "created": created,
            "kdviz_version": __version__,
        }


# ---- one batch ---------------------------------------------------------------------------------------------
@dataclass
class ModelCall:
    """How captum calls one model on one batch: ``forward(main, *extra) -> logits [B, C]`` and its arguments.

    ``main`` is the attributed input (a float tensor, or token ids attributed at ``embedding``); ``extra`` holds the
    other keyword inputs and, for sequence outputs, the explained position of each sample (last).
    """

    forward: am.Forward
    main_key: str | None
    main: torch.Tensor
    extra: tuple[torch.Tensor, ...]
    embedding: nn.Module | None
    tokens: bool


def _attribute_batch(probes: tuple[ModelProbe, ModelProbe], batch: Batch, rows: np.ndarray, settings: AttributionSettings,
                     shapes: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    inputs = to_device(batch.inputs, probes[0].device)
    with torch.no_grad():
        logits = [probe.forward(inputs).logits for probe in probes]
    positions = _positions(logits[0], inputs, settings.position)
    classes = _classes(settings.target, logits, positions, batch, probes[0].device)
    records: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = dict.fromkeys(settings.methods, 0.0)
    for probe in probes:
        call = model_call(probe, inputs, positions, settings.embedding[probe.role])
        point_bytes = 0
        if settings.max_memory is not None:
            point_bytes = graph_bytes_per_sample(probe, call)
            settings.point_bytes[probe.role] = max(point_bytes, settings.point_bytes.get(probe.role, 0))
        for method in settings.methods:
            start = time.perf_counter()
            plan = _plan(method, point_bytes, len(classes), settings, probe.role)
            maps, extras, info = _in_passes(plan, method, probe, call, inputs, classes, positions, settings)
            seconds[method] += time.perf_counter() - start
            _check_finite(maps, f"the {probe.role}'s {method} attributions", rows)
            records[f"{method}/{probe.role}"] = maps.float().cpu().numpy()
            for name, values in extras.items():
                records[f"{method}/{probe.role}_{name}"] = values.float().cpu().numpy()
            known = shapes.setdefault(method, {"kind": info["kind"], "shape": list(maps.shape[1:]), "layers": {}, "query": {}})
            known["layers"][probe.role] = info.get("layer")
            known["query"][probe.role] = info.get("query")
    for method in settings.methods:
        records[f"{method}/index"] = rows.astype(np.int64)
        records[f"{method}/class"] = classes.cpu().numpy().astype(np.int64)
        if positions is not None:
            records[f"{method}/position"] = positions.cpu().numpy().astype(np.int64)
    return records, seconds


def _plan(method: str, point_bytes: int, n_samples: int, settings: AttributionSettings, role: str) -> PassPlan:
    """Samples per pass (and IG path points per forward) for one batch of one model within ``max_memory``."""
    ig = method == "integrated_gradients"
    if ig and settings.internal_batch_size is not None:  # asked for explicitly: used as given
        plan = PassPlan(samples=n_samples, points=settings.internal_batch_size)
    elif settings.max_memory is None:
        plan = PassPlan(samples=n_samples, points=max(AUTO_PATH_POINTS, 2 * n_samples) if ig else None)
    else:
        plan = plan_passes(point_bytes, settings.max_memory, n_samples, settings.n_steps if ig else None, AUTO_PATH_POINTS)
        smallest = int(point_bytes * OVERHEAD) * (2 if ig else 1)  # what plan_passes counts for the smallest pass
        if smallest > settings.max_memory:
            raise InputError(f"one sample's {method} pass through the {role} holds about {cost.size(smallest)}, more than "
                             f"max_memory={cost.size(settings.max_memory)}; raise max_memory, or pass max_memory=None "
                             "to lift the bound")
    known = settings.passes.setdefault(method, {}).get(role)
    if known is None or plan.samples > known.samples:
        settings.passes[method][role] = plan
    return plan


def graph_bytes_per_sample(probe: ModelProbe, call: ModelCall) -> int:
    """Bytes the autograd graph of one sample of ``call`` holds (`kdviz.metrics.graph_memory.saved_bytes`): a
    forward pass of the batch's first sample, parameters and buffers left out."""
    one = _rows_of_call(call, torch.arange(1, device=call.main.device))

    def forward() -> torch.Tensor:
        with torch.enable_grad(), _graph_root(probe.model, one):
            return one.forward(one.main, *one.extra)

    return saved_bytes(forward, exclude=[*probe.model.parameters(), *probe.model.buffers()])


def _rows_of_call(call: ModelCall, rows: torch.Tensor) -> ModelCall:
    main = call.main[rows]
    return ModelCall(call.forward, call.main_key, main if call.tokens else main.detach().clone(),
                     tuple(extra[rows] for extra in call.extra), call.embedding, call.tokens)


def _in_passes(plan: PassPlan, method: str, probe: ModelProbe, call: ModelCall, inputs: Any, classes: torch.Tensor,
               positions: torch.Tensor | None, settings: AttributionSettings
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
    """`_one_method` on the batch in passes of ``plan.samples`` samples; the maps and extras are concatenated."""
    if plan.samples >= len(classes):
        return _one_method(method, probe, call, inputs, classes, positions, settings, plan.points)
    parts, extras, info = [], [], {}
    baseline = settings.baseline
    per_sample_baseline = isinstance(baseline, torch.Tensor) and baseline.ndim == call.main.ndim and len(baseline) == len(classes)
    for first in range(0, len(classes), plan.samples):
        rows = torch.arange(first, min(first + plan.samples, len(classes)), device=classes.device)
        chosen = replace(settings, baseline=baseline[rows.to(baseline.device)]) if per_sample_baseline else settings
        maps, extra, info = _one_method(method, probe, _rows_of_call(call, rows), take_rows(inputs, rows), classes[rows],
                                        None if positions is None else positions[rows], chosen, plan.points)
        parts.append(maps)
        extras.append(extra)
    return torch.cat(parts), {name: torch.cat([e[name] for e in extras]) for name in extras[0]}, info


def _check_finite(maps: torch.Tensor, what: str, rows: np.ndarray) -> None:
    """Raise naming the samples (run indices ``rows`` of the batch) whose maps hold NaN or inf."""
    bad = (~torch.isfinite(maps.reshape(len(maps), -1)).all(dim=1)).cpu().numpy()
    if bad.any():
        raise InputError(f"{what} are NaN or inf at sample {rows[bad][:5].tolist()}; check the model's outputs and the baseline")


def _one_method(method: str, probe: ModelProbe, call: ModelCall, inputs: Any, classes: torch.Tensor,
                positions: torch.Tensor | None, settings: AttributionSettings, points: int | None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
    """One method on one model: maps [B, ...], per-sample extras ({"heads": [B, L, H]} for attention × gradient,
    {"delta": [B]} for integrated gradients) and what was used; ``points``: IG path points per forward."""
    kind = "tokens" if call.tokens else "image" if call.main.ndim == 4 else "features"
    if method == "attention_x_gradient":
        maps, heads, query = _attention_x_gradient(probe, inputs, call, classes, positions)
        return maps, {"heads": heads}, {"kind": kind, "query": query}
    if method == "grad_cam":
        name = settings.layers[probe.role] or _last_conv(probe.model, probe.role)
        layer = _module(probe.model, name, probe.role)
        return am.grad_cam(call.forward, call.main, classes, layer, extra=call.extra, layer_name=name), {}, {"kind": kind, "layer": name}
    internal = points or max(AUTO_PATH_POINTS, 2 * len(classes))
    common = {"extra": call.extra, "n_steps": settings.n_steps, "internal_batch_size": internal, "return_delta": True}
    if call.tokens:
        baseline_ids = _baseline_ids(probe, call.main, inputs, settings.baseline)
        maps, delta = am.embedding_attribution(method, call.forward, call.main, classes, call.embedding,
                                               baseline_ids=baseline_ids, **common)
        info = {"kind": kind, "layer": _name_of(probe.model, call.embedding)}
    else:
        maps, delta = am.input_attribution(method, call.forward, call.main, classes, baseline=settings.baseline, **common)
        info = {"kind": kind}
    return maps, ({} if delta is None else {"delta": delta}), info


def _attention_x_gradient(probe: ModelProbe, inputs: Any, call: ModelCall, classes: torch.Tensor,
                          positions: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    if probe.attention_source == "none":
        raise MissingDataError(
            f"the {probe.role} gives no attention maps (no Hugging Face attentions and no timm-style attention blocks); "
            "attention_x_gradient is for transformers"
        )
    with torch.enable_grad(), _graph_root(probe.model, call):
        out = probe.forward(_with_main(inputs, call))
        logits = _at_positions(out.logits, positions)
        score = logits.gather(1, classes[:, None])[:, 0]
        relevance, heads = am.attention_gradient(score, out.attentions)
    tokens = relevance.shape[-1]
    grid = probe.family.token_grid(probe.model, tokens, tuple(call.main.shape)) if not call.tokens else None
    if grid is not None and call.main.ndim == 4:
        query = 0 if grid["prefix"] else -1
        row = am.relevance_row(relevance, torch.full((len(score),), query, device=score.device))
        image = am.tokens_to_image(row, grid["prefix"], grid["grid"], call.main.shape[-2:])
        return image, heads, "CLS token" if query == 0 else "mean of all tokens"
    if positions is not None:
        return am.relevance_row(relevance, positions), heads, "explained position"
    return am.relevance_row(relevance), heads, "first token (CLS)"


@contextlib.contextmanager
def _graph_root(model: nn.Module, call: ModelCall) -> Iterator[None]:
    """Make the forward pass record a graph even when every parameter is frozen: the float input requires grad, or
    for token ids the embedding layer's output does (a temporary hook)."""
    if not call.tokens:
        call.main.requires_grad_(True)
        try:
            yield
        finally:
            call.main.requires_grad_(False)
        return

    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return output if output.requires_grad else output.detach().requires_grad_(True)

    handle = call.embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def model_call(probe: ModelProbe, inputs: Any, positions: torch.Tensor | None = None, embedding: str | None = None) -> ModelCall:
    """How captum calls ``probe``'s model on one batch of ``inputs`` (already on its device): the forward function,
    the attributed input, the other inputs, and for token ids the embedding module (``embedding`` names it)."""
    model, role = probe.model, probe.role
    if isinstance(inputs, dict):
        main_key = main_input_key(inputs, probe.family.main_input_name(model))
        extra_keys = [k for k, v in inputs.items() if k != main_key and isinstance(v, torch.Tensor)]
        main, extra = inputs[main_key], [inputs[k] for k in extra_keys]
    else:
        main_key, extra_keys, main, extra = None, [], inputs, []
    if positions is not None:
        extra.append(positions)
    tokens = not main.is_floating_point()
    embedding_module = _embedding(probe, embedding) if tokens else None
    if not tokens:
        main = main.detach().clone()

    def forward(x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        kwargs = dict(zip(extra_keys, rest[: len(extra_keys)], strict=True))
        kwargs.update(probe.family.call_options(model))
        output = model(x) if main_key is None else model(**{main_key: x}, **kwargs)
        logits = extract_logits(output, role)
        return _at_positions(logits, rest[len(extra_keys)] if logits.ndim == 3 else None)

    return ModelCall(forward, main_key, main, tuple(extra), embedding_module, tokens)


def _with_main(inputs: Any, call: ModelCall) -> Any:
    """The batch's inputs with the attributed tensor replaced by ``call.main`` (which may now require grad)."""
    return call.main if call.main_key is None else {**inputs, call.main_key: call.main}


def _at_positions(logits: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """[B, C] logits: as they are, or for sequence outputs [B, T, V] the row of each sample's explained position."""
    if logits.ndim == 2:
        return logits
    if positions is None:
        raise InputError("the model returns sequence logits [B, T, V]; say which position to explain with position=")
    return logits[torch.arange(len(logits), device=logits.device), positions]


def _positions(logits: torch.Tensor, inputs: Any, position: int | None) -> torch.Tensor | None:
    """[B] explained position per sample for sequence outputs [B, T, V] (default: the last real token); None otherwise."""
    if logits.ndim == 2:
        return None
    batch, length = logits.shape[:2]
    mask = attention_mask(inputs)
    last = (mask.long().sum(1) - 1) if mask is not None else torch.full((batch,), length - 1, device=logits.device)
    if position is None:
        chosen = last
    elif position < 0:
        chosen = last + 1 + position
    else:
        chosen = torch.full((batch,), position, device=logits.device)
    if bool((chosen < 0).any()) or bool((chosen > last).any()):
        raise InputError(f"position={position} falls outside the real tokens of some samples (last real token: {last.tolist()})")
    return chosen.long()


def _classes(target: str | int, logits: list[torch.Tensor], positions: torch.Tensor | None, batch: Batch,
             device: torch.device) -> torch.Tensor:
    """[B] class explained for each sample, the same for both models."""
    z_t = _at_positions(logits[0], positions)
    n_classes = z_t.shape[1]
    if target == "teacher_pred":
        return z_t.argmax(1)
    if target == "label":
        if batch.labels is None:
            raise InputError("target='label' needs labels: give (inputs, labels) batches or labels=, or use target='teacher_pred'")
        y = batch.labels.to(device).long()
        if positions is not None:
            if y.ndim != 2:
                raise InputError(f"sequence outputs need token labels [B, T], got {tuple(y.shape)}")
            y = y[torch.arange(len(y), device=device), positions]
        if bool((y < 0).any()) or bool((y >= n_classes).any()):
            raise InputError(f"labels must be class indices in [0, {n_classes}) at the explained samples; found {y.tolist()}")
        return y
    if not 0 <= int(target) < n_classes:
        raise InputError(f"target class {target} is outside the models' {n_classes} classes")
    return torch.full((len(z_t),), int(target), dtype=torch.long, device=device)


def _target_name(target: str | int) -> str:
    if isinstance(target, str):
        if target not in TARGETS:
            raise InputError(f"target must be one of {TARGETS} or a class index, got {target!r}")
        return target
    if isinstance(target, bool) or not isinstance(target, int | np.integer):
        raise InputError(f"target must be one of {TARGETS} or a class index, got {target!r}")
    return f"class_{int(target)}"


def _sample_selection(samples: int | Sequence[int] | None, n: int) -> np.ndarray:
    if samples is None:
        return np.arange(n)
    if isinstance(samples, int | np.integer):
        if samples < 1:
            raise InputError(f"samples must be at least 1, got {samples}")
        return np.arange(min(int(samples), n))
    chosen = np.unique(np.asarray(samples, dtype=np.int64))
    if not len(chosen):
        raise InputError("samples is empty; pass None for all samples, K for the first K, or a list of indices")
    if chosen.min() < 0 or chosen.max() >= n:
        raise InputError(f"sample indices must be in [0, {n}); got {chosen.min()}..{chosen.max()}")
    return chosen


def _per_role(value: str | Mapping[str, str] | None, what: str) -> dict[str, str | None]:
    if value is None or isinstance(value, str):
        return dict.fromkeys(ROLES, value)
    unknown = set(value) - set(ROLES)
    if unknown:
        raise InputError(f"{what} dict keys must be 'teacher' and 'student', got {sorted(unknown)}")
    return {role: value.get(role) for role in ROLES}


def _select(batch: Batch, rows: torch.Tensor) -> Batch:
    labels = batch.labels[rows] if batch.labels is not None else None
    return Batch(inputs=take_rows(batch.inputs, rows), labels=labels, size=len(rows))


def _check_matches_run(run: Run, batch: Batch, rows: np.ndarray) -> None:
    """The batch must be the run's samples ``rows``: same labels, token ids or input thumbnails."""
    problem = None
    labelled = batch.labels is not None and run.has_labels and run.task == "classification"
    if labelled and not np.array_equal(batch.labels.cpu().numpy(), run.labels[rows]):
        problem = "labels"
    main = batch.main_tensor("input_ids")
    if problem is None and not main.is_floating_point() and main.ndim == 2 and run.token_ids is not None:
        if not np.array_equal(main.cpu().numpy(), run.token_ids[rows]):
            problem = "token ids"
    elif problem is None and main.is_floating_point() and main.ndim in (3, 4) and run.thumbnails is not None:
        difference = np.abs(thumbnails(main).astype(np.int16) - run.thumbnails[rows].astype(np.int16))
        if difference.max() > 1:
            problem = "input images"
    if problem:
        raise InputError(f"the {problem} of samples {rows[:5].tolist()}… differ from run {run.name!r}; pass the data the run "
                         "was captured from, in the same order")


def _module(model: nn.Module, name: str, role: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        hint = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][-5:] or list(modules)[1:6]
        raise InputError(f"the {role} has no module {name!r}; modules look like {hint}")
    return modules[name]


def _last_conv(model: nn.Module, role: str) -> str:
    convs = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise InputError(f"grad_cam needs a conv layer, and the {role} has no nn.Conv2d; name a layer with layers=, "
                         "or use attention_x_gradient for transformers")
    return convs[-1]


def _embedding(probe: ModelProbe, name: str | None) -> nn.Module:
    model, role = probe.model, probe.role
    if name is not None:
        return _module(model, name, role)
    found = probe.family.input_embeddings(model)
    if found is None:
        raise InputError(f"the {role} takes token ids but has no nn.Embedding; name its embedding module with embedding=")
    return found


def _name_of(model: nn.Module, module: nn.Module | None) -> str | None:
    return next((name for name, m in model.named_modules() if m is module), None)


def _baseline_ids(probe: ModelProbe, ids: torch.Tensor, inputs: Any, baseline: Any) -> torch.Tensor:
    """Token ids of the integrated-gradients baseline: ``baseline`` (a token id) or the pad id at every real token."""
    if baseline is None:
        baseline = probe.family.pad_token_id(probe.model)
    if not isinstance(baseline, int | np.integer):
        raise InputError(f"the baseline of a text model is a token id (an int), got {type(baseline).__name__}")
    mask = attention_mask(inputs)
    fill = torch.full_like(ids, int(baseline))
    return fill if mask is None else torch.where(mask.bool(), fill, ids)
