"""Import optional dependencies with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from kdviz.errors import OptionalDependencyError


def require_transformers(feature: str) -> ModuleType:
    try:
        return importlib.import_module("transformers")
    except ImportError as exc:
        raise OptionalDependencyError(f"{feature} needs Hugging Face transformers: pip install 'kdviz[hf]'") from exc
