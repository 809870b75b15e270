"""Checks run after the last cell of notebooks/llm.ipynb, in its kernel (tests/notebook_runner.py):
what the notebook shows is what its text says. Kept out of the notebook, so a reader sees only the lesson."""

assert run.tokenizations == 2 and all(r.boundary["kl"].min() >= 0 for r in results)
assert np.allclose(lens.teacher.kl_to_own_final[-1], 0) and np.allclose(lens.student.kl_to_own_final[-1], 0)
assert np.median(lens.teacher.commit_depth) <= np.median(lens.student.commit_depth)
print("checks passed")
