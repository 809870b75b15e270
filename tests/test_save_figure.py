"""Views saved as PNG and SVG through kaleido and Debian's Chromium; a clear error without a browser."""

from __future__ import annotations

import numpy as np
import pytest
from browser import require_chromium

from kdviz.errors import InputError, OptionalDependencyError
from kdviz.views import logits as views
from kdviz.views import save


@pytest.fixture
def figure():
    rng = np.random.default_rng(0)
    return views.sample_drilldown(rng.normal(size=10), rng.normal(size=10), T=4.0, target=3, sample_index=7)


@pytest.mark.browser
def test_a_view_is_saved_as_png_and_svg(figure, tmp_path):
    require_chromium()
    png = save.save_figure(figure, tmp_path / "drilldown.png", scale=1)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png.read_bytes()[16:20], "big"), int.from_bytes(png.read_bytes()[20:24], "big")
    assert height == figure.layout.height  # drawn at the figure's own height (scale 1)
    assert width > 300
    svg = save.save_figure(figure, tmp_path / "drilldown.svg").read_text()
    assert svg.lstrip().startswith("<svg") and "Sample 7" in svg  # the title is there, as text


def test_without_a_browser_the_error_says_how_to_get_one(figure, tmp_path, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "missing"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(save, "KNOWN_PATHS", ())
    with pytest.raises(OptionalDependencyError, match="apt-get install -y chromium"):
        save.save_figure(figure, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_the_format_comes_from_the_name(figure, tmp_path):
    with pytest.raises(InputError, match=r"\.png, \.svg, \.pdf"):
        save.save_figure(figure, tmp_path / "figure.jpeg")
