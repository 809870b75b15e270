"""How `kdviz export` puts plotly.js and the figures into one HTML file, small enough to attach to an email.

- plotly.js (4.8 MB) is stored gzip-compressed and base64-encoded (1.9 MB); the page unpacks it with the browser's
  own `DecompressionStream` and then draws the figures. A browser without it says so in the page.
- Each figure is its JSON in a ``<script type="application/json">``, its float64 arrays as float32 (7 significant
  digits, more than any hover shows) in plotly's base64 typed arrays, which plotly.js reads as they are. plotly's own
  HTML escapes every "/" of that base64 as ``\\u002f`` (six characters for one); here only ``<`` is escaped, which is
  all a script's content needs (JSON has ``<`` only inside strings, where ``\\u003c`` means the same).
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
import re
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

# a base64 typed array as plotly.io writes it: its "/" escaped, which only lengthens it
_BDATA = re.compile(r'"bdata":"([A-Za-z0-9+=\\u]*)"')


@functools.lru_cache(maxsize=1)
def packed_plotlyjs() -> str:
    """plotly.js, gzip-compressed (fixed mtime: the same bytes every time) and base64-encoded."""
    return base64.b64encode(gzip.compress(get_plotlyjs().encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")


def _single_precision(value: Any) -> Any:
    """``value`` (a figure's JSON tree, whose numpy arrays plotly has made base64 typed arrays) with every float64
    array as float32."""
    if isinstance(value, np.ndarray):
        return value.astype(np.float32) if value.dtype == np.float64 else value
    if isinstance(value, dict) and value.get("dtype") == "f8" and isinstance(value.get("bdata"), str):
        single = np.frombuffer(base64.b64decode(value["bdata"]), dtype="<f8").astype("<f4")
        return {**value, "dtype": "f4", "bdata": base64.b64encode(single.tobytes()).decode("ascii")}
    if isinstance(value, dict):
        return {key: _single_precision(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_single_precision(item) for item in value]
    return value


def figure_json(fig: go.Figure) -> str:
    """``fig`` as JSON that is safe inside a ``<script>`` element: no ``<`` in it, arrays as float32 base64."""
    text = pio.to_json(_single_precision(fig.to_plotly_json()), validate=False)
    text = _BDATA.sub(lambda match: '"bdata":"' + match.group(1).replace("\\u002f", "/") + '"', text)
    if "<" in text:  # plotly.io escapes it already; never let a run's text close the script
        text = text.replace("<", "\\u003c")
    return text


def figure_html(fig: go.Figure, index: int) -> str:
    """An empty div the size of ``fig`` and the figure's JSON, drawn by `LOADER_JS` once plotly.js is unpacked."""
    height = int(fig.layout.height or 450)
    return (f"<div id='kd-figure-{index}' class='plotly-graph-div kd-figure' style='width:100%;height:{height}px'></div>\n"
            f"<script type='application/json' class='kd-figure-data' data-figure='kd-figure-{index}'>{figure_json(fig)}</script>")


def loader_js(config: dict[str, Any]) -> str:
    """The page's one script: unpack plotly.js, run it, then draw every figure in order."""
    return LOADER_JS.replace("CONFIG", json.dumps(config))


LOADER_JS = """
(async () => {
  const packed = document.getElementById('kd-plotlyjs').textContent.trim();
  if (typeof DecompressionStream === 'undefined') {
    document.getElementById('kd-unpack-note').textContent =
      'This browser cannot unpack the figures (no DecompressionStream): open the file in a current Chrome, Edge, Firefox or Safari.';
    return;
  }
  const bytes = Uint8Array.from(atob(packed), (c) => c.charCodeAt(0));
  const code = await new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'))).text();
  const script = document.createElement('script');
  script.textContent = code;
  document.head.appendChild(script);
  for (const data of document.querySelectorAll('script.kd-figure-data')) {
    const figure = JSON.parse(data.textContent);
    await Plotly.newPlot(document.getElementById(data.dataset.figure), figure.data, figure.layout, CONFIG);
  }
})();
"""
