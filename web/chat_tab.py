"""Direct chat tab: pick a served model and chat with it, streamed through the gateway."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr

from arena.errors import ArenaError
from web.backend import Backend

logger = logging.getLogger(__name__)


def build_chat_tab(backend: Backend, tab: gr.Tab) -> None:
    """Render the model picker, the chat and its settings (inside ``tab``)."""
    with gr.Row():
        model = gr.Dropdown(label="Model", choices=[], interactive=True, scale=4,
                            elem_id="chat-model")
        refresh = gr.Button("↻ models", scale=0)
    chat = gr.Chatbot(label="Chat", height=400, elem_id="chat-history")
    status = gr.Markdown("")
    with gr.Row():
        text = gr.Textbox(show_label=False, placeholder="Message…", scale=5, elem_id="chat-input")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
    with gr.Row():
        clear = gr.Button("🗑 Clear")
    with gr.Accordion("Parameters", open=False):
        max_tokens = gr.Slider(16, 1024, value=256, step=16, label="Max new tokens")
        temperature = gr.Slider(0.0, 2.0, value=0.7, step=0.1, label="Temperature")

    async def respond(name: str | None, message: str, history: list[dict[str, Any]],
                      limit: float, temp: float) -> AsyncIterator[list[Any]]:
        if not name:
            yield [gr.skip(), "⚠️ pick a model first (↻ reloads the served models)", gr.skip()]
            return
        if not (message or "").strip():
            return
        messages = [{"role": m["role"], "content": _text(m["content"])} for m in history or []]
        messages.append({"role": "user", "content": message})
        answer = ""
        shown = [*messages, {"role": "assistant", "content": ""}]
        yield [shown, "", ""]
        try:
            async for piece in backend.chat(name, messages, max_tokens=int(limit),
                                            temperature=float(temp)):
                answer += piece
                yield [[*messages, {"role": "assistant", "content": answer}], "", gr.skip()]
        except Exception as exc:  # the UI's boundary: show the message, keep the page alive
            if not isinstance(exc, ArenaError):
                logger.exception("direct chat with %s failed", name)
            detail = exc.message if isinstance(exc, ArenaError) else type(exc).__name__
            yield [history, f"⚠️ {detail}", message]

    async def load_models() -> Any:
        names = sorted(await backend.served_models())
        return gr.update(choices=names, value=names[0] if names else None)

    for trigger in (send.click, text.submit):
        trigger(respond, inputs=[model, text, chat, max_tokens, temperature],
                outputs=[chat, status, text], concurrency_limit=None, show_progress="hidden")
    clear.click(lambda: ([], ""), outputs=[chat, status])
    for trigger in (tab.select, refresh.click):
        trigger(load_models, outputs=[model], concurrency_limit=None)


def _text(content: Any) -> str:
    """A chatbot message's text (Gradio may hand back a list of content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)
