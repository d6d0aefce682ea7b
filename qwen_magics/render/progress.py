"""The live view of a dataset map: rows done, failed and in flight, tokens, speed, ETA, cost, latest answers.

In a notebook it is one display, updated in place (``display_id``), so the
front end receives one message per refresh however many rows finish.
Refreshes are paced as the driver paces a run's (:class:`~qwen_magics.runner.Pace`):
at most every ``interval`` seconds (0.1), further apart as a long run goes on
(up to once a second), so the traffic of a whole run stays small.  A terminal
gets a tqdm bar.  Answers are model output: shown escaped,
first line only, cut short.

A Batch job is shown in the same view: while it runs, the counts are the
service's (``request_counts``) and the job's status leads the line; once it
is collected, its rows are folded in as a live map's are.
"""

from __future__ import annotations

import asyncio
import html
import sys
import time
from collections import deque
from typing import Any, Callable

from IPython.display import display

from ..runner import Pace

_LATEST = 3
_CUT = 80
_SLOWEST = 1.0


class Progress:
    """Counts folded from each finished row's result, shown throttled in one display (or a tqdm bar)."""

    def __init__(self, total: int, *, notebook: bool, priced: Any = None, interval: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.notebook, self.priced, self.interval, self.clock = total, notebook, priced, interval, clock
        self.answered = self.failed = self.recalled = self.in_flight = 0
        self.tokens_in = self.tokens_out = 0
        self.cost = 0.0
        self.latest: deque[tuple[str, str, str]] = deque(maxlen=_LATEST)
        self.refreshes = 0
        self._started = 0.0
        self._pace: Pace | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._handle: Any = None
        self._bar: Any = None
        self._line: str | None = None
        self.status: str | None = None
        """A Batch job's status while it runs (``validating``, ``in_progress``...); None for a live map."""

    def begin(self, job: Any = None) -> None:
        """Show the view, counting the rows of ``job`` already answered (taken from the run log)."""
        self.recalled = self.answered = len(job.recalled) if job is not None else 0
        self._started = self.clock()
        if self.notebook:
            self._handle = display(self.bundle(), raw=True, display_id=True)
            self._pace = Pace(self.interval, self.clock, slowest=_SLOWEST)
            self._pace.mark()
        else:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.recalled, unit="row", mininterval=self.interval,
                             file=sys.stdout, dynamic_ncols=True)

    def running(self, in_flight: int) -> None:
        self.in_flight = in_flight
        self._changed()

    def add(self, label: Any, result: Any) -> None:
        """One finished row."""
        self._fold(label, result)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(f"{self.failed} failed, {self.in_flight} in flight", refresh=False)
        self._changed()

    def batch(self, status: str, completed: int, failed: int) -> None:
        """A Batch job's counts as the service reports them (its rows are not back yet)."""
        self.status, self.failed = status, failed
        self.answered = self.recalled + completed
        self.in_flight = max(0, self.total - self.answered - failed)
        if self._bar is not None:
            self._bar.update(self.answered + failed - self._bar.n)
            self._bar.set_postfix_str(f"{status}, {failed} failed", refresh=False)
        self._changed()

    def collected(self, rows: list[tuple[Any, Any]]) -> None:
        """A collected Batch job's rows (label, result), in place of the service's counts (shown by ``finish``)."""
        self.status, self.in_flight = None, 0
        self.answered, self.failed = self.recalled, 0
        for label, result in rows:
            self._fold(label, result)
        if self._bar is not None:
            self._bar.update(self.answered + self.failed - self._bar.n)

    def _fold(self, label: Any, result: Any) -> None:
        if result.complete:
            self.answered += 1
            self.latest.append((str(label), "✓", _first_line(result.text)))
        else:
            self.failed += 1
            self.latest.append((str(label), "✗", _first_line(result.error or "failed")))
        if result.usage is not None:
            self.tokens_in += result.usage.input
            self.tokens_out += result.usage.output
        self.cost += result.cost or 0.0

    def finish(self, line: str) -> None:
        """The final state and the end line."""
        self._line = line
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._handle is not None:
            self._refresh()
        elif self._bar is not None:
            self._bar.close()
            print(line, flush=True)

    # the view

    def stats(self) -> str:
        done = self.answered + self.failed
        fresh = done - self.recalled
        spent = max(1e-9, self.clock() - self._started)
        rate = fresh / spent
        if self.status is not None:  # a Batch job: no tokens are known until it is collected
            parts = [f"batch {self.status}", f"{done:,}/{self.total:,} rows", f"{self.failed:,} failed",
                     f"{self.in_flight:,} waiting", f"{rate:.1f} rows/s"]
        else:
            parts = [f"{done:,}/{self.total:,} rows", f"{self.failed:,} failed", f"{self.in_flight} in flight",
                     f"{self.tokens_in:,} in / {self.tokens_out:,} out tokens", f"{rate:.1f} rows/s"]
        if self._line is None and rate > 0:
            parts.append(f"ETA {_duration((self.total - done) / rate)}")
        if self.priced:
            parts.append(self.priced.money(self.cost))
        return " · ".join(parts)

    def bundle(self) -> dict[str, str]:
        stats = self.stats()
        done = self.answered + self.failed
        plain = [stats, *(f"  {label} {mark} {text}" for label, mark, text in self.latest)]
        rows = "".join(f"<tr><td>{html.escape(label)}</td><td>{mark}</td><td style='text-align:left'>"
                       f"{html.escape(text)}</td></tr>" for label, mark, text in self.latest)
        body = (f"<div class='qwen-map'><progress value='{done}' max='{max(1, self.total)}'></progress> "
                f"<span>{html.escape(stats)}</span>" + (f"<table>{rows}</table>" if rows else ""))
        if self._line is not None:
            plain.append(self._line)
            body += f"<div>{html.escape(self._line)}</div>"
        return {"text/plain": "\n".join(plain), "text/html": body + "</div>"}

    def _changed(self) -> None:
        """Refresh now if the pace allows, else once when it does (one pending refresh at most)."""
        if self._handle is None or self._timer is not None:
            return
        wait = self._pace.wait()
        if wait <= 0:
            self._refresh()
        else:
            self._timer = asyncio.get_running_loop().call_later(wait, self._refresh)

    def _refresh(self) -> None:
        self._timer = None
        self._pace.mark()
        self.refreshes += 1
        self._handle.update(self.bundle(), raw=True)


def _first_line(text: str) -> str:
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return line if len(line) <= _CUT else line[:_CUT - 1] + "…"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
