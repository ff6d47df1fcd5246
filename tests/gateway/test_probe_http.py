"""Seed 000's probe, through HTTP: sequential sends to one session all get real replies.

In the field, ten sequential ``chat.send`` calls to one session failed every other time with a
canned reply, because the session's run guard was cleared after the reply was delivered. Here
every call must pass, whatever the model's latency and whatever the gap between calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from tests.support import running_gateway
from turngate.cli import main

CALLS = 10
ECHO_LATENCIES_MS = (0, 50, 300)
GAPS_S = (0.0, 1.0)
CALL_TIMEOUT_S = 10.0
SCENARIOS = [(latency_ms, gap_s) for latency_ms in ECHO_LATENCIES_MS for gap_s in GAPS_S]


@dataclass(frozen=True, slots=True)
class ProbeCall:
    """One call of the probe as its client saw it."""

    index: int
    token: str
    http_status: int
    status: str
    reply: str | None

    @property
    def passed(self) -> bool:
        """A real reply: status ok and the call's own token echoed back (not a canned text)."""
        return self.status == "ok" and self.reply is not None and self.token in self.reply


async def probe(client: httpx2.AsyncClient, session_key: str, gap_s: float) -> list[ProbeCall]:
    """Seed 000's loop: ``CALLS`` sends to one session, each after the previous answer."""
    nonce = uuid.uuid4().hex[:8]
    calls: list[ProbeCall] = []
    for index in range(1, CALLS + 1):
        if index > 1 and gap_s > 0:
            await asyncio.sleep(gap_s)  # the scenario's gap between calls, not a sync
        token = f"ok-{index}-{nonce}"
        response = await client.post(
            "/chat.send",
            json={"sessionKey": session_key, "message": f"Reply containing literal: {token}"},
        )
        body = response.json()
        calls.append(
            ProbeCall(index, token, response.status_code, body.get("status"), body.get("reply"))
        )
    return calls


@pytest.mark.asyncio
async def test_sequential_sends_to_one_session_all_get_real_replies(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        urls = {
            latency_ms: stack.enter_context(
                running_gateway(tmp_path / f"echo-{latency_ms}ms", echo_latency_ms=latency_ms)
            )
            for latency_ms in ECHO_LATENCIES_MS
        }
        async with contextlib.AsyncExitStack() as clients_stack:
            clients = {
                latency_ms: await clients_stack.enter_async_context(
                    httpx2.AsyncClient(base_url=url, timeout=CALL_TIMEOUT_S)
                )
                for latency_ms, url in urls.items()
            }
            results = await asyncio.gather(
                *(
                    probe(clients[latency_ms], f"agent:test:probe-{latency_ms}ms-{gap_s:g}s", gap_s)
                    for latency_ms, gap_s in SCENARIOS
                )
            )

    for (latency_ms, gap_s), calls in zip(SCENARIOS, results, strict=True):
        failed = [call for call in calls if not call.passed]
        assert len(calls) == CALLS
        assert not failed, f"echo {latency_ms}ms, gap {gap_s:g}s: failed calls {failed}"
        assert all(call.http_status == 200 for call in calls)


def test_probe_command_reports_every_call_passing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_gateway(tmp_path, echo_latency_ms=50) as url:
        exit_code = main(["probe", "--url", url, "--calls", str(CALLS), "--gap", "0"])

    lines = capsys.readouterr().out.splitlines()
    call_lines = [line for line in lines if line.startswith("call ")]
    assert exit_code == 0
    assert len(call_lines) == CALLS
    assert all(" PASS " in line for line in call_lines), call_lines
    assert not [line for line in lines if "FAIL" in line]
    assert lines[-1].startswith(f"{CALLS}/{CALLS} PASS")
