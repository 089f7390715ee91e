"""The Gradio UI, mounted in the control plane at ``/ui``.

Tabs: anonymous battle, named side-by-side (one builder, two modes), direct chat, leaderboard,
models. Handlers call the control plane in-process (see :mod:`web.backend`). No component is
filled at page load: lists that name models load when their tab is opened, so the page source
names no model before a vote in the anonymous tab.
"""

from __future__ import annotations

import gradio as gr
from fastapi import FastAPI

from web.arena_tab import build_battle_tab
from web.backend import Backend
from web.chat_tab import build_chat_tab
from web.leaderboard_tab import build_leaderboard_tab
from web.models_tab import build_models_tab

UI_PATH = "/ui"
CSS = ".battle-status { min-height: 2em; }"


def build_ui(backend: Backend) -> gr.Blocks:
    """The five tabs, wired to ``backend``."""
    with gr.Blocks(title="Alpaca Arena", analytics_enabled=False) as blocks:
        gr.Markdown("# 🦙 Alpaca Arena")
        with gr.Tabs():
            with gr.Tab("Arena (battle)", id="battle") as tab:
                build_battle_tab(backend, tab, mode="anonymous")
            with gr.Tab("Arena (side-by-side)", id="side-by-side") as tab:
                build_battle_tab(backend, tab, mode="named")
            with gr.Tab("Direct chat", id="chat") as tab:
                build_chat_tab(backend, tab)
            with gr.Tab("Leaderboard", id="leaderboard") as tab:
                build_leaderboard_tab(backend, tab)
            with gr.Tab("Models", id="models") as tab:
                build_models_tab(backend, tab)
    # streaming handlers wait on workers, not on the CPU: let many sessions stream at once
    blocks.queue(default_concurrency_limit=None)
    return blocks


def mount(app: FastAPI, *, path: str = UI_PATH) -> FastAPI:
    """Serve the UI from ``app`` at ``path``; handlers use ``app.state`` once it has started."""
    blocks = build_ui(Backend(app))
    return gr.mount_gradio_app(app, blocks, path=path, ssr_mode=False, css=CSS,
                               footer_links=[], mcp_server=False)
