""":class:`RunLog`: write runs to the log file and query them, never failing the caller.

Every operation catches what the file can throw (a read-only folder, a full
disk, a lock held past the retries, a damaged file), reports one line once per
process and path, and returns an empty answer, so a run goes on without its log.
The file opens on first use, so creating a ``RunLog`` costs nothing.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
import warnings
from dataclasses import fields
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from ..errors import InvalidInput, redact, redactor
from . import schema
from .record import Record, utc_iso
from .writer import Writer

T = TypeVar("T")
COLUMNS = tuple(f.name for f in fields(Record))
_JSON = frozenset({"messages", "parameters", "tool_runs", "logprobs"})
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM runs"
_JSON_TEXT = json.JSONEncoder(ensure_ascii=False, default=str).encode  # made once: json.dumps makes one per call
_KEYS_PER_QUERY = 500  # SQLite takes at most 999 parameters in older builds
_WORDY = re.compile(r"\w")
_PUNCTUATED = re.compile(r"\W")  # the index drops punctuation: such a word is also matched as written
_UNSPACED = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff]")  # CJK: the index holds a whole run of it as one word
_WARNED: set[str] = set()  # logs this process has warned about: one line each


class RunLogWarning(UserWarning):
    """The run log could not be read or written; the run itself went on."""


def default_path() -> Path:
    """``$QWEN_MAGICS_LOG``, else ``log.db`` in the user data folder (``~/.local/share/qwen-magics`` on Linux)."""
    if os.environ.get("QWEN_MAGICS_LOG"):
        return Path(os.environ["QWEN_MAGICS_LOG"]).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("qwen-magics", appauthor=False)) / "log.db"


class RunLog:
    """The run log in one SQLite file.

    ``on_warning`` receives the one line about a failure (by default a
    :class:`RunLogWarning`); ``full_text=False`` searches with LIKE even where
    FTS5 is available.  ``timeout`` is how long one attempt waits for another
    process's lock, and ``retries`` how many more attempts follow.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, on_warning: Callable[[str], None] | None = None,
                 full_text: bool = True, timeout: float = 5.0, retries: int = 3) -> None:
        self.path = Path(path).expanduser() if path is not None else default_path()
        self.warning: str | None = None
        """The last failure's line, if any."""
        self._on_warning = on_warning or (lambda line: warnings.warn(line, RunLogWarning, stacklevel=3))
        self._full_text, self._timeout, self._retries = full_text, timeout, retries
        self._conn: sqlite3.Connection | None = None
        self._fts = False
        self._lock = threading.RLock()
        self._writer = Writer(self._insert_rows, on_idle=self._release)

    def __repr__(self) -> str:
        return f"<RunLog {str(self.path)!r}>"

    # writing

    def write(self, record: Record | Mapping[str, Any]) -> bool:
        """Store one run now; ``True`` if it was stored."""
        return self._insert_rows([_row(record)])

    def write_async(self, record: Record | Mapping[str, Any]) -> None:
        """Store one run from a background thread, so the caller never waits for the disk."""
        self._writer.put(_row(record))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every :meth:`write_async` record is stored (or failed); ``False`` on timeout."""
        return self._writer.flush(timeout)

    def close(self) -> None:
        """Store what is queued, then close the file (it reopens if used again)."""
        self._writer.stop()
        self._release()

    def _release(self) -> None:
        """Close the file until the next use (also when the writer has been idle a moment)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _insert_rows(self, rows: list[dict[str, Any]]) -> bool:
        sql = (f"INSERT OR IGNORE INTO runs ({', '.join(rows[0])}) "
               f"VALUES ({', '.join(':' + name for name in rows[0])})")

        def insert(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return True

        return self._run("write", insert, False)

    # reading

    def recent(self, n: int = 20) -> list[Record]:
        """The latest ``n`` runs, newest first."""
        return self._records(f"{_SELECT} ORDER BY started DESC, seq DESC LIMIT ?", (n,))

    def search(self, text: str, n: int = 20) -> list[Record]:
        """The latest ``n`` runs whose prompt or answer has every word of ``text`` (any case).

        With the full-text index a word matches the start of a word ("entrop"
        finds "entropy"); without it, for words in scripts written without spaces
        (Chinese, Japanese), and for words with punctuation ("50%"), it matches
        anywhere in the text, as written.
        """
        words = text.split()
        if not words:
            return self.recent(n)

        def query(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            indexed = [w for w in words if _WORDY.search(w) and not _UNSPACED.search(w)] if self._fts else []
            where, args = [], []
            if indexed:
                where.append("seq IN (SELECT rowid FROM runs_fts WHERE runs_fts MATCH ?)")
                args.append(" AND ".join('"' + w.replace('"', '""') + '"*' for w in indexed))
            for word in (w for w in words if w not in indexed or _PUNCTUATED.search(w)):
                pattern = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                where.append("(prompt LIKE ? ESCAPE '\\' OR answer LIKE ? ESCAPE '\\')")
                args += [pattern, pattern]
            sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY started DESC, seq DESC LIMIT ?"
            return conn.execute(sql, (*args, n)).fetchall()

        return _records(self._run("read", query, []))

    def get(self, id: str) -> Record | None:
        """The run with this id, or with the one id that starts with it; ``None`` if there is none."""
        found = self._matching(id)
        return found[0] if found else None

    def cached(self, cache_key: str) -> Record | None:
        """The latest complete run with this cache key (see :func:`~qwen_magics.runlog.cache_key_of`)."""
        found = self._records(f"{_SELECT} WHERE cache_key = ? AND state = 'complete' ORDER BY started DESC LIMIT 1",
                              (cache_key,))
        return found[0] if found else None

    def cached_many(self, cache_keys: list[str]) -> dict[str, Record]:
        """:meth:`cached` for many keys at once (a map's rows): each key's latest complete run, for the keys
        that have one."""
        found: dict[str, Record] = {}
        for start in range(0, len(cache_keys), _KEYS_PER_QUERY):
            chunk = cache_keys[start:start + _KEYS_PER_QUERY]
            for record in self._records(f"{_SELECT} WHERE cache_key IN ({', '.join('?' * len(chunk))}) "
                                        "AND state = 'complete' ORDER BY started, seq", tuple(chunk)):
                found[record.cache_key] = record  # the latest last
        return found

    def cost(self, since: date | datetime | str | None = None,
             prices: Mapping[str, tuple[float, float] | list[float]] | None = None) -> list[dict[str, Any]]:
        """Runs and tokens per model and UTC day (oldest first), with ``cost`` where known.

        ``prices`` maps a model to its price per million input and output tokens;
        for other models ``cost`` sums the costs recorded with the runs (``None`` if none were).
        """
        where, args = ("WHERE started >= ?", (_moment(since),)) if since is not None else ("", ())
        rows = self._run("read", lambda conn: conn.execute(
            "SELECT model, substr(started, 1, 10) AS day, count(*), sum(input_tokens), sum(output_tokens), "
            f"sum(reasoning_tokens), sum(cached_tokens), sum(cost) FROM runs {where} "
            "GROUP BY model, day ORDER BY day, model", args).fetchall(), [])
        totals = []
        for model, day, runs, input_, output, reasoning, cached, recorded in rows:
            price = (prices or {}).get(model)
            money = ((input_ or 0) * price[0] + (output or 0) * price[1]) / 1_000_000 if price else recorded
            totals.append({"model": model, "day": day, "runs": runs, "input": input_, "output": output,
                           "reasoning": reasoning, "cached": cached, "cost": money})
        return totals

    def to_dataframe(self) -> Any:
        """Every run as a pandas DataFrame, oldest first (JSON columns as text)."""
        try:
            import pandas as pd
        except ImportError:
            raise InvalidInput("The run log as a DataFrame needs pandas", "pip install pandas") from None
        frame = self._run("read", lambda conn: pd.read_sql_query(f"{_SELECT} ORDER BY started, seq", conn), None)
        if frame is None:
            frame = pd.DataFrame(columns=list(COLUMNS))
        frame["started"] = pd.to_datetime(frame["started"], utc=True, format="ISO8601", errors="coerce")
        return frame

    def connect(self) -> sqlite3.Connection:
        """A new connection to the file, for queries of your own (close it when done)."""
        return sqlite3.connect(self.path, timeout=self._timeout)

    # deleting

    def delete(self, id: str) -> bool:
        """Delete the run with this id (or unique id prefix); ``True`` if one was deleted."""
        found = self._matching(id)
        return bool(found) and self._run("write", lambda conn: conn.execute(
            "DELETE FROM runs WHERE id = ?", (found[0].id,)).rowcount > 0, False)

    def delete_before(self, moment: date | datetime | str) -> int:
        """Delete every run started before ``moment`` (a date means its midnight, UTC); how many were deleted."""
        cutoff = _moment(moment)
        return self._run("write", lambda conn: conn.execute(
            "DELETE FROM runs WHERE started < ?", (cutoff,)).rowcount, 0)

    # the file

    def _matching(self, id: str) -> list[Record]:
        prefix = id.strip().lower()
        if not prefix:
            return []
        found = self._records(f"{_SELECT} WHERE id >= ? AND id < ? ORDER BY id LIMIT 2", (prefix, prefix + "~"))
        if len(found) > 1:
            raise InvalidInput(f"More than one run has an id starting with {prefix!r}", "give more of the id")
        return found

    def _records(self, sql: str, args: tuple[Any, ...]) -> list[Record]:
        return _records(self._run("read", lambda conn: conn.execute(sql, args).fetchall(), []))

    def _run(self, action: str, operation: Callable[[sqlite3.Connection], T], fallback: T) -> T:
        """``operation`` on the open file, retried while another process holds the lock; ``fallback`` on failure."""
        with self._lock:
            attempt, set_aside = 0, False
            while True:
                try:
                    if self._conn is None:
                        self._conn, self._fts = schema.open_log(self.path, timeout=self._timeout,
                                                                full_text=self._full_text)
                    return operation(self._conn)
                except (schema.NotALog, sqlite3.DatabaseError) as error:
                    if not set_aside and (isinstance(error, schema.NotALog) or schema.is_damage(error)):
                        set_aside = True
                        self._set_aside(error)
                    elif _is_busy(error) and attempt < self._retries:
                        attempt += 1
                        time.sleep(0.05 * 2**attempt)
                    else:
                        return self._failed(action, error, fallback)
                except (sqlite3.Error, OSError, ValueError) as error:
                    return self._failed(action, error, fallback)

    def _set_aside(self, error: BaseException) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        target = schema.set_aside(self.path, "corrupt")
        if target is not None:
            self._warn(f"qwen-magics: the run log {self.path} was not a readable qwen-magics log ({error}); "
                       f"it was kept as {target.name} and a new log started")

    def _failed(self, action: str, error: BaseException, fallback: T) -> T:
        self._warn(f"qwen-magics: could not {action} the run log {self.path} ({type(error).__name__}: {error}); "
                   "the run goes on without it. Point QwenMagics.log_path (or QWEN_MAGICS_LOG) at a writable file, "
                   "or turn the log off with %config QwenMagics.log = False")
        return fallback

    def _warn(self, line: str) -> None:
        self.warning = line = redact(line)
        if str(self.path) not in _WARNED:
            _WARNED.add(str(self.path))
            self._on_warning(line)


def _is_busy(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and ("locked" in str(error) or "busy" in str(error))


def _records(rows: list[tuple[Any, ...]]) -> list[Record]:
    return [Record(**{name: (json.loads(value) if name in _JSON and value else value)
                      for name, value in zip(COLUMNS, row)}) for row in rows]


def _row(record: Record | Mapping[str, Any]) -> dict[str, Any]:
    """The columns of one run, texts redacted; a mapping with an unknown field raises ``TypeError`` here."""
    record = record if isinstance(record, Record) else Record(**record)
    clean = redactor()
    row: dict[str, Any] = {}
    for name in COLUMNS:
        value = getattr(record, name)
        if name in _JSON:
            value = _JSON_TEXT(value)
        row[name] = clean(value) if isinstance(value, str) else value
    row["prompt"] = clean(record.prompt)
    return row


def _moment(value: date | datetime | str) -> str:
    """A date or time as the text ``started`` is compared with."""
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value) if len(value.strip()) == 10 else datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidInput(f"Not a date: {value!r}",
                               "give a date like 2025-01-31 or a time like 2025-01-31T09:30") from None
    return utc_iso(value) if isinstance(value, datetime) else value.isoformat()
