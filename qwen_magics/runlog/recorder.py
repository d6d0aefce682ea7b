"""Runs into the run log: one :class:`Recorder` per loaded extension, the log opened on first use.

Every surface hands a finished run to :meth:`Recorder.record` after its answer
is shown; the record is stored from a background thread
(:meth:`~qwen_magics.runlog.RunLog.write_async`), so no answer waits for the
disk.  sqlite3 and the log are imported on the first run, not when the
extension loads.  A log that cannot be written costs one warning line per
kernel, printed in a cell by :meth:`Recorder.show_warnings`; the runs go on.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import Record, RunLog

_END_OF_CELL_WAIT = 0.5  # seconds a cell's end waits for its record, so a failure is reported in that cell


class Recorder:
    """Writes runs to the log named by ``settings`` (``log``, ``log_path``), and reads it back."""

    def __init__(self, settings: Any, shell: Any = None) -> None:
        self.settings = settings
        self.shell = shell
        self._log: RunLog | None = None
        self._lock = threading.Lock()
        self._warnings: list[str] = []
        self._written = False  # since the end of the last cell
        self._kernel_id: str | None | bool = False  # False: not looked up yet

    def log(self) -> RunLog:
        """The run log at ``log_path`` (else ``$QWEN_MAGICS_LOG``, else the user data folder), opened on first use."""
        from . import RunLog, default_path

        path = Path(self.settings.log_path).expanduser() if self.settings.log_path else default_path()
        with self._lock:
            if self._log is None or self._log.path != path:
                if self._log is not None:
                    self._log.close()
                self._log = RunLog(path, on_warning=self._warnings.append)
            return self._log

    def record(self, request: Any, result: Any, *, conversation: str | None = None, group_id: str | None = None,
               group_kind: str | None = None) -> None:
        """Queue one finished run for the log (nothing if ``settings.log`` is off); never raises."""
        if not self.settings.log:
            return
        try:
            from . import record_from

            record = record_from(result, request, conversation=conversation, group_id=group_id,
                                 group_kind=group_kind, notebook=os.environ.get("JPY_SESSION_NAME") or None,
                                 kernel_id=self.kernel_id())
            self.log().write_async(record)
            self._written = True
        except Exception as err:  # noqa: BLE001 - the log never fails a run; the line says what went wrong
            self._warnings.append(f"qwen-magics: could not record the run in the log ({type(err).__name__}: {err}); "
                                  "the run goes on without it")

    def cached(self, request: Any) -> Record | None:
        """The latest complete logged run of exactly this request, if any."""
        from . import cache_key_of

        return self.log().cached(cache_key_of(request))

    def end_of_cell(self) -> None:
        """After a cell that logged a run: wait briefly for its record, then print any warning in that cell."""
        if self._written and self._log is not None:
            self._log.flush(_END_OF_CELL_WAIT)
        self._written = False
        self.show_warnings()

    def show_warnings(self) -> None:
        """Print the lines the log reported (each failure is reported once per kernel)."""
        while self._warnings:
            print(f"⚠ {self._warnings.pop(0)}")

    def kernel_id(self) -> str | None:
        """The kernel's id, from its connection file's name (``kernel-<id>.json``), when in a kernel."""
        if self._kernel_id is False:
            self._kernel_id = _kernel_id(self.shell)
        return self._kernel_id  # type: ignore[return-value]


def _kernel_id(shell: Any) -> str | None:
    if getattr(shell, "kernel", None) is None:
        return None
    try:
        from ipykernel.connect import get_connection_file

        stem = Path(get_connection_file()).stem
    except Exception:  # noqa: BLE001 - not an ipykernel app (another kernel): no id to record
        return None
    return stem.removeprefix("kernel-") or None
