"""`carrygate migrate`: bring the configured database to the newest schema revision.

The server also migrates on start; this command is for release steps and containers that run
migrations separately (`CARRYGATE_DATABASE_URL=postgresql://... carrygate migrate`).
"""

from __future__ import annotations

import typer
from sqlalchemy.engine import make_url

from app.db import upgrade_to_head
from app.settings import get_settings


def migrate_command() -> None:
    """Apply all pending database migrations (SQLite file in the data dir unless CARRYGATE_DATABASE_URL is set)."""
    url = get_settings().database_url
    revision = upgrade_to_head(url)
    typer.echo(f"database {make_url(url).render_as_string(hide_password=True)} at revision {revision}")
