"""Leaderboard tab: ratings with confidence intervals, the reserved judge/benchmark columns, plots.

Filled when the tab is opened or refreshed (not at page load), from ``GET /api/leaderboard`` and
its plot images.
"""

from __future__ import annotations

import io
import math
from typing import Any

import gradio as gr

from arena.errors import ArenaError
from web.backend import PLOT_KINDS, Backend

HEADERS = ["Rank", "Model", "Rating", "95% CI", "Votes", "Win rate", "Parent", "Judge ratio",
           "MMLU", "C-Eval", "CMMLU"]
PLOT_TITLES = {"ratings": "Ratings with 95% CI", "win_fraction": "Win fraction (row beats column)",
               "battle_count": "Battle count"}


def _number(value: Any, fmt: str = "{:.1f}") -> str:
    if isinstance(value, int | float) and math.isfinite(value):
        return fmt.format(value)
    return "—"


def _percent(value: Any) -> str:
    """A fraction (0–1) as a percentage; "—" when absent."""
    return _number(value * 100 if isinstance(value, int | float) else None, "{:.1f}%")


def table_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """The API's leaderboard rows as the table shows them, in rank order."""
    out = []
    for row in sorted(rows, key=lambda r: (r.get("rank") or math.inf, -(r.get("rating") or 0))):
        rating, low, high = row.get("rating"), row.get("ci_low"), row.get("ci_high")
        ci = "—"
        if (isinstance(rating, int | float) and isinstance(low, int | float)
                and isinstance(high, int | float)):
            ci = f"{low:.0f} – {high:.0f}"
        out.append([
            row.get("rank", "—"), row.get("model", "?"), _number(rating, "{:.0f}"), ci,
            row.get("votes", 0), _percent(row.get("win_rate")), row.get("parent") or "",
            _number(row.get("judge_ratio")), _percent(row.get("mmlu")),
            _percent(row.get("ceval")), _percent(row.get("cmmlu")),
        ])
    return out


def _image(png: bytes | None) -> Any:
    if png is None:
        return None
    from PIL import Image

    return Image.open(io.BytesIO(png))


def build_leaderboard_tab(backend: Backend, tab: gr.Tab) -> None:
    """Render the leaderboard table, the three plots and a refresh button (inside ``tab``)."""
    with gr.Row():
        summary = gr.Markdown("Open or refresh to load the leaderboard.")
        refresh = gr.Button("↻ Refresh", scale=0)
    table = gr.Dataframe(headers=HEADERS, value=[], interactive=False, wrap=True,
                         elem_id="leaderboard-table")
    with gr.Row():
        plots = [gr.Image(label=PLOT_TITLES[kind], type="pil", interactive=False,
                          buttons=["download"]) for kind in PLOT_KINDS]

    async def load() -> list[Any]:
        try:
            board = await backend.leaderboard()
        except ArenaError as exc:
            return [f"⚠️ {exc.message}", gr.skip(), *(gr.skip() for _ in plots)]
        rows = board.get("rows") or []
        votes = sum(int(r.get("votes") or 0) for r in rows) // 2  # each vote counts for two
        text = (f"{len(rows)} models, {votes} counted votes." if rows else
                "No votes yet: battle in the Arena tab, then refresh.")
        images = [_image(await backend.plot(kind)) if rows else None for kind in PLOT_KINDS]
        return [text, table_rows(rows), *images]

    for trigger in (tab.select, refresh.click):
        trigger(load, outputs=[summary, table, *plots], concurrency_limit=None,
                show_progress="minimal")
