"""Offline checks of a gateway's set-up, each with a verdict and what to do about it.

``turngate doctor`` runs them before a gateway starts (or to find out why it does not):

==============  =============================================================================
check           problem when
==============  =============================================================================
config          the file, environment or flags do not make a valid configuration
token           the gateway would listen beyond loopback without a token
state dir       the state directory cannot be created or written
state dir lock  another gateway holds the state directory (naming its pid and address)
port            host:port cannot be listened on (in use, naming the process when /proc tells)
key <id>        a provider an agent uses has no API key in its ``api_key_env`` variable
reach <id>      a provider an agent uses cannot be reached (TCP connect; the key is never sent)
disk            never a problem: a warning under 1 GiB or 5 % free in the state directory
==============  =============================================================================

A provider no agent uses is only worth a warning. Nothing here changes the state directory:
the lock is taken and given back at once, a probe file is written and removed.

It also holds what the configuration says about providers (which agents use which models,
where each provider is), which ``GET /health`` shows too.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import os
import shutil
import socket
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from turngate.config import GatewayConfig, is_loopback, load_config
from turngate.config_providers import ProviderConfig
from turngate.errors import TurngateError
from turngate.providers.endpoints import ANTHROPIC_BASE_URL, OPENAI_BASE_URL

REACH_TIMEOUT_S = 3.0
"""A provider's server that does not take a TCP connection within this long is unreachable."""
REACH_PARALLEL_MAX = 8
DISK_FREE_BYTES_MIN = 1 << 30
DISK_FREE_FRACTION_MIN = 0.05
_PLACEHOLDER_TOKEN = "doctor-placeholder-token"
"""Stands in for a missing token, to tell a missing token from other config errors."""


