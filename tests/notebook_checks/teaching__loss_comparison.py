"""Checks run after the last cell of notebooks/teaching/loss_comparison.ipynb, in its kernel (tests/notebook_runner.py):
what the notebook shows is what its text says. Kept out of the notebook, so a reader sees only the lesson."""

methods = out["results"]["methods"]
assert methods["KD"]["accuracy"] > 0.95 and methods["AT β=100"]["accuracy"] > methods["AT β=1000"]["accuracy"]
