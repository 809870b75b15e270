"""The explorers under their notebook names: each is the `kdviz.explore` explorer of its concern (a Panel viewer
that shows inline, and wraps as an ipywidget with ``explorer.ipywidget()``)."""

from kdviz.explore import (
    AttentionExplorer,
    AttributionExplorer,
    LogitExplorer,
    TemperatureLab,
    TokenExplorer,
    TrainingExplorer,
)
from kdviz.explore import FeatureExplorer as AlignmentExplorer

__all__ = ["AlignmentExplorer", "AttentionExplorer", "AttributionExplorer", "LogitExplorer", "TemperatureLab",
           "TokenExplorer", "TrainingExplorer"]
