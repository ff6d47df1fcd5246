"""OpenClaw's own Control UI, unchanged, against turngate in a real headless Chromium: served
by turngate from ``control_ui_dir`` (the ``dist/control-ui`` folder of the ``openclaw``
package ``make test`` installs), on the same origin as the WebSocket protocol."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx2
import pytest
from playwright.sync_api import expect

from tests.browser.support import ROOT, browser_page, needs_browser
from tests.secrets import GATEWAY_TOKEN as TOKEN
from tests.support import running_gateway
from turngate.config import GatewayConfig

CONTROL_UI = ROOT / ".cache" / "openclaw" / "node_modules" / "openclaw" / "dist" / "control-ui"
WAIT_MS = 20_000

pytestmark = [
    needs_browser,
    pytest.mark.skipif(
        not (CONTROL_UI / "index.html").exists(),
        reason="OpenClaw is not installed: make test installs it (scripts/install-openclaw-cli.sh)",
    ),
]


def test_the_control_ui_lists_sessions_and_its_chat_gets_a_reply_with_no_console_error(
    tmp_path: Path,
) -> None:
    with running_gateway(
        tmp_path, token=TOKEN, control_ui_dir=CONTROL_UI, echo_latency_ms=50
    ) as url:
        # A session of someone else's, made before the page opens: the sidebar lists it.
        sent = httpx2.post(
            f"{url}/chat.send",
            json={"sessionKey": "agent:main:elsewhere", "message": "from another client"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert sent.json()["status"] == "ok", sent.text
        with browser_page() as (page, console):
            page.goto(f"{url}/#token={TOKEN}")
            composer = page.get_by_role("textbox", name="Chat composer")
            expect(composer).to_be_visible(timeout=WAIT_MS)
            expect(page.locator("[data-sidebar-session-archive]").first).to_be_attached(
                timeout=WAIT_MS
            )
            message = f"hello {uuid.uuid4().hex[:8]}"
            composer.fill(message)
            composer.press("Enter")
            reply = page.locator(".chat-group.assistant .chat-text", has_text=f"echo: {message}")
            expect(reply).to_have_count(1, timeout=WAIT_MS)
            expect(page.locator(".chat-group.user .chat-text", has_text=message)).to_have_count(1)
            # After the run the page reloads its history: still one reply, not two.
            page.wait_for_load_state("networkidle")
            expect(reply).to_have_count(1)
            assert console.problems == []


def test_a_deep_link_loads_the_page_and_its_assets(tmp_path: Path) -> None:
    with running_gateway(tmp_path, token=TOKEN, control_ui_dir=CONTROL_UI) as url:
        page_html = httpx2.get(f"{url}/chat/main", timeout=10)
        assert page_html.status_code == 200
        assert 'data-openclaw-control-ui-base-path=""' in page_html.text
        assert 'href="./' not in page_html.text
        # The gateway's own routes still want the token; the UI's files do not; the
        # gateway's namespaces stay its own.
        assert httpx2.get(f"{url}/health", timeout=10).status_code == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx2.get(f"{url}/console/api/nothing", headers=bearer).status_code == 404
        assert httpx2.get(f"{url}/v1/nothing", headers=bearer).status_code == 404
        config = httpx2.get(
            f"{url}/control-ui-config.json",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert config.json()["terminalEnabled"] is False


def test_a_message_another_client_sends_shows_in_the_open_chat_once(tmp_path: Path) -> None:
    with (
        running_gateway(
            tmp_path, token=TOKEN, control_ui_dir=CONTROL_UI, echo_latency_ms=50
        ) as url,
        browser_page() as (page, console),
    ):
        page.goto(f"{url}/#token={TOKEN}")
        expect(page.get_by_role("textbox", name="Chat composer")).to_be_visible(timeout=WAIT_MS)
        page.wait_for_load_state("networkidle")
        message = f"from elsewhere {uuid.uuid4().hex[:8]}"
        sent = httpx2.post(
            f"{url}/chat.send",
            json={"sessionKey": "agent:main:main", "message": message},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert sent.json()["status"] == "ok", sent.text
        # The page is not reloaded: the session's events bring the message and its reply.
        user = page.locator(".chat-group.user .chat-text", has_text=message)
        reply = page.locator(".chat-group.assistant .chat-text", has_text=f"echo: {message}")
        expect(user).to_have_count(1, timeout=WAIT_MS)
        expect(reply).to_have_count(1, timeout=WAIT_MS)
        page.wait_for_load_state("networkidle")
        expect(user).to_have_count(1)
        expect(reply).to_have_count(1)
        assert console.problems == []


def test_the_automations_page_lists_a_cron_job_runs_it_now_and_shows_the_run(
    tmp_path: Path,
) -> None:
    agents = GatewayConfig.model_validate(
        {
            "agents": [
                {
                    "id": "main",
                    "cron": [{"id": "daily-brief", "schedule": "0 9 * * *", "message": "brief"}],
                }
            ]
        }
    ).agents
    with (
        running_gateway(
            tmp_path, token=TOKEN, control_ui_dir=CONTROL_UI, echo_latency_ms=50, agents=agents
        ) as url,
        browser_page() as (page, console),
    ):
        page.goto(f"{url}/automations#token={TOKEN}")
        expect(page.get_by_text("Cron 0 9 * * * (UTC)")).to_be_visible(timeout=WAIT_MS)
        page.get_by_role("button", name="Run now: daily-brief").click()
        expect(page.get_by_text("daily-brief: Run queued")).to_be_visible(timeout=WAIT_MS)
        page.get_by_text("Run history").click()
        # The run's end reaches the page as a ``cron`` event, and the page reloads its runs.
        expect(page.get_by_text("daily-brief · OK")).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_text("echo: brief")).to_be_visible()
        assert console.problems == []
