"""Checks run after the last cell of notebooks/teaching/omitted_class.ipynb, in its kernel (tests/notebook_runner.py):
what the notebook shows is what its text says. Kept out of the notebook, so a reader sees only the lesson."""

hard, *soft = out["results"]
assert hard["raw_accuracy"] < 0.05
assert max(r["auroc"] for r in soft) > hard["auroc"]
assert max(r["corrected_accuracy"] for r in soft) > hard["corrected_accuracy"]
