"""``arena checkpoints``: register, list, show, update and remove checkpoints over the API."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from arena.cli.client import call, endpoint

app = typer.Typer(help="Register and inspect checkpoints (talks to a running control plane).")
out = Console()

Url = Annotated[str | None, typer.Option(help="Control-plane URL [env ARENA_URL].")]
Key = Annotated[str | None, typer.Option(help="API key [env ARENA_API_KEY].")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _parse_meta(pairs: list[str]) -> dict:
    meta: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--meta expects KEY=VALUE, got {pair!r}")
        try:
            meta[key] = json.loads(value)
        except ValueError:
            meta[key] = value
    return meta


@app.command()
def register(
    name: Annotated[str, typer.Argument(help="Unique name, also the model name in /v1 calls.")],
    source: Annotated[str, typer.Argument(help="Checkpoint directory or hub id.")],
    template: Annotated[
        str | None, typer.Option(help="Conversation template (`arena templates list`).")
    ] = None,
    revision: Annotated[str | None, typer.Option(help="Hub revision.")] = None,
    adapter: Annotated[str | None, typer.Option(help="PEFT LoRA adapter directory.")] = None,
    gguf_file: Annotated[str | None, typer.Option(help="GGUF file inside SOURCE.")] = None,
    delta_base: Annotated[
        str | None, typer.Option(help="Base (dir or checkpoint) that SOURCE is a delta of.")
    ] = None,
    parent: Annotated[str | None, typer.Option(help="Parent checkpoint (lineage).")] = None,
    meta: Annotated[list[str], typer.Option(help="Free metadata KEY=VALUE (repeatable).")] = [],  # noqa: B006
    url: Url = None,
    api_key: Key = None,
    as_json: AsJson = False,
) -> None:
    """Validate and register a checkpoint; a refused registration stores nothing."""
    base, key = endpoint(url, api_key)
    body = {
        "name": name, "source": source, "template": template, "revision": revision,
        "adapter": adapter, "gguf_file": gguf_file, "delta_base": delta_base, "parent": parent,
        "meta": _parse_meta(meta),
    }
    row = call("POST", base, "/api/checkpoints", api_key=key, json=body)
    if as_json:
        out.print_json(data=row)
    else:
        out.print(f"registered [bold]{row['name']}[/bold] ({row['architecture']}, "
                  f"template {row['template']}, context {row['context_length']})")


@app.command("list")
def list_(url: Url = None, as_json: AsJson = False) -> None:
    """List registered checkpoints with their lineage."""
    rows = call("GET", endpoint(url, None)[0], "/api/checkpoints")
    if as_json:
        out.print_json(data=rows)
        return
    table = Table("name", "architecture", "template", "parent", "adapter", "source")
    for r in rows:
        table.add_row(r["name"], r["architecture"] or "", r["template"] or "", r["parent"] or "",
                      "yes" if r["adapter"] else "", r["materialized_path"] or r["source"])
    out.print(table)


@app.command()
def show(name: str, url: Url = None, as_json: AsJson = False) -> None:
    """Show one checkpoint: its fields, its lineage (base → … → it, and its children) and,
    for a fine-tuned candidate, how it was trained."""
    base = endpoint(url, None)[0]
    row = call("GET", base, f"/api/checkpoints/{name}")
    if as_json:
        out.print_json(data=row)
        return
    rows = {r["name"]: r for r in call("GET", base, "/api/checkpoints")}
    chain, seen = [row["name"]], {row["name"]}
    while (parent := rows.get(chain[0], {}).get("parent")) and parent not in seen:
        chain.insert(0, parent)
        seen.add(parent)
    children = sorted(r["name"] for r in rows.values() if r["parent"] == row["name"])
    table = Table(show_header=False, title=row["name"])
    for key in ("source", "adapter", "revision", "gguf_file", "materialized_path",
                "architecture", "model_type", "context_length", "template", "status",
                "created_at"):
        if row.get(key) is not None:
            table.add_row(key, str(row[key]))
    table.add_row("lineage", " → ".join(chain))
    if children:
        table.add_row("children", ", ".join(children))
    facts = (row.get("meta") or {}).get("finetune")
    if facts:
        hp = facts.get("hyperparameters") or {}
        table.add_row("fine-tuned", f"{facts.get('method')} ({facts.get('mode')}) by job "
                                    f"{row['meta'].get('job_id')}, {facts.get('steps')} steps, "
                                    f"final loss {facts.get('final_loss')}")
        table.add_row("data", f"{facts.get('data')} (sha256 {str(facts.get('data_fingerprint'))[:16]}…)")
        table.add_row("hyper-parameters", ", ".join(f"{k}={v}" for k, v in hp.items()
                                                    if v is not None))
    other = {k: v for k, v in (row.get("meta") or {}).items() if k not in ("finetune", "job_id")}
    if other:
        table.add_row("meta", ", ".join(f"{k}={v}" for k, v in other.items()))
    out.print(table)


@app.command()
def update(
    name: str,
    template: Annotated[str | None, typer.Option(help="New conversation template.")] = None,
    parent: Annotated[str | None, typer.Option(help="New parent checkpoint.")] = None,
    meta: Annotated[list[str], typer.Option(help="Replace metadata with KEY=VALUE pairs.")] = [],  # noqa: B006
    url: Url = None,
    api_key: Key = None,
) -> None:
    """Change a checkpoint's template, parent or metadata."""
    base, key = endpoint(url, api_key)
    body: dict = {}
    if template is not None:
        body["template"] = template
    if parent is not None:
        body["parent"] = parent
    if meta:
        body["meta"] = _parse_meta(meta)
    out.print_json(data=call("PATCH", base, f"/api/checkpoints/{name}", api_key=key, json=body))


@app.command()
def remove(name: str, url: Url = None, api_key: Key = None) -> None:
    """Remove a checkpoint (refused while other checkpoints name it as parent)."""
    base, key = endpoint(url, api_key)
    call("DELETE", base, f"/api/checkpoints/{name}", api_key=key)
    out.print(f"removed {name}")
