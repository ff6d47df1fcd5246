"""Send one fuzzed HTTP request to the gateway, and check what comes back.

The whole answer comes within :data:`REQUEST_DEADLINE_S` (else a *hang*), on a connection
that is not dropped, with a status below 500; an error answer (status >= 400) is JSON with
``error.code`` and ``error.message`` strings; a JSON answer parses; a server-sent event
stream is JSON events ending in ``[DONE]``. Each request has a connection of its own, so that
no fault can leak into the next request.
"""

from __future__ import annotations

import asyncio
import json
from typing import NoReturn

import httpx2

from tests.fuzz.faults import TALLY, FaultKind, ServerErrors, error_problem, preview
from tests.fuzz.strategies import HttpRequest

REQUEST_DEADLINE_S = 10.0


class HttpProbe:
    """Sends :class:`HttpRequest` s to one gateway and checks each answer."""

    def __init__(self, base_url: str, errors: ServerErrors) -> None:
        self.base_url = base_url
        self.errors = errors
        # No keep-alive: a connection the server drops after one answer never fails the next.
        self.client = httpx2.AsyncClient(
            timeout=httpx2.Timeout(2 * REQUEST_DEADLINE_S),
            limits=httpx2.Limits(max_keepalive_connections=0),
        )

    async def check(self, route: str, request: HttpRequest) -> None:
        """Send ``request``; raise a :class:`Fault` if its answer is not as it must be."""
        __tracebackhide__ = True
        body = None if request.body is None else request.body.encode()
        report = describe_request(request, body)
        self.errors.take()
        TALLY.http_requests += 1
        try:
            async with asyncio.timeout(REQUEST_DEADLINE_S):
                response = await self.client.request(
                    request.method,
                    self.base_url + request.path,
                    headers=[(name.encode(), value) for name, value in request.headers],
                    content=body,
                )
        except (TimeoutError, httpx2.TimeoutException):
            self._fault(FaultKind.HANG, f"{route}: no answer in {REQUEST_DEADLINE_S:g} s", report)
        except httpx2.LocalProtocolError:
            raise  # the fuzz built a request HTTP does not allow: its own bug
        except httpx2.TransportError as exc:
            self._fault(FaultKind.DROPPED, f"{route}: {type(exc).__name__}", report)
        sent = response.request.url.raw_path.decode("ascii")
        if sent != request.path:  # httpx normalises dot segments: say what went out
            report += f"\n  (sent as {preview(sent)})"
        status = response.status_code
        content_type = response.headers.get("content-type", "")
        report += f"\nanswer: {status} {content_type}: {preview(response.content)}"
        if status >= 500:
            code = error_code(response.content)
            self._fault(FaultKind.SERVER_ERROR, f"{route}: {status} {code}", report)
        problem = None if request.method == "HEAD" else answer_problem(status, response)
        if problem is not None:
            self._fault(FaultKind.MALFORMED, f"{route}: {status} {problem}", report)

    def _fault(self, kind: FaultKind, what: str, report: str) -> NoReturn:
        __tracebackhide__ = True
        cause, server = self.errors.cause()
        raise TALLY.fault(kind, f"{what}: {cause}" if cause else what, f"{report}\n{server}")

    async def aclose(self) -> None:
        await self.client.aclose()


def describe_request(request: HttpRequest, body: bytes | None) -> str:
    lines = [f"request: {request.method} {preview(request.path)}"]
    lines += [f"  {name}: {preview(value, 80)}" for name, value in request.headers]
    if body is not None:
        lines.append(f"  body ({len(body)} bytes): {preview(body)}")
    return "\n".join(lines)


def error_code(content: bytes) -> str:
    """``error.code`` of an error body."""
    try:
        return str(json.loads(content)["error"]["code"])
    except (ValueError, TypeError, KeyError):
        return "(no JSON error body)"


def answer_problem(status: int, response: httpx2.Response) -> str | None:
    """What is wrong with a (non-5xx) answer's body, if anything."""
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        return stream_problem(response.text)
    is_json = content_type.startswith("application/json")
    if status >= 400 and not is_json:
        return f"error body of type {content_type or 'none'}, not JSON"
    if not is_json:
        return None
    try:
        data = json.loads(response.content)
    except (ValueError, RecursionError):
        return "body is not JSON"
    if status >= 400:
        return error_problem(data.get("error") if isinstance(data, dict) else None)
    return None


def stream_problem(text: str) -> str | None:
    """What is wrong with a server-sent event stream of completion chunks, if anything."""
    events = [block for block in text.split("\n\n") if block.strip()]
    if not events or events[-1] != "data: [DONE]":
        return "event stream does not end with [DONE]"
    for block in events[:-1]:
        if not block.startswith("data: "):
            return "event without data"
        try:
            data = json.loads(block.removeprefix("data: "))
        except (ValueError, RecursionError):
            return "event data is not JSON"
        if not isinstance(data, dict):
            return "event data is not an object"
        if "error" in data and (problem := error_problem(data["error"])) is not None:
            return f"error event: {problem}"
    return None
