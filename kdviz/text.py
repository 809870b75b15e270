"""Text from runs (class names, tokens) made safe and visible before it reaches a figure or a page."""

from __future__ import annotations

from html import escape

VISIBLE_WHITESPACE = {" ": "␣", "\n": "⏎", "\t": "⇥", "\r": "␍"}


def escape_label(text: str) -> str:
    """HTML-escape a string for plotly text/hover and Panel HTML text, so ``<script>`` shows as text and never runs.

    Quotes are left alone: plotly decodes &lt; &gt; &amp; in text but shows &quot; literally, and text content
    needs no quote escaping (never put the result inside an HTML attribute).
    """
    return escape(str(text), quote=False)


def display_token(token: str) -> str:
    """Make whitespace tokens visible (␣, ⏎, ⇥); other tokens are returned unchanged (escape them separately)."""
    if token in VISIBLE_WHITESPACE:
        return VISIBLE_WHITESPACE[token]
    return "".join(VISIBLE_WHITESPACE.get(ch, ch) for ch in token) if token.strip() == "" else token
