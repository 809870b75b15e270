"""kdviz: see inside knowledge distillation. A teacher and a student go in; interactive views come out."""

from kdviz._version import __version__
from kdviz.attribute import attribute
from kdviz.capture import capture, estimate
from kdviz.errors import KdvizError
from kdviz.generation import generate
from kdviz.store import Run
from kdviz.text_capture import capture_text
from kdviz.train import distill

__all__ = ["KdvizError", "Run", "__version__", "attribute", "capture", "capture_text", "distill", "estimate", "generate"]
