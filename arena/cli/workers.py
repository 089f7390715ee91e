"""``arena worker`` (serve checkpoints) and ``arena workers list`` (what the controller sees)."""

from __future__ import annotations

import inspect
from typing import Annotated, Literal, get_origin

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from arena.cli.client import call
from arena.settings import ClientSettings

app = typer.Typer(help="Model workers known to the control plane.")
out = Console()


@app.command("list")
def list_(url: Annotated[str | None, typer.Option(help="Control-plane URL.")] = None) -> None:
    """Workers with their models, queue length and health."""
    rows = call("GET", url or ClientSettings().url, "/api/workers")
    table = Table("address", "backend", "models", "queue", "healthy")
    for r in rows:
        table.add_row(r["address"], r["backend"], ", ".join(r["models"]), str(r["queue_length"]),
                      "yes" if r["healthy"] else "[red]no[/red]")
    out.print(table)


def worker_command():
    """``arena worker``, generated from ``WorkerConfig``: its fields are the options, their
    descriptions the help texts, so the two never drift apart."""
    from model_workers.main import WorkerConfig, run_worker

    params = []
    for name, info in WorkerConfig.model_fields.items():
        annotation = info.annotation
        if get_origin(annotation) is Literal:
            annotation = str  # typer has no Literal; WorkerConfig validates the value
        flag = "--checkpoint" if name == "checkpoints" else "--" + name.replace("_", "-")
        default = info.get_default(call_default_factory=True)
        params.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
            default=typer.Option(default, flag, help=info.description or ""),
        ))

    def command(**options) -> None:
        """Serve registered checkpoints as an OpenAI-compatible worker and join the controller.

        ARENA_URL and ARENA_API_KEY give --controller and --api-key when they are not passed.
        """
        client = ClientSettings()
        if options["checkpoints"] and not options["controller"]:
            options["controller"] = client.url
        options["api_key"] = options["api_key"] or client.key()
        try:
            config = WorkerConfig(**options)
        except ValidationError as exc:
            raise typer.BadParameter(_pydantic_message(exc)) from exc
        run_worker(config)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return command


def _pydantic_message(exc: ValidationError) -> str:
    return "; ".join(
        f"--{'.'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
        if e["loc"] else e["msg"]
        for e in exc.errors()
    )
