"""Checks run after the last cell of notebooks/teaching/attention_transfer.ipynb, in its kernel (tests/notebook_runner.py):
what the notebook shows is what its text says. Kept out of the notebook, so a reader sees only the lesson."""

q = data.spatial("teacher", teacher_layer, 0).reshape(-1)
assert distances.min() >= 0 and distances.max() <= 2
assert np.isfinite(distances).all() and q.size > 0
