"""Presentation mode for a lecture, from a notebook: ``kdviz.theme.present()`` before making explorers draws their
figures for projection (no text under 18 px, thicker lines); ``present(False)`` turns it off. ``presented(fig)``
does the same to one figure of your own. The visual language itself lives in `kdviz.views.theme`."""

from kdviz.views.theme import PRESENT_TEXT, present, presented, presenting

__all__ = ["PRESENT_TEXT", "present", "presented", "presenting"]
