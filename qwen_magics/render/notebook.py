"""Streaming into a notebook cell: each part of the answer is a display of its own.

See :mod:`qwen_magics.render.parts` for why the answer is a chain of parts
(traffic linear in the answer) and how the thinking section behaves.
"""

from __future__ import annotations

import uuid

from IPython.display import display, update_display

from .parts import Bundle, PartsRenderer


def display_part(bundle: Bundle):
    """Show a new display in the current cell; return the function that updates it."""
    display_id = uuid.uuid4().hex
    display(bundle, raw=True, display_id=display_id)
    return lambda new: update_display(new, raw=True, display_id=display_id)


class NotebookRenderer(PartsRenderer):
    """Rich, throttled output in the current cell."""

    def __init__(self, **kw) -> None:
        super().__init__(display_part, **kw)
