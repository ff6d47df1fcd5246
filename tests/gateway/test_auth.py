"""The gateway token: required off loopback, checked on every HTTP route but /healthz."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from tests.secrets import GATEWAY_TOKEN as TOKEN
from tests.support import running_gateway
from turngate.cli import main
from turngate.config import load_config
from turngate.errors import InvalidFieldError

SEND = {"sessionKey": "agent:main:main", "message": "hi"}


def test_without_the_token_http_requests_are_refused_with_401(tmp_path: Path) -> None:
    with running_gateway(tmp_path, token=TOKEN) as url, httpx2.Client(base_url=url) as http:
        missing = http.post("/chat.send", json=SEND)
        wrong = http.post("/chat.send", json=SEND, headers={"Authorization": "Bearer nope"})
        metrics = http.get("/metrics")
        live = http.get("/healthz")
        ok = http.post("/chat.send", json=SEND, headers={"Authorization": f"Bearer {TOKEN}"})
    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "unauthorized")
    assert "Bearer" in missing.json()["error"]["message"]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert wrong.status_code == 401
    assert "not this gateway's token" in wrong.json()["error"]["message"]
    assert metrics.status_code == 401
    assert live.json() == {"ok": True, "status": "live"}
    assert ok.json()["reply"] == "echo: hi"


def test_a_gateway_exposed_beyond_loopback_refuses_to_start_without_a_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(InvalidFieldError) as caught:
        load_config(env={"TURNGATE_HOST": "0.0.0.0", "TURNGATE_STATE_DIR": "/nonexistent"})
    assert "not a loopback address" in caught.value.message
    assert main(["gateway", "--host", "0.0.0.0", "--state-dir", "/nonexistent"]) == 8
    assert "set a gateway token" in capsys.readouterr().err
    config = load_config(
        env={"TURNGATE_HOST": "0.0.0.0", "TURNGATE_TOKEN": TOKEN, "TURNGATE_STATE_DIR": "/x"}
    )
    assert config.token == TOKEN
    assert TOKEN not in repr(config)


def test_loopback_needs_no_token(tmp_path: Path) -> None:
    with running_gateway(tmp_path, host="127.0.0.1") as url:
        assert httpx2.post(f"{url}/chat.send", json=SEND).json()["reply"] == "echo: hi"
