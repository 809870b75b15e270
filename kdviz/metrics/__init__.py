"""Floor 3: pure metric functions and streaming accumulators. No UI, no disk I/O."""
