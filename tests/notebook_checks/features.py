"""Checks run after the last cell of notebooks/features.ipynb, in its kernel (tests/notebook_runner.py):
what the notebook shows is what its text says. Kept out of the notebook, so a reader sees only the lesson."""

assert suggestion["pairs"] == [(0, 0), (1, 1), (2, 2)]
assert abs(fm.cka(x, y)) < 0.05 < 0.5 < fm.cka(x, y, unbiased=False)
assert explorer.suggestion["pairs"] == suggestion["pairs"]
