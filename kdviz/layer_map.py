"""Which student layer is compared with which teacher layer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kdviz.errors import InputError


def resolve_layer_map(spec: str | Mapping[int, int], n_teacher: int, n_student: int) -> list[dict[str, int]]:
    """Pairs ``{"student": i, "teacher": j}`` for a layer-map spec.

    - ``"uniform"`` (TinyBERT): student layer i ↔ teacher layer round((i + 1)·L_t / L_s) − 1, which is
      i·k + k − 1 when k = L_t / L_s is an integer; the last layers always meet.
    - ``"last"``: the student's last layer ↔ the teacher's last layer.
    - a dict ``{student_layer: teacher_layer}``.
    Different depths are normal; zero layers on either side give no pairs.
    """
    if n_teacher == 0 or n_student == 0:
        if isinstance(spec, Mapping) and spec:
            raise InputError("layer_map was given, but one of the models has no captured layers to map")
        return []
    if isinstance(spec, Mapping):
        pairs = []
        for student, teacher in spec.items():
            s, t = int(student), int(teacher)
            if not (0 <= s < n_student and 0 <= t < n_teacher):
                raise InputError(
                    f"layer_map entry {student}->{teacher} is out of range: the student has {n_student} layers "
                    f"and the teacher {n_teacher} (indices start at 0)"
                )
            pairs.append({"student": s, "teacher": t})
        return sorted(pairs, key=lambda p: p["student"])
    if spec == "uniform":
        return [{"student": i, "teacher": max(0, int((i + 1) * n_teacher / n_student + 0.5) - 1)} for i in range(n_student)]
    if spec == "last":
        return [{"student": n_student - 1, "teacher": n_teacher - 1}]
    raise InputError(f"layer_map must be 'uniform', 'last' or a dict {{student_layer: teacher_layer}}, got {spec!r}")


def describe_layer_map(pairs: list[dict[str, Any]]) -> str:
    return ", ".join(f"S{p['student']}→T{p['teacher']}" for p in pairs) or "none"
