"""``turngate probe``: the field reports' reproduction, as a tool.

Sequential mode sends ``--calls`` messages to one session, each after the previous answer and
a ``--gap``, and prints one line per call as seed 000 does (``call i: N ms PASS``). A call
passes when its status is ``ok`` and its reply contains the message's unique token: a canned
or empty reply fails. ``--burst K`` sends K messages at once and checks that each gets its own
reply and that the turns started in the order they were accepted. Each call's line is printed
as that call completes, in burst mode too.

A refusal (no or a wrong token, a bad session key) ends the probe at once, as one line and the
exit code of every other command (``turngate.cli.common``).
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

from turngate.cli.common import ExitCode, GatewayClient

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
    """Run the probe described by ``args``; return the process exit code (refusals and an
    unreachable gateway raise :class:`~turngate.cli.common.CliError`)."""
    nonce = uuid.uuid4().hex[:8]
    gateway = GatewayClient(args.url, args.token, timeout_s=CALL_TIMEOUT_S)
    limits = httpx2.Limits(max_connections=max(1, args.burst) + 1)
    try:
        async with httpx2.AsyncClient(
            base_url=gateway.url,
            timeout=httpx2.Timeout(CALL_TIMEOUT_S),
            limits=limits,
            headers=gateway.headers(),
        ) as client:
            if args.burst > 0:
                results = await _burst(client, gateway, args, nonce)
                order_ok, order_detail = await _check_start_order(client, results)
            else:
                results = await _sequential(client, gateway, args, nonce)
                order_ok, order_detail = True, ""
    except httpx2.HTTPError as exc:
        raise gateway.unreachable(exc) from None
    passed = sum(r.passed for r in results)
    elapsed = sorted(r.elapsed_ms for r in results)
    median = elapsed[len(elapsed) // 2] if elapsed else 0.0
    summary = f"{passed}/{len(results)} PASS, median {median:.0f}ms"
    if order_detail:
        summary += f", {order_detail}"
    print(summary, flush=True)
    return ExitCode.OK if passed == len(results) and order_ok else ExitCode.PROBLEMS


def _body(args: argparse.Namespace, message: str) -> dict[str, Any]:
    body: dict[str, Any] = {"sessionKey": args.session, "message": message}
    if args.mode:
        body["queueMode"] = args.mode
    if args.timeout_ms:
        body["timeoutMs"] = args.timeout_ms
    return body


async def _call(
    client: httpx2.AsyncClient,
    gateway: GatewayClient,
    args: argparse.Namespace,
    index: int,
    nonce: str,
) -> CallResult:
    token = f"ok-{index}-{nonce}"
    message = f"Reply containing literal: {token}"
    started = time.perf_counter()
    response = await client.post("/chat.send", json=_body(args, message))
    elapsed_ms = (time.perf_counter() - started) * 1000
    body = gateway.read(response)  # a refusal raises: every later call would be refused too
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
    client: httpx2.AsyncClient, gateway: GatewayClient, args: argparse.Namespace, nonce: str
) -> list[CallResult]:
    results: list[CallResult] = []
    for index in range(1, args.calls + 1):
        if index > 1 and args.gap > 0:
            await asyncio.sleep(args.gap)  # the scenario's gap between calls, not a sync
        result = await _call(client, gateway, args, index, nonce)
        _print(result)
        results.append(result)
    return results


async def _burst(
    client: httpx2.AsyncClient, gateway: GatewayClient, args: argparse.Namespace, nonce: str
) -> list[CallResult]:
    """All calls at once; each prints its line as it completes (completion order)."""
    results: list[CallResult] = []

    async def one(index: int) -> None:
        result = await _call(client, gateway, args, index, nonce)
        _print(result)
        results.append(result)

    try:
        async with asyncio.TaskGroup() as calls:
            for index in range(1, args.burst + 1):
                calls.create_task(one(index))
    except BaseExceptionGroup as group:
        # The first failure is the one to report (a refusal, an unreachable gateway); the
        # task group has cancelled the other calls.
        raise _first_leaf(group) from None
    return sorted(results, key=lambda result: result.index)


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


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
