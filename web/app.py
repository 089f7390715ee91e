"""The Gradio UI, mounted in the control plane at ``/ui``.

Tabs: anonymous battle, named side-by-side (one builder, two modes), direct chat, leaderboard
(with evaluation results), models, fine-tune, jobs. Handlers call the control plane in-process
(see :mod:`web.backend`). No component is filled at page load: lists that name models load
when their tab is opened, so the page source names no model before a vote in the anonymous
tab.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import gradio as gr
from fastapi import FastAPI

from web.arena_tab import build_battle_tab
from web.backend import Backend
from web.chat_tab import build_chat_tab
from web.finetune_tab import build_finetune_tab
from web.jobs_tab import build_jobs_tab
from web.leaderboard_tab import build_leaderboard_tab
from web.models_tab import build_models_tab

UI_PATH = "/ui"
CSS = ".battle-status { min-height: 2em; }"


def build_ui(backend: Backend) -> gr.Blocks:
    """The tabs, wired to ``backend``."""
    builders: list[tuple[str, str, Callable[[Backend, gr.Tab], Any]]] = [
        ("Arena (battle)", "battle", partial(build_battle_tab, mode="anonymous")),
        ("Arena (side-by-side)", "side-by-side", partial(build_battle_tab, mode="named")),
        ("Direct chat", "chat", build_chat_tab),
        ("Leaderboard", "leaderboard", build_leaderboard_tab),
        ("Models", "models", build_models_tab),
        ("Fine-tune", "finetune", build_finetune_tab),
        ("Jobs", "jobs", build_jobs_tab),
    ]
    with gr.Blocks(title="Alpaca Arena", analytics_enabled=False) as blocks:
        gr.Markdown("# 🦙 Alpaca Arena")
        tabs: dict[str, gr.Tab] = {}
        built: dict[str, Any] = {}
        with gr.Tabs():
            for label, tab_id, build in builders:
                with gr.Tab(label, id=tab_id) as tab:
                    tabs[tab_id], built[tab_id] = tab, build(backend, tab)
        # the job list refreshes itself only while its tab is open (it turns its timer on)
        for tab_id, tab in tabs.items():
            if tab_id != "jobs":
                tab.select(lambda: gr.Timer(active=False), outputs=[built["jobs"]],
                           show_progress="hidden")
    # streaming handlers wait on workers, not on the CPU: let many sessions stream at once
    blocks.queue(default_concurrency_limit=None)
    return blocks


def mount(app: FastAPI, *, path: str = UI_PATH) -> FastAPI:
    """Serve the UI from ``app`` at ``path``; handlers use ``app.state`` once it has started."""
    blocks = build_ui(Backend(app))
    return gr.mount_gradio_app(app, blocks, path=path, ssr_mode=False, css=CSS,
                               footer_links=[], mcp_server=False)
