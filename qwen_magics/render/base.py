"""What every renderer shares: the event interface and time-based throttling.

A renderer sees only events and the result they fold into; it never learns
where they came from.  Text arrives in many small deltas, but a display is
refreshed at most once per ``interval`` seconds, with a guaranteed final
refresh in :meth:`finish`, so a fast stream cannot flood the front end.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from .. import events as ev

if TYPE_CHECKING:
    from ..result import Result


class Renderer:
    """Base class: take events, refresh when due, finish once."""

    def __init__(self, interval: float = 0.1, clock: Callable[[], float] = time.monotonic,
                 separate_error: bool = False) -> None:
        self.interval = interval
        self.clock = clock
        self.separate_error = separate_error
        """The caller shows a failed run's error as a line of its own (a cell raises it as its error): the
        footer then names the state without the error, and a run refused before any output shows nothing."""
        self._dirty = False
        self._last_refresh = float("-inf")

    def handle(self, event: ev.Event, result: Result) -> None:
        """Take one event; refresh the display if the interval has passed."""
        self.take(event, result)
        self.refresh_if_due(result)

    def take(self, event: ev.Event, result: Result) -> None:
        """Take one event without refreshing (the driver refreshes when due)."""
        self.on_event(event, result)
        if isinstance(event, (ev.TextDelta, ev.ReasoningDelta, ev.ToolCallDelta)):
            self._dirty = True

    def seconds_until_due(self) -> float | None:
        """How long until a refresh is owed (None: nothing is pending)."""
        return self.seconds_until_allowed() if self._dirty else None

    def seconds_until_allowed(self) -> float:
        """How long until the interval allows the next refresh (0: now)."""
        return max(0.0, self._last_refresh + self.interval - self.clock())

    def refresh_if_due(self, result: Result) -> None:
        """Refresh if something is pending and the interval has passed."""
        if self._dirty and self.clock() - self._last_refresh >= self.interval:
            self._last_refresh = self.clock()
            self._dirty = self.refresh(result)

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
