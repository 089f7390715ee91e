"""``arena worker`` (serve checkpoints) and ``arena workers list`` (what the controller sees)."""

from __future__ import annotations

from typing import Annotated

import typer
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


def run(
    checkpoint: Annotated[
        list[str],
        typer.Option(help="Registered checkpoint to serve (repeat for LoRA adapters on one base)."),
    ] = [],  # noqa: B006
    controller: Annotated[
        str | None, typer.Option(help="Control-plane URL to register with [env ARENA_URL].")
    ] = None,
    backend: Annotated[str, typer.Option(help="hf | vllm | openai")] = "hf",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: pick a free one).")] = 0,
    advertise_address: Annotated[
        str | None, typer.Option(help="Address the controller should use (default http://host:port).")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="Key with the worker role [env ARENA_API_KEY].")
    ] = None,
    device: Annotated[str, typer.Option(help="hf: auto | cpu | cuda | cuda:N")] = "auto",
    dtype: Annotated[str, typer.Option(help="hf/vllm: auto | float32 | bfloat16 | float16")] = "auto",
    max_batch_size: Annotated[int, typer.Option(help="hf: most sequences per decode step.")] = 16,
    upstream_url: Annotated[
        str | None, typer.Option(help="openai: upstream base URL, e.g. http://h:8000/v1")
    ] = None,
    upstream_api_key: Annotated[str | None, typer.Option(help="openai: upstream key.")] = None,
    upstream_model: Annotated[str | None, typer.Option(help="openai: upstream model name.")] = None,
    model_path: Annotated[
        str | None, typer.Option(help="Standalone (no controller): checkpoint directory.")
    ] = None,
    model_name: Annotated[str | None, typer.Option(help="Standalone: served model name.")] = None,
    template: Annotated[str | None, typer.Option(help="Standalone: conversation template.")] = None,
    log_level: Annotated[str, typer.Option(help="debug | info | warning")] = "info",
) -> None:
    """Serve registered checkpoints as an OpenAI-compatible worker and join the controller."""
    from model_workers.main import WorkerConfig, run_worker

    client = ClientSettings()
    if not checkpoint and not model_path:
        raise typer.BadParameter("give --checkpoint NAME (or --model-path for standalone use)")
    config = WorkerConfig(
        controller=controller or (client.url if checkpoint else None),
        checkpoints=checkpoint,
        backend=backend,
        host=host,
        port=port,
        advertise_address=advertise_address,
        api_key=api_key or client.key(),
        device=device,
        dtype=dtype,
        max_batch_size=max_batch_size,
        upstream_url=upstream_url,
        upstream_api_key=upstream_api_key,
        upstream_model=upstream_model,
        model_path=model_path,
        model_name=model_name,
        template=template,
        log_level=log_level,
    )
    run_worker(config)
