"""The plain-text summary of a run, shared by ``run.info()`` and ``kdviz info``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kdviz.layer_map import describe_layer_map


def format_count(n: int | None) -> str:
    """12_345_678 -> '12.3M'; None (not recorded) -> '?'."""
    if n is None:
        return "?"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def quality(model: dict[str, Any]) -> str:
    """'accuracy 97.2%' and/or 'perplexity 5.31', or 'no labels'."""
    parts = []
    if model.get("accuracy") is not None:
        parts.append(f"accuracy {100 * model['accuracy']:.1f}%")
    if model.get("perplexity") is not None:
        parts.append(f"perplexity {model['perplexity']:.2f}")
    return ", ".join(parts) or "no labels"


def model_line(role: str, model: dict[str, Any]) -> str:
    heads = model.get("heads") or []
    attention = f"{len(heads)} attention layers × {max(heads)} heads" if heads else "no attentions"
    return (
        f"  {role:<8} {model['name']} ({format_count(model['n_params'])} params): {quality(model)}; "
        f"{attention}; {len(model.get('feature_names') or [])} feature layers"
    )


def run_summary(name: str, meta: Mapping[str, Any], *, where: str | None = None, steps: Sequence[int] = (),
                attributions: Mapping[str, Mapping[str, int]] | None = None,
                generation: Mapping[str, Any] | None = None) -> str:
    """The readable summary of a run from its ``meta.json``, its recorded ``steps``, its ``attributions`` (target ->
    method -> number of samples explained) and, for generated continuations, its ``generation`` attributes (unit and
    settings); ``where`` it is stored is left out when None (for exports)."""
    teacher, student = meta["teacher"], meta["student"]
    sizes = (teacher.get("n_params"), student.get("n_params"))
    ratio = f"{sizes[0] / max(1, sizes[1]):.1f}×" if None not in sizes else "not recorded"
    lines = [
        f"kdviz run {name!r}" + (f" at {where}" if where is not None else ""),
        f"  task     {meta['task']}, {meta['n_samples']} samples"
        + (f", {meta['n_classes']} classes" if meta.get("n_classes") and meta["task"] == "classification" else "")
        + (f", vocabulary {meta['n_classes']}" if meta.get("n_classes") and meta["task"] == "tokens" else ""),
        model_line("teacher", teacher),
        model_line("student", student),
        f"  size     teacher/student parameters: {ratio}",
    ]
    text = meta.get("text") or {}
    if text.get("tokenizations") == 2:  # a run of two tokenizers (kdviz.capture_text): its tokens are spans
        vocabularies = " / ".join(f"{meta[role].get('vocabulary', '?'):,} pieces" for role in ("teacher", "student"))
        lines.append(f"  text     two tokenizations ({vocabularies}); the run's tokens are the spans they share")
    if generation is not None:  # a run of kdviz.generate: its samples are continuations, student then teacher
        settings = generation.get("settings") or {}
        how = "greedy" if not settings.get("do_sample") else (
            f"sampled (T={_number(settings.get('temperature'))}, top-p {_number(settings.get('top_p'))})")
        draws = "1 draw" if settings.get("n") == 1 else f"{_number(settings.get('n'))} draws"
        lines.append(f"  generate {_number(settings.get('prompts'))} prompts × {draws}, each "
                     f"continued by the student and by the teacher, {how}, ≤ {_number(settings.get('max_new_tokens'))} "
                     "new tokens")
    if meta["layer_map"]["pairs"]:
        lines.append(f"  layers   {meta['layer_map'].get('spec', 'given')} map over {meta['layer_map'].get('unit', 'layers')}: "
                     f"{describe_layer_map(meta['layer_map']['pairs'])}")
    capture = meta.get("capture", {})
    settings = ", ".join(f"{k}={v}" for k, v in capture.items() if k in ("batch_size", "attentions", "spatial_p", "topk", "device"))
    lines.append(f"  capture  {settings}; kdviz {meta.get('kdviz_version', '?')}, {meta.get('created', '')}")
    if steps:
        lines.append(f"  history  {len(steps)} snapshots of the student, steps {steps[0]}–{steps[-1]} (run.at_step(step))")
    for target, methods in (attributions or {}).items():
        counts = ", ".join(f"{method} ({count})" for method, count in methods.items())
        lines.append(f"  attrib.  explaining {target}: {counts}")
    return "\n".join(lines)


def _number(value: Any) -> str:
    """A number from a run's attributes as text; anything else (the attributes are not checked) as "?"."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else "?"
