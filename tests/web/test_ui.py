"""The UI in a real browser: Debian's chromium driven by Playwright, against `arena serve` + workers.

A user opens /ui, asks a question in an anonymous battle, watches both answers stream, votes,
sees the names revealed, and finds the vote counted on the Leaderboard tab. Before the vote the
page (DOM and Gradio config) must not name either model. Screenshots: test-artifacts/ui/.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Proc, _control_plane, register
from tests.web.conftest import SHOTS
from tests.web.conftest import cell as _cell

pytestmark = pytest.mark.e2e

NAMES = ("tiny-llama", "tiny-opt")


@pytest.fixture()
def control_plane(tmp_path) -> Iterator[Proc]:
    """Overrides conftest's: random tiny models can emit any word of the default identity list
    ("alpaca", "llama"…), which would flag the battle and keep the vote out of the leaderboard."""
    yield from _control_plane(tmp_path, ARENA_IDENTITY_WORDS=json.dumps(["Qwxzvk"]))


def _bot_text(page, elem_id: str) -> str:
    bots = page.locator(f"#{elem_id} [data-testid='bot']")
    return " ".join(bots.all_inner_texts()).strip()


def test_battle_vote_reveal_and_leaderboard_in_a_browser(control_plane, start_worker, tiny_models,
                                                         browser_page):
    started = time.monotonic()
    assert register(control_plane, name=NAMES[0], source=str(tiny_models["llama"])).status_code == 201
    assert register(control_plane, name=NAMES[1], source=str(tiny_models["opt"]),
                    template="vicuna_v1.1").status_code == 201
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser_page
    page.goto(control_plane.url + "/ui/")
    page.locator("#anonymous-input textarea").wait_for()

    # no worker yet: a clear message, and the vote stays closed
    page.locator("#anonymous-input textarea").fill("Hello?")
    page.locator("#anonymous-send").click()
    page.locator("#anonymous-status").filter(
        has_text="need at least two models with a healthy worker").wait_for()
    assert page.locator("#anonymous-vote-a").is_disabled()
    page.screenshot(path=SHOTS / "01-no-worker.png", full_page=True)

    workers = [start_worker(name, wait=False) for name in NAMES]
    for worker in workers:
        start_worker.wait_registered(worker)

    # ask: both sides fill in while the vote buttons stay disabled, then the vote opens
    page.locator("#anonymous-input textarea").fill("What is a good name for a pet?")
    page.locator("#anonymous-send").click()
    vote_a = page.locator("#anonymous-vote-a")
    partial_seen = False
    deadline = time.monotonic() + 60
    while vote_a.is_disabled() and time.monotonic() < deadline:
        if _bot_text(page, "anonymous-chat-a") or _bot_text(page, "anonymous-chat-b"):
            partial_seen = True
        time.sleep(0.05)
    assert vote_a.is_enabled(), page.locator("#anonymous-status").inner_text()
    answers = [_bot_text(page, f"anonymous-chat-{side}") for side in "ab"]
    assert all(answers), answers
    assert partial_seen, "no answer text was shown before both answers completed"
    page.screenshot(path=SHOTS / "02-answered.png", full_page=True)

    # anonymity: neither the rendered page nor the config the browser loaded names a model
    html = page.content()
    config = httpx.get(control_plane.url + "/ui/config").text
    for name in NAMES:
        assert name not in html, f"{name} in the page before the vote"
        assert name not in config, f"{name} in the Gradio config before the vote"
    assert "Model A" in html and "Model B" in html

    vote_a.click()
    status = page.locator("#anonymous-status")
    status.filter(has_text="Model A:").wait_for()
    revealed = status.inner_text()
    assert all(name in revealed for name in NAMES), revealed
    assert "left out of the ratings" not in revealed, revealed
    assert vote_a.is_disabled()
    page.screenshot(path=SHOTS / "03-revealed.png", full_page=True)

    page.get_by_role("tab", name="Leaderboard").click()
    table = page.locator("#leaderboard-table")
    page.get_by_role("button", name="↻ Refresh").locator("visible=true").click()
    for name in NAMES:
        table.get_by_text(name, exact=True).locator("visible=true").first.wait_for()
    votes = {_cell(table, row, 1): _cell(table, row, 4) for row in range(2)}  # Model, Votes
    assert votes == dict.fromkeys(NAMES, "1"), votes
    assert re.search(r"2 models, 1 counted votes?", page.content())
    page.screenshot(path=SHOTS / "04-leaderboard.png", full_page=True)

    # Models: both registered, with their template, served by a healthy worker
    page.get_by_role("tab", name="Models").click()
    models = page.locator("#models-table")
    models.get_by_text("tiny-opt", exact=True).locator("visible=true").first.wait_for()
    served = {
        _cell(models, row, 0): (_cell(models, row, 2), _cell(models, row, 9)) for row in range(2)
    }
    assert served == {"tiny-llama": ("hf", "yes"), "tiny-opt": ("vicuna_v1.1", "yes")}, served
    page.screenshot(path=SHOTS / "05-models.png", full_page=True)

    # named side-by-side: the pickers fill when the tab opens; names shown from the start
    page.get_by_role("tab", name="Arena (side-by-side)").click()
    page.locator("#named-pick-b input").wait_for()
    page.wait_for_function("document.querySelector('#named-pick-b input').value !== ''")
    page.locator("#named-input textarea").fill("Say something.")
    page.locator("#named-send").click()
    page.locator("#named-vote-tie:not([disabled])").wait_for()
    assert all(_bot_text(page, f"named-chat-{side}") for side in "ab")
    page.locator("#named-vote-tie").click()
    page.locator("#named-status").filter(has_text="Model A:").wait_for()
    page.screenshot(path=SHOTS / "06-named.png", full_page=True)

    # direct chat with the first served model, streamed through the gateway
    page.get_by_role("tab", name="Direct chat").click()
    page.wait_for_function("document.querySelector('#chat-model input').value !== ''")
    page.locator("#chat-input textarea").fill("Hi there")
    page.locator("#chat-send").click()
    page.locator("#chat-history [data-testid='bot']").first.wait_for()
    assert _bot_text(page, "chat-history")
    page.screenshot(path=SHOTS / "07-chat.png", full_page=True)
    assert time.monotonic() - started < 90

