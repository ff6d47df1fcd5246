"""Numbers in HTTP bodies: every one has a range, and nothing a client spells is a 500.

An integer longer than any field could hold (thousands of digits: past Python's int-string
limit, ``json.loads`` raises a plain ValueError) is not JSON the gateway accepts: ``400
invalid_json`` naming the body, on every POST route. A parseable number outside its field's
range is ``422`` naming the field. Neither logs an error: they are the client's mistakes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx2
import pytest

from tests.support import running_gateway
from turngate.gateway.frames import JSON_INT_DIGITS_MAX, TIMEOUT_MS_MAX

CALL_TIMEOUT_S = 10.0
SESSION = "agent:main:numbers"
HUGE = b"9" * 5000
"""A 5,000-digit integer."""
ROUTE_BODIES: dict[str, tuple[str, bytes]] = {
    "chat.send": (
        "/chat.send",
        b'{"sessionKey": "agent:main:numbers", "message": "hi", "timeoutMs": ' + HUGE + b"}",
    ),
    "chat.abort": ("/chat.abort", b'{"sessionKey": "agent:main:numbers", "runId": ' + HUGE + b"}"),
    "sessions-unstick": ("/sessions/unstick", b'{"sessionKey": ' + HUGE + b"}"),
    "cron-run": ("/cron/run", b'{"job": -' + HUGE + b"}"),
    "openai": (
        "/v1/chat/completions",
        b'{"model": "turngate/main", "messages": [{"role": "user", "content": "hi"}],'
        b' "max_tokens": ' + HUGE + b"}",
    ),
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(tmp_path_factory.mktemp("numeric-bounds")) as url:
        yield url


@pytest.fixture
def client(gateway: str) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=gateway, timeout=CALL_TIMEOUT_S) as client:
        yield client


def post_raw(client: httpx2.Client, path: str, body: bytes) -> httpx2.Response:
    return client.post(path, content=body, headers={"content-type": "application/json"})


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.ERROR]


def send_body(timeout_ms: str) -> bytes:
    return (
        b'{"sessionKey": "agent:main:numbers", "message": "hi", "timeoutMs": '
        + timeout_ms.encode()
        + b"}"
    )


@pytest.mark.parametrize(("path", "body"), ROUTE_BODIES.values(), ids=ROUTE_BODIES.keys())
def test_an_integer_of_5000_digits_is_invalid_json_naming_the_body_on_every_post_route(
    client: httpx2.Client, caplog: pytest.LogCaptureFixture, path: str, body: bytes
) -> None:
    response = post_raw(client, path, body)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_json"
    assert error["message"].startswith("body:"), error["message"]
    assert "set_int_max_str_digits" not in error["message"]
    assert errors_logged(caplog) == []


def test_an_integer_at_the_digit_limit_parses_and_is_refused_by_its_field(
    client: httpx2.Client,
) -> None:
    at_limit = post_raw(client, "/chat.send", send_body("9" * JSON_INT_DIGITS_MAX))
    over = post_raw(client, "/chat.send", send_body("9" * (JSON_INT_DIGITS_MAX + 1)))

    assert at_limit.status_code == 422, at_limit.text
    assert at_limit.json()["error"]["message"].startswith("timeoutMs:")
    assert over.status_code == 400, over.text
    assert over.json()["error"]["code"] == "invalid_json"


OUT_OF_RANGE = {
    "1e30": str(10**30),
    "minus-1e30": str(-(10**30)),
    "2**63": str(2**63),
    "negative": "-1",
    "zero": "0",
    "a-day-and-a-millisecond": str(TIMEOUT_MS_MAX + 1),
    "a-float": "1e30",
}


@pytest.mark.parametrize("value", OUT_OF_RANGE.values(), ids=OUT_OF_RANGE.keys())
def test_a_timeout_out_of_its_range_is_422_naming_the_field(
    client: httpx2.Client, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    response = post_raw(client, "/chat.send", send_body(value))

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_field"
    assert error["message"].startswith("timeoutMs:"), error["message"]
    assert errors_logged(caplog) == []


def test_after_the_refusals_the_gateway_still_answers(client: httpx2.Client) -> None:
    for path, body in ROUTE_BODIES.values():
        post_raw(client, path, body)

    response = client.post(
        "/chat.send", json={"sessionKey": SESSION, "message": "still?", "timeoutMs": 60_000}
    )

    assert response.status_code == 200, response.text
    assert response.json()["reply"] == "echo: still?"
