"""``arena keys``: manage API keys directly in the database (run it where the server runs)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from arena import keys
from arena.db import make_engine, session_scope
from arena.settings import Settings

app = typer.Typer(help="Create, list and revoke API keys (works on ARENA_DATABASE_URL directly).")
out = Console()


@app.command()
def create(
    name: Annotated[str, typer.Option(help="Who or what the key is for.")] = "cli",
    role: Annotated[str, typer.Option(help="admin | registrar | worker")] = "registrar",
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    if role not in keys.ROLES:
        raise typer.BadParameter(f"role must be one of {', '.join(keys.ROLES)}", param_hint="--role")
    with session_scope(make_engine(Settings().resolved_database_url())) as session:
        created = keys.create_key(session, name=name, role=role)  # type: ignore[arg-type]
    out.print(created.key, highlight=False, soft_wrap=True)


@app.command("list")
def list_() -> None:
    """List keys (prefixes only)."""
    with session_scope(make_engine(Settings().resolved_database_url())) as session:
        rows = keys.list_keys(session)
    table = Table("id", "name", "role", "prefix", "created", "revoked")
    for r in rows:
        table.add_row(str(r.id), r.name, r.role, r.prefix + "…", f"{r.created_at:%Y-%m-%d %H:%M}",
                      f"{r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "")
    out.print(table)


@app.command()
def revoke(key_id: int) -> None:
    """Revoke a key by id."""
    from arena.errors import NotFound

    try:
        with session_scope(make_engine(Settings().resolved_database_url())) as session:
            keys.revoke_key(session, key_id=key_id)
    except NotFound as exc:
        raise typer.BadParameter(exc.message) from exc
    out.print(f"revoked key {key_id}")
