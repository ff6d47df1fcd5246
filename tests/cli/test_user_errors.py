"""Everything a user can get wrong ends as one line on stderr, no traceback, and the exit code
of its class (``turngate --help`` lists them), the same for every command."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.cli.support import turngate

USAGE = 64
CONFIG = 8
STATE_DIR = 9
LISTEN = 10
UNREACHABLE = 7
SERVER_STOP_TIMEOUT_S = 10.0


def test_turngate_alone_prints_its_help_and_exits_zero() -> None:
    run = turngate()
    assert (run.code, run.err) == (0, "")
    assert run.out.startswith("usage: turngate")
    assert "exit codes" in run.out


def test_a_port_in_use_names_the_process_holding_it(tmp_path: Path) -> None:
    with closing(socket.socket()) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run = turngate("gateway", "--port", str(port), "--state-dir", str(tmp_path / "state"))
    assert run.code == LISTEN
    line = run.one_error_line()
    assert f"port {port} on 127.0.0.1 is already in use" in line
    assert f"held by pid {os.getpid()} (" in line
    assert "listening" not in run.out


def test_a_missing_api_key_variable_is_named(tmp_path: Path) -> None:
    config = tmp_path / "turngate.toml"
    config.write_text(
        'provider = "remote"\nmodel = "m1"\n\n[[providers]]\nid = "remote"\nkind = "openai"\n'
        'base_url = "http://127.0.0.1:9/v1"\napi_key_env = "TG_TEST_UNSET_API_KEY"\n',
        encoding="utf-8",
    )
    run = turngate("gateway", "--port", "0", "--config", str(config), "--state-dir", str(tmp_path))
    assert run.code == CONFIG
    assert "TG_TEST_UNSET_API_KEY" in run.one_error_line()
    assert "listening" not in run.out


def test_a_state_dir_that_cannot_be_created_says_so(tmp_path: Path) -> None:
    regular_file = tmp_path / "a-file"
    regular_file.write_text("", encoding="utf-8")
    run = turngate("gateway", "--port", "0", "--state-dir", str(regular_file / "state"))
    assert run.code == STATE_DIR
    assert "state dir" in run.one_error_line()


def test_a_bad_toml_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("port = [\n", encoding="utf-8")
    for args in (["gateway", "--port", "0"], ["sessions", "list"]):
        run = turngate(*args, "--config", str(config), "--state-dir", str(tmp_path))
        assert run.code == CONFIG, args
        assert "not valid TOML" in run.one_error_line()


class HtmlPage(BaseHTTPRequestHandler):
    """Answers every request with a web page, as a wrong --url would."""

    def do_GET(self) -> None:
        self._page()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self._page()

    def _page(self) -> None:
        body = b"<html><body>not turngate</body></html>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        del format, args  # quiet


@contextmanager
def web_page_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), HtmlPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(SERVER_STOP_TIMEOUT_S)


def closed_port_url() -> str:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


CLIENT_CALLS = {
    "send": ["send", "hi"],
    "probe": ["probe", "--calls", "1"],
    "cron list": ["cron", "list"],
}


@pytest.mark.parametrize("args", CLIENT_CALLS.values(), ids=CLIENT_CALLS)
def test_a_url_that_is_not_turngate_or_not_there_is_one_line(args: list[str]) -> None:
    with web_page_server() as url:
        html = turngate(*args, "--url", url)
    gone = turngate(*args, "--url", closed_port_url())
    assert html.code == UNREACHABLE
    assert "text/html, not turngate's JSON; is --url a turngate gateway?" in html.one_error_line()
    assert gone.code == UNREACHABLE
    assert "cannot reach the gateway" in gone.one_error_line()


UNUSUAL_VALUES = {
    "calls 0": (["probe", "--calls", "0"], "--calls: must be at least 1 (got 0)"),
    "gap -1": (["probe", "--gap", "-1"], "--gap: must be a number >= 0 (got -1)"),
    "burst -1": (["probe", "--burst", "-1"], "--burst: must be at least 0 (got -1)"),
    "timeout-ms 0": (["send", "--timeout-ms", "0", "hi"], "--timeout-ms: must be at least 1"),
    "limit 0": (["sessions", "list", "--limit", "0"], "--limit: must be at least 1 (got 0)"),
    "url": (["send", "--url", "localhost:18789", "hi"], "is not an http:// or https:// URL"),
    "unknown option": (["cron", "list", "--bogus"], "unrecognized arguments: --bogus"),
    "unknown command": (["frobnicate"], "invalid choice: 'frobnicate'"),
    "sim seeds abc": (["sim", "--seeds", "abc"], "'abc' is neither a number of seeds"),
    "sim seeds 0": (["sim", "--seeds", "0"], "must be at least 1 seed (got 0)"),
    "sim jobs 0": (["sim", "--seeds", "2", "--jobs", "0"], "--jobs: must be at least 1"),
    "sim seed -1": (["sim", "--seed", "-1"], "--seed: must be at least 0 (got -1)"),
}


@pytest.mark.parametrize(("args", "reason"), UNUSUAL_VALUES.values(), ids=UNUSUAL_VALUES)
def test_an_unusual_value_is_refused_with_its_reason(args: list[str], reason: str) -> None:
    run = turngate(*args)
    assert run.code == USAGE
    assert reason in run.one_error_line()
    assert run.out == ""
