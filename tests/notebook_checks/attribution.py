"""Checks run after the last cell of notebooks/attribution.ipynb, in its kernel (tests/notebook_runner.py):
what the notebook shows is what its text says. Kept out of the notebook, so a reader sees only the lesson."""

assert run.attribution_targets() == {"teacher_pred": ["grad_cam", "integrated_gradients", "saliency"]}
assert run.attribution("grad_cam").maps("student").shape == (300, 8, 8)
assert sum(q["count"] for q in ag.quadrant_counts(table).values()) == 300
assert 0 < float(data.agreement("grad_cam", "teacher_pred", "spearman").mean()) <= 1  # above what unrelated maps score
assert vit.attribution("attention_x_gradient").heads("teacher").shape == (300, 4, 4)
assert lm.attribution("integrated_gradients").maps("teacher").shape == (64, 64)
