"""A background thread that stores queued rows, so a cell's answer never waits for the disk."""

from __future__ import annotations

import atexit
import queue
import sys
import threading
from typing import Any, Callable

_BATCH = 100


class Writer:
    """Hands queued rows to ``store`` in batches on one daemon thread, started by the first row.

    At interpreter exit the queue is drained (for up to five seconds), so the
    last cell's run is kept.
    """

    def __init__(self, store: Callable[[list[dict[str, Any]]], Any]) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[dict[str, Any] | threading.Event | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, row: dict[str, Any]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="qwen-magics-runlog", daemon=True)
                self._thread.start()
                atexit.register(self.flush, 5.0)
        self._queue.put(row)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is stored; ``False`` if ``timeout`` ran out first."""
        if self._thread is None or not self._thread.is_alive():
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def stop(self) -> None:
        """Store what is queued and end the thread (a later ``put`` starts a new one)."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join()
        atexit.unregister(self.flush)

    def _loop(self) -> None:
        pending: list[dict[str, Any]] = []
        while True:
            item = self._queue.get()
            if isinstance(item, dict):
                pending.append(item)
                if len(pending) < _BATCH and not self._queue.empty():
                    continue  # gather what else is waiting into one transaction
            if pending:
                try:
                    self._store(pending)
                except Exception:  # a bug (the store catches the file's own failures): report it, keep writing
                    sys.excepthook(*sys.exc_info())
                pending = []
            if isinstance(item, threading.Event):
                item.set()
            elif item is None:
                return
