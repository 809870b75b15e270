"""Text from runs (class names, tokens) made safe and visible before it reaches a figure or a page, and the check
of the texts a user passes to the language-model tools."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from kdviz.errors import InputError

VISIBLE_WHITESPACE = {" ": "␣", "\n": "⏎", "\t": "⇥", "\r": "␍"}


def check_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list, when it is a non-empty list of non-empty strings; else the InputError that says so."""
    if isinstance(texts, str) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise InputError("texts must be a non-empty list of non-empty strings")
    return list(texts)


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
