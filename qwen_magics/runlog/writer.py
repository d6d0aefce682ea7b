"""A background thread that stores queued rows, so a cell's answer never waits for the disk."""

from __future__ import annotations

import atexit
import queue
import sys
import threading
from typing import Any, Callable

_BATCH = 100
_GATHER = 0.05  # seconds a row waits for others to share its transaction (a map's rows come in a stream)
_IDLE = 1.0  # seconds without rows after which the thread ends (the next row starts another)


class Writer:
    """Hands queued rows to ``store`` in batches on one daemon thread, started by the first row.

    Rows that come within ``_GATHER`` seconds of each other (a map's) share one
    batch, of at most ``_BATCH`` rows; :meth:`flush` stores what waits at once.
    While a batch gathers, the thread sleeps and looks at the queue once per
    ``_GATHER``, so the rows of a busy map queue without waking it one by one.

    The thread ends once nothing has come for ``idle`` seconds, calling
    ``on_idle`` (which closes the file), so a kernel keeps no thread and no
    open file between runs.  At interpreter exit the queue is drained (for up
    to five seconds), so the last cell's run is kept.
    """

    def __init__(self, store: Callable[[list[dict[str, Any]]], Any], *, idle: float = _IDLE,
                 on_idle: Callable[[], None] | None = None) -> None:
        self._store, self._idle, self._on_idle = store, idle, on_idle
        self._queue: queue.SimpleQueue[dict[str, Any] | threading.Event | None] = queue.SimpleQueue()
        self._hurry = threading.Event()  # set by flush and stop: a gathering batch is stored at once
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # held to start, feed or end the thread, so no item is left unread

    def put(self, row: dict[str, Any]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="qwen-magics-runlog", daemon=True)
                self._thread.start()
                atexit.register(self.flush, 5.0)
            self._queue.put(row)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is stored; ``False`` if ``timeout`` ran out first."""
        done = threading.Event()
        with self._lock:
            if self._thread is None:
                return True
            self._queue.put(done)
            self._hurry.set()
        return done.wait(timeout)

    def stop(self) -> None:
        """Store what is queued and end the thread (a later ``put`` starts a new one)."""
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            self._queue.put(None)
            self._hurry.set()
        thread.join()

    def _loop(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self._idle)
            except queue.Empty:
                if self._ended():
                    break
                continue
            stopping = False
            pending: list[dict[str, Any]] = []  # rows that share the next transaction: each costs more than its rows
            for item in [first, *self._gathered(isinstance(first, dict))]:
                if isinstance(item, dict):
                    pending.append(item)
                    if len(pending) < _BATCH:
                        continue
                if pending:
                    self._write(pending)
                    pending = []
                if isinstance(item, threading.Event):
                    item.set()
                stopping = stopping or item is None
            if pending:
                self._write(pending)
            if stopping and self._ended():  # rows queued after the stop are stored first
                break
        if self._on_idle is not None:
            self._on_idle()

    def _gathered(self, rows: bool) -> list[dict[str, Any] | threading.Event | None]:
        """What is queued after the first item; after a row, what comes until ``_GATHER`` passes without
        another, the batch is full, or :meth:`flush` or :meth:`stop` hurries it."""
        items: list[dict[str, Any] | threading.Event | None] = []
        while rows and len(items) + 1 < _BATCH and not self._hurry.wait(_GATHER):
            more = self._drained()
            if not more:
                break
            items += more
        self._hurry.clear()
        return items + self._drained()

    def _drained(self) -> list[dict[str, Any] | threading.Event | None]:
        """Everything queued now, without waiting."""
        items: list[dict[str, Any] | threading.Event | None] = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def _write(self, rows: list[dict[str, Any]]) -> None:
        try:
            self._store(rows)
        except Exception:  # a bug (the store catches the file's own failures): report it, keep writing
            sys.excepthook(*sys.exc_info())

    def _ended(self) -> bool:
        """End the thread if nothing is queued; ``True`` if it ends."""
        with self._lock:
            if not self._queue.empty():
                return False
            self._thread = None
            atexit.unregister(self.flush)
            return True
