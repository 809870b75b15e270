"""Checks run after the last cell of notebooks/teaching/teacher_assistant.ipynb, in its kernel (tests/notebook_runner.py):
what the notebook shows is what its text says. Kept out of the notebook, so a reader sees only the lesson."""

acc = out["results"]["accuracy"]
assert acc["teacher"] > acc["assistant"] > max(acc["student (direct)"], acc["student (via assistant)"])
