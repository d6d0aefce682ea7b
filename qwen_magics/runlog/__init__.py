"""The run log: every run remembered in a SQLite file, searchable, with costs and an opt-in cache.

Where: ``log.db`` in the user data folder (``~/.local/share/qwen-magics/log.db``
on Linux, ``~/Library/Application Support/qwen-magics/log.db`` on macOS,
``%LOCALAPPDATA%\\qwen-magics\\log.db`` on Windows), or the file named by
``QwenMagics.log_path`` or the environment variable ``QWEN_MAGICS_LOG``.

What one run's record holds: its id and start time (UTC); the model, protocol and
region or base URL (never the API key); the messages sent (system prompt,
conversation turns, prompt; images and videos as a reference naming their type,
size and SHA-256, not their bytes); the parameters sent; the answer, reasoning
and tool runs; finish reason, state and error line; tokens (input, output,
reasoning, cached), time to first token, elapsed time, request id and cost where
known; the conversation, comparison or dataset job it belongs to; the notebook's
path and kernel id where the front end makes them known; and a hash of the
request for ``--cache``.  Any text shaped like an API key, or equal to the
key in the environment, is replaced by ``***`` before it is written.

Turning it off: ``%config QwenMagics.log = False`` for the session, ``--no-log``
for one cell (a sensitive prompt); deleting is ``RunLog.delete(id)`` or
``RunLog.delete_before(date)``.

The log never fails a run: if the file cannot be written (a read-only folder, a
full disk, another process holding it past the retries), the run goes on and
one warning line says so, once per process.  A file that is not a log (damaged,
or another program's database) is renamed ``log.db.corrupt-<time>``, never
deleted, and a new log started.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"Record": "record", "cache_key_of": "record", "record_from": "record",
          "RunLog": "store", "RunLogWarning": "store", "default_path": "store"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """The log's names, imported on first use: loading the extension (which imports the recorder
    beside them) opens no SQLite and imports neither the store nor platformdirs."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
