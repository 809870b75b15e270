"""The dashboard's URL query (``?run=NAME&sample=I&step=S&page=P&present=1``), parsed strictly: a value that is
not exactly what it must be is ignored, never converted by guesswork and never allowed to raise (a URL is untrusted input).

- ``run``: the name of a served run (never a path);
- ``sample``: ASCII digits, at most 9 of them (``str.isdigit`` also accepts '²' and '٣', which ``int`` refuses);
- ``step``: ASCII digits, one of the run's recorded training steps (checked by the dashboard);
- ``page``: a page title, in any case (``logits``, ``Attention``…);
- ``present``: ``1`` (presentation mode) or ``0`` (not), nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MAX_VALUE_BYTES = 256
_INDEX = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class Query:
    """What a URL asks the dashboard to open; None where it asks for nothing valid."""

    run: str | None = None
    sample: int | None = None
    step: int | None = None
    page: str | None = None
    present: bool | None = None


def parse_query(args: Mapping[str, Sequence[bytes]] | None, *, runs: Sequence[str], pages: Sequence[str]) -> Query:
    """The valid part of a session's query arguments (Bokeh's ``session_args``: name → list of raw bytes)."""
    args = args or {}
    run = _text(args, "run")
    page = _text(args, "page")
    titles = {title.lower(): title for title in pages}
    return Query(
        run=run if run in runs else None,
        sample=_index(_text(args, "sample")),
        step=_index(_text(args, "step")),
        page=titles.get(page.lower()) if page is not None else None,
        present={"1": True, "0": False}.get(_text(args, "present") or ""),
    )


def _text(args: Mapping[str, Sequence[bytes]], key: str) -> str | None:
    values = args.get(key)
    if not values or not isinstance(values[0], bytes | str) or len(values[0]) > MAX_VALUE_BYTES:
        return None
    value = values[0]
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value


def _index(text: str | None) -> int | None:
    return int(text) if text is not None and _INDEX.fullmatch(text) else None
