"""turngate's console (``/console``) in a real headless Chromium, as a person uses it: sign in
with the gateway token, find a session a client made, watch a turn run and end, chat, abort a
running turn. With ``TURNGATE_SCREENSHOTS=1`` the screenshots it takes go to docs/ (the
README's, docs/console-*.png); otherwise to the test's temporary directory."""

from __future__ import annotations

import os
from pathlib import Path

import httpx2
from playwright.sync_api import Page, expect

from tests.browser.support import ROOT, browser_page, needs_browser
from tests.secrets import GATEWAY_TOKEN as TOKEN
from tests.support import running_gateway

WAIT_MS = 20_000
KEY = "agent:main:alice"

pytestmark = needs_browser


def send(url: str, key: str, message: str, *, wait: bool) -> dict[str, object]:
    answer = httpx2.post(
        f"{url}/chat.send",
        json={"sessionKey": key, "message": message, "wait": wait},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    body: dict[str, object] = answer.json()
    return body


def sign_in(page: Page, url: str) -> None:
    page.goto(f"{url}/console")
    page.get_by_test_id("signin-token").fill(TOKEN)
    page.get_by_test_id("signin-submit").click()
    expect(page.get_by_test_id("sessions-view")).to_be_visible(timeout=WAIT_MS)


def test_the_console_shows_turns_live_chats_and_aborts(tmp_path: Path) -> None:
    shots = ROOT / "docs" if os.environ.get("TURNGATE_SCREENSHOTS") else tmp_path
    with running_gateway(tmp_path, token=TOKEN, echo_latency_ms=1500) as url:
        assert send(url, KEY, "good morning", wait=True)["status"] == "ok"
        with browser_page(1400, 900) as (page, console):
            sign_in(page, url)
            row = page.locator(f'[data-testid="session-row"][data-session-key="{KEY}"]')
            expect(row).to_be_visible(timeout=WAIT_MS)
            # A turn another client sends shows running, then ends, without a reload.
            send(url, KEY, "what is on today?", wait=False)
            expect(row).to_have_attribute("data-state", "running", timeout=WAIT_MS)
            page.screenshot(path=str(shots / "console-sessions.png"))
            expect(row).to_have_attribute("data-state", "idle", timeout=WAIT_MS)

            # The session page, and a chat from it.
            page.goto(f"{url}/console#/session/{KEY}")
            session = page.get_by_test_id("session-page")
            expect(session).to_be_visible(timeout=WAIT_MS)
            page.get_by_test_id("chat-input").fill("hello from the console")
            page.get_by_test_id("chat-send").click()
            expect(page.get_by_test_id("chat-reply-text").last).to_have_text(
                "echo: hello from the console", timeout=WAIT_MS
            )
            turns = page.locator('[data-testid="turn-row"][data-turn-state="replied"]')
            expect(turns).to_have_count(3, timeout=WAIT_MS)
            page.screenshot(path=str(shots / "console-session.png"), full_page=True)

            # Abort a running turn from its session page.
            send(url, KEY, "a long one", wait=False)
            expect(session).to_have_attribute("data-state", "running", timeout=WAIT_MS)
            page.get_by_test_id("abort-button").click()
            page.get_by_test_id("confirm-ok").click()
            aborted = page.locator('[data-testid="turn-row"][data-turn-state="aborted"]')
            expect(aborted).to_have_count(1, timeout=WAIT_MS)
            assert console.problems == []
