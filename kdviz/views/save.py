"""Saving any view as PNG or SVG (for a paper or slides) through kaleido and an installed Chromium.

kaleido drives a headless Chromium; kdviz finds Debian's (``apt-get install -y chromium``) or the one named by
``BROWSER_PATH``, and says so plainly when there is none. Nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import plotly.graph_objects as go

from kdviz.errors import InputError, OptionalDependencyError

FORMATS = ("png", "svg", "pdf")
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
KNOWN_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome", "/snap/bin/chromium")
NO_BROWSER = ("saving a figure as {fmt} needs a Chromium for kaleido, and none was found: install Debian's "
              "(apt-get install -y chromium) or set BROWSER_PATH to a Chrome/Chromium executable. Without one, use the "
              "camera button of the figure's toolbar (PNG in the browser) or `kdviz export` (offline HTML).")


def find_browser() -> str | None:
    """The Chromium kaleido will use: ``BROWSER_PATH`` if it exists, else one on PATH, else a usual install path."""
    named = os.environ.get("BROWSER_PATH")
    if named and Path(named).exists():
        return named
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return next((path for path in KNOWN_PATHS if Path(path).exists()), None)


def save_figure(fig: go.Figure, path: str | os.PathLike, *, scale: float = 2.0, width: int | None = None,
                height: int | None = None) -> Path:
    """Write ``fig`` to ``path``; the format is the suffix (``.png``, ``.svg`` or ``.pdf``). PNGs are drawn at
    ``scale`` × the figure's size (2: sharp on slides). Returns the path."""
    path = Path(path).expanduser()
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise InputError(f"cannot tell the image format from {path.name!r}; end the name in one of .png, .svg, .pdf")
    browser = find_browser()
    if browser is None:
        raise OptionalDependencyError(NO_BROWSER.format(fmt=fmt.upper()))
    os.environ.setdefault("BROWSER_PATH", browser)  # kaleido (choreographer) reads it
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.write_image(str(path), format=fmt, scale=scale, width=width or fig.layout.width, height=height or fig.layout.height)
    except Exception as exc:  # kaleido's errors vary with its version and the browser's
        raise OptionalDependencyError(f"kaleido could not draw the figure with {browser} ({type(exc).__name__}: {exc}); "
                                      "check that this Chromium starts headless, or set BROWSER_PATH to another") from exc
    return path
