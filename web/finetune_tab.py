"""Fine-tune tab: queue a fine-tuning job from a registered base, then watch it train.

Start sends ``POST /api/finetune`` with the key typed here (a registrar or admin key) and shows
the job id or the API's refusal. Watching reads the job and its loss curve every two seconds
(a ``gr.Timer``, active only while the watched job is queued or running).
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from arena.errors import ArenaError
from web.backend import Backend
from web.formatting import FINAL_STATES, number, parse_job_id, progress_text

WATCH_EVERY_S = 2.0
METHODS = ("lora", "qlora", "full")
MODES = ("instruct", "pretrain")
DATA_FORMATS = ("auto", "alpaca", "sharegpt", "text")
STATE_ICONS = {"queued": "⏳", "running": "🏃", "succeeded": "✅", "failed": "❌",
               "cancelled": "🚫"}
EMPTY_CURVE = pd.DataFrame({"step": [], "loss": []})
HYPER_MAIN = {"epochs": "Epochs", "max_steps": "Max steps", "learning_rate": "Learning rate",
              "max_length": "Max length (tokens)", "lora_r": "LoRA rank",
              "lora_alpha": "LoRA alpha"}
HYPER_MORE = {"batch_size": "Batch size", "gradient_accumulation_steps": "Gradient accumulation",
              "seed": "Seed"}


FLOAT_FIELDS = ("epochs", "learning_rate")


def _number(name: str, value: Any) -> float | int:
    """A hyper-parameter typed in a text box: floats for epochs and learning rate, else an
    integer; ValueError names the field."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{name.replace('_', ' ')}: {text!r} is not a number") from None
    if name in FLOAT_FIELDS:
        return number
    if not number.is_integer():
        raise ValueError(f"{name.replace('_', ' ')}: {text!r} is not a whole number")
    return int(number)


def finetune_request(*, base: str | None, data: str, output_name: str, method: str, mode: str,
                     data_format: str = "auto", template: str = "",
                     hyper: dict[str, Any] | None = None, merge: bool = False) -> dict[str, Any]:
    """The ``POST /api/finetune`` body. Empty hyper-parameters are left out (the recipe's
    defaults apply); LoRA settings go only with a LoRA method. ValueError for a field that is
    not a number."""
    config: dict[str, Any] = {"method": method, "mode": mode}
    if data_format and data_format != "auto":
        config["data_format"] = data_format
    for name, value in (hyper or {}).items():
        if value is None or str(value).strip() == "":
            continue
        if name.startswith("lora_") and method == "full":
            continue
        config[name] = _number(name, value)
    if merge:
        config["merge"] = True
    body: dict[str, Any] = {"base": base or "", "data": data.strip(),
                            "output_name": output_name.strip(), "config": config}
    if template.strip():
        body["template"] = template.strip()
    return body


def missing_fields(body: dict[str, Any]) -> list[str]:
    names = {"base": "base checkpoint", "data": "data file", "output_name": "output name"}
    return [label for key, label in names.items() if not body.get(key)]


def job_status(job: dict[str, Any]) -> str:
    """A job's headline for the watch panel (markdown)."""
    state = str(job.get("state", "?"))
    name = (job.get("params") or {}).get("output_name", "?")
    text = (f"{STATE_ICONS.get(state, '')} **Job {job.get('id')}** ({job.get('checkpoint')} → "
            f"{name}): **{state}**")
    line = progress_text(job.get("progress"), state)
    if line:
        text += f"  \n{line}"
    if job.get("output_checkpoint"):
        text += f"  \nRegistered as **{job['output_checkpoint']}**."
    final_loss = (job.get("result") or {}).get("final_loss")
    if final_loss is not None:
        text += f" Final loss {number(final_loss, '{:.4f}')}."
    if job.get("error"):
        text += f"  \n⚠️ {job['error']}"
    return text


def curve(metrics: list[dict[str, Any]]) -> pd.DataFrame:
    """Loss per optimizer step, for the line plot."""
    if not metrics:
        return EMPTY_CURVE
    return pd.DataFrame({"step": [int(m["step"]) for m in metrics],
                         "loss": [float(m["loss"]) for m in metrics]})


