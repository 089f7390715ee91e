"""The side-by-side battle tab, one builder for both modes.

``anonymous``: the control plane samples two models; until the vote the tab shows them only as
"Model A" / "Model B". Everything a browser receives is a component value, so the round (battle
id, histories) lives in a ``gr.State``, which stays on the server, and no component ever holds
a model name before the vote. ``named``: the user picks both models (the pickers are filled when
the tab is opened, never at page load, so the page source of the anonymous tab names no model).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import gradio as gr

from arena.battles import ANONYMOUS_LABELS
from arena.errors import ArenaError
from arena.models import BattleMode, VoteChoice
from web.backend import Backend, Caller

logger = logging.getLogger(__name__)

VOTES: tuple[tuple[VoteChoice, str], ...] = (
    ("a", "👈 A is better"),
    ("b", "👉 B is better"),
    ("tie", "🤝 Tie"),
    ("bothbad", "👎 Both are bad"),
)
Message = dict[str, str]


@dataclass(frozen=True)
class Round:
    """One battle as the tab shows it (server-side only)."""

    battle_id: str | None = None
    history: tuple[list[Message], list[Message]] = field(default_factory=lambda: ([], []))
    labels: tuple[str, str] = ANONYMOUS_LABELS
    answered: bool = False  # the last turn finished on both sides: a vote is possible
    voted: bool = False
    status: str = ""


def caller(request: gr.Request | None) -> Caller:
    """The browser session and address the rate limits count against."""
    session = (request.session_hash if request else None) or "ui"
    host = request.client.host if request is not None and request.client else "unknown"
    return Caller(session_id=f"ui-{session}", ip=host)


def error_text(exc: Exception) -> str:
    if isinstance(exc, ArenaError):
        return f"⚠️ {exc.message}"
    logger.exception("battle UI action failed")
    return f"⚠️ internal error ({type(exc).__name__}); try again"


def build_battle_tab(backend: Backend, tab: gr.Tab, *, mode: BattleMode) -> None:
    """Render the battle tab's components and wire its events (call inside ``tab``)."""
    named = mode == "named"
    intro = ("Pick two models, ask a question, compare the answers, vote." if named else
             "Ask a question: two anonymous models answer side by side. Vote for the better "
             "answer to see who they are.")
    gr.Markdown(intro)
    pickers: list[gr.Dropdown] = []
    if named:
        with gr.Row():
            pickers = [gr.Dropdown(label=f"Model {side}", choices=[], interactive=True,
                                   elem_id=f"{mode}-pick-{side.lower()}")
                       for side in "AB"]
            refresh = gr.Button("↻ models", scale=0)
    state = gr.State(Round())
    with gr.Row():
        chats = [gr.Chatbot(label=label, height=360, buttons=[], elem_id=f"{mode}-chat-{side}")
                 for label, side in zip(ANONYMOUS_LABELS, "ab", strict=True)]
    status = gr.Markdown("", elem_classes=["battle-status"], elem_id=f"{mode}-status")
    with gr.Row():
        vote_buttons = [gr.Button(label, interactive=False, elem_id=f"{mode}-vote-{choice}")
                        for choice, label in VOTES]
    with gr.Row():
        text = gr.Textbox(show_label=False, placeholder="Ask both models…", scale=5,
                          elem_id=f"{mode}-input")
        send_button = gr.Button("Send", variant="primary", scale=1, elem_id=f"{mode}-send")
    with gr.Row():
        regenerate = gr.Button("🔄 Regenerate", interactive=False, elem_id=f"{mode}-regenerate")
        new_round = gr.Button("🎲 New round", elem_id=f"{mode}-new-round")

    outputs = [state, *chats, text, send_button, regenerate, new_round, status, *vote_buttons]

    def view(r: Round, *, busy: bool = False, clear_text: bool = False) -> list[Any]:
        can_vote = r.answered and not r.voted and not busy
        return [
            r,
            *(gr.update(value=list(h), label=label) for h, label in zip(r.history, r.labels,
                                                                       strict=True)),
            (gr.update(value="", interactive=not busy and not r.voted) if clear_text
             else gr.update(interactive=not busy and not r.voted)),
            gr.update(interactive=not busy and not r.voted),
            gr.update(interactive=r.answered and not r.voted and not busy),
            gr.update(interactive=not busy),
            r.status,
            *(gr.update(interactive=can_vote) for _ in vote_buttons),
        ]

    async def stream(r: Round, content: str | None) -> AsyncIterator[list[Any]]:
        """Run one turn (``content=None``: regenerate) and yield the view as deltas arrive."""
        before = r
        if content is None:
            history = tuple(list(h[:-1]) for h in r.history)
        else:
            history = tuple([*h, {"role": "user", "content": content}] for h in r.history)
        answers = {"a": "", "b": ""}
        errors: dict[str, str] = {}
        r = replace(r, answered=False, status="Answering…")

        def current() -> Round:
            hist = tuple([*h, {"role": "assistant", "content": answers[side]}]
                         for h, side in zip(history, "ab", strict=True))
            return replace(r, history=(hist[0], hist[1]))

        yield view(current(), busy=True, clear_text=content is not None)
        async for event in backend.turn(r.battle_id or "", content=content):
            side = event.get("side")
            if side in answers and "delta" in event:
                answers[side] += event["delta"]
            elif side in answers and "error" in event:
                errors[side] = event["error"]
            elif event.get("done") and side is None:
                if event.get("stored"):
                    yield view(replace(current(), answered=True,
                                       status="Both answers are in: vote, or keep chatting."))
                    return
                problem = " ".join(errors.values()) or event.get("error") or "the turn failed"
                yield view(replace(before, status=f"⚠️ {problem}"))
                return
            yield view(current(), busy=True)

    # the request comes first: Gradio inserts it by position, and the pickers are variadic
    async def send(request: gr.Request, r: Round, message: str,
                   *picked: str | None) -> AsyncIterator[list[Any]]:
        if not (message or "").strip():
            yield view(replace(r, status="⚠️ type a message first"))
            return
        try:
            if r.battle_id is None or r.voted:
                battle = await backend.start_battle(
                    caller(request), mode=mode,
                    model_a=picked[0] if named else None, model_b=picked[1] if named else None,
                )
                r = Round(battle_id=battle.id, labels=(battle.models[0], battle.models[1]))
            async for update in stream(r, message):
                yield update
        except Exception as exc:  # the UI's boundary: show the message, keep the page alive
            yield view(replace(r, status=error_text(exc)))

    async def regen(r: Round) -> AsyncIterator[list[Any]]:
        try:
            async for update in stream(r, None):
                yield update
        except Exception as exc:
            yield view(replace(r, status=error_text(exc)))

    def make_vote(choice: VoteChoice):
        async def vote(r: Round, request: gr.Request) -> list[Any]:
            if r.battle_id is None:
                return view(r)
            try:
                result = await backend.vote(caller(request), r.battle_id, choice)
            except Exception as exc:
                return view(replace(r, status=error_text(exc)))
            a, b = result.model_a or "?", result.model_b or "?"
            status = f"**Thanks for voting!** Model A: **{a}** · Model B: **{b}**"
            if result.flagged:
                status += ("  \nAn answer named a model, so this vote is kept but left out of "
                           "the ratings.")
            return view(replace(r, labels=(f"Model A: {a}", f"Model B: {b}"), voted=True,
                                status=status + "  \nPress **New round** to battle again."))

        return vote

    def reset(_r: Round) -> list[Any]:
        return view(Round(status=""), clear_text=True)

    common: dict[str, Any] = {"outputs": outputs, "concurrency_limit": None, "show_progress": "hidden"}
    for trigger in (send_button.click, text.submit):
        trigger(send, inputs=[state, text, *pickers], **common)
    regenerate.click(regen, inputs=[state], **common)
    for (choice, _), button in zip(VOTES, vote_buttons, strict=True):
        button.click(make_vote(choice), inputs=[state], **common)
    new_round.click(reset, inputs=[state], **common)
    if named:
        async def load_models() -> list[Any]:
            names = sorted(await backend.served_models())
            first = names[0] if names else None
            second = names[1] if len(names) > 1 else None
            return [gr.update(choices=names, value=first), gr.update(choices=names, value=second)]

        # filled when the tab opens, not at page load: the page must name no model before a vote
        for trigger in (tab.select, refresh.click):
            trigger(load_models, outputs=pickers, concurrency_limit=None)
