"""Models tab: registered checkpoints with their lineage and whether a worker serves them."""

from __future__ import annotations

from typing import Any

import gradio as gr

from web.backend import Backend

HEADERS = ["Name", "Parent", "Template", "Architecture", "Type", "Context", "Source", "Adapter",
           "Status", "Served"]


def table_rows(checkpoints: list[dict[str, Any]]) -> list[list[Any]]:
    """Checkpoints as table rows, parents before their children (then by name)."""
    by_name = {c["name"]: c for c in checkpoints}

    def depth(c: dict[str, Any]) -> int:
        seen, d = set(), 0
        while c.get("parent") in by_name and c["name"] not in seen:
            seen.add(c["name"])
            c, d = by_name[c["parent"]], d + 1
        return d

    rows = []
    for c in sorted(checkpoints, key=lambda c: (depth(c), c["name"])):
        rows.append([
            c["name"], c.get("parent") or "", c.get("template") or "", c.get("architecture") or "",
            c.get("model_type") or "", c.get("context_length") or "", c.get("source") or "",
            c.get("adapter") or "", c.get("status") or "", "yes" if c.get("served") else "no",
        ])
    return rows


def build_models_tab(backend: Backend, tab: gr.Tab) -> None:
    """Render the checkpoint table and a refresh button (inside ``tab``)."""
    with gr.Row():
        summary = gr.Markdown("Open or refresh to load the registry.")
        refresh = gr.Button("↻ Refresh", scale=0)
    table = gr.Dataframe(headers=HEADERS, value=[], interactive=False, wrap=True,
                         elem_id="models-table")

    async def load() -> list[Any]:
        checkpoints = await backend.checkpoints()
        served = sum(1 for c in checkpoints if c["served"])
        text = f"{len(checkpoints)} registered checkpoints, {served} served by a healthy worker."
        return [text, table_rows(checkpoints)]

    for trigger in (tab.select, refresh.click):
        trigger(load, outputs=[summary, table], concurrency_limit=None, show_progress="minimal")
