"""Checks run after the last cell of notebooks/training.ipynb, in its kernel (tests/notebook_runner.py):
what the notebook shows is what its text says. Kept out of the notebook, so a reader sees only the lesson."""

assert len(run.steps) == 13 and run.steps[0] == 0
assert history.series["kl"][-1] < history.series["kl"][0] / 5
assert run.meta["student"]["accuracy"] > 0.95
