"""The Leaderboard tab's evaluation section: LLM-judge score ratios against a chosen reference
(table and per-category chart), human win/tie/lose per pair from arena votes, and benchmark
accuracy per category (one table per suite) with a chosen run's per-subject chart.

Reads ``GET /api/runs``, ``/api/runs/judge.png``, ``/api/leaderboard/human`` and
``/api/jobs/{id}/subjects.png`` through :class:`web.backend.Backend`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import gradio as gr

from arena.errors import ArenaError
from web.backend import Backend
from web.formatting import DASH, interval, number, percent, ratio

SUITES = {"mmlu": "MMLU", "ceval": "C-Eval", "cmmlu": "CMMLU"}
JUDGE_HEADERS = ["Model", "Score ratio", "95% CI", "Wins", "Ties", "Losses", "Beat rate",
                 "Questions", "Judge", "Job"]
HUMAN_HEADERS = ["Model A", "Model B", "Wins", "Ties", "Losses", "Win rate", "Beat rate"]
BENCH_HEADERS = ["Checkpoint", "Accuracy", "Macro avg"]
BENCH_TAIL = ["Split", "Shots", "Items", "Engine", "Job"]
HUMAN_MISSING = "Human win/tie/lose is not available on this control plane yet."


def judge_rows(ratios: dict[str, dict[str, Any]]) -> list[list[Any]]:
    """``judge_ratios`` of ``GET /api/runs`` as table rows, best ratio first."""
    def key(item: tuple[str, dict[str, Any]]) -> tuple[float, str]:
        value = item[1].get("ratio")
        return (-value if isinstance(value, int | float) else float("inf"), item[0])

    return [[model, ratio(r.get("ratio")), interval(r.get("ci_low"), r.get("ci_high"),
                                                    suffix="%"),
             r.get("wins", DASH), r.get("ties", DASH), r.get("losses", DASH),
             percent(r.get("beat_rate")), r.get("n", DASH), r.get("judge_model") or DASH,
             r.get("job_id", DASH)]
            for model, r in sorted(ratios.items(), key=key)]


def human_rows(pairs: list[dict[str, Any]]) -> list[list[Any]]:
    """``GET /api/leaderboard/human`` pairs as table rows (rates are fractions 0–1)."""
    return [[p.get("model_a", "?"), p.get("model_b", "?"), p.get("wins", 0), p.get("ties", 0),
             p.get("losses", 0), percent(p.get("win_rate")), percent(p.get("beat_rate"))]
            for p in pairs]


def bench_table(benchmarks: dict[str, dict[str, dict[str, Any]]], suite: str) -> dict[str, Any]:
    """One suite's scores, a row per checkpoint and a column per category (in the suite's
    order), as a Dataframe value ``{"headers", "data"}``."""
    scored = {ckpt: suites[suite] for ckpt, suites in benchmarks.items() if suite in suites}
    present = {c for score in scored.values() for c in score.get("categories") or {}}
    categories = [c for c in _suite_categories(suite) if c in present]
    categories += sorted(present - set(categories))
    rows = []
    for ckpt, score in sorted(scored.items(), key=lambda kv: -(kv[1].get("accuracy") or 0)):
        per = score.get("categories") or {}
        rows.append([ckpt, percent(score.get("accuracy")), percent(score.get("macro_accuracy")),
                     *(percent((per.get(c) or {}).get("accuracy")) for c in categories),
                     score.get("split") or DASH, number(score.get("shots"), "{:d}"),
                     number(score.get("n_items"), "{:d}"), score.get("engine") or DASH,
                     score.get("job_id", DASH)])
    return {"headers": [*BENCH_HEADERS, *categories, *BENCH_TAIL], "data": rows}


def _suite_categories(suite: str) -> list[str]:
    """The suite's categories in its official order (none for an unknown suite)."""
    from benchmarks.suites import get_suite

    try:
        return list(get_suite(suite).categories)
    except (KeyError, ValueError):
        return []


def bench_run_choices(runs: list[dict[str, Any]], suite: str) -> list[tuple[str, int]]:
    """Finished benchmark runs of ``suite``, newest first, as (label, job id) choices."""
    return [(f"#{r['id']} {r.get('checkpoint') or '?'} · {SUITES.get(suite, suite)}", r["id"])
            for r in runs if r.get("kind") == "bench" and r.get("suite") == suite
            and r.get("state") == "succeeded"]


def reference_choices(runs: list[dict[str, Any]], models: list[str],
                      current: str | None) -> list[str]:
    """Checkpoints a judge reference can be: those judged against first, then the rest."""
    judged = [r["reference"] for r in runs if r.get("kind") == "judge" and r.get("reference")]
    ordered = [*([current] if current else []), *judged, *models]
    return list(dict.fromkeys(ordered))


def image(png: bytes | None) -> Any:
    """PNG bytes as a PIL image for ``gr.Image`` (None stays None)."""
    if png is None:
        return None
    from PIL import Image

    return Image.open(io.BytesIO(png))


