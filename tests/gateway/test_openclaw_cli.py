"""OpenClaw's own CLI, unchanged, talks to turngate (``openclaw agent``, pointed at us by
OPENCLAW_GATEWAY_URL and OPENCLAW_GATEWAY_TOKEN). ``make test`` installs it from the npm
registry (scripts/install-openclaw-cli.sh)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.secrets import GATEWAY_TOKEN as TOKEN
from tests.support import running_gateway

ROOT = Path(__file__).resolve().parents[2]
PREFIX = ROOT / ".cache" / "openclaw"
NODE = PREFIX / "node"
CLI = PREFIX / "node_modules" / "openclaw" / "openclaw.mjs"

CLI_TIMEOUT_S = 120.0

pytestmark = pytest.mark.skipif(
    not (NODE.exists() and CLI.exists()),
    reason="OpenClaw's CLI is not installed: make test installs it"
    " (scripts/install-openclaw-cli.sh)",
)


def openclaw_agent(
    url: str, token: str, home: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "OPENCLAW_GATEWAY_URL": url.replace("http://", "ws://"),
        "OPENCLAW_GATEWAY_TOKEN": token,
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [str(NODE), str(CLI), "agent", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def test_openclaws_cli_gets_a_real_reply_for_each_of_its_sequential_messages(
    tmp_path: Path,
) -> None:
    with running_gateway(tmp_path / "state", token=TOKEN, echo_latency_ms=50) as url:
        runs = [
            openclaw_agent(
                url,
                TOKEN,
                tmp_path,
                "--session-key",
                "agent:main:main",
                "--message",
                f"Reply containing literal: ok-{index}",
            )
            for index in range(1, 4)
        ]
    for index, run in enumerate(runs, start=1):
        assert run.returncode == 0, run.stderr[-2000:]
        assert f"echo: Reply containing literal: ok-{index}" in run.stdout


def test_openclaws_cli_with_a_wrong_token_is_refused(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "state", token=TOKEN) as url:
        run = openclaw_agent(
            url,
            "not-the-token-at-all",
            tmp_path,
            "--session-key",
            "agent:main:main",
            "--message",
            "hi",
        )
    assert run.returncode != 0
    assert "echo: hi" not in run.stdout
