"""The single colour and type language of kdviz: teacher and student always wear the same colours."""

from __future__ import annotations

TEACHER = "#2563a8"  # blue
STUDENT = "#d9730d"  # orange
NEUTRAL = "#5f6b7a"
BACKGROUND = "#f7f8fa"
CARD = "#ffffff"
FONT_FAMILY = "Inter, 'Helvetica Neue', Arial, sans-serif"

ROLE_COLOURS = {"teacher": TEACHER, "student": STUDENT}