@dataclass
class ResultsSection:
    """The section's components (built inside the Leaderboard tab) and its handlers."""

    backend: Backend
    judge_note: gr.Markdown
    judge_table: gr.Dataframe
    judge_plot: gr.Image
    human_note: gr.Markdown
    human_table: gr.Dataframe
    suite: gr.Radio
    bench_table: gr.Dataframe
    run: gr.Dropdown
    subjects: gr.Image
    runs_state: gr.State

    def outputs(self) -> list[Any]:
        """The components :meth:`fill` gives values to, in order."""
        return [self.judge_note, self.judge_table, self.judge_plot, self.human_note,
                self.human_table, self.suite, self.bench_table, self.run, self.subjects,
                self.runs_state]

    async def fill(self, reference: str | None, suite: str) -> list[Any]:
        """Values for :meth:`outputs`: judge ratios against ``reference`` (None: the API's
        default), human pairs, and ``suite``'s benchmark table (or the first suite with
        results)."""
        try:
            data = await self.backend.runs(reference=reference)
        except ArenaError as exc:
            return [f"⚠️ {exc.message}", *(gr.skip() for _ in self.outputs()[1:])]
        ref = data.get("judge_reference")
        ratios = data.get("judge_ratios") or {}
        if not ref:
            note = "No judge runs yet (`arena judge` or `POST /api/judge/runs`)."
        else:
            note = (f"Σ judge score of the model ÷ Σ judge score of the reference **{ref}** "
                    f"(100% = as good), {len(ratios)} model(s).")
        png = await self.backend.judge_plot(reference=ref) if ratios else None
        plot = gr.update(value=image(png), visible=png is not None)  # no empty frame
        human = await self._human(ref)
        benchmarks = data.get("benchmarks") or {}
        if not any(suite in scores for scores in benchmarks.values()):
            suite = next((k for k in SUITES if any(k in s for s in benchmarks.values())),
                         suite if suite in SUITES else "mmlu")
        bench = await self.pick_suite(suite, data)
        return [note, judge_rows(ratios), plot, *human, suite, *bench, data]

    async def _human(self, reference: str | None) -> list[Any]:
        try:
            pairs = await self.backend.human_pairs(reference=reference)
        except ArenaError as exc:
            return [f"⚠️ {exc.message}", gr.update(value=[], visible=False)]
        if pairs is None:
            return [HUMAN_MISSING, gr.update(value=[], visible=False)]
        text = f"{len(pairs)} pair(s) from arena votes." if pairs else "No votes yet."
        return [text, gr.update(value=human_rows(pairs), visible=True)]

    async def pick_suite(self, suite: str, data: dict[str, Any]) -> list[Any]:
        """The benchmark table of ``suite``, its runs, and the newest run's subject chart."""
        choices = bench_run_choices(data.get("runs") or [], suite)
        first = choices[0][1] if choices else None
        return [bench_table(data.get("benchmarks") or {}, suite),
                gr.update(choices=choices, value=first, visible=bool(choices)),
                await self.pick_run(first)]

    async def pick_run(self, job_id: int | None) -> Any:
        """The run's per-subject chart (hidden when there is none)."""
        png = None if job_id is None else await self.backend.subjects_plot(int(job_id))
        return gr.update(value=image(png), visible=png is not None)


def build_results_section(backend: Backend) -> ResultsSection:
    """Render the judge, human and benchmark parts and wire the suite and run pickers."""
    gr.Markdown("### LLM judge: score ratio against the reference")
    judge_note = gr.Markdown("", elem_id="judge-note")
    judge_table = gr.Dataframe(headers=JUDGE_HEADERS, value=[], interactive=False, wrap=True,
                               elem_id="judge-table")
    judge_plot = gr.Image(label="Score ratio per category", type="pil", interactive=False,
                          buttons=["download"], height=380, visible=False,
                          elem_id="judge-plot")
    gr.Markdown("### Human votes: win / tie / lose per pair")
    human_note = gr.Markdown("", elem_id="human-note")
    human_table = gr.Dataframe(headers=HUMAN_HEADERS, value=[], interactive=False, wrap=True,
                               visible=False, elem_id="human-table")
    gr.Markdown("### Benchmarks: accuracy per category")
    suite = gr.Radio([(label, key) for key, label in SUITES.items()], value="mmlu",
                     label="Suite", elem_id="bench-suite")
    table = gr.Dataframe(headers=[*BENCH_HEADERS, *BENCH_TAIL], value=[], interactive=False,
                         wrap=True, elem_id="bench-table")
    run = gr.Dropdown(label="Run (accuracy per subject)", choices=[], interactive=True,
                      visible=False, elem_id="bench-run")
    subjects = gr.Image(label="Accuracy per subject", type="pil", interactive=False,
                        buttons=["download"], height=420, visible=False,
                        elem_id="bench-subjects")
    section = ResultsSection(backend, judge_note, judge_table, judge_plot, human_note,
                             human_table, suite, table, run, subjects, gr.State({}))
    common: dict[str, Any] = {"concurrency_limit": None, "show_progress": "minimal"}
    suite.input(section.pick_suite, inputs=[suite, section.runs_state],
                outputs=[table, run, subjects], **common)
    run.input(section.pick_run, inputs=[run], outputs=[subjects], **common)
    return section
