"""``turngate probe``: the field reports' reproduction, as a tool.

Sequential mode sends ``--calls`` messages to one session, each after the previous answer and
a ``--gap``, and prints one line per call as seed 000 does (``call i: N ms PASS``). A call
passes when its status is ``ok`` and its reply contains the message's unique token: a canned
or empty reply fails. ``--burst K`` sends K messages at once and checks that each gets its own
reply and that the turns started in the order they were accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx2

EXIT_FAILED = 1
EXIT_UNREACHABLE = 7
CALL_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class CallResult:
    """One probe call as seen by the client."""

    index: int
    elapsed_ms: float
    passed: bool
    status: str
    detail: str
    run_id: str | None


async def run_probe(args: argparse.Namespace) -> int:
    """Run the probe described by ``args``; return the process exit code."""
    nonce = uuid.uuid4().hex[:8]
    limits = httpx2.Limits(max_connections=max(1, args.burst) + 1)
    timeout = httpx2.Timeout(CALL_TIMEOUT_S)
    try:
        async with httpx2.AsyncClient(base_url=args.url, timeout=timeout, limits=limits) as client:
            if args.burst > 0:
                results = await _burst(client, args, nonce)
                order_ok, order_detail = await _check_start_order(client, results)
            else:
                results = await _sequential(client, args, nonce)
                order_ok, order_detail = True, ""
    except httpx2.HTTPError as exc:
        print(f"probe: cannot reach {args.url}: {exc}")
        return EXIT_UNREACHABLE
    passed = sum(r.passed for r in results)
    elapsed = sorted(r.elapsed_ms for r in results)
    median = elapsed[len(elapsed) // 2] if elapsed else 0.0
    summary = f"{passed}/{len(results)} PASS, median {median:.0f}ms"
    if order_detail:
        summary += f", {order_detail}"
    print(summary)
    return 0 if passed == len(results) and order_ok else EXIT_FAILED


def _body(args: argparse.Namespace, message: str) -> dict[str, Any]:
    body: dict[str, Any] = {"sessionKey": args.session, "message": message}
    if args.mode:
        body["queueMode"] = args.mode
    if args.timeout_ms:
        body["timeoutMs"] = args.timeout_ms
    return body


async def _call(
    client: httpx2.AsyncClient, args: argparse.Namespace, index: int, nonce: str
) -> CallResult:
    token = f"ok-{index}-{nonce}"
    message = f"Reply containing literal: {token}"
    started = time.perf_counter()
    response = await client.post("/chat.send", json=_body(args, message))
    elapsed_ms = (time.perf_counter() - started) * 1000
    body = response.json()
    status = str(body.get("status", "refused"))
    reply = body.get("reply")
    passed = status == "ok" and isinstance(reply, str) and token in reply
    if passed:
        detail = "real reply" + (
            f" (merged into {body['mergedInto']})" if "mergedInto" in body else ""
        )
    elif "error" in body:
        detail = f"{body['error'].get('code')}: {body['error'].get('message')}"
    else:
        detail = f"reply does not contain {token!r}: {str(reply)[:80]!r}"
    return CallResult(index, elapsed_ms, passed, status, detail, body.get("runId"))


def _print(result: CallResult) -> None:
    verdict = "PASS" if result.passed else "FAIL"
    print(
        f"call {result.index}: {result.elapsed_ms:.0f}ms {verdict} {result.status} {result.detail}",
        flush=True,
    )


async def _sequential(
    client: httpx2.AsyncClient, args: argparse.Namespace, nonce: str
) -> list[CallResult]:
    results: list[CallResult] = []
    for index in range(1, args.calls + 1):
        if index > 1 and args.gap > 0:
            await asyncio.sleep(args.gap)  # the scenario's gap between calls, not a sync
        result = await _call(client, args, index, nonce)
        _print(result)
        results.append(result)
    return results


async def _burst(
    client: httpx2.AsyncClient, args: argparse.Namespace, nonce: str
) -> list[CallResult]:
    results = await asyncio.gather(
        *(_call(client, args, index, nonce) for index in range(1, args.burst + 1))
    )
    for result in results:
        _print(result)
    return list(results)


async def _check_start_order(
    client: httpx2.AsyncClient, results: list[CallResult]
) -> tuple[bool, str]:
    """Turns of one session must start in acceptance order (by the gateway's own record)."""
    records = []
    for result in results:
        if result.run_id is None:
            continue
        response = await client.get(f"/turns/{result.run_id}")
        if response.status_code == 200:
            records.append(response.json())
    # Each run takes the session's next fencing epoch when it starts, so epochs in
    # acceptance order must never decrease (merged turns share one).
    started = sorted((r for r in records if r.get("epoch") is not None), key=lambda r: r["seq"])
    epochs = [r["epoch"] for r in started]
    in_order = all(a <= b for a, b in itertools.pairwise(epochs))
    return in_order, "started in acceptance order" if in_order else "OUT OF ORDER starts"
