"""``arena votes``: import and export vote logs in FastChat's clean_battle JSON (admin key)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from arena.cli.client import call, endpoint

app = typer.Typer(help="Import and export votes as FastChat clean_battle JSON (talks to the API).")
out = Console()

Url = Annotated[str | None, typer.Option(help="Control-plane URL [env ARENA_URL].")]
Key = Annotated[str | None, typer.Option(help="Admin API key [env ARENA_API_KEY].")]


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="A clean_battle JSON file (a list of records).",
                                         exists=True, dir_okay=False)],
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Import votes; every record is checked first, and a bad one imports nothing."""
    try:
        records = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise typer.BadParameter(f"{file} is not valid JSON: {exc}", param_hint="FILE") from exc
    base, key = endpoint(url, api_key)
    result = call("POST", base, "/api/votes/import", api_key=key, json=records)
    out.print(f"imported {result['imported']} votes from {file}")


@app.command()
def export(
    file: Annotated[Path, typer.Argument(help="Where to write the clean_battle JSON.")],
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Export every vote (model names included; flagged battles marked)."""
    base, key = endpoint(url, api_key)
    records = call("GET", base, "/api/votes/export", api_key=key)
    file.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    out.print(f"exported {len(records)} votes to {file}")