def build_finetune_tab(backend: Backend, tab: gr.Tab) -> None:
    """Render the job form and the watch panel (inside ``tab``)."""
    gr.Markdown("Train a candidate from a registered checkpoint. Paths are on the job "
                "worker's machine. Empty fields use the recipe's defaults.")
    with gr.Row():
        base = gr.Dropdown(label="Base checkpoint", choices=[], interactive=True, scale=3,
                           elem_id="finetune-base")
        refresh = gr.Button("↻ checkpoints", scale=0)
        output_name = gr.Textbox(label="Output name", placeholder="alpaca-7b-v2", scale=3,
                                 elem_id="finetune-output")
    data = gr.Textbox(label="Data file (server-side path)",
                      placeholder="/data/alpaca_data.json · ShareGPT JSON · text file or folder",
                      elem_id="finetune-data")
    with gr.Row():
        method = gr.Radio(list(METHODS), value="lora", label="Method")
        mode = gr.Radio(list(MODES), value="instruct", label="Mode")
        data_format = gr.Dropdown(list(DATA_FORMATS), value="auto", label="Data format")
    with gr.Row():
        hyper = {name: gr.Textbox(label=label, placeholder="default", min_width=120)
                 for name, label in HYPER_MAIN.items()}
    with gr.Accordion("More", open=False), gr.Row():
        hyper |= {name: gr.Textbox(label=label, placeholder="default", min_width=120)
                  for name, label in HYPER_MORE.items()}
        template = gr.Textbox(label="Template", placeholder="the base's")
        merge = gr.Checkbox(label="Register merged weights", value=False)
    with gr.Row():
        api_key = gr.Textbox(label="API key (registrar or admin)", type="password", scale=3,
                             elem_id="finetune-key")
        start = gr.Button("🚀 Start", variant="primary", scale=1, elem_id="finetune-start")
    status = gr.Markdown("", elem_id="finetune-status")
    gr.Markdown("### Watch a job")
    with gr.Row():
        job_id = gr.Textbox(label="Job id", placeholder="a fine-tuning job's id", scale=3,
                            elem_id="finetune-job")
        watch = gr.Button("👀 Watch", scale=1, elem_id="finetune-watch")
    progress = gr.Markdown("", elem_id="finetune-progress")
    loss = gr.LinePlot(EMPTY_CURVE, x="step", y="loss", title="Training loss", height=300,
                       elem_id="finetune-loss")
    timer = gr.Timer(WATCH_EVERY_S, active=False)

    async def submit(key: str, base_name: str | None, path: str, name: str, how: str,
                     what: str, fmt: str, tmpl: str, merged: bool, *values: Any) -> list[Any]:
        try:
            body = finetune_request(base=base_name, data=path or "", output_name=name or "",
                                    method=how, mode=what, data_format=fmt, template=tmpl or "",
                                    hyper=dict(zip(hyper, values, strict=True)), merge=merged)
        except ValueError as exc:
            return [f"⚠️ {exc}", gr.skip(), gr.skip()]
        missing = missing_fields(body)
        if missing:
            return [f"⚠️ fill in: {', '.join(missing)}", gr.skip(), gr.skip()]
        try:
            job = await backend.finetune(body, api_key=key)
        except ArenaError as exc:
            return [f"⚠️ {exc.message}", gr.skip(), gr.skip()]
        records = (job.get("params") or {}).get("records")
        text = f"✅ Queued job **{job['id']}** ({records} records): watching it below."
        return [text, str(job["id"]), gr.Timer(active=True)]

    async def refresh_watch(text: str | None) -> list[Any]:
        watched = parse_job_id(text)
        if watched is None:
            return ["", EMPTY_CURVE, gr.Timer(active=False)]
        try:
            job = await backend.job(watched)
            metrics = await backend.job_metrics(watched) if job["kind"] == "finetune" else []
        except ArenaError as exc:
            return [f"⚠️ {exc.message}", EMPTY_CURVE, gr.Timer(active=False)]
        running = job.get("state") not in FINAL_STATES
        return [job_status(job), curve(metrics), gr.Timer(active=running)]

    async def load_bases(current: str | None) -> Any:
        # adapters and GGUF files can not be trained from (the API says why if tried)
        names = sorted(c["name"] for c in await backend.checkpoints()
                       if not c.get("adapter") and not c.get("gguf_file"))
        return gr.update(choices=names,
                         value=current if current in names else (names[0] if names else None))

    start.click(submit, inputs=[api_key, base, data, output_name, method, mode, data_format,
                                template, merge, *hyper.values()],
                outputs=[status, job_id, timer], concurrency_limit=None).then(
        refresh_watch, inputs=[job_id], outputs=[progress, loss, timer], show_progress="hidden")
    for trigger in (watch.click, job_id.submit):
        trigger(refresh_watch, inputs=[job_id], outputs=[progress, loss, timer],
                concurrency_limit=None, show_progress="minimal")
    timer.tick(refresh_watch, inputs=[job_id], outputs=[progress, loss, timer],
               concurrency_limit=None, show_progress="hidden")
    for trigger in (tab.select, refresh.click):
        trigger(load_bases, inputs=[base], outputs=[base], concurrency_limit=None)
