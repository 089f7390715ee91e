"""The ``arena`` command: serve the control plane, run workers, manage the registry."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console

from arena.cli import (
    bench,
    checkpoints,
    jobs,
    judge,
    keys,
    leaderboard,
    templates,
    votes,
    workers,
)

app = typer.Typer(
    help="Alpaca Arena: serve, compare and evaluate LLaMA-family chat checkpoints.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(checkpoints.app, name="checkpoints")
app.add_typer(keys.app, name="keys")
app.add_typer(templates.app, name="templates")
app.add_typer(workers.app, name="workers")
app.add_typer(votes.app, name="votes")
app.add_typer(judge.app, name="judge")
app.add_typer(bench.app, name="bench")
app.command("worker")(workers.worker_command())
app.command("leaderboard")(leaderboard.leaderboard_command)
app.add_typer(jobs.app, name="jobs")
app.add_typer(jobs.finetune_app, name="finetune")
app.command("jobs-worker")(jobs.jobs_worker)
app.command("runs")(jobs.runs_command)
out = Console()


def _settings_help() -> str:
    """Every ARENA_* setting with its description, for ``arena serve --help``."""
    from arena.settings import Settings

    lines = ["Settings (environment variables):\n\n"]
    for name, info in Settings.model_fields.items():
        lines.append(f"ARENA_{name.upper()}: {info.description or ''}\n\n")
    return "".join(lines)


@app.command(epilog=_settings_help())
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    log_level: Annotated[str, typer.Option(help="debug | info | warning")] = "info",
) -> None:
    """Start the control plane (/api, /v1, /health) on ARENA_DATABASE_URL (default SQLite)."""
    import uvicorn

    from arena.app import create_app
    from arena.settings import Settings

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    out.print(f"control plane on http://{host}:{port} (database {settings.resolved_database_url()})")
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, access_log=False)


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Interface for the control plane.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for the control plane.")] = 8000,
    finetune: Annotated[bool, typer.Option(help="Run the loop: fine-tune a LoRA candidate, "
                                                "evaluate it, put it in the arena.")] = True,
    finetune_base: Annotated[str, typer.Option(help="Demo checkpoint to fine-tune.")] =
    "smollm2-135m-instruct",
    finetune_steps: Annotated[int, typer.Option(min=1, help="Optimizer steps of the demo "
                                                             "fine-tune.")] = 40,
) -> None:
    """Build the demo checkpoints, register them, start the control plane, workers and a job
    worker; then fine-tune a LoRA candidate from the base, register and evaluate it."""
    from arena.demo import run_demo

    run_demo(host=host, port=port, finetune=finetune, finetune_base=finetune_base,
             finetune_steps=finetune_steps)


if __name__ == "__main__":
    app()
