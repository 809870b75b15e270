"""Checks run after the last cell of notebooks/teaching/temperature.ipynb, in its kernel (tests/notebook_runner.py):
what the notebook shows is what its text says. Kept out of the notebook, so a reader sees only the lesson."""

probs = lab.figures()["softmax"].data[0].y
assert max(probs) < 0.5
tckd, weighted, total = lab.figures()["dkd"].data[0].y
assert abs(tckd + weighted - total) < 1e-9
