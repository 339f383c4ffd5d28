"""`carrygate keys create | list | revoke`: API keys in the configured database (no server needed)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from carrygate.app.cli.console import console, stdout_console

keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys (scopes: read, submit, admin).")


def _session():  # noqa: ANN202  (a sqlalchemy Session)
    from carrygate.app.db import make_engine, session_factory, upgrade_to_head
    from carrygate.app.settings import get_settings

    url = get_settings().database_url
    upgrade_to_head(url)
    return session_factory(make_engine(url))()


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="Who or what uses the key, e.g. 'release-ci'.")],
    scope: Annotated[list[str], typer.Option("--scope", help="read, submit or admin (repeat).")],
    rate_limit: Annotated[int | None, typer.Option(help="Job submissions per minute (default: the server's).")] = None,
) -> None:
    """Create a key and print its secret (shown once; only its hash is stored)."""
    from carrygate.app.auth import create_key

    with _session() as session:
        try:
            row, secret = create_key(session, name, scope, rate_limit)
        except ValueError as err:
            console.print(f"[red]error:[/] {err}")
            raise typer.Exit(2) from None
    console.print(f"created key {row.prefix} ({row.name}) with scopes {', '.join(row.scopes)}; store the secret now:")
    typer.echo(secret)


@keys_app.command("list")
def list_command() -> None:
    """List keys (never their secrets)."""
    from carrygate.app.auth import list_keys

    with _session() as session:
        rows = list_keys(session)
    table = Table(title=f"{len(rows)} API key(s)")
    for column in ("id", "prefix", "name", "scopes", "rate/min", "created", "last used", "revoked"):
        table.add_column(column)
    for r in rows:
        table.add_row(r.id, r.prefix, r.name, ",".join(r.scopes), str(r.rate_limit_per_minute or "default"),
                      f"{r.created_at:%Y-%m-%d %H:%M}", f"{r.last_used_at:%Y-%m-%d %H:%M}" if r.last_used_at else "—",
                      f"{r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "")
    stdout_console().print(table)


@keys_app.command("revoke")
def revoke(key: Annotated[str, typer.Argument(help="The key's id or prefix (cg_xxxxxxxx).")]) -> None:
    """Revoke a key; requests with it get 401 from now on."""
    from carrygate.app.auth import revoke_key

    with _session() as session:
        row = revoke_key(session, key)
    if row is None:
        console.print(f"[red]error:[/] no key {key!r}")
        raise typer.Exit(2)
    console.print(f"revoked {row.prefix} ({row.name})")
