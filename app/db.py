"""Engines, sessions and schema migrations for SQLite (embedded default) and PostgreSQL.

Nothing here is created at import time: callers build an engine from a URL (normally
`get_settings().database_url`), and the FastAPI lifespan keeps it on `app.state`. Migrations run
through Alembic's Python API with a `Config` built in code, so neither the working directory nor an
`alembic.ini` matters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from carrygate.store.sessions import make_engine, normalize_url, session_factory

__all__ = ["make_engine", "normalize_url", "session_factory", "get_session", "upgrade_to_head", "current_revision_is_head"]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


async def get_session(request: Request) -> AsyncIterator[Session]:
    """FastAPI dependency: one session per request from the factory stored on `app.state.session_factory`.

    An async generator, so that FastAPI runs it on the event loop instead of sending its start and its end
    to the threadpool (two thread hand-offs per request). Creating a session does no I/O; closing one does
    only while it still holds a connection (an open transaction), and that close goes to the threadpool."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    session = factory()
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


def alembic_config(url: str) -> Config:
    """An Alembic `Config` for this repository's `migrations/` folder and the given database."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation treats '%' specially (URL-encoded passwords).
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def head_revision() -> str | None:
    """The newest revision in `migrations/versions`."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def upgrade_to_head(url: str) -> str | None:
    """Apply every pending migration to the database at `url`; return the revision it is now at."""
    command.upgrade(alembic_config(url), "head")
    return head_revision()


def downgrade_to(url: str, revision: str = "base") -> None:
    """Revert the database at `url` to `revision` (default: no tables at all)."""
    command.downgrade(alembic_config(url), revision)


def current_revision(engine: Engine) -> str | None:
    """The revision stamped in the database, or None for an unmigrated one."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def current_revision_is_head(engine: Engine) -> bool:
    """True when the database is migrated to the newest revision (used by `/readyz`)."""
    return current_revision(engine) == head_revision()
