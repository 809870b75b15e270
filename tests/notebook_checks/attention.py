"""Checks run after the last cell of notebooks/attention.ipynb, in its kernel (tests/notebook_runner.py):
what the notebook shows is what its text says. Kept out of the notebook, so a reader sees only the lesson."""

assert len(match.pairs) == 2 and len(match.unmatched_teacher) == 2
assert np.allclose(np.diag(am.head_divergence(run.teacher.attention(0)[:8], run.teacher.attention(0)[:8])), 0, atol=1e-9)
assert explorer.selected("teacher") == (3, 0) and explorer.selected("student") == (1, match.student_of(0))
assert 0 <= at.mean() <= np.sqrt(2)
