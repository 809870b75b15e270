"""What the feature views read from a run: pooled features of one layer by rows, and CKA between every teacher and
student layer, read from the run's cache or streamed from its features (and stored in the cache when allowed).

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
from kdviz.metrics import relations
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
    n = run.n_samples
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="CKA", unit="batch")
    # each layer's array, found once: a pooled run that cannot give tokens as samples says so before any batch
    t_arrays = [stored_layer(run.teacher, name, tokens) for name in t_names]
    s_arrays = [stored_layer(run.student, name, tokens) for name in s_names]
    summary = summary_position(run)
    for start in starts:
        stop = min(n, start + batch_size)
        add_pooled_batch(accumulator, [array[start:stop] for array in t_arrays], [array[start:stop] for array in s_arrays],
                         conv=conv, tokens=tokens, mask=mask_array[start:stop] if mask_array is not None else None,
                         summary=summary)
    result = cka_result(accumulator, t_names, s_names, conv=conv, tokens=tokens)
    if cache is True:
        run.write_cache(key, {k: result[k] for k in ("cross", "teacher", "student")},
                        {k: v for k, v in result.items() if k not in ("cross", "teacher", "student")})
    return result



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


def feature_layer_map(run: Run) -> list[tuple[int, int]] | None:
    """The run's (student, teacher) layer map when its indices refer to the captured feature layers, else None."""
    unit = run.meta["layer_map"]["unit"]
    same_count = len(run.teacher.feature_names) == len(run.teacher.heads) and len(run.student.feature_names) == len(run.student.heads)
    return run.layer_map if unit == "features" or same_count else None


def first_labels(run: Run, samples: int) -> np.ndarray | None:
    """[samples] labels of the first samples of a classification run (None otherwise), to colour projections by class."""
    return run.labels[:samples] if run.task == "classification" and run.has_labels else None


def alignment_scores(run: Run, result: dict[str, Any], pairs: list[tuple[int, int]], *, samples: int,
                     conv: str = "flatten") -> list[dict[str, Any]]:
    """Projector R² and mutual-kNN overlap for each (student, teacher) index pair of a `cka_matrix` result, over the
    first ``samples`` samples (tokens averaged, so each sample is one point)."""
    scores = []
    for student, teacher in pairs:
        t_name, s_name = result["teacher_layers"][teacher], result["student_layers"][student]
        x_t = pooled_features(run, "teacher", t_name, slice(0, samples), conv=conv, tokens="mean")
        x_s = pooled_features(run, "student", s_name, slice(0, samples), conv=conv, tokens="mean")
        scores.append({"teacher": t_name, "student": s_name, "r2": relations.projector_fit(x_s, x_t, alpha=1.0),
                       "knn": relations.mutual_knn(x_t, x_s, k=min(10, len(x_t) - 1))})
    return scores
