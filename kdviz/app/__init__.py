"""Floor 5: the read-only Panel dashboard served by ``kdviz serve``."""
