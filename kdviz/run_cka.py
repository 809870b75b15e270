"""CKA between every stored teacher layer and student layer of a run, streamed from its features by batch and kept
in the run's cache (``cache/cka-…``). Both the readers (the Features page) and the capture floor use it: `kdviz.capture`
stores the CKA the Features page opens with (`store_opening_cka`) as soon as a run is written, so that a served
dashboard, which never writes, reads it instead of computing it on a visitor's first open.

The metrics floor computes CKA from arrays (`metrics.features.MinibatchCKA`); reading a run and its cache is done
here, so the metrics never touch a run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from kdviz.errors import InputError
from kdviz.metrics import features as fm
from kdviz.metrics.features import MinibatchCKA, add_pooled_batch, cka_result, pool_features
from kdviz.store import Run


def cka_matrix(
    run: Any,
    *,
    teacher_layers: Sequence[str] | None = None,
    student_layers: Sequence[str] | None = None,
    unbiased: bool = True,
    conv: str = "flatten",
    tokens: str = "mean",
    batch_size: int = 256,
    cache: bool | str = True,
    progress: bool = False,
) -> dict[str, Any]:
    """CKA between every captured teacher layer and student layer of a run (and within each model), streamed by batch.

    Reads the stored features ``batch_size`` samples at a time into `MinibatchCKA`, so memory depends on the batch,
    not on N. Pooling as in `pool_features`; token pooling uses the run's attention mask. With ``cache``, the result
    is stored in the run (``cache/cka-…``) and read back next time; ``cache="read"`` reads a stored result but never
    writes (the dashboard serves runs read-only). Returns ``cross`` [L_t, L_s], ``teacher``,
    ``student``, the layer names, ``n`` (samples or tokens used) and ``n_batches``.
    """
    t_names = list(teacher_layers or run.teacher.feature_names)
    s_names = list(student_layers or run.student.feature_names)
    if not t_names or not s_names:
        raise InputError("this run has no captured features; capture with layers=[...] (module paths or globs)")
    layers_digest = hashlib.sha1(json.dumps([t_names, s_names]).encode()).hexdigest()[:12]  # stable across processes
    key = f"cka-{'unbiased' if unbiased else 'biased'}-{conv}-{tokens}-{batch_size}-{layers_digest}"
    if cache not in (True, False, "read"):
        raise InputError(f"cache must be True, False or 'read', not {cache!r}")
    if cache is True and getattr(run, "remote", False):
        cache = "read"  # a run on object storage is published: kdviz reads its cache but never writes into it
    if cache:
        hit = run.read_cache(key)
        if hit is not None:
            return {**{k: v for k, v in hit.items() if k != "attrs"}, **hit["attrs"]}
    mask_array = run.attention_mask
    accumulator = MinibatchCKA(len(t_names), len(s_names), unbiased=unbiased)
    bounds = batch_bounds(run.n_samples, batch_size, smallest=1 if tokens == "tokens" else 4 if unbiased else 2)
    if progress:
        from tqdm.auto import tqdm

        bounds = tqdm(bounds, desc="CKA", unit="batch")
    # each layer's array, found once: a pooled run that cannot give tokens as samples says so before any batch
    t_arrays = [stored_layer(run.teacher, name, tokens) for name in t_names]
    s_arrays = [stored_layer(run.student, name, tokens) for name in s_names]
    summary = summary_position(run)
    for start, stop in bounds:
        add_pooled_batch(accumulator, [array[start:stop] for array in t_arrays], [array[start:stop] for array in s_arrays],
                         conv=conv, tokens=tokens, mask=mask_array[start:stop] if mask_array is not None else None,
                         summary=summary)
    result = cka_result(accumulator, t_names, s_names, conv=conv, tokens=tokens)
    if cache is True:
        run.write_cache(key, {k: result[k] for k in ("cross", "teacher", "student")},
                        {k: v for k, v in result.items() if k not in ("cross", "teacher", "student")})
    return result


def batch_bounds(n: int, batch_size: int, *, smallest: int = 1) -> list[tuple[int, int]]:
    """(start, stop) of each batch of ``batch_size`` over ``n`` samples; a last batch under ``smallest`` samples (the
    debiased HSIC needs 4) joins the one before it, so a run of 257 samples has CKA too."""
    bounds = [(start, min(n, start + batch_size)) for start in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < smallest:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def summary_position(run: Any) -> str:
    """The run's summary token, ``"first"`` (CLS) or ``"last"`` (causal), as its capture chose it."""
    return (run.meta.get("capture") or {}).get("summary_token") or "first"


