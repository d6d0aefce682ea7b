"""What every renderer shares: the event interface, and how often its display may refresh.

A renderer sees only events and the result they fold into; it never learns
where they came from.  It does not keep time itself: the driver
(:func:`~qwen_magics.runner.drive`) calls :meth:`refresh` at most once per
``interval`` seconds, whatever the number of deltas, and :meth:`finish`
once at the end, so a fast stream cannot flood the front end.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from .. import events as ev

if TYPE_CHECKING:
    from ..result import Result


class Renderer:
    """Base class: take events, refresh when the driver says, finish once.

    ``interval``: the least time between two refreshes (None: no refresh before
    :meth:`finish`); ``clock``: the driver's clock for that pace (tests give a fake one).
    """

    def __init__(self, interval: float | None = 0.1, clock: Callable[[], float] = time.monotonic,
                 separate_error: bool = False) -> None:
        self.interval = interval
        self.clock = clock
        self.separate_error = separate_error
        """The caller shows a failed run's error as a line of its own (a cell raises it as its error): the
        footer then names the state without the error, and a run refused before any output shows nothing."""

    def take(self, event: ev.Event, result: Result) -> None:
        """Take one event without refreshing (the driver refreshes when due)."""
        self.on_event(event, result)

    # Surfaces override these.
    def notice(self, text: str) -> None:
        """Show a one-line warning or note above the answer."""

    def heading(self, text: str) -> None:
        """Show a line that names what follows (``Answer 2 of 3``)."""

    def on_event(self, event: ev.Event, result: Result) -> None:
        """Record an event (cheap: no display traffic here)."""

    def refresh(self, result: Result) -> bool:
        """Bring the display up to date with what has arrived; True if some of it is left for the next refresh."""
        return False

    def tool_run(self, run) -> None:
        """Show a tool call the model made and what came of it (a :class:`~qwen_magics.tools.ToolRun`)."""

    def finish(self, result: Result) -> None:
        """Final refresh and the footer; called exactly once, whatever happened."""
