"""Checks run after the last cell of notebooks/teaching/temperature_alpha.ipynb, in its kernel (tests/notebook_runner.py):
what the notebook shows is what its text says. Kept out of the notebook, so a reader sees only the lesson."""

acc = out["results"]["accuracy"]
assert (acc[:, -1] == acc[0, -1]).all()      # α = 1: labels only, identical at every T
assert acc[-1, 0] > acc[0, -1]               # teacher only at T = 8 beats labels only
