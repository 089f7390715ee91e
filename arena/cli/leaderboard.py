"""``arena leaderboard``: the leaderboard as a table, JSON or CSV, and its pictures (talks to the API)."""

from __future__ import annotations

import csv
import io
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
import typer
from rich.console import Console
from rich.table import Table

from arena.cli.client import call, err
from arena.settings import ClientSettings

out = Console()
PLOTS = ("ratings", "win_fraction", "battle_count", "predicted_win_rate")
CSV_COLUMNS = ("rank", "model", "rating", "ci_low", "ci_high", "votes", "wins", "losses", "ties",
               "win_rate", "registered", "parent", "judge_ratio", "mmlu", "ceval", "cmmlu")  # fmt: skip


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class Method(StrEnum):
    bootstrap = "bootstrap"
    sandwich = "sandwich"


def leaderboard_command(
    format: Annotated[Format, typer.Option("--format", help="table | json | csv")] = Format.table,
    url: Annotated[str | None, typer.Option(help="Control-plane URL (env ARENA_URL).")] = None,
    anonymous_only: Annotated[
        bool, typer.Option("--anonymous-only/--all", help="Only votes cast before the reveal.")
    ] = True,
    language: Annotated[str | None, typer.Option(help="Only votes in this language.")] = None,
    min_turns: Annotated[int, typer.Option(help="Only battles with this many turns.")] = 1,
    include_flagged: Annotated[
        bool, typer.Option("--include-flagged/--exclude-flagged", help="Count flagged votes too.")
    ] = False,
    since: Annotated[str | None, typer.Option(help="Unix seconds or ISO 8601.")] = None,
    until: Annotated[str | None, typer.Option(help="Unix seconds or ISO 8601.")] = None,
    method: Annotated[Method, typer.Option(help="Intervals: bootstrap | sandwich.")] = Method.bootstrap,
    rounds: Annotated[int | None, typer.Option(help="Bootstrap rounds (server default 1000).")] = None,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    anchor: Annotated[str | None, typer.Option(help="MODEL:RATING, e.g. vicuna-7b:1000.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Also save the PNG plots in this folder.",
                                              file_okay=False)] = None,
) -> None:
    """Ratings with 95% intervals, ranks, votes and win rates: one row per model."""
    params: dict[str, Any] = {
        "anonymous_only": anonymous_only, "language": language, "min_turns": min_turns,
        "exclude_flagged": not include_flagged, "since": since, "until": until,
        "method": method.value, "rounds": rounds, "seed": seed, "anchor": anchor,
    }  # fmt: skip
    query = urlencode({k: str(v).lower() if isinstance(v, bool) else v
                       for k, v in params.items() if v is not None})  # fmt: skip
    base = url or ClientSettings().url
    board = call("GET", base, f"/api/leaderboard?{query}")
    if format is Format.json:
        typer.echo(json.dumps(board, ensure_ascii=False, indent=1))
    elif format is Format.csv:
        typer.echo(to_csv(board["rows"]), nl=False)
    else:
        out.print(to_table(board))
    if plot is not None:
        plot.mkdir(parents=True, exist_ok=True)
        for kind in PLOTS:
            path = plot / f"{kind}.png"
            path.write_bytes(_png(base, f"/api/leaderboard/plots/{kind}.png?{query}"))
            err.print(f"saved {path}")


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def to_table(board: dict[str, Any]) -> Table:
    filt = board["filter"]
    title = (f"{board['votes']:,} votes · {board['method']}"
             + (f" ({board['rounds']} rounds)" if board["method"] == "bootstrap" else "")
             + ("" if filt["anonymous_only"] else " · named votes too")
             + (f" · language {filt['language']}" if filt["language"] else ""))  # fmt: skip
    unregistered = any(not row["registered"] for row in board["rows"])
    table = Table(title=title, caption="* not registered (imported votes)" if unregistered else None)
    for name in ("rank", "model", "rating", "95% CI", "votes", "win rate", "judge ratio", "MMLU",
                 "C-Eval", "CMMLU"):  # fmt: skip
        table.add_column(name, justify="left" if name == "model" else "right",
                         no_wrap=name in ("rank", "model", "rating", "95% CI", "votes", "win rate"))  # fmt: skip
    for row in board["rows"]:
        rated = row["rating"] is not None
        table.add_row(
            _text(row["rank"]),
            row["model"] + ("" if row["registered"] else "*"),
            f"{row['rating']:.0f}" if rated else "",
            f"+{row['ci_high'] - row['rating']:.0f}/−{row['rating'] - row['ci_low']:.0f}" if rated else "",
            str(row["votes"]),
            _text(row["win_rate"], "{:.1%}"),
            _text(row["judge_ratio"], "{:.1%}"),
            *(_text(row[k], "{:.1%}") for k in ("mmlu", "ceval", "cmmlu")),
        )
    return table


def _text(value: Any, fmt: str = "{}") -> str:
    return "" if value is None else fmt.format(value)


def _png(base: str, path: str) -> bytes:
    try:
        response = httpx.get(base.rstrip("/") + path, timeout=600.0)
    except httpx.HTTPError as exc:
        err.print(f"[red]error:[/red] cannot reach the control plane at {base}: {exc}")
        raise typer.Exit(1) from exc
    if response.status_code >= 400:
        err.print(f"[red]error ({response.status_code}):[/red] {response.text}")
        raise typer.Exit(1)
    return response.content
