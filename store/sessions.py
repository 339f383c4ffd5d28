"""Engines and sessions for SQLite (embedded default) and PostgreSQL.

Part of the store (`store/`), below the API and the workers; the API's `app/db.py` adds migrations on
top. Nothing is created at import time.
"""

from __future__ import annotations

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


