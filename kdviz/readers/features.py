"""What the feature views read from a run: pooled features of one layer by rows, projector fit and mutual-kNN
scores of layer pairs, and (from `kdviz.run_cka`, which the capture floor shares) CKA between every teacher and student
layer, read from the run's cache or streamed from its features.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdviz.metrics import relations
from kdviz.run_cka import cka_matrix, pooled_features, stored_layer, summary_position
from kdviz.store import Run

__all__ = ["alignment_scores", "cka_matrix", "feature_layer_map", "first_labels", "pooled_features", "stored_layer",
           "summary_position"]


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
