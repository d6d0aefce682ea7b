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

    The thread ends once nothing has come for ``idle`` seconds, calling
    ``on_idle`` (which closes the file), so a kernel keeps no thread and no
    open file between runs.  At interpreter exit the queue is drained (for up
    to five seconds), so the last cell's run is kept.
    """

    def __init__(self, store: Callable[[list[dict[str, Any]]], Any], *, idle: float = _IDLE,
                 on_idle: Callable[[], None] | None = None) -> None:
        self._store, self._idle, self._on_idle = store, idle, on_idle
        self._queue: queue.SimpleQueue[dict[str, Any] | threading.Event | None] = queue.SimpleQueue()
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
        return done.wait(timeout)

    def stop(self) -> None:
        """Store what is queued and end the thread (a later ``put`` starts a new one)."""
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            self._queue.put(None)
        thread.join()

    def _loop(self) -> None:
        pending: list[dict[str, Any]] = []  # rows that share the next transaction: each costs more than its rows
        while True:
            try:  # rows that come within _GATHER of the one before join it
                item = self._queue.get(timeout=_GATHER if pending else self._idle)
            except queue.Empty:
                if pending:
                    self._write(pending)
                    pending = []
                elif self._ended():
                    break
                continue
            if isinstance(item, dict):
                pending.append(item)
                if len(pending) < _BATCH:
                    continue
            if pending:
                self._write(pending)
                pending = []
            if isinstance(item, threading.Event):
                item.set()
            elif item is None and self._ended():  # rows queued after the stop are stored first
                break
        if self._on_idle is not None:
            self._on_idle()

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
