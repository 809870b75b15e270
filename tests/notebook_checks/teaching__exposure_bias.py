"""Checks run after the last cell of notebooks/teaching/exposure_bias.ipynb, in its kernel (tests/notebook_runner.py):
what the notebook shows is what its text says. Kept out of the notebook, so a reader sees only the lesson."""

same = compare_generations(teacher, teacher, prompts[:3], tokenizer=tokenizer, max_new_tokens=10, progress=False)
assert all(g.fork is None and np.allclose(g.on_policy.stats["kl"], 0, atol=1e-6) for g in same)
assert 0 < on < 1 and 0 < off < 1 and all((g.on_policy.stats["kl"] >= 0).all() for g in greedy)
assert on_sampled > off_sampled  # what the lesson says about the sampled continuations (seeded, so reproducible)
print("checks passed")
