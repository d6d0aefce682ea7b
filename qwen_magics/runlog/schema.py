"""The log's file: opened in WAL mode, migrated from older versions, set aside when it is not a log.

``PRAGMA application_id`` marks a file as this log and ``PRAGMA user_version``
counts the :data:`MIGRATIONS` applied to it, so a later release opens an older
file by applying the rest.  A file that is not SQLite, or is another program's
database, is renamed beside itself (never deleted) and a new log started.
Full-text search is an FTS5 index of prompts and answers (the ``unicode61``
tokenizer: words, any case and accent), kept by triggers, built where the
SQLite library has FTS5.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime
from pathlib import Path

APPLICATION_ID = 0x51774D67  # "QwMg"

MIGRATIONS: list[tuple[str, ...]] = [
    (  # 1: one row per run, and the index that lists the latest first
        """CREATE TABLE runs (
            seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, started TEXT NOT NULL,
            model TEXT, protocol TEXT, endpoint TEXT, prompt TEXT, messages TEXT, parameters TEXT,
            answer TEXT, reasoning TEXT, tool_runs TEXT, finish_reason TEXT, state TEXT, error TEXT,
            input_tokens INTEGER, output_tokens INTEGER, reasoning_tokens INTEGER, cached_tokens INTEGER,
            ttft REAL, elapsed REAL, request_id TEXT,
            conversation TEXT, group_id TEXT, group_kind TEXT, notebook TEXT, kernel_id TEXT)""",
        "CREATE INDEX runs_started ON runs(started)",
    ),
    (  # 2: the run's cost and its cache key (looked up by --cache), and runs by group
        "ALTER TABLE runs ADD COLUMN cost REAL",
        "ALTER TABLE runs ADD COLUMN cache_key TEXT",
        "CREATE INDEX runs_cache_key ON runs(cache_key, started)",
        "CREATE INDEX runs_group ON runs(group_id)",
    ),
    (  # 3: each generated token's probability, alternatives and entropy, for a run made with --logprobs K
        "ALTER TABLE runs ADD COLUMN logprobs TEXT",
    ),
]
VERSION = len(MIGRATIONS)

_FULL_TEXT = (
    "CREATE VIRTUAL TABLE runs_fts USING fts5(prompt, answer, content='runs', content_rowid='seq', "
    "tokenize='unicode61')",
    "CREATE TRIGGER runs_fts_insert AFTER INSERT ON runs BEGIN "
    "INSERT INTO runs_fts(rowid, prompt, answer) VALUES (new.seq, new.prompt, new.answer); END",
    "CREATE TRIGGER runs_fts_delete AFTER DELETE ON runs BEGIN "
    "INSERT INTO runs_fts(runs_fts, rowid, prompt, answer) VALUES ('delete', old.seq, old.prompt, old.answer); END",
    "CREATE TRIGGER runs_fts_update AFTER UPDATE OF prompt, answer ON runs BEGIN "
    "INSERT INTO runs_fts(runs_fts, rowid, prompt, answer) VALUES ('delete', old.seq, old.prompt, old.answer); "
    "INSERT INTO runs_fts(rowid, prompt, answer) VALUES (new.seq, new.prompt, new.answer); END",
    "INSERT INTO runs_fts(runs_fts) VALUES ('rebuild')",
)


class NotALog(Exception):
    """The file is not SQLite, is damaged, or is another program's database."""


def is_damage(error: BaseException) -> bool:
    """Whether SQLite found the file itself unreadable (as opposed to locked, read-only or full)."""
    text = str(error)
    return isinstance(error, sqlite3.DatabaseError) and ("not a database" in text or "malformed" in text)


def open_log(path: Path, *, timeout: float, full_text: bool) -> tuple[sqlite3.Connection, bool]:
    """A connection to the log at ``path`` (created and migrated as needed), and whether it has full-text search.

    Raises :class:`NotALog` for a file to set aside; ``sqlite3.Error`` or
    ``OSError`` when the file cannot be opened or written at all.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        _prepare(conn)
        return conn, full_text and _with_full_text(conn)
    except BaseException as error:
        conn.close()
        if is_damage(error):
            raise NotALog(str(error)) from error
        raise


def set_aside(path: Path, why: str) -> Path | None:
    """Rename ``path`` (and its WAL files) to ``<name>.<why>-<time>``; ``None`` if it is gone already."""
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    target, n = path.with_name(f"{path.name}.{why}-{stamp}"), 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.{why}-{stamp}-{n}"), n + 1
    try:
        os.rename(path, target)
    except FileNotFoundError:  # another process set it aside first
        return None
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.rename(side, target.with_name(target.name + suffix))
    return target


def _prepare(conn: sqlite3.Connection) -> None:
    _check(conn)  # before anything is written: another program's file stays as it was
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; a power cut may lose the last runs only
    if conn.execute("PRAGMA user_version").fetchone()[0] >= VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then find nothing to do
    try:
        _check(conn)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version={max(version, VERSION)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _check(conn: sqlite3.Connection) -> None:
    """Raise :class:`NotALog` unless the file is this log or empty."""
    app = conn.execute("PRAGMA application_id").fetchone()[0]
    if app == APPLICATION_ID:
        return
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if app or tables:
        raise NotALog(f"another program's database (application id {app}, {tables} schema objects)")


def _with_full_text(conn: sqlite3.Connection) -> bool:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs_fts'").fetchone():
        return True
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs_fts'").fetchone():
            for statement in _FULL_TEXT:
                conn.execute(statement)
        conn.execute("COMMIT")
        return True
    except sqlite3.OperationalError as error:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if "fts5" in str(error):  # a SQLite build without FTS5
            return False
        raise
