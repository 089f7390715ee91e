"""Jobs tab: fine-tuning, benchmark and judge jobs, filtered by kind and state; a selected
job's details and log; cancel (with a registrar or admin key).

Refreshes itself every few seconds while the tab is open (the timer is switched on by opening
this tab and off by opening another, see :func:`web.app.build_ui`).
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from arena.errors import ArenaError
from web.backend import Backend
from web.formatting import DASH, describe_job, parse_job_id, progress_text, timestamp

REFRESH_EVERY_S = 3.0
ALL = "all"
KINDS = (ALL, "finetune", "bench", "judge")
STATES = (ALL, "queued", "running", "succeeded", "failed", "cancelled")
HEADERS = ["ID", "Kind", "State", "Checkpoint", "Task", "Progress", "Created (UTC)", "Trigger",
           "Attempts"]


def job_rows(jobs: list[dict[str, Any]]) -> list[list[Any]]:
    """``GET /api/jobs`` as table rows (the API's order: newest first)."""
    rows = []
    for job in jobs:
        state = str(job.get("state", "?"))
        if job.get("cancel_requested") and state == "running":
            state = "running (cancelling)"
        rows.append([job.get("id"), job.get("kind"), state, job.get("checkpoint") or DASH,
                     describe_job(job), progress_text(job.get("progress"), state) or DASH,
                     timestamp(job.get("created_at")), job.get("trigger") or DASH,
                     f"{job.get('attempts', 0)}/{job.get('max_attempts', '?')}"])
    return rows


def job_details(job: dict[str, Any]) -> str:
    """One job as markdown: state, times, progress, outcome and its parameters."""
    lines = [f"### Job {job.get('id')}: {job.get('kind')} · {job.get('state')}",
             f"**Task:** {describe_job(job) or DASH} · **checkpoint:** "
             f"{job.get('checkpoint') or DASH} · **trigger:** {job.get('trigger') or DASH} · "
             f"**attempts:** {job.get('attempts', 0)}/{job.get('max_attempts', '?')}",
             f"**Created:** {timestamp(job.get('created_at'))} · **started:** "
             f"{timestamp(job.get('started_at'))} · **finished:** "
             f"{timestamp(job.get('finished_at'))} (UTC)"]
    progress = progress_text(job.get("progress"), str(job.get("state")))
    if progress:
        lines.append(f"**Progress:** {progress}")
    if job.get("output_checkpoint"):
        lines.append(f"**Registered:** {job['output_checkpoint']}")
    if job.get("error"):
        lines.append(f"**Error:** {job['error']}")
    if job.get("result"):
        lines.append(_fenced("Result", _headline(job["result"])))
    lines.append(_fenced("Parameters", job.get("params") or {}))
    return "\n\n".join(lines)


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    """A result without its long parts (per-item tables, per-subject scores)."""
    return {k: v for k, v in result.items() if k not in ("items", "subjects", "judgments")}


def _fenced(title: str, value: Any) -> str:
    text = json.dumps(value, indent=1, ensure_ascii=False, default=str)
    if len(text) > 4000:
        text = text[:4000] + "\n…"
    return f"<details><summary>{title}</summary>\n\n```json\n{text}\n```\n</details>"


def events_text(events: list[dict[str, Any]]) -> str:
    """A job's log, one line per event: "HH:MM:SS level message"."""
    return "\n".join(f"{timestamp(e.get('tstamp'), time_only=True)} {e.get('level', ''):<7} "
                     f"{e.get('message', '')}" for e in events)


def _filter(value: str | None) -> str | None:
    return None if not value or value == ALL else value


def build_jobs_tab(backend: Backend, tab: gr.Tab) -> gr.Timer:
    """Render the job table, the selected job and the cancel button (inside ``tab``); returns
    the refresh timer for :func:`web.app.build_ui` to switch on and off with the tab."""
    with gr.Row():
        kind = gr.Dropdown(list(KINDS), value=ALL, label="Kind", scale=1, elem_id="jobs-kind")
        state = gr.Dropdown(list(STATES), value=ALL, label="State", scale=1,
                            elem_id="jobs-state")
        auto = gr.Checkbox(value=True, label=f"Auto-refresh ({REFRESH_EVERY_S:.0f} s)", scale=1)
        refresh = gr.Button("↻ Refresh", scale=0, elem_id="jobs-refresh")
    summary = gr.Markdown("Open or refresh to load the jobs.", elem_id="jobs-summary")
    table = gr.Dataframe(headers=HEADERS, value=[], interactive=False, wrap=True,
                         elem_id="jobs-table")
    gr.Markdown("Click a row to see its job.")
    with gr.Row():
        selected = gr.Textbox(label="Job id", placeholder="click a row", scale=1,
                              elem_id="jobs-selected")
        api_key = gr.Textbox(label="API key (registrar or admin)", type="password", scale=3,
                             elem_id="jobs-key")
        cancel = gr.Button("🛑 Cancel job", variant="stop", scale=1, elem_id="jobs-cancel")
    cancel_status = gr.Markdown("", elem_id="jobs-cancel-status")
    with gr.Row():
        details = gr.Markdown("", elem_id="jobs-details")
        log = gr.Textbox(label="Log", lines=12, max_lines=24, interactive=False, autoscroll=True,
                         elem_id="jobs-log")
    timer = gr.Timer(REFRESH_EVERY_S, active=False)

    async def load(kind_value: str, state_value: str, job_id: str | None) -> list[Any]:
        try:
            jobs = await backend.jobs(kind=_filter(kind_value), state=_filter(state_value))
        except ArenaError as exc:
            return [f"⚠️ {exc.message}", gr.skip(), gr.skip(), gr.skip()]
        counts: dict[str, int] = {}
        for job in jobs:
            counts[job["state"]] = counts.get(job["state"], 0) + 1
        text = (f"{len(jobs)} job(s): " + ", ".join(f"{n} {s}" for s, n in counts.items())
                if jobs else "No jobs match.")
        return [text, job_rows(jobs), *(await show(job_id))]

    async def show(text: str | None) -> list[Any]:
        job_id = parse_job_id(text)
        if job_id is None:
            return ["", ""]
        try:
            job = await backend.job(job_id)
            events = await backend.job_events(job_id)
        except ArenaError as exc:
            return [f"⚠️ {exc.message}", ""]
        return [job_details(job), events_text(events)]

    def pick(evt: gr.SelectData) -> Any:
        row = evt.row_value or []
        return str(row[0]) if row and row[0] not in (None, "") else gr.skip()

    async def cancel_job(text: str | None, key: str) -> str:
        job_id = parse_job_id(text)
        if job_id is None:
            return "⚠️ pick a job first"
        try:
            job = await backend.cancel_job(job_id, api_key=key)
        except ArenaError as exc:
            return f"⚠️ {exc.message}"
        if job.get("state") == "cancelled":
            return f"Job {job['id']} cancelled."
        return f"Job {job['id']}: cancellation requested; its worker stops at the next step."

    inputs = [kind, state, selected]
    outputs = [summary, table, details, log]
    common: dict[str, Any] = {"concurrency_limit": None}
    for trigger in (tab.select, refresh.click, kind.input, state.input):
        trigger(load, inputs=inputs, outputs=outputs, show_progress="minimal", **common)
    timer.tick(load, inputs=inputs, outputs=outputs, show_progress="hidden", **common)
    table.select(pick, outputs=[selected], **common).then(
        show, inputs=[selected], outputs=[details, log], show_progress="minimal")
    selected.submit(show, inputs=[selected], outputs=[details, log], **common)
    cancel.click(cancel_job, inputs=[selected, api_key], outputs=[cancel_status], **common).then(
        load, inputs=inputs, outputs=outputs, show_progress="hidden")
    auto.input(lambda on: gr.Timer(active=bool(on)), inputs=[auto], outputs=[timer])
    tab.select(lambda on: gr.Timer(active=bool(on)), inputs=[auto], outputs=[timer])
    return timer