def stored_layer(side: Any, name: str, tokens: str) -> Any:
    """The array that gives one layer's CKA samples under the ``tokens`` pooling: the features as stored, or for a
    layer pooled while capturing its token mean (``"mean"``) or summary token (``"summary"``)."""
    if name not in side.pooled_names:
        return side.features(name)
    if tokens == "tokens":
        raise InputError(f"the {side.role} layer {name!r} was pooled while capturing, so its tokens cannot be samples; "
                         "choose tokens='mean' or 'summary', or capture again with token_features='tokens'")
    return side.summary_features(name) if tokens == "summary" else side.features(name)


def pooled_features(run: Run, role: str, name: str, rows: slice | np.ndarray, *, conv: str = "flatten",
                    tokens: str = "mean") -> np.ndarray:
    """[m, d] float64 CKA samples of one stored layer for the given rows, pooled as `metrics.features.pool_features`."""
    side = run.teacher if role == "teacher" else run.student
    array = stored_layer(side, name, tokens)
    if not isinstance(rows, slice):
        rows = np.sort(np.asarray(rows))
    data = array[rows]
    mask = run.attention_mask[rows] if run.attention_mask is not None else None
    return pool_features(data, conv=conv, tokens=tokens, mask=mask, summary=summary_position(run)).double().numpy()


def cka_along_steps(run: Any, *, samples: int = 512, cache: bool | str = "read") -> dict[str, np.ndarray]:
    """Debiased CKA of each (teacher layer, student layer) feature pair of the run's layer map at every recorded step
    [S], over the first ``samples`` samples: the Training page's CKA curves, by "teacher ↔ student" label. Empty when
    the layer map is not over the features. Read from the run's cache (``kdviz.distill`` stores it) or computed, and
    stored when ``cache`` is True."""
    names_t, names_s, steps = run.teacher.feature_names, run.student.feature_names, run.steps
    if run.meta["layer_map"]["unit"] != "features" or not names_t or not names_s or run.n_samples < 4 or not steps:
        return {}
    n = min(run.n_samples, samples)
    pairs = [(int(s), int(t)) for s, t in run.layer_map]
    labels = [f"{names_t[t]} ↔ {names_s[s]}" for s, t in pairs]
    digest = hashlib.sha1(json.dumps([labels, list(map(int, steps)), n]).encode()).hexdigest()[:12]
    key = f"training-cka-{digest}"
    if cache and (hit := run.read_cache(key)) is not None:
        return dict(zip(hit["attrs"]["labels"], hit["values"], strict=True))
    teacher = {t: pooled_features(run, "teacher", names_t[t], slice(0, n)) for _, t in pairs}
    values = np.asarray([[fm.cka(teacher[t], pooled_features(run.at_step(step), "student", names_s[s], slice(0, n)))
                          for step in steps] for s, t in pairs])
    if cache is True and not getattr(run, "remote", False):
        run.write_cache(key, {"values": values}, {"labels": labels, "steps": list(map(int, steps))})
    return dict(zip(labels, values, strict=True))


def store_opening_cka(run: Any, *, progress: bool = False) -> bool:
    """Store in ``run`` the CKA its Features page opens with (debiased, conv maps flattened, tokens averaged: the
    defaults of `cka_matrix`; at the last recorded step for a run with history) and, for a run with history, the
    Training page's CKA curves (`cka_along_steps`). False when the run has no features of one model or is published
    read-only (a run on object storage), so there is nothing to store."""
    if not run.teacher.feature_names or not run.student.feature_names or getattr(run, "remote", False):
        return False
    cka_matrix(run.at_step() if run.steps else run, cache=True, progress=progress)
    cka_along_steps(run, cache=True)  # the Training page's curves, for a run with history
    return True
