"""Checks run after the last cell of notebooks/teaching/forward_reverse_kl.ipynb, in its kernel (tests/notebook_runner.py):
what the notebook shows is what its text says. Kept out of the notebook, so a reader sees only the lesson."""

from kdviz.metrics import logits as lm

z_t, z_s = np.array([[4.0, 3.5, -2.0]]), np.array([[4.0, -2.0, -2.0]])
assert abs(lm.kl(z_t, z_s)[0] - lm.reverse_kl(z_t, z_s)[0]) > 0.1
assert (forward >= 0).all() and (reverse >= 0).all()
