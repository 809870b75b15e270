"""Floor 5 (notebooks): ipywidgets explorers over the views. They compute no metric of their own."""

from kdviz.widgets.alignment import AlignmentExplorer
from kdviz.widgets.attention import AttentionExplorer
from kdviz.widgets.attribution import AttributionExplorer
from kdviz.widgets.logits import LogitExplorer
from kdviz.widgets.temperature_lab import TemperatureLab

__all__ = ["AlignmentExplorer", "AttentionExplorer", "AttributionExplorer", "LogitExplorer", "TemperatureLab"]
