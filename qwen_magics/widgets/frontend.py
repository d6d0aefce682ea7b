"""A new notebook cell from a widget's click, through ipylab, where the front end takes one.

A click reaches the kernel as a widget message, outside any execute request, so
IPython's ``set_next_input`` has no reply to ride on.  ipylab (a JupyterLab
extension, so also in Notebook 7) runs the front end's own commands from the
kernel: ``notebook:insert-cell-below`` adds a code cell under the active cell,
which is the cell whose output holds the button (a click or keyboard focus in a
cell's output makes that cell the active one, wherever the cursor was), and
``notebook:replace-selection`` types the text into the new cell.

The kernel's one ipylab front end is made when a widget that needs it is shown
(ipylab imported then, not with the package); a front end that runs ipylab
answers "ready" soon after.  One that does not (ipylab not installed, the
classic notebook, VS Code, a terminal) never answers, and :func:`insert_below`
says so by returning False.  The answer is kept for the kernel's life: a page
reloaded in JupyterLab answers again, but a kernel that a JupyterLab page
answered for and that only a front end without ipylab shows later still sends
the commands, which then insert nothing.
"""

from __future__ import annotations

import warnings
from typing import Any

_front_end: Any = None
_ready = False

INSERT_BELOW = "notebook:insert-cell-below"
TYPE_TEXT = "notebook:replace-selection"


def connect() -> None:
    """Make the kernel's ipylab front end, once, if ipylab is installed; it answers "ready" when a front end runs it."""
    global _front_end
    if _front_end is not None:
        return
    try:
        with warnings.catch_warnings():  # ipylab 1.1 declares a trait the way traitlets deprecates: not the user's
            warnings.simplefilter("ignore", DeprecationWarning)
            from ipylab import JupyterFrontEnd
    except ImportError:
        return
    _front_end = JupyterFrontEnd()
    _front_end.on_ready(_on_ready)


def _on_ready() -> None:
    global _ready
    _ready = True


def insert_below(text: str) -> bool:
    """A new code cell holding ``text`` under the active cell; False where no front end runs ipylab's commands."""
    if not _ready:
        return False
    _front_end.commands.execute(INSERT_BELOW)
    _front_end.commands.execute(TYPE_TEXT, {"text": text})
    return True
