"""The explorers: one Panel `Viewer` per concern. Each shows inline in a notebook, is a tab of the served dashboard
(`kdviz serve`), gives `kdviz export` its figures and wraps as an ipywidget. Explorers share one `Selection` (run,
step, sample, T) and one `RunLibrary` of cached readers."""

from kdviz.explore.attention import AttentionExplorer
from kdviz.explore.attribution import AttributionExplorer
from kdviz.explore.base import Explorer
from kdviz.explore.features import FeatureExplorer
from kdviz.explore.library import RunLibrary, open_runs
from kdviz.explore.logits import LogitExplorer
from kdviz.explore.overview import OverviewExplorer
from kdviz.explore.selection import Selection
from kdviz.explore.temperature_lab import TemperatureLab
from kdviz.explore.tokens import TokenExplorer
from kdviz.explore.training import TrainingExplorer

EXPLORERS: tuple[type[Explorer], ...] = (OverviewExplorer, LogitExplorer, TokenExplorer, AttentionExplorer,
                                         FeatureExplorer, AttributionExplorer, TrainingExplorer)
"""The dashboard's tabs and the export's sections, in order."""

__all__ = ["EXPLORERS", "AttentionExplorer", "AttributionExplorer", "Explorer", "FeatureExplorer", "LogitExplorer",
           "OverviewExplorer", "RunLibrary", "Selection", "TemperatureLab", "TokenExplorer", "TrainingExplorer", "open_runs"]
