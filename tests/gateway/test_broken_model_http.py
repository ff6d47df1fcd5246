"""A model whose answer is broken, behind a real gateway: never delivered as a reply.

The gateway runs on loopback with an OpenAI-compatible provider pointed at the fake model
server of ``tests/providers/fakes.py``; each test scripts what that server answers and sends
``POST /chat.send`` with a real HTTP client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.providers.fakes import (
    KEY_ENV,
    REPLY,
    SECRET_KEY,
    FakeModelServer,
    fake_provider,
    running,
)
from tests.support import gateway_config, serve
from turngate.gateway.app import create_app

SEND_TIMEOUT_S = 15.0
"""Bound on one ``/chat.send``: its turn's retries and fallback all fit well within it."""


@pytest.fixture
def server() -> Iterator[FakeModelServer]:
    """A scripted OpenAI-compatible fake on an ephemeral loopback port."""
    with running(FakeModelServer()) as fake:
        yield fake


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record at WARNING and above, from every logger (the gateway's thread too)."""
    caplog.set_level(logging.WARNING)
    return caplog


def send(
    tmp_path: Path, server: FakeModelServer, message: str, *fallbacks: str, max_retries: int = 1
) -> httpx2.Response:
    """One ``/chat.send`` to a gateway whose model is ``fake/primary``, then ``fallbacks``."""
    config = gateway_config(
        tmp_path,
        # Not running_gateway(): its `provider` is a Provider object that replaces the
        # configured models, and these tests are about the configured ones.
        provider="fake",
        model="primary",
        fallbacks=tuple(f"fake/{model}" for model in fallbacks),
        providers=(fake_provider(server, max_retries=max_retries),),
    )
    with (
        serve(create_app(config)) as url,
        httpx2.Client(base_url=url, timeout=SEND_TIMEOUT_S) as client,
    ):
        return client.post("/chat.send", json={"sessionKey": "agent:main:main", "message": message})


def assert_logged_as_warnings_only(logs: pytest.LogCaptureFixture) -> list[str]:
    """No ERROR record and no traceback, and no API key; the turngate WARNING messages."""
    for record in logs.records:
        assert record.levelno < logging.ERROR, record.getMessage()
        assert record.exc_info is None, record.getMessage()
    assert "Traceback" not in logs.text
    assert SECRET_KEY not in logs.text
    return [r.getMessage() for r in logs.records if r.name.startswith("turngate")]


def error_of(response: httpx2.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert body["status"] == "failed", body
    error: dict[str, Any] = body["error"]
    return error


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake provider's key, read from the environment when the gateway starts."""
    monkeypatch.setenv(KEY_ENV, SECRET_KEY)


def test_a_reply_cut_off_mid_stream_fails_the_turn_instead_of_answering_ok(
    tmp_path: Path, server: FakeModelServer, logs: pytest.LogCaptureFixture
) -> None:
    server.script("primary", ["cut_off"])
    response = send(tmp_path, server, "hi", "backup")
    assert response.status_code == 502, response.text
    error = error_of(response)
    assert error["code"] == "incomplete_response"
    assert "fake/primary: the answer stopped before the model finished it" in error["message"]
    # Part of the answer had gone out: the backup's answer is not spliced onto it.
    assert [c.model for c in server.calls()] == ["primary"]
    warnings = assert_logged_as_warnings_only(logs)
    assert any("fake/primary failed after part of its answer went out" in w for w in warnings)


def test_a_stream_cut_off_before_any_text_falls_back_and_the_backup_s_reply_is_delivered(
    tmp_path: Path, server: FakeModelServer, logs: pytest.LogCaptureFixture
) -> None:
    server.script("primary", ["cut_off_before_text", "cut_off_before_text"])
    response = send(tmp_path, server, "hi", "backup", max_retries=1)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["reply"]) == ("ok", "".join(REPLY))
    assert [c.model for c in server.calls()] == ["primary", "primary", "backup"]
    warnings = assert_logged_as_warnings_only(logs)
    assert any("fake/primary failed: the answer stopped" in w and "retry 1" in w for w in warnings)
    assert any(w.endswith("falling back to fake/backup") for w in warnings)


def test_an_html_page_instead_of_a_stream_fails_the_turn_as_an_unreadable_answer(
    tmp_path: Path, server: FakeModelServer, logs: pytest.LogCaptureFixture
) -> None:
    server.script("primary", ["html_page", "html_page"])
    response = send(tmp_path, server, "hi", max_retries=1)
    assert response.status_code == 502, response.text
    error = error_of(response)
    # Retried, then no model was left: the chain's code, with the reason for each attempt.
    assert error["code"] == "all_models_failed"
    assert (
        "fake/primary: the answer is not an event stream (HTTP 200, content-type text/html;"
        " charset=utf-8): <html> <head><title>502 Bad Gateway</title></head>"
    ) in error["message"]
    assert error["message"].endswith(" x2")
    assert [c.model for c in server.calls()] == ["primary", "primary"]
    warnings = assert_logged_as_warnings_only(logs)
    assert any("not an event stream" in w and "retry 1 of 1" in w for w in warnings)


def test_an_empty_answer_from_one_model_is_replaced_by_the_next_model_s_reply(
    tmp_path: Path, server: FakeModelServer, logs: pytest.LogCaptureFixture
) -> None:
    server.script("primary", ["empty_finish"])
    response = send(tmp_path, server, "hi", "backup", max_retries=0)
    assert response.status_code == 200, response.text
    assert response.json()["reply"] == "".join(REPLY)
    assert [c.model for c in server.calls()] == ["primary", "backup"]
    warnings = assert_logged_as_warnings_only(logs)
    assert any("the model finished without any text; falling back" in w for w in warnings)
