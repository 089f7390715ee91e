"""Leaderboard tab: ratings with confidence intervals, the judge-ratio and benchmark columns,
the rating plots, then the evaluation section (:mod:`web.results_view`).

Filled when the tab is opened or refreshed (not at page load), from ``GET /api/leaderboard``,
its plot images and ``GET /api/runs``. Choosing a judge reference reloads the judge column, the
judge table and chart, and the human win/tie/lose table against it.
"""

from __future__ import annotations

import math
from typing import Any

import gradio as gr

from arena.errors import ArenaError
from web.backend import PLOT_KINDS, Backend
from web.formatting import DASH, interval, number, percent, ratio
from web.results_view import build_results_section, image, reference_choices

HEADERS = ["Rank", "Model", "Rating", "95% CI", "Votes", "Win rate", "Parent", "Judge ratio",
           "Judge 95% CI", "MMLU", "C-Eval", "CMMLU"]
JUDGE_COLUMN = HEADERS.index("Judge ratio")
PLOT_TITLES = {"ratings": "Ratings with 95% CI", "win_fraction": "Win fraction (row beats column)",
               "battle_count": "Battle count"}


def headers(reference: str | None) -> list[str]:
    """The table's headers; the judge column names its reference."""
    named = list(HEADERS)
    if reference:
        named[JUDGE_COLUMN] = f"Judge ratio vs {reference}"
    return named


def table_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """The API's leaderboard rows as the table shows them, in rank order."""
    out = []
    for row in sorted(rows, key=lambda r: (r.get("rank") or math.inf, -(r.get("rating") or 0))):
        out.append([
            row.get("rank", DASH), row.get("model", "?"), number(row.get("rating"), "{:.0f}"),
            interval(row.get("ci_low"), row.get("ci_high"), "{:.0f}"), row.get("votes", 0),
            percent(row.get("win_rate")), row.get("parent") or "", ratio(row.get("judge_ratio")),
            interval(row.get("judge_ci_low"), row.get("judge_ci_high"), suffix="%"),
            percent(row.get("mmlu")), percent(row.get("ceval")), percent(row.get("cmmlu")),
        ])
    return out


def summary_text(rows: list[dict[str, Any]], reference: str | None) -> str:
    votes = sum(int(r.get("votes") or 0) for r in rows) // 2  # each vote counts for two
    text = (f"{len(rows)} models, {votes} counted votes." if rows else
            "No models yet: register checkpoints, battle in the Arena tab, then refresh.")
    if reference:
        text += f" Judge ratio against **{reference}** (100% = as good)."
    return text


def build_leaderboard_tab(backend: Backend, tab: gr.Tab) -> None:
    """Render the leaderboard, its plots and the evaluation section (inside ``tab``)."""
    with gr.Row():
        summary = gr.Markdown("Open or refresh to load the leaderboard.",
                              elem_id="leaderboard-summary")
        reference = gr.Dropdown(label="Judge reference", choices=[], value=None,
                                allow_custom_value=True, interactive=True, scale=0,
                                min_width=240, elem_id="leaderboard-reference")
        refresh = gr.Button("↻ Refresh", scale=0, min_width=120)
    table = gr.Dataframe(headers=HEADERS, value=[], interactive=False, wrap=True,
                         elem_id="leaderboard-table")
    with gr.Row():
        plots = [gr.Image(label=PLOT_TITLES[kind], type="pil", interactive=False,
                          buttons=["download"]) for kind in PLOT_KINDS]
    results = build_results_section(backend)

    async def board(chosen: str | None, suite: str) -> list[Any]:
        """Summary, reference picker, table and the evaluation section for ``chosen``."""
        try:
            data = await backend.leaderboard(reference=chosen or None)
        except ArenaError as exc:
            skips = [gr.skip() for _ in range(2 + len(results.outputs()))]
            return [f"⚠️ {exc.message}", *skips]
        rows = data.get("rows") or []
        ref = data.get("judge_reference")
        section = await results.fill(ref, suite)
        runs_data = section[-1] if isinstance(section[-1], dict) else {}  # the runs_state value
        choices = reference_choices(runs_data.get("runs") or [],
                                    [r.get("model", "") for r in rows], ref)
        return [summary_text(rows, ref), gr.update(choices=choices, value=ref),
                {"headers": headers(ref), "data": table_rows(rows)}, *section]

    async def load(chosen: str | None, suite: str) -> list[Any]:
        values = await board(chosen, suite)
        has_rows = isinstance(values[2], dict) and values[2]["data"]
        images = [image(await backend.plot(kind)) if has_rows else None for kind in PLOT_KINDS]
        return [*values, *images]

    outputs = [summary, reference, table, *results.outputs()]
    common: dict[str, Any] = {"inputs": [reference, results.suite], "concurrency_limit": None,
                              "show_progress": "minimal"}
    for trigger in (tab.select, refresh.click):
        trigger(load, outputs=[*outputs, *plots], **common)
    reference.input(board, outputs=outputs, **common)
