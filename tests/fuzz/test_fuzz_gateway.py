"""Fuzz every HTTP route and every WebSocket method of a real gateway (issue 9).

Whatever a client sends, the gateway answers it in time, with no status >= 500, in the
documented error shape, and never drops a WebSocket over a frame: see
:mod:`tests.fuzz.http_probe` and :mod:`tests.fuzz.ws_probe` for the exact checks,
:mod:`tests.fuzz.strategies` and :mod:`tests.fuzz.ws_strategies` for what is sent.

Generation is deterministic (``derandomize``), so a run is the same on every machine.
``TURNGATE_FUZZ_EXAMPLES`` sets the examples per test: small in the suite, large in
``make fuzz``. A fault is shrunk by hypothesis to a minimal example, and every distinct fault
of a test is reported on its own; the session ends with a summary line of the counts.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.fuzz.faults import Fault, ServerErrors
from tests.fuzz.http_probe import HttpProbe
from tests.fuzz.strategies import GATEWAY_OVERRIDES, HTTP_ROUTES, HttpRequest
from tests.fuzz.ws_probe import WsProbe
from tests.fuzz.ws_strategies import FIRST_FRAMES, MALFORMED_FRAMES, WS_METHODS, WsFrame
from tests.support import running_gateway

EXAMPLES = int(os.environ.get("TURNGATE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    print_blob=False,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=list(HealthCheck),
)


class Fuzzer:
    """The fuzz's HTTP and WebSocket clients of one gateway, driven from synchronous tests
    on one event loop that outlives every example."""

    def __init__(self, base_url: str, runner: asyncio.Runner, errors: ServerErrors) -> None:
        self.runner = runner
        self.errors = errors
        self.http = HttpProbe(base_url, errors)
        self.ws = WsProbe(base_url, errors)

    def request(self, route: str, request: HttpRequest) -> None:
        self._run(self.http.check(route, request))

    def frame(self, label: str, frame: WsFrame) -> None:
        self._run(self.ws.check(label, frame))

    def first_frame(self, path: str, frame: WsFrame) -> None:
        self._run(self.ws.check_first(path, frame))

    def _run(self, check: Coroutine[Any, Any, None]) -> None:
        __tracebackhide__ = True
        try:
            with self.errors.collecting():
                self.runner.run(check)
        except Fault as fault:
            # Its message says it all; the event loop's frames would only hide it.
            raise fault.with_traceback(None) from None

    def close(self) -> None:
        self.runner.run(self.ws.aclose())
        self.runner.run(self.http.aclose())


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzer]:
    state_dir = tmp_path_factory.mktemp("fuzz-gateway")
    with running_gateway(state_dir, **GATEWAY_OVERRIDES) as url, asyncio.Runner() as runner:
        fuzzer = Fuzzer(url, runner, ServerErrors())
        try:
            yield fuzzer
        finally:
            fuzzer.close()


@pytest.mark.parametrize("route", list(HTTP_ROUTES))
@FUZZ
@given(data=st.data())
def test_every_http_request_is_answered_in_time_below_500_in_the_error_shape(
    fuzzer: Fuzzer, route: str, data: st.DataObject
) -> None:
    fuzzer.request(route, data.draw(HTTP_ROUTES[route], label="request"))


@pytest.mark.parametrize("method", list(WS_METHODS))
@FUZZ
@given(data=st.data())
def test_every_ws_request_frame_is_answered_and_the_socket_lives_on(
    fuzzer: Fuzzer, method: str, data: st.DataObject
) -> None:
    fuzzer.frame(method, data.draw(WS_METHODS[method], label="frame"))


@FUZZ
@given(frame=MALFORMED_FRAMES)
def test_a_malformed_ws_frame_gets_an_error_event_and_the_socket_lives_on(
    fuzzer: Fuzzer, frame: WsFrame
) -> None:
    fuzzer.frame("malformed frame", frame)


@FUZZ
@given(path=st.sampled_from(["/", "/ws"]), frame=FIRST_FRAMES)
def test_a_first_frame_gets_hello_or_a_refusal_and_a_close(
    fuzzer: Fuzzer, path: str, frame: WsFrame
) -> None:
    fuzzer.first_frame(path, frame)
