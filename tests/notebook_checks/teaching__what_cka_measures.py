"""Checks run after the last cell of notebooks/teaching/what_cka_measures.ipynb, in its kernel (tests/notebook_runner.py):
what the notebook shows is what its text says. Kept out of the notebook, so a reader sees only the lesson."""

assert abs(cka(x, x @ rotation) - 1) < 1e-9 and abs(cka(x, 7 * x) - 1) < 1e-9
assert biased[0] > 0.5 and abs(debiased[0]) < 0.2
