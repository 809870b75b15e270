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

from kdviz.errors import InputError
from kdviz.metrics.features import MinibatchCKA, add_pooled_batch, cka_result


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


def store_opening_cka(run: Any, *, progress: bool = False) -> bool:
    """Store in ``run`` the CKA its Features page opens with (debiased, conv maps flattened, tokens averaged: the
    defaults of `cka_matrix`; at the last recorded step for a run with history). False when the run has no features
    of one model or is published read-only (a run on object storage), so there is nothing to store."""
    if not run.teacher.feature_names or not run.student.feature_names or getattr(run, "remote", False):
        return False
    cka_matrix(run.at_step() if run.steps else run, cache=True, progress=progress)
    return True
