"""What every renderer shares: the event interface and time-based throttling.

A renderer sees only events and the result they fold into; it never learns
where they came from.  Text arrives in many small deltas, but a display is
refreshed at most once per ``interval`` seconds, with a guaranteed final
refresh in :meth:`finish`, so a fast stream cannot flood the front end.

The interval also stretches when refreshing holds the stream up (a slow
machine, a slow front-end channel, a stream that keeps the CPU busy): the
stream may wait for the display at most ``BUDGET`` of the time; but the
interval never grows beyond ``STRETCH`` intervals, so a busy machine still
sees the answer grow twice a second.  What the stream waited is the refresh's
own duration when the stream runs in the same thread (widgets, the local
model); a driver that streams in another thread measures it (see
:meth:`Renderer.refresh_if_due`).
"""

from __future__ import annotations

import time
from typing import Callable

from .. import events as ev
from ..result import Result


BUDGET = 0.005
STRETCH = 5


class Renderer:
    """Base class: feed events, refresh when due, finish once."""

    def __init__(self, interval: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._dirty = False
        self._last_refresh = float("-inf")
        self._gap = interval
        self._refreshes = 0
        self._spent = 0.0  # what the refreshes so far held the stream up, in all

    def handle(self, event: ev.Event, result: Result) -> None:
        """Take one event; refresh the display if the interval has passed."""
        self.take(event, result)
        self.refresh_if_due(result)

    def take(self, event: ev.Event, result: Result) -> None:
        """Take one event of a batch without refreshing (the driver refreshes after the batch)."""
        self.on_event(event, result)
        if isinstance(event, (ev.TextDelta, ev.ReasoningDelta, ev.ToolCallDelta)):
            self._dirty = True

    def seconds_until_due(self) -> float | None:
        """How long the driver may wait for events before a refresh is owed (None: nothing pending)."""
        if not self._dirty:
            return None
        return self.seconds_until_allowed()

    def seconds_until_allowed(self) -> float:
        """How long until the interval allows the next refresh (0: now)."""
        return max(0.0, self._last_refresh + self._gap - self.clock())

    def refresh_if_due(self, result: Result, waited: float | None = None) -> None:
        """Refresh if the interval has passed; the next interval grows when refreshing holds the stream up.

        ``waited``: the running total of the time the stream has waited for the
        display, from a driver that streams in another thread.  The stream then
        pays for a refresh only when it has something to do meanwhile; waiting
        on the network, it pays nothing and the answer keeps growing every
        interval.  Without it, the stream is taken to wait for the whole refresh.
        """
        if self._dirty and self.clock() - self._last_refresh >= self._gap:
            self._last_refresh = start = self.clock()
            self._dirty = self.refresh(result)
            self._refreshes += 1
            if waited is None:
                self._spent += self.clock() - start
                counted = self._refreshes
            else:  # the stream reports later: its total covers the refreshes before this one
                self._spent, counted = waited, self._refreshes - 1
            if counted:  # on average over the stream, so one unlucky refresh does not stretch the next interval
                self._gap = min(max(self.interval, self._spent / counted / BUDGET), STRETCH * self.interval)

    # Surfaces override these.
    def notice(self, text: str) -> None:
        """Show a one-line warning or note above the answer."""

    def on_event(self, event: ev.Event, result: Result) -> None:
        """Record an event (cheap: no display traffic here)."""

    def refresh(self, result: Result) -> bool:
        """Bring the display up to date with what has arrived; True if some of it is left for the next refresh."""
        return False

    def tool_run(self, run) -> None:
        """Show a tool call the model made and what came of it (a :class:`~qwen_magics.tools.ToolRun`)."""

    def finish(self, result: Result) -> None:
        """Final refresh and the footer; called exactly once, whatever happened."""
