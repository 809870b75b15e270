"""Checks run after the last cell of notebooks/logits.ipynb, in its kernel (tests/notebook_runner.py):
what the notebook shows is what its text says. Kept out of the notebook, so a reader sees only the lesson."""

assert explorer.values.shape == (run.n_samples,)
explorer.selection.T = 1.0  # the slider moves this shared temperature
assert abs(explorer.values - lm.kl(z_t, z_s, 1.0)).max() < 1e-12
assert not lm_explorer.temperature.visible and lm_explorer.T == 1.0
