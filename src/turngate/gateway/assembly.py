"""From configuration to running parts: agents, the engine's settings, the lanes and the
channels."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping
from dataclasses import replace

from turngate.channels.base import Channel
from turngate.channels.discord import DiscordChannel
from turngate.channels.outbox import OutboxSettings
from turngate.channels.runtime import ChannelRuntime
from turngate.channels.telegram import TelegramChannel
from turngate.channels.websocket_im import WebSocketChannel, WebSocketSettings
from turngate.config import GatewayConfig
from turngate.config_agents import AgentConfig
from turngate.config_channels import ChannelConfig
from turngate.core.lease import LeaseTerms
from turngate.core.session import SessionPolicy
from turngate.errors import InvalidFieldError
from turngate.lanes.cron import CronJob, CronLane
from turngate.lanes.delivery import DeliveryTargets
from turngate.lanes.heartbeat import HeartbeatLane
from turngate.providers.base import Provider
from turngate.providers.registry import build_chain
from turngate.runtime.agents import AgentRegistry, AgentSpec
from turngate.runtime.engine import Engine, EngineSettings
from turngate.tools.base import Toolbox

log = logging.getLogger("turngate.channels")


def engine_settings(config: GatewayConfig) -> EngineSettings:
    """The runtime's settings from the gateway's configuration."""
    return EngineSettings(
        queue_turns_max=config.queue_turns_max,
        stall_timeout_s=config.stall_timeout_s,
        run_timeout_s=config.run_timeout_s,
        abort_grace_s=config.abort_grace_s,
        turn_timeout_s=config.turn_timeout_s,
        history_entries_max=config.history_entries_max,
        restart_attempts_max=config.restart_attempts_max,
        system_prompt=config.system_prompt,
        process_name=config.process_name,
        claim_ttl_s=config.session_claim_ttl_s,
        claim_poll_s=config.claim_poll_s,
    )


def build_agents(
    config: GatewayConfig,
    provider: Provider | None = None,
    env: Mapping[str, str] | None = None,
    toolboxes: Mapping[str, Toolbox] | None = None,
) -> AgentRegistry:
    """The agent registry: open with no ``[[agents]]``, strict (plus ``main``) with some.

    Each agent's model is a fallback chain over its model and fallbacks, API keys read from
    ``env`` (the process environment by default). ``provider`` replaces every agent's model
    (tests inject fakes this way). An agent with a toolbox in ``toolboxes`` (by agent id;
    see :mod:`~turngate.gateway.agent_tools`) is offered its tools.
    """
    toolboxes = toolboxes or {}
    settings = engine_settings(config)
    env = os.environ if env is None else env
    providers = {p.id: p for p in config.all_providers}

    def model(refs: list[str], echo_latency_ms: float) -> Provider:
        if provider is not None:
            return provider
        return build_chain(refs, providers, env=env, echo_latency_s=echo_latency_ms / 1000)

    default_refs = [f"{config.provider}/{config.model}", *config.fallbacks]
    default = AgentSpec(
        "main",
        settings.policy(),
        model(default_refs, config.echo_latency_ms),
        config.system_prompt,
        config.queue_mode,
    )
    agents = []
    for agent in config.agents:
        refs = config.model_refs(agent.id)
        latency_ms = (
            config.echo_latency_ms if agent.echo_latency_ms is None else agent.echo_latency_ms
        )
        agents.append(_agent(agent, default, model(refs, latency_ms), toolboxes.get(agent.id)))
    return AgentRegistry(default, agents, strict=bool(config.agents))


def _agent(
    agent: AgentConfig, default: AgentSpec, provider: Provider, toolbox: Toolbox | None
) -> AgentSpec:
    terms = default.policy.lease_terms
    policy = SessionPolicy(
        queue_turns_max=agent.max_queue or default.policy.queue_turns_max,
        lease_terms=LeaseTerms(
            stall_timeout_s=agent.stall_timeout or terms.stall_timeout_s,
            run_timeout_s=agent.run_timeout or terms.run_timeout_s,
            abort_grace_s=terms.abort_grace_s,
        ),
    )
    return replace(
        default,
        agent_id=agent.id,
        policy=policy,
        provider=provider,
        system_prompt=agent.system_prompt
        if agent.system_prompt is not None
        else default.system_prompt,
        queue_mode=agent.queue_mode or default.queue_mode,
        toolbox=toolbox,
        max_steps=agent.max_steps,
    )


async def close_providers(agents: AgentRegistry) -> None:
    """Close every model client's connections (at shutdown)."""
    for spec in agents.specs():
        aclose = getattr(spec.provider, "aclose", None)
        if aclose is not None:
            await aclose()


def build_lanes(
    config: GatewayConfig, engine: Engine, targets: DeliveryTargets
) -> tuple[list[HeartbeatLane], CronLane]:
    """The heartbeat lanes and the cron lane the configuration asks for."""
    heartbeats = [
        HeartbeatLane(engine, agent.id, agent.heartbeat, targets)
        for agent in config.agents
        if agent.heartbeat is not None
    ]
    jobs = [CronJob.of(agent, job) for agent in config.agents for job in agent.cron]
    return heartbeats, CronLane(engine, jobs, targets)


def build_channels(
    config: GatewayConfig, engine: Engine, env: Mapping[str, str] | None = None
) -> list[ChannelRuntime]:
    """One :class:`ChannelRuntime` per ``[[channels]]`` entry, tokens read from ``env`` (the
    process environment by default). A channel that nobody may talk to is said at start."""
    env = os.environ if env is None else env
    runtimes = []
    for channel in config.channels:
        if not channel.allow:
            log.warning(
                "channel %s: its allowlist is empty, so nobody can talk to it; set allow to"
                ' peer ids, or ["*"] for everyone',
                channel.id,
            )
        runtimes.append(
            ChannelRuntime(
                channel,
                _channel(channel, _token(channel, env), engine),
                engine,
                message_chars_max=config.message_chars_max,
                outbox=OutboxSettings(rate_per_s=channel.send_rate),
            )
        )
    return runtimes


def _token(channel: ChannelConfig, env: Mapping[str, str]) -> str:
    if channel.token_env is None:
        return ""
    token = env.get(channel.token_env, "")
    if not token:
        raise InvalidFieldError(
            f"channels.{channel.id}.token_env",
            f"environment variable {channel.token_env} is not set (channel {channel.id} needs"
            " its token)",
        )
    return token


def _channel(channel: ChannelConfig, token: str, engine: Engine) -> Channel:
    rng = random.Random()
    try:
        if channel.type == "telegram":
            return TelegramChannel(channel, token, engine.clock, rng)
        if channel.type == "discord":
            return DiscordChannel(channel, token, engine.clock, rng)
    except ValueError as exc:  # a token that cannot be one (the message names its variable)
        raise InvalidFieldError(f"channels.{channel.id}.token_env", str(exc)) from None
    assert channel.url is not None  # the configuration requires it for a websocket channel
    settings = WebSocketSettings(heartbeat_s=channel.heartbeat, groups=channel.groups)
    return WebSocketChannel(
        channel.id, channel.url, token, settings=settings, clock=engine.clock, rng=rng
    )
