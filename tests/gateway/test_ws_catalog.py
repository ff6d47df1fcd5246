"""What OpenClaw's Control UI reads about the gateway over WebSocket, answered from the
configuration and the cron lane: agents and their identity, models and their keys, the
chat's metadata, the configuration with its secrets redacted, the cron jobs (in the page
shape the UI checks strictly), a job run now and its past fires; and a handshake refused in
the shape its login screen shows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.gateway.test_ws_directory import call
from tests.gateway.test_ws_hardening import refused_handshake
from tests.gateway.test_ws_protocol import Client, connect_frame, session
from tests.support import running_gateway
from turngate.config import GatewayConfig

TOKEN = "catalog-token-0123456789"
MISSING_KEY_ENV = "TURNGATE_TEST_KEY_THAT_IS_NOT_SET"
AGENTS = GatewayConfig.model_validate(
    {
        "agents": [
            {
                "id": "main",
                "cron": [{"id": "daily", "schedule": "0 9 * * *", "message": "morning brief"}],
            },
            {"id": "ops", "model": "echo/fast", "fallbacks": ["echo/slow"]},
        ]
    }
).agents
PROVIDERS = [{"id": "spare", "kind": "openai", "api_key_env": MISSING_KEY_ENV}]


async def refused(client: Client, method: str, **params: Any) -> dict[str, Any]:
    [answer] = await client.response(await client.request(method, **params))
    assert answer["ok"] is False, answer
    error: dict[str, Any] = answer["error"]
    return error


def check_cron_page(page: dict[str, Any], limit: int, offset: int) -> None:
    """The checks OpenClaw's Control UI makes of a ``cron.list`` page (it refuses the page,
    "cron.list returned an invalid inventory page", when one fails)."""
    assert isinstance(page["jobs"], list)
    assert isinstance(page["snapshotRevision"], str)
    assert page["snapshotRevision"]
    assert isinstance(page["total"], int)
    assert page["total"] >= 0
    assert page["offset"] == offset
    assert 1 <= page["limit"] <= limit
    assert len(page["jobs"]) <= page["limit"]
    end = offset + len(page["jobs"])
    assert end <= page["total"]
    if page["hasMore"]:
        assert page["nextOffset"] == end < page["total"]
    else:
        assert (page["nextOffset"], end) == (None, page["total"])


@pytest.mark.asyncio
async def test_agents_their_identity_and_models_come_from_the_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MISSING_KEY_ENV, raising=False)
    with running_gateway(tmp_path, agents=AGENTS, providers=PROVIDERS) as url:
        async with session(url) as client:
            agents = await call(client, "agents.list")
            identity = await call(client, "agent.identity.get", agentId="ops")
            unknown = await refused(client, "agent.identity.get", agentId="nobody")
            unknown_models = await refused(client, "models.list", agentId="nobody")
            every = await call(client, "models.list", view="configured")
            ops = await call(client, "models.list", sessionKey="agent:ops:x", agentId="ops")
            mismatch = await refused(
                client, "models.list", sessionKey="agent:ops:x", agentId="main"
            )
            metadata = await call(client, "chat.metadata", agentId="ops", sessionKey="agent:ops:x")
            auth = await call(client, "models.authStatus", agentId="main")
    assert [(a["id"], a["model"]["primary"]) for a in agents["agents"]] == [
        ("main", "echo/echo"),
        ("ops", "echo/fast"),
    ]
    assert identity == {"agentId": "ops", "name": "ops", "nameSource": "config"}
    assert unknown["details"]["code"] == "unknown_agent"
    assert unknown["message"].startswith("agentId: unknown agent 'nobody'")
    assert unknown_models["details"]["code"] == "unknown_agent"
    assert [(m["provider"], m["id"]) for m in every["models"]] == [
        ("echo", "echo"),
        ("echo", "fast"),
        ("echo", "slow"),
    ]
    assert [m["id"] for m in ops["models"]] == ["fast", "slow"]
    # A session keeps its agent's models: the UI offers no switch turngate cannot make.
    assert {m["manualSelectionAllowed"] for m in ops["models"]} == {False}
    assert ops["accountSelection"]["kind"] == "automatic"
    assert mismatch["details"]["code"] == "invalid_field"
    assert metadata["models"] == ops["models"]
    assert (metadata["commands"], metadata["runtimeSelectionLocked"]) == ([], True)
    statuses = {p["provider"]: p["status"] for p in auth["providers"]}
    assert statuses == {"spare": "missing", "echo": "static"}
    spare = next(p for p in auth["providers"] if p["provider"] == "spare")
    assert spare["apiKey"] == {"source": "env", "envVar": MISSING_KEY_ENV}


@pytest.mark.asyncio
async def test_the_configuration_is_shown_with_every_secret_redacted(tmp_path: Path) -> None:
    with running_gateway(tmp_path, token=TOKEN, agents=AGENTS) as url:
        async with session(url, token=TOKEN) as client:
            answer = await call(client, "config.get")
    assert TOKEN not in json.dumps(answer)
    assert answer["config"]["token"] == "__OPENCLAW_REDACTED__"
    assert answer["valid"] is True
    assert answer["issues"] == []
    assert [a["id"] for a in answer["config"]["agents"]] == ["main", "ops"]
    assert answer["hash"] == answer["configRevisionHash"]
    assert answer["hash"].startswith("sha256:")


@pytest.mark.asyncio
async def test_cron_jobs_are_listed_run_now_and_their_fires_shown(tmp_path: Path) -> None:
    with running_gateway(tmp_path, agents=AGENTS, echo_latency_ms=0) as url:
        async with session(url) as client:
            status = await call(client, "cron.status")
            before = await call(client, "cron.list", agentId="main", limit=50, offset=0)
            compact = await call(client, "cron.list", compact=True, limit=50, offset=0)
            none = await call(client, "cron.list", agentId="ops", limit=50, offset=0)
            # A limit past the page bound is taken as the bound, not refused.
            wide = await call(client, "cron.list", limit=10_000, offset=0)
            await call(client, "sessions.subscribe")
            run = await call(client, "cron.run", id="daily", mode="force")
            while not [e for e in client.events if e["payload"].get("action") == "finished"]:
                await client.pump()
            runs = await call(client, "cron.runs", scope="all", limit=50, offset=0)
            after = await call(client, "cron.list", limit=50, offset=0)
            missing = await refused(client, "cron.run", id="weekly")
    assert (status["enabled"], status["jobs"]) == (True, 1)
    assert status["nextWakeAtMs"] > 0
    for page in (before, compact, none, after):
        check_cron_page(page, limit=50, offset=0)
    check_cron_page(wide, limit=200, offset=0)
    [job] = before["jobs"]
    assert job["schedule"] == {"kind": "cron", "expr": "0 9 * * *", "tz": "UTC"}
    assert job["payload"] == {"kind": "agentTurn", "message": "morning brief"}
    assert job["state"]["nextRunAtMs"] == status["nextWakeAtMs"]
    assert "lastRunStatus" not in job["state"]
    [row] = compact["jobs"]
    assert (row["lastRunAtMs"], row["lastRunStatus"]) == (None, None)
    assert none["jobs"] == []
    assert run["ok"] is True
    assert run["enqueued"] is True
    # A watching client hears the fire start and end (the Control UI reloads its jobs on it).
    fired = [e["payload"] for e in client.events if e["event"] == "cron"]
    assert [(f["action"], f["runId"], f.get("status")) for f in fired] == [
        ("started", run["runId"], None),
        ("finished", run["runId"], "ok"),
    ]
    [fire] = runs["entries"]
    assert (fire["jobId"], fire["status"], fire["runId"]) == ("daily", "ok", run["runId"])
    assert fire["summary"] == "echo: morning brief"
    assert after["jobs"][0]["state"]["lastRunStatus"] == "ok"
    assert after["snapshotRevision"] != before["snapshotRevision"]
    assert missing["details"]["code"] == "not_found"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("token", "code", "step"),
    [
        (None, "AUTH_TOKEN_MISSING", "update_auth_configuration"),
        ("not-this-gateways-token", "AUTH_TOKEN_MISMATCH", "update_auth_credentials"),
    ],
)
async def test_a_refused_token_is_answered_in_the_shape_openclaws_login_screen_reads(
    tmp_path: Path, token: str | None, code: str, step: str
) -> None:
    with running_gateway(tmp_path, token=TOKEN) as url:
        refusal, close = await refused_handshake(url, connect_frame(token))
    error = refusal["error"]
    assert error["code"] == "INVALID_REQUEST"
    assert error["message"].startswith("unauthorized: gateway token")
    assert error["details"] == {
        "code": code,
        "authReason": code.removeprefix("AUTH_").lower(),
        "canRetryWithDeviceToken": False,
        "recommendedNextStep": step,
    }
    assert close == 1008


@pytest.mark.asyncio
async def test_hello_lists_what_the_gateway_serves_and_its_session_defaults(
    tmp_path: Path,
) -> None:
    with running_gateway(tmp_path) as url:
        async with websockets.connect(url.replace("http://", "ws://") + "/") as ws:
            await ws.recv()
            await ws.send(json.dumps(connect_frame()))
            hello = json.loads(await ws.recv())["payload"]
    methods = hello["features"]["methods"]
    for method in ("connect", "chat.send", "sessions.messages.subscribe", "cron.list"):
        assert method in methods
    assert len(methods) == len(set(methods))
    assert "session.message" in hello["features"]["events"]
    assert hello["snapshot"]["sessionDefaults"]["mainSessionKey"] == "agent:main:main"
