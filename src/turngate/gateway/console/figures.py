"""The console's metrics summary: totals read from the gateway's own Prometheus registry.

The figures are the ones ``/metrics`` exports (one source of truth), summed over their labels:
turns accepted and ended by outcome, mean waits and runs, the watchdog's and the fence's
work, tool calls, tokens, lanes, storage and the HTTP edge.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from prometheus_client import CollectorRegistry

from turngate.core.turn import TERMINAL_STATES

Labels = dict[str, str]


class Samples:
    """Every sample of a registry at one instant, by sample name."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._by_name: dict[str, list[tuple[Labels, float]]] = defaultdict(list)
        for family in registry.collect():
            for sample in family.samples:
                self._by_name[sample.name].append((sample.labels, sample.value))

    def total(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels``."""
        return sum(
            value
            for have, value in self._by_name.get(name, ())
            if all(have.get(k) == v for k, v in labels.items())
        )

    def count(self, name: str, **labels: str) -> int:
        """:meth:`total` of a counter, as the whole number it is."""
        return round(self.total(name, **labels))

    def mean(self, histogram: str) -> float | None:
        """A histogram's mean (None before its first observation)."""
        count = self.total(f"{histogram}_count")
        return None if count == 0 else round(self.total(f"{histogram}_sum") / count, 6)


def metrics_summary(registry: CollectorRegistry) -> dict[str, Any]:
    """The figures the console's gateway panel shows (see the module docstring)."""
    samples = Samples(registry)
    ended = {
        state.value: samples.count("turngate_turns_ended_total", status=state.value)
        for state in sorted(TERMINAL_STATES)
    }
    return {
        "turnsAccepted": samples.count("turngate_turns_accepted_total"),
        "turnsEnded": ended,
        "turnWaitMeanS": samples.mean("turngate_turn_wait_seconds"),
        "turnRunMeanS": samples.mean("turngate_turn_run_seconds"),
        "readyWaitMaxS": samples.total("turngate_ready_wait_max_seconds"),
        "runsCancelled": samples.count("turngate_run_cancels_total"),
        "watchdogAborts": samples.count("turngate_watchdog_aborts_total"),
        "runsFenced": samples.count("turngate_runs_fenced_total"),
        "staleWritesRefused": samples.count("turngate_stale_writes_refused_total"),
        "staleReportsIgnored": samples.count("turngate_stale_reports_ignored_total"),
        "sessionsUnstuck": samples.count("turngate_sessions_unstuck_total"),
        "ownerFailures": samples.count("turngate_owner_failures_total"),
        "toolCalls": samples.count("turngate_tool_calls_total"),
        "toolCallErrors": samples.count("turngate_tool_calls_total", outcome="error"),
        "promptTokens": samples.count("turngate_model_tokens_total", kind="prompt"),
        "completionTokens": samples.count("turngate_model_tokens_total", kind="completion"),
        "heartbeatsSkipped": samples.count("turngate_heartbeats_skipped_total"),
        "cronFires": samples.count("turngate_cron_fires_total"),
        "laneFailures": samples.count("turngate_lane_failures_total"),
        "storageWriteFailures": samples.count("turngate_storage_write_failures_total"),
        "connectionsRefused": samples.count("turngate_connections_refused_total"),
        "httpRequestTimeouts": samples.count("turngate_http_request_timeouts_total"),
        "httpBadRequests": samples.count("turngate_http_bad_requests_total"),
    }
