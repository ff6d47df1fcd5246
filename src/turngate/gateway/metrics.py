"""Prometheus collectors, fed by the engine's event stream and its snapshot.

Each gateway app has its own registry, so several apps (tests) never share counters.

No ``*_created`` series: prometheus_client would add one per counter and histogram (and
per label set), a start timestamp that doubles the output and that no dashboard reads.
Turning them off is global to the process (prometheus_client has no per-registry switch),
which is what the gateway process wants anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from turngate.channels.runtime import ChannelView
from turngate.core.connection import ConnectionState
from turngate.core.turn import AbortReason
from turngate.gateway.http_limits import EdgeCounts
from turngate.runtime.engine import Engine
from turngate.runtime.events import Event, EventKind

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
)
_WATCHDOG_REASONS = frozenset({AbortReason.STALLED.value, AbortReason.RUN_TIMEOUT.value})


class GatewayMetrics:
    """The collectors of one gateway; subscribe :meth:`observe` to the engine's events."""

    def __init__(
        self,
        engine: Engine,
        edge: EdgeCounts | None = None,
        channels: Callable[[], Sequence[ChannelView]] | None = None,
    ) -> None:
        # Global and idempotent (see the module docstring); prometheus_client leaves it untyped.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        if edge is not None:
            r.register(EdgeCollector(edge))
        if channels is not None:
            r.register(ChannelCollector(channels))
        self.turns_accepted = Counter(
            "turngate_turns_accepted",
            "Turns accepted (stored, then acknowledged).",
            ["lane"],
            registry=r,
        )
        self.turns_ended = Counter(
            "turngate_turns_ended",
            "Turns ended, by terminal status.",
            ["status", "code", "lane"],
            registry=r,
        )
        self.turn_wait = Histogram(
            "turngate_turn_wait_seconds",
            "From acceptance to the start of the turn's run.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.turn_run = Histogram(
            "turngate_turn_run_seconds",
            "From the start of a turn's run to its end.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ready_wait_max = Gauge(
            "turngate_ready_wait_max_seconds",
            "Longest time a turn waited while it was next and its session free (should be ~0).",
            registry=r,
        )
        self.watchdog_aborts = Counter(
            "turngate_watchdog_aborts",
            "Runs the watchdog cancelled, by reason.",
            ["reason"],
            registry=r,
        )
        self.aborts = Counter(
            "turngate_run_cancels", "Runs cancelled, by reason.", ["reason"], registry=r
        )
        self.fenced = Counter(
            "turngate_runs_fenced", "Runs that ignored cancellation and were fenced.", registry=r
        )
        self.tool_calls = Counter(
            "turngate_tool_calls",
            "Tool calls of agent runs that returned, by tool and outcome (ok, error).",
            ["tool", "outcome"],
            registry=r,
        )
        self.tool_call_seconds = Histogram(
            "turngate_tool_call_seconds",
            "How long a tool call took, by tool.",
            ["tool"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.model_tokens = Counter(
            "turngate_model_tokens",
            "Tokens the models reported, by model and kind (prompt, completion).",
            ["model", "kind"],
            registry=r,
        )
        self.stale_writes = Counter(
            "turngate_stale_writes_refused", "Writes refused for a stale fencing epoch.", registry=r
        )
        self.stale_reports = Counter(
            "turngate_stale_reports_ignored",
            "Reports from finished runs that were ignored.",
            registry=r,
        )
        self.heartbeats_skipped = Counter(
            "turngate_heartbeats_skipped",
            "Heartbeat ticks skipped because the previous heartbeat turn was still open.",
            ["session"],
            registry=r,
        )
        self.cron_fires = Counter(
            "turngate_cron_fires", "Cron jobs fired, by session.", ["session"], registry=r
        )
        self.unstuck = Counter(
            "turngate_sessions_unstuck", "Sessions forced free by an operator.", registry=r
        )
        self.lane_failures = Counter(
            "turngate_lane_failures",
            "Lane turns that could not be submitted.",
            ["lane"],
            registry=r,
        )
        self.owner_failures = Counter(
            "turngate_owner_failures", "Session owners that failed (store errors).", registry=r
        )
        self.storage_failures = Counter(
            "turngate_storage_write_failures",
            "Writes that storage refused (disk full, I/O error); each retry counts.",
            registry=r,
        )
        Gauge(
            "turngate_storage_writable",
            "1 while the store takes writes, 0 while they fail (then /health is degraded).",
            registry=r,
        ).set_function(lambda: float(engine.store.health().writable))
        Gauge("turngate_queue_depth", "Turns queued across sessions.", registry=r).set_function(
            lambda: engine.snapshot().queued_turns
        )
        Gauge("turngate_running_turns", "Turns running now.", registry=r).set_function(
            lambda: engine.snapshot().running_turns
        )
        Gauge(
            "turngate_active_sessions", "Sessions with a turn running or queued.", registry=r
        ).set_function(lambda: engine.snapshot().active_sessions)
        Gauge(
            "turngate_oldest_lease_age_seconds", "Age of the oldest held lease.", registry=r
        ).set_function(lambda: engine.snapshot().oldest_lease_age_s)
        self._started_at: dict[str, float] = {}
        self._ready_wait_max = 0.0

    def observe(self, event: Event) -> None:
        """Update the collectors for one engine event."""
        match event.kind:
            case EventKind.ACCEPTED:
                self.turns_accepted.labels(event.lane).inc()
            case EventKind.STARTED:
                if event.turn_id is not None:
                    self._started_at[event.turn_id] = event.at
                if event.wait_s is not None:
                    self.turn_wait.observe(event.wait_s)
                if event.ready_wait_s is not None and event.ready_wait_s > self._ready_wait_max:
                    self._ready_wait_max = event.ready_wait_s
                    self.ready_wait_max.set(event.ready_wait_s)
            case EventKind.ENDED:
                code = event.code.value if event.code else ""
                status = event.state or ""
                self.turns_ended.labels(status, code, event.lane).inc()
                started = self._started_at.pop(event.turn_id or "", None)
                if started is not None:
                    self.turn_run.observe(event.at - started)
            case EventKind.CANCEL_REQUESTED:
                reason = event.code.value if event.code else "unknown"
                self.aborts.labels(reason).inc()
                if reason in _WATCHDOG_REASONS:
                    self.watchdog_aborts.labels(reason).inc()
            case EventKind.FENCED:
                self.fenced.inc()
            case EventKind.TOOL_CALLED:
                self.tool_calls.labels(event.detail, event.state or "ok").inc()
                if event.duration_s is not None:
                    self.tool_call_seconds.labels(event.detail).observe(event.duration_s)
            case EventKind.MODEL_ANSWERED if event.usage is not None:
                model = event.detail or "unknown"
                self.model_tokens.labels(model, "prompt").inc(event.usage.prompt_tokens)
                self.model_tokens.labels(model, "completion").inc(event.usage.completion_tokens)
            case EventKind.STALE_WRITE_REFUSED | EventKind.STEP_REFUSED:
                self.stale_writes.inc()
            case EventKind.STALE_IGNORED:
                self.stale_reports.inc()
            case EventKind.OWNER_FAILED:
                self.owner_failures.inc()
            case EventKind.HEARTBEAT_SKIPPED:
                self.heartbeats_skipped.labels(event.session_key).inc()
            case EventKind.CRON_FIRED:
                self.cron_fires.labels(event.session_key).inc()
            case EventKind.UNSTUCK:
                self.unstuck.inc()
            case EventKind.LANE_FAILED:
                self.lane_failures.labels(event.lane).inc()
            case EventKind.STORAGE_FAILED:
                self.storage_failures.inc()
            case _:
                pass


class EdgeCollector(Collector):
    """What the HTTP server refused or cut off before any handler ran."""

    def __init__(self, counts: EdgeCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        """The counts as they are now."""
        refused = CounterMetricFamily(
            "turngate_connections_refused",
            "Connections refused past connections_max (503 too_many_connections).",
            value=self.counts.refused_connections,
        )
        timeouts = CounterMetricFamily(
            "turngate_http_request_timeouts",
            "Requests cut off (408) because their headers or body came too slowly.",
            labels=["part"],
        )
        timeouts.add_metric(["headers"], self.counts.header_timeouts)
        timeouts.add_metric(["body"], self.counts.body_timeouts)
        bad = CounterMetricFamily(
            "turngate_http_bad_requests",
            "Requests that were not valid HTTP (400 bad_request).",
            value=self.counts.bad_requests,
        )
        yield from (refused, timeouts, bad)


class ChannelCollector(Collector):
    """Each channel's connection and outbox, as they are at the scrape."""

    def __init__(self, views: Callable[[], Sequence[ChannelView]]) -> None:
        self.views = views

    def collect(self) -> Iterator[Metric]:
        """One series per channel (and per state or result)."""
        state = GaugeMetricFamily(
            "turngate_channel_state",
            "1 for the state each channel's connection is in, 0 for the others.",
            labels=["channel", "state"],
        )
        generation = GaugeMetricFamily(
            "turngate_channel_generation",
            "The channel's connection attempt number (one more per reconnect).",
            labels=["channel"],
        )
        counters = {
            name: CounterMetricFamily(f"turngate_channel_{name}", text, labels=["channel"])
            for name, text in (
                ("reconnects", "Connections lost and dialled again."),
                ("zombies", "Connections that stopped answering heartbeats (closed, redialled)."),
                (
                    "stale_callbacks_ignored",
                    "Callbacks of a finished connection generation that did nothing.",
                ),
                ("resumes", "Connections that resumed the platform's session (nothing missed)."),
                ("identifies", "Connections that started a new session with the platform."),
            )
        }
        rtt = GaugeMetricFamily(
            "turngate_channel_heartbeat_rtt_seconds",
            "From the channel's last acknowledged heartbeat to its ack.",
            labels=["channel"],
        )
        sequence = GaugeMetricFamily(
            "turngate_channel_last_sequence",
            "The platform sequence number the channel stored everything up to.",
            labels=["channel"],
        )
        session = InfoMetricFamily(
            "turngate_channel_session",
            "The platform session the channel's connection resumes.",
            labels=["channel"],
        )
        deliveries = CounterMetricFamily(
            "turngate_channel_deliveries",
            "Outbox deliveries: sent, failed for good, attempts retried; parts sent.",
            labels=["channel", "result"],
        )
        for view in self.views():
            channel, connection, outbox = view.channel_id, view.connection, view.outbox
            for each in ConnectionState:
                state.add_metric([channel, each.value], float(connection.state is each))
            generation.add_metric([channel], connection.generation)
            counters["reconnects"].add_metric([channel], connection.reconnects)
            counters["zombies"].add_metric([channel], connection.zombies)
            counters["stale_callbacks_ignored"].add_metric(
                [channel], connection.stale_callbacks_ignored
            )
            counters["resumes"].add_metric([channel], connection.resumes)
            counters["identifies"].add_metric([channel], connection.identifies)
            if connection.heartbeat_rtt_s is not None:
                rtt.add_metric([channel], connection.heartbeat_rtt_s)
            if connection.last_sequence is not None:
                sequence.add_metric([channel], connection.last_sequence)
            if connection.session_id is not None:
                session.add_metric([channel], {"session_id": connection.session_id})
            for result, value in (
                ("sent", outbox.sent),
                ("failed", outbox.failed),
                ("retried", outbox.retries),
                ("parts", outbox.parts),
            ):
                deliveries.add_metric([channel, result], value)
        yield from (state, generation, *counters.values(), rtt, sequence, session, deliveries)
