"""`RedrawOnce`: a figure change draws its plot once in the browser, not three to five times.

Panel 1.9's Plotly view calls ``Plotly.relayout(plot, {width, height})`` after every layout pass of the page, even when
the size has not changed, and any change anywhere causes a pass (a sample list's new options, a page's loading
state). Each call redraws the plot in full: on the Attribution page a method change drew each of its five plots four
times, 15–120 ms each. And a new figure arrives without the width Panel gave the last one, so ``Plotly.react`` sizes
it itself, ``Plotly.Plots.resize`` sizes it again and Panel then sets its width: three draws for one change.

`RedrawOnce`, placed once in a page, makes both calls do only what changes something:
- ``Plotly.react`` keeps the plot's current width and height when the new layout names none;
- ``Plotly.relayout`` of only a width and height the plot has already is answered at once, without a redraw.

A plot that does change size is redrawn as before. Notebooks and the dashboard hold one each; `kdviz export` writes
plain plotly divs and needs none.
"""

from __future__ import annotations

from panel.custom import JSComponent

# Installed on the page's plotly.js once (the flag), as soon as plotly.js has loaded (it may load after this).
REDRAW_ONCE_JS = """
const SIZE = ["width", "height"];

function install(Plotly) {
  if (Plotly.__kdvizRedrawOnce) return;
  Plotly.__kdvizRedrawOnce = true;
  const react = Plotly.react, relayout = Plotly.relayout;
  Plotly.react = function (gd, data, layout, ...rest) {
    const now = gd && gd.layout;
    if (now && layout && typeof layout === "object" && !Array.isArray(layout)) {
      for (const key of SIZE) {
        if (layout[key] === undefined && typeof now[key] === "number") layout[key] = now[key];
      }
    }
    return react.call(this, gd, data, layout, ...rest);
  };
  Plotly.relayout = function (gd, update, ...rest) {
    const full = gd && gd._fullLayout, now = (gd && gd.layout) || {};
    if (full && update && typeof update === "object" && rest.length === 0) {
      const keys = Object.keys(update);
      if (keys.length && keys.every((k) => SIZE.includes(k) && now[k] === update[k] && full[k] === update[k])) {
        return Promise.resolve(gd);
      }
    }
    return relayout.call(this, gd, update, ...rest);
  };
}

export function render() {
  let tries = 0;
  const attempt = () => {
    if (window.Plotly) install(window.Plotly);
    else if (tries++ < 600) setTimeout(attempt, 50);
  };
  attempt();
}
"""


class RedrawOnce(JSComponent):
    """An empty element whose script makes a figure change draw each changed plot once (see the module)."""

    _esm = REDRAW_ONCE_JS


def redraw_once() -> RedrawOnce:
    """One `RedrawOnce` for a page: no size, no margin, nothing shown."""
    return RedrawOnce(width=0, height=0, margin=0, css_classes=["kd-redraw-once"])
