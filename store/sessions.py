"""Engines and sessions for SQLite (embedded default) and PostgreSQL.

Part of the store (`store/`), below the API and the workers; the API's `app/db.py` adds migrations on
top. Nothing is created at import time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def normalize_url(url: str) -> str:
    """Pin PostgreSQL URLs to psycopg 3 (`postgresql://` and `postgres://` would pick psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while a worker writes; SQLite leaves foreign keys off unless asked.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        # In WAL mode NORMAL stays consistent after a crash of the process or the OS and skips an
        # fsync per commit; only a power cut may roll back the last commits (SQLite's documentation).
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for `url`.

    Args:
        url: SQLAlchemy URL; `sqlite:///path` or `postgresql[+psycopg]://...`.
        **kwargs: passed on to `sqlalchemy.create_engine`.

    Returns:
        An engine; SQLite connections have WAL and foreign keys on and may cross threads.
    """
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.database != ":memory:" and "poolclass" not in kwargs:
        # FastAPI runs sync routes on a 40-thread pool: the default 5 + 10 connections time out under
        # 100 concurrent clients (measured by bench/api_load.py).
        kwargs.setdefault("pool_size", 20)
        kwargs.setdefault("max_overflow", 40)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            # The embedded default needs no set-up: create the data dir on first use.
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"check_same_thread": False, **kwargs.pop("connect_args", {})}
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session maker bound to `engine`; objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)




class SqliteWriteLock:
    """Writers of one SQLite file take turns here, across threads and processes, before they write.

    SQLite lets one writer in at a time and makes the others retry in its busy handler, which sleeps 1, 2,
    5, 10, ... ms between tries: under a burst of short write transactions from several API processes
    (`carrygate serve --api-workers N`) most of a submission's latency was those sleeps. A thread lock and
    then `flock` on `<database>.write-lock` hand the turn over as soon as the holder is done (the kernel
    wakes the waiter). Only the hot write paths take it (the rate limit, a new job); every other writer
    still meets SQLite's own lock, which stays the guarantee.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread = threading.Lock()
        self._fd: int | None = None

    def __enter__(self) -> SqliteWriteLock:
        self._thread.acquire()
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread.release()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread.release()


_write_locks: dict[str, SqliteWriteLock] = {}
_write_locks_guard = threading.Lock()


def write_lock(engine: Engine) -> contextlib.AbstractContextManager[object]:
    """The `SqliteWriteLock` of `engine`'s database file (one per file and process); a no-op elsewhere
    (PostgreSQL queues its writers itself, and an in-memory SQLite database has no file to lock)."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:" or url.database.startswith("file:"):
        return contextlib.nullcontext()
    path = str(Path(url.database).expanduser().resolve())
    with _write_locks_guard:
        lock = _write_locks.get(path)
        if lock is None:
            lock = _write_locks[path] = SqliteWriteLock(Path(path + ".write-lock"))
    return lock
