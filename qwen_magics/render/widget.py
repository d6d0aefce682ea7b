"""Streaming into a widget: each part of the answer is an HTML widget in a column.

The same parts as in a cell (:mod:`qwen_magics.render.parts`), so a column's
widget traffic also grows linearly with its answer.  Widget state may be set
from the package's loop thread: ipywidgets sends it as comm messages, which
need no cell to be running.
"""

from __future__ import annotations

import ipywidgets as w

from .parts import Bundle, PartsRenderer


class WidgetRenderer(PartsRenderer):
    """Throttled output into ``box`` (emptied first, so a column can be re-run)."""

    def __init__(self, box: w.Box, **kw) -> None:
        self.box = box
        box.children = ()
        super().__init__(self._new_part, **kw)

    def _new_part(self, bundle: Bundle):
        part = w.HTML(bundle["text/html"], layout=w.Layout(margin="0"))
        self.box.children = (*self.box.children, part)
        return lambda new: setattr(part, "value", new["text/html"])
