"""Requests the gateway refuses, and retries it must not run twice.

A refused request gets a stable error code and a message that names the field at fault, stores
nothing, and changes nothing for any session. A request resent with the same
``idempotencyKey`` is the same turn: same ``runId``, same reply, one run.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support import running_gateway
from turngate.cli import main

BODY_BYTES_MAX = 2048
MESSAGE_CHARS_MAX = 100
CALL_TIMEOUT_S = 10.0
SESSION = "agent:test:bad-input"
"""The (valid) session every bad request is aimed at."""
GOOD = {"sessionKey": SESSION, "message": "hello"}


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request body, and how the gateway must refuse it."""

    body: bytes
    status: int
    code: str
    field: str


def as_json(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


MALFORMED_JSON = {
    "truncated": Refusal(
        b'{"sessionKey": "agent:test:bad-input", "message": ', 400, "invalid_json", "body"
    ),
    # Deep enough to exhaust the parser's recursion limit, small enough to pass the size limit.
    "deeply-nested": Refusal(b"[" * (BODY_BYTES_MAX - 1), 400, "invalid_json", "body"),
    "not-utf-8": Refusal(b'{"message": "\xff"}', 400, "invalid_json", "body"),
}
NOT_AN_OBJECT = {
    "array": Refusal(b'["agent:test:bad-input", "hello"]', 400, "invalid_json", "body"),
    "string": Refusal(b'"hello"', 400, "invalid_json", "body"),
    "number": Refusal(b"3", 400, "invalid_json", "body"),
    "null": Refusal(b"null", 400, "invalid_json", "body"),
}
MISSING = {
    "sessionKey": Refusal(as_json(message="hello"), 422, "missing_field", "sessionKey"),
    "message": Refusal(as_json(sessionKey=SESSION), 422, "missing_field", "message"),
}
WRONG_TYPE = {
    "message-number": Refusal(
        as_json(sessionKey=SESSION, message=3), 422, "invalid_field", "message"
    ),
    "wait-string": Refusal(as_json(**GOOD, wait="yes"), 422, "invalid_field", "wait"),
    "timeoutMs-string": Refusal(as_json(**GOOD, timeoutMs="10"), 422, "invalid_field", "timeoutMs"),
}
OUT_OF_RANGE = {
    "timeoutMs-zero": Refusal(as_json(**GOOD, timeoutMs=0), 422, "invalid_field", "timeoutMs"),
    "timeoutMs-over-a-day": Refusal(
        as_json(**GOOD, timeoutMs=86_400_001), 422, "invalid_field", "timeoutMs"
    ),
    "idempotencyKey-with-space": Refusal(
        as_json(**GOOD, idempotencyKey="a b"), 422, "invalid_field", "idempotencyKey"
    ),
    "idempotencyKey-empty": Refusal(
        as_json(**GOOD, idempotencyKey=""), 422, "invalid_field", "idempotencyKey"
    ),
}
UNKNOWN_FIELD = Refusal(as_json(**GOOD, colour="blue"), 422, "unknown_field", "colour")
MESSAGE_TOO_LARGE = Refusal(
    as_json(sessionKey=SESSION, message="x" * (MESSAGE_CHARS_MAX + 1)),
    413,
    "message_too_large",
    "message",
)
BODY_TOO_LARGE = Refusal(
    as_json(sessionKey=SESSION, message="x" * BODY_BYTES_MAX), 413, "body_too_large", "body"
)
INVALID_SESSION_KEYS = {
    "empty": "",
    "no-agent-prefix": "main",
    "empty-agent-id": "agent::x",
    "upper-case-agent-id": "agent:Main:x",
    "empty-rest": "agent:main:",
    "space": "agent:main:a b",
    "path-traversal": "agent:main:../../etc",
    "600-chars": "agent:main:" + "a" * 589,
}
INVALID_SESSION = {
    name: Refusal(
        as_json(sessionKey=key, message="hello"), 422, "invalid_session_key", "sessionKey"
    )
    for name, key in INVALID_SESSION_KEYS.items()
}
UNKNOWN_QUEUE_MODE = Refusal(
    as_json(**GOOD, queueMode="eventually"), 422, "invalid_queue_mode", "queueMode"
)
EMPTY_MESSAGE = {
    "empty": Refusal(as_json(sessionKey=SESSION, message=""), 422, "invalid_field", "message"),
    "blank": Refusal(as_json(sessionKey=SESSION, message=" \n\t"), 422, "invalid_field", "message"),
}
UNPAIRED_SURROGATE = Refusal(
    as_json(sessionKey=SESSION, message="\ud800"), 422, "invalid_field", "message"
)
ALL_REFUSALS = [
    *MALFORMED_JSON.values(),
    *NOT_AN_OBJECT.values(),
    *MISSING.values(),
    *WRONG_TYPE.values(),
    *OUT_OF_RANGE.values(),
    UNKNOWN_FIELD,
    MESSAGE_TOO_LARGE,
    BODY_TOO_LARGE,
    *INVALID_SESSION.values(),
    UNKNOWN_QUEUE_MODE,
    *EMPTY_MESSAGE.values(),
    UNPAIRED_SURROGATE,
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One gateway, with small limits, for every refusal in this module."""
    with running_gateway(
        tmp_path_factory.mktemp("bad-input"),
        body_bytes_max=BODY_BYTES_MAX,
        message_chars_max=MESSAGE_CHARS_MAX,
    ) as url:
        yield url


@pytest.fixture
def client(gateway: str) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=gateway, timeout=CALL_TIMEOUT_S) as client:
        yield client


def post_raw(client: httpx2.Client, body: bytes) -> httpx2.Response:
    return client.post("/chat.send", content=body, headers={"content-type": "application/json"})


def assert_refused(response: httpx2.Response, refusal: Refusal) -> None:
    """The response is a refusal with the expected status and code, naming the field first."""
    assert response.status_code == refusal.status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == refusal.code
    assert body["error"]["message"].startswith(refusal.field), body["error"]["message"]


def list_sessions(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """``turngate sessions list --json`` on ``state_dir``, by session key."""
    capsys.readouterr()
    assert main(["sessions", "--state-dir", str(state_dir), "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return {row["sessionKey"]: row for row in rows}


def export_transcript(
    state_dir: Path, session_key: str, capsys: pytest.CaptureFixture[str]
) -> list[tuple[str, str]]:
    """``turngate sessions export KEY`` on ``state_dir``, as (role, text) pairs."""
    capsys.readouterr()
    assert main(["sessions", "--state-dir", str(state_dir), "export", session_key]) == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return [(entry["role"], entry["text"]) for entry in entries]


@pytest.mark.parametrize("refusal", MALFORMED_JSON.values(), ids=MALFORMED_JSON.keys())
def test_malformed_json_is_refused_as_invalid_json(client: httpx2.Client, refusal: Refusal) -> None:
    assert_refused(post_raw(client, refusal.body), refusal)


@pytest.mark.parametrize("refusal", NOT_AN_OBJECT.values(), ids=NOT_AN_OBJECT.keys())
def test_body_that_is_not_a_json_object_is_refused(client: httpx2.Client, refusal: Refusal) -> None:
    assert_refused(post_raw(client, refusal.body), refusal)


@pytest.mark.parametrize("refusal", MISSING.values(), ids=MISSING.keys())
def test_missing_field_is_refused_naming_the_field(client: httpx2.Client, refusal: Refusal) -> None:
    assert_refused(post_raw(client, refusal.body), refusal)


@pytest.mark.parametrize("refusal", WRONG_TYPE.values(), ids=WRONG_TYPE.keys())
def test_field_of_the_wrong_type_is_refused_naming_the_field(
    client: httpx2.Client, refusal: Refusal
) -> None:
    assert_refused(post_raw(client, refusal.body), refusal)


@pytest.mark.parametrize("refusal", OUT_OF_RANGE.values(), ids=OUT_OF_RANGE.keys())
def test_field_value_out_of_its_range_is_refused_naming_the_field(
    client: httpx2.Client, refusal: Refusal
) -> None:
    assert_refused(post_raw(client, refusal.body), refusal)


def test_unknown_field_is_refused_naming_the_field(client: httpx2.Client) -> None:
    assert_refused(post_raw(client, UNKNOWN_FIELD.body), UNKNOWN_FIELD)


def test_message_over_the_character_limit_is_refused_as_too_large(client: httpx2.Client) -> None:
    response = post_raw(client, MESSAGE_TOO_LARGE.body)

    assert_refused(response, MESSAGE_TOO_LARGE)
    assert str(MESSAGE_CHARS_MAX) in response.json()["error"]["message"]


def test_body_over_the_byte_limit_is_refused_as_too_large(client: httpx2.Client) -> None:
    response = post_raw(client, BODY_TOO_LARGE.body)

    assert_refused(response, BODY_TOO_LARGE)
    assert str(BODY_BYTES_MAX) in response.json()["error"]["message"]


def test_streamed_body_over_the_byte_limit_is_refused_as_too_large(client: httpx2.Client) -> None:
    """Without a Content-Length, the limit is enforced while the body is read."""
    chunk_bytes = 512
    body = BODY_TOO_LARGE.body
    chunks = iter([body[i : i + chunk_bytes] for i in range(0, len(body), chunk_bytes)])

    response = client.post(
        "/chat.send", content=chunks, headers={"content-type": "application/json"}
    )

    assert "content-length" not in response.request.headers
    assert_refused(response, BODY_TOO_LARGE)


@pytest.mark.parametrize("refusal", INVALID_SESSION.values(), ids=INVALID_SESSION.keys())
def test_invalid_session_key_is_refused_naming_session_key(
    client: httpx2.Client, refusal: Refusal
) -> None:
    assert_refused(post_raw(client, refusal.body), refusal)


def test_unknown_queue_mode_is_refused_listing_the_modes(client: httpx2.Client) -> None:
    response = post_raw(client, UNKNOWN_QUEUE_MODE.body)

    assert_refused(response, UNKNOWN_QUEUE_MODE)
    for mode in ("followup", "collect", "interrupt", "steer", "reject"):
        assert mode in response.json()["error"]["message"]


@pytest.mark.parametrize("refusal", EMPTY_MESSAGE.values(), ids=EMPTY_MESSAGE.keys())
def test_empty_message_is_refused_naming_the_field(client: httpx2.Client, refusal: Refusal) -> None:
    assert_refused(post_raw(client, refusal.body), refusal)


def test_message_with_an_unpaired_surrogate_is_refused_naming_the_field(
    client: httpx2.Client,
) -> None:
    """JSON can spell a lone UTF-16 surrogate (``"\\ud800"``); no transcript can store it."""
    assert_refused(post_raw(client, UNPAIRED_SURROGATE.body), UNPAIRED_SURROGATE)


@pytest.mark.parametrize(
    "change",
    [{"message": "something else"}, {"sessionKey": "agent:test:elsewhere"}],
    ids=["another-message", "another-session"],
)
def test_idempotency_key_reused_for_another_request_is_refused(
    client: httpx2.Client, change: dict[str, str]
) -> None:
    key = f"reused-for-{'-'.join(change)}"
    first = client.post("/chat.send", json={**GOOD, "idempotencyKey": key})

    conflict = client.post("/chat.send", json={**GOOD, **change, "idempotencyKey": key})

    assert first.status_code == 200
    assert first.json()["runId"] == key
    assert_refused(conflict, Refusal(b"", 409, "idempotency_conflict", "idempotencyKey"))


def test_bad_requests_change_nothing_for_any_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = "agent:test:bystander"
    with (
        running_gateway(
            tmp_path, body_bytes_max=BODY_BYTES_MAX, message_chars_max=MESSAGE_CHARS_MAX
        ) as url,
        httpx2.Client(base_url=url, timeout=CALL_TIMEOUT_S) as client,
    ):
        # Each refusal's exact code is the business of its own test; here, only its effects.
        statuses = [post_raw(client, refusal.body).status_code for refusal in ALL_REFUSALS]
        same_session = client.post("/chat.send", json={"sessionKey": SESSION, "message": "still?"})
        other_session = client.post("/chat.send", json={"sessionKey": other, "message": "and me?"})
        sessions = list_sessions(tmp_path, capsys)

    assert all(status >= 400 for status in statuses), statuses
    assert same_session.status_code == 200
    assert same_session.json()["reply"] == "echo: still?"
    assert other_session.status_code == 200
    assert other_session.json()["reply"] == "echo: and me?"
    # Refused requests stored nothing: one turn per good message, no session for a bad key.
    assert {key: row["turns"] for key, row in sessions.items()} == {SESSION: 1, other: 1}


def test_resent_idempotency_key_returns_the_first_turn_without_running_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "agent:test:resent"
    body = {"sessionKey": key, "message": "only once", "idempotencyKey": "resend-after-reply"}
    with (
        running_gateway(tmp_path) as url,
        httpx2.Client(base_url=url, timeout=CALL_TIMEOUT_S) as client,
    ):
        first = client.post("/chat.send", json=body)
        again = client.post("/chat.send", json=body)
        turn = client.get(f"/turns/{first.json()['runId']}")
        sessions = list_sessions(tmp_path, capsys)
        transcript = export_transcript(tmp_path, key, capsys)

    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert first.json()["runId"] == "resend-after-reply"
    assert first.json()["reply"] == "echo: only once"
    assert turn.json()["status"] == "ok"
    assert sessions[key]["turns"] == 1
    assert transcript == [("user", "only once"), ("assistant", "echo: only once")]


def test_concurrent_sends_with_one_idempotency_key_share_one_turn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "agent:test:concurrent-resend"
    body = {"sessionKey": key, "message": "only once", "idempotencyKey": "sent-twice-at-once"}

    async def send_twice(url: str) -> list[httpx2.Response]:
        async with httpx2.AsyncClient(base_url=url, timeout=CALL_TIMEOUT_S) as client:
            return list(
                await asyncio.gather(*(client.post("/chat.send", json=body) for _ in range(2)))
            )

    # The model takes 300 ms, so the second send arrives while the first turn runs.
    with running_gateway(tmp_path, echo_latency_ms=300) as url:
        first, second = asyncio.run(send_twice(url))
        turn = httpx2.get(f"{url}/turns/sent-twice-at-once", timeout=CALL_TIMEOUT_S)
        sessions = list_sessions(tmp_path, capsys)
        transcript = export_transcript(tmp_path, key, capsys)

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert first.json()["runId"] == "sent-twice-at-once"
    assert first.json()["reply"] == "echo: only once"
    assert turn.json()["status"] == "ok"
    assert sessions[key]["turns"] == 1
    assert transcript == [("user", "only once"), ("assistant", "echo: only once")]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/no/such/route", 404, "not_found"),
        ("POST", "/v2/chat/completions", 404, "not_found"),
        ("GET", "/chat.send", 405, "method_not_allowed"),
        ("DELETE", "/health", 405, "method_not_allowed"),
    ],
)
def test_unknown_routes_and_wrong_methods_answer_the_error_json(
    client: httpx2.Client, method: str, path: str, status: int, code: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert path in error["message"]
