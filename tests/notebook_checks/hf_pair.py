"""Checks run after the last cell of notebooks/hf_pair.ipynb, in its kernel (tests/notebook_runner.py):
what the notebook shows is what its text says. Kept out of the notebook, so a reader sees only the lesson."""

assert run.teacher.heads == [4, 4, 4, 4] and run.student.heads == [2, 2]
assert run.tokens[0][0] == "[CLS]" and run.student.attention(0).shape == (64, 2, 16, 16)
assert result["cross"].shape == (4, 2)
assert "pair" in attention.figures()
