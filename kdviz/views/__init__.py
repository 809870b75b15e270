"""Floor 4: pure functions from runs or arrays to plotly figures; `theme` holds the one colour language."""
