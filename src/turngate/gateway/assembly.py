"""From configuration to running parts: agents, the engine's settings, and the lanes."""

from __future__ import annotations

from dataclasses import replace

from turngate.config import AgentConfig, GatewayConfig
from turngate.core.lease import LeaseTerms
from turngate.core.session import SessionPolicy
from turngate.lanes.cron import CronJob, CronLane
from turngate.lanes.heartbeat import HeartbeatLane
from turngate.providers.base import Provider
from turngate.providers.echo import EchoProvider
from turngate.runtime.agents import AgentRegistry, AgentSpec
from turngate.runtime.engine import Engine, EngineSettings


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
    )


def build_agents(config: GatewayConfig, provider: Provider | None = None) -> AgentRegistry:
    """The agent registry: open with no ``[[agents]]``, strict (plus ``main``) with some.

    ``provider`` replaces every agent's configured model (tests inject fakes this way).
    """
    settings = engine_settings(config)
    default = AgentSpec(
        "main",
        settings.policy(),
        provider or EchoProvider(latency_s=config.echo_latency_ms / 1000),
        config.system_prompt,
        config.queue_mode,
    )
    agents = [_agent(agent, default, config, provider) for agent in config.agents]
    return AgentRegistry(default, agents, strict=bool(config.agents))


def _agent(
    agent: AgentConfig, default: AgentSpec, config: GatewayConfig, provider: Provider | None
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
    latency_ms = config.echo_latency_ms if agent.echo_latency_ms is None else agent.echo_latency_ms
    return replace(
        default,
        agent_id=agent.id,
        policy=policy,
        provider=provider or EchoProvider(latency_s=latency_ms / 1000),
        system_prompt=agent.system_prompt
        if agent.system_prompt is not None
        else default.system_prompt,
        queue_mode=agent.queue_mode or default.queue_mode,
    )


def build_lanes(config: GatewayConfig, engine: Engine) -> tuple[list[HeartbeatLane], CronLane]:
    """The heartbeat lanes and the cron lane the configuration asks for."""
    heartbeats = [
        HeartbeatLane(engine, agent.id, agent.heartbeat)
        for agent in config.agents
        if agent.heartbeat is not None
    ]
    jobs = [CronJob.of(agent, job) for agent in config.agents for job in agent.cron]
    return heartbeats, CronLane(engine, jobs)
