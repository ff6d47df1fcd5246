"""``/metrics``: the Prometheus text a scraper reads, without the ``*_created`` duplicates."""

from __future__ import annotations

from pathlib import Path

import httpx2

from tests.support import running_gateway

CALL_TIMEOUT_S = 10.0


def test_metrics_have_no_created_series_even_after_turns(tmp_path: Path) -> None:
    with (
        running_gateway(tmp_path) as url,
        httpx2.Client(base_url=url, timeout=CALL_TIMEOUT_S) as http,
    ):
        sent = http.post("/chat.send", json={"sessionKey": "agent:main:m", "message": "hi"})
        assert sent.status_code == 200, sent.text
        text = http.get("/metrics").text
    assert 'turngate_turns_accepted_total{lane="direct"} 1.0' in text
    assert "turngate_turn_run_seconds_count" in text
    assert [line for line in text.splitlines() if "_created" in line] == []