class Verdict(enum.StrEnum):
    """How one check came out."""

    OK = "ok"
    WARNING = "warning"
    PROBLEM = "problem"


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's verdict, what it found, and what to do (empty when nothing is to do)."""

    check: str
    verdict: Verdict
    message: str
    fix: str = ""

    def as_json(self) -> dict[str, str]:
        """The finding as ``doctor --json`` prints it."""
        return {
            "check": self.check,
            "verdict": self.verdict.value,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass(frozen=True, slots=True)
class Target:
    """What to check: the config file, and the flags that override the configuration."""

    config_file: Path | None = None
    state_dir: Path | None = None
    host: str | None = None
    port: int | None = None

    def overrides(self) -> dict[str, Any]:
        """The flags, as :func:`turngate.config.load_config` takes them."""
        return {"state_dir": self.state_dir, "host": self.host, "port": self.port}


def problems(findings: list[Finding]) -> int:
    """How many findings are problems."""
    return sum(1 for finding in findings if finding.verdict is Verdict.PROBLEM)


def run_checks(target: Target, env: Mapping[str, str] | None = None) -> list[Finding]:
    """Every check, in the order a gateway meets them at start-up."""
    env = os.environ if env is None else env
    config, findings = check_config(target, env)
    findings.extend(check_state_dir(config.state_path))
    findings.append(check_port(config.host, config.port, config.state_path))
    if findings[0].verdict is not Verdict.PROBLEM:
        findings.extend(check_store(config))
        findings.extend(check_provider_keys(config, env))
        findings.extend(check_providers_reachable(config))
    findings.append(check_disk(config.state_path))
    return findings


# -- configuration --------------------------------------------------------------------------


def check_config(target: Target, env: Mapping[str, str]) -> tuple[GatewayConfig, list[Finding]]:
    """The config and token findings, and the configuration the other checks use (the
    flags over the defaults when the configuration is invalid)."""
    source = f"config file {target.config_file}" if target.config_file else "configuration"
    try:
        config = load_config(target.config_file, env=env, overrides=target.overrides())
    except TurngateError as exc:
        error = exc
    else:
        return config, [
            Finding("config", Verdict.OK, f"{source}: valid"),
            _token_finding(config.host, config.token),
        ]
    # The configuration is invalid. If the only thing wrong is a missing token, that is the
    # token check's problem, not the config's: load it once with a placeholder token (all
    # else valid?) and once on loopback (the real token, if any, valid?).
    placeholder = _try_load(target, env, token=_PLACEHOLDER_TOKEN)
    on_loopback = _try_load(target, env, host="127.0.0.1")
    if placeholder is not None and on_loopback is not None and on_loopback.token is None:
        config = placeholder.model_copy(update={"token": None})
        return config, [
            Finding("config", Verdict.OK, f"{source}: valid but for the token"),
            _token_finding(config.host, None),
        ]
    fallback = GatewayConfig.model_construct(
        **{k: v for k, v in target.overrides().items() if v is not None}
    )
    return fallback, [
        Finding(
            "config",
            Verdict.PROBLEM,
            f"{source}: {error.message}",
            "fix that setting (file, TURNGATE_* variable or flag); the checks below use the"
            " flags and defaults",
        )
    ]


def _try_load(target: Target, env: Mapping[str, str], **forced: str) -> GatewayConfig | None:
    try:
        return load_config(target.config_file, env=env, overrides={**target.overrides(), **forced})
    except TurngateError:
        return None


def _token_finding(host: str, token: str | None) -> Finding:
    if token is not None:
        return Finding("token", Verdict.OK, "a gateway token is set")
    if is_loopback(host):
        return Finding("token", Verdict.OK, f"none needed: {host} is loopback only")
    return Finding(
        "token",
        Verdict.PROBLEM,
        f"host {host} is not loopback and no gateway token is set",
        "set TURNGATE_TOKEN (16 characters or more), or listen on 127.0.0.1",
    )


# -- state directory and port ---------------------------------------------------------------


def check_state_dir(state_dir: Path) -> list[Finding]:
    """Whether the state directory can be written, and whether another gateway holds it."""
    from turngate.store.statedir import StateDirLock

    existing = _existing_ancestor(state_dir)
    if existing != state_dir:
        if not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
            return [
                Finding(
                    "state dir",
                    Verdict.PROBLEM,
                    f"{state_dir} does not exist and cannot be created in {existing}",
                    "give a writable directory with --state-dir or TURNGATE_STATE_DIR",
                )
            ]
        return [
            Finding("state dir", Verdict.OK, f"{state_dir} will be created in {existing}"),
            Finding("state dir lock", Verdict.OK, "not held (the directory does not exist yet)"),
        ]
    try:
        with tempfile.NamedTemporaryFile(dir=state_dir, prefix=".doctor-"):
            pass
    except OSError as exc:
        return [
            Finding(
                "state dir",
                Verdict.PROBLEM,
                f"{state_dir} cannot be written ({exc.strerror})",
                "make it writable for this user, or give another one with --state-dir",
            )
        ]
    writable = Finding("state dir", Verdict.OK, f"{state_dir} is writable")
    lock = StateDirLock(state_dir)
    try:
        lock.acquire()
    except TurngateError as exc:
        return [writable, Finding("state dir lock", Verdict.PROBLEM, exc.message)]
    lock.release()
    return [writable, Finding("state dir lock", Verdict.OK, "not held by another gateway")]


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def check_port(host: str, port: int, state_dir: Path) -> Finding:
    """Whether ``host:port`` can be listened on (with the gateway's own socket options)."""
    from turngate.gateway.server import listening_socket
    from turngate.port_owner import port_owner

    if port == 0:
        return Finding("port", Verdict.OK, "port 0: any free port will do")
    try:
        listening_socket(host, port).close()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            owner = port_owner(port)
            who = f" by {owner.describe()}" if owner else ""
            return Finding(
                "port",
                Verdict.PROBLEM,
                f"{host}:{port} is in use{who}",
                "stop that process, or choose another port (--port, TURNGATE_PORT)",
            )
        return Finding(
            "port",
            Verdict.PROBLEM,
            f"cannot listen on {host}:{port} ({exc.strerror})",
            "choose an address of this machine and a port above 1023 (--host, --port)",
        )
    return Finding("port", Verdict.OK, f"{host}:{port} is free")


# -- providers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelUse:
    """One agent's use of one provider's model (``fallback``: not the agent's first)."""

    agent_id: str
    model: str
    fallback: bool


def provider_uses(config: GatewayConfig) -> dict[str, list[ModelUse]]:
    """Which agents use which models of each provider (the ``main`` agent's are the
    gateway's ``provider``/``model`` and ``fallbacks`` unless ``[[agents]]`` redefines it)."""
    default = [f"{config.provider}/{config.model}", *config.fallbacks]
    chains = {"main": default}
    for agent in config.agents:
        chains[agent.id] = [agent.model, *agent.fallbacks] if agent.model else default
    uses: dict[str, list[ModelUse]] = {p.id: [] for p in config.all_providers}
    for agent_id, refs in chains.items():
        for index, ref in enumerate(refs):
            provider_id, _, model = ref.partition("/")
            uses.setdefault(provider_id, []).append(ModelUse(agent_id, model, index > 0))
    return uses


def provider_base_url(provider: ProviderConfig) -> str | None:
    """Where ``provider``'s server is: its ``base_url``, else its kind's default (None for
    the offline echo kind)."""
    if provider.base_url or provider.kind == "echo":
        return provider.base_url
    if provider.kind == "openai":
        return OPENAI_BASE_URL
    return ANTHROPIC_BASE_URL


def check_provider_keys(config: GatewayConfig, env: Mapping[str, str]) -> list[Finding]:
    """Each provider's API key variable: set (its value is never read out)."""
    uses = provider_uses(config)
    findings = []
    for provider in config.all_providers:
        check = f"key {provider.id}"
        if provider.api_key_env is None:
            if provider.kind != "echo":
                findings.append(Finding(check, Verdict.OK, "no api_key_env: no key is sent"))
            continue
        if env.get(provider.api_key_env):
            findings.append(Finding(check, Verdict.OK, f"{provider.api_key_env} is set"))
            continue
        used = bool(uses.get(provider.id))
        findings.append(
            Finding(
                check,
                Verdict.PROBLEM if used else Verdict.WARNING,
                f"{provider.api_key_env} is not set"
                + ("" if used else f" (no agent uses {provider.id} yet)"),
                f"export {provider.api_key_env}=... in the gateway's environment",
            )
        )
    return findings


def check_providers_reachable(config: GatewayConfig) -> list[Finding]:
    """Each provider's server takes a TCP connection (no request is sent; echo is skipped)."""
    uses = provider_uses(config)
    providers = [p for p in config.all_providers if p.kind != "echo"]
    if not providers:
        return []
    with ThreadPoolExecutor(min(REACH_PARALLEL_MAX, len(providers))) as pool:
        return list(pool.map(lambda p: _reach(p, bool(uses.get(p.id))), providers))


def _reach(provider: ProviderConfig, used: bool) -> Finding:
    check = f"reach {provider.id}"
    url = provider_base_url(provider) or ""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        return Finding(
            check, Verdict.PROBLEM, "base_url is not a URL", "write it like https://host:port/v1"
        )
    try:
        # create_connection's timeout bounds each connect; name resolution has the
        # resolver's own deadline.
        socket.create_connection((parts.hostname, port), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return Finding(
            check,
            Verdict.PROBLEM if used else Verdict.WARNING,
            f"{parts.hostname}:{port} cannot be reached ({reason})",
            "check base_url, the network and any proxy or firewall in between",
        )
    return Finding(check, Verdict.OK, f"{parts.hostname}:{port} takes connections")


# -- the store ------------------------------------------------------------------------------


def check_store(config: GatewayConfig) -> list[Finding]:
    """A PostgreSQL store answers, and its schema is one this turngate can use (SQLite's file
    is the state directory's, checked there)."""
    if config.store is None:
        return []
    from turngate.store.postgres import PostgresStore, safe_url
    from turngate.store.postgres_schema import SCHEMA_VERSION

    shown = safe_url(config.store)

    async def version() -> int:
        store = PostgresStore(config.store or "", readonly=True)
        await store.open()
        try:
            return await store.schema_version()
        finally:
            await store.close()

    try:
        found = asyncio.run(version())
    except TurngateError as exc:
        return [
            Finding(
                "store",
                Verdict.PROBLEM,
                exc.message,
                f"check the URL, that PostgreSQL runs at {shown} and lets this user in",
            )
        ]
    if found > SCHEMA_VERSION:
        return [
            Finding(
                "store",
                Verdict.PROBLEM,
                f"{shown}: schema version {found} is newer than this turngate's ({SCHEMA_VERSION})",
                "run the turngate that made it, or a newer one",
            )
        ]
    if found < SCHEMA_VERSION:
        state = "no schema yet" if found == 0 else f"schema version {found}"
        return [
            Finding(
                "store",
                Verdict.OK,
                f"{shown} answers; {state}: the gateway brings it to version {SCHEMA_VERSION}"
                " as it starts (or turngate db upgrade)",
            )
        ]
    return [Finding("store", Verdict.OK, f"{shown} answers, schema version {found}")]


# -- disk -----------------------------------------------------------------------------------


def check_disk(state_dir: Path) -> Finding:
    """Free space on the state directory's filesystem (a warning when low)."""
    where = _existing_ancestor(state_dir)
    try:
        usage = shutil.disk_usage(where)
    except OSError as exc:
        return Finding("disk", Verdict.WARNING, f"cannot tell free space of {where} ({exc})")
    free = f"{_size(usage.free)} free of {_size(usage.total)}"
    if usage.free < DISK_FREE_BYTES_MIN or usage.free < usage.total * DISK_FREE_FRACTION_MIN:
        return Finding(
            "disk",
            Verdict.WARNING,
            f"{free} in {where}",
            "free some space: when the disk fills, new messages are refused (storage_unavailable)",
        )
    return Finding("disk", Verdict.OK, f"{free} in {where}")


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
