"""``arena templates``: the conversation templates, with a rendered example."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="List conversation templates and render an example conversation.")
out = Console()


@app.command("list")
def list_() -> None:
    """Every template with its model family."""
    from model_workers.conversation import list_templates

    table = Table("name", "family", "stop strings")
    table.add_row("hf", "the tokenizer's own chat_template", "")
    for t in list_templates():
        if t.name != "hf":
            table.add_row(t.name, t.family, ", ".join(repr(s) for s in t.stop))
    out.print(table)


@app.command()
def show(name: str) -> None:
    """Render a two-turn example conversation with template NAME."""
    from model_workers.conversation import get_template, render_example
    from model_workers.errors import BadRequest

    try:
        template = get_template(name) if name != "hf" else None
    except BadRequest as exc:
        raise typer.BadParameter(exc.message, param_hint="NAME") from exc
    if template is not None:
        out.print(f"[bold]{template.name}[/bold] — {template.family}  ({template.source})")
        out.print(f"stop strings: {template.stop!r}")
    out.rule("example")
    out.print(render_example(name), markup=False, highlight=False)
    out.rule()
