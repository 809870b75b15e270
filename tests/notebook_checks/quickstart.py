"""Checks run after the last cell of notebooks/quickstart.ipynb, in its kernel (tests/notebook_runner.py):
what the notebook shows is what its text says. Kept out of the notebook, so a reader sees only the lesson."""

assert [r.name for r in runs] == ["digits-cnn", "digits-vit", "charlm", "on-policy", "cross-tokenizer"]
assert run.teacher.attention(0).shape == (500, 4, 17, 17)
assert mine.teacher.spatial("layer3").shape == (200, 4, 4) and mine.teacher.description["accuracy"] > 0.9
assert explorer.values.shape == (run.n_samples,)
assert cka["cross"].shape == (len(run.teacher.feature_names), len(run.student.feature_names))
