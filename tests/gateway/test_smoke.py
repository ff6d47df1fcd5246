"""The README's first command works: one message, one real reply."""

from __future__ import annotations

from pathlib import Path

import httpx2

from tests.support import running_gateway


def test_curl_example_gets_a_real_reply(tmp_path: Path) -> None:
    with running_gateway(tmp_path) as url:
        response = httpx2.post(
            f"{url}/chat.send", json={"sessionKey": "agent:test:main", "message": "hi"}
        )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["reply"] == "echo: hi"
    assert body["sessionKey"] == "agent:test:main"
    assert body["runId"]
