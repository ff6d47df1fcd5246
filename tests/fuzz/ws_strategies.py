"""Hypothesis strategies for the WebSocket side of the gateway fuzz: frames for every method,
frames that are no request at all, and a connection's first frame.

A request frame is ``{"type":"req","id","method","params"}`` with the envelope and the params
each an object with at most one thing wrong (:func:`~tests.fuzz.documents.objects`); its id
is :data:`~tests.fuzz.documents.FRESH_ID` unless mutated, so its answer can be matched. Now
and then a frame goes as a binary frame (the gateway reads those as UTF-8 text).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from hypothesis import strategies as st

from tests.fuzz.documents import (
    FRESH_ID,
    NOT_OBJECTS,
    SURROGATES,
    Field,
    FreshId,
    Json,
    LongText,
    Nested,
    RawJson,
    either,
    encode,
    objects,
    render,
)
from tests.fuzz.strategies import (
    AGENT_IDS,
    BAD_IDEMPOTENCY_KEYS,
    BAD_MESSAGES,
    BAD_QUEUE_MODES,
    BAD_SESSION_KEYS,
    BAD_TIMEOUTS_MS,
    BROKEN_BYTES,
    CHAT_ABORT,
    IDEMPOTENCY_KEYS,
    MESSAGES,
    ODD_DEADLINES,
    QUEUE_MODES,
    RUN_IDS,
    SESSION_KEYS,
    TIMEOUTS_MS,
    TOKEN,
    WS_FRAME_BYTES_MAX,
)


@dataclass(frozen=True, slots=True)
class WsFrame:
    """One client frame: ``doc`` as JSON, or ``raw`` as is; a binary frame if ``binary``."""

    doc: Json = None
    raw: str | bytes | None = None
    binary: bool = False

    def payload(self, request_id: str) -> str | bytes:
        """What goes on the wire (:data:`FRESH_ID` becomes ``request_id``)."""
        data = self.raw if self.raw is not None else encode(self.doc, request_id)
        if self.binary:
            return data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else data

    def answer_id(self, request_id: str) -> str | None:
        """The id of the ``res`` this frame gets, if it is a request with a string id.

        Read from the document, not by parsing the payload: how deep a parser can go depends
        on its stack, and the gateway's is not the test's."""
        if self.raw is not None:
            return _string_id(self.raw)
        value = self.doc.get("id") if isinstance(self.doc, dict) else None
        if isinstance(value, FreshId):
            return request_id
        if isinstance(value, RawJson | LongText):
            return _string_id(f'{{"id":{render(value)}}}')
        return value if isinstance(value, str) else None


def _string_id(text: str | bytes) -> str | None:
    """The string ``id`` of a small JSON object (as the gateway reads binary frames)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        return None
    value = frame.get("id") if isinstance(frame, dict) else None
    return value if isinstance(value, str) else None


def request_docs(
    method: str | st.SearchStrategy[str], params: st.SearchStrategy[dict[str, Json]]
) -> st.SearchStrategy[dict[str, Json]]:
    """``{"type":"req","id","method","params"}``, the envelope mutated like any object."""
    methods = st.just(method) if isinstance(method, str) else method
    return objects(
        {
            "type": Field(st.just("req"), st.sampled_from(["res", "event", "REQ", ""])),
            "id": Field(
                st.just(FRESH_ID),
                st.sampled_from(["", "x" * 129, "ид", "a\nb"]) | SURROGATES,
                required=True,
            ),
            "method": Field(methods, st.sampled_from(["", "x" * 65]), required=True),
            "params": Field(params, NOT_OBJECTS, required=True),
        }
    )


def frames(docs: st.SearchStrategy[dict[str, Json]]) -> st.SearchStrategy[WsFrame]:
    """Text frames of ``docs``, and now and then the same as a binary frame."""
    return st.builds(WsFrame, docs, st.none(), st.sampled_from([False, False, False, True]))


WS_CHAT_SEND = {
    "sessionKey": Field(SESSION_KEYS, BAD_SESSION_KEYS, required=True),
    "message": Field(MESSAGES, BAD_MESSAGES, required=True),
    "idempotencyKey": Field(IDEMPOTENCY_KEYS, BAD_IDEMPOTENCY_KEYS, required=True),
    "queueMode": Field(QUEUE_MODES, BAD_QUEUE_MODES),
    "timeoutMs": Field(TIMEOUTS_MS, BAD_TIMEOUTS_MS, odd=ODD_DEADLINES),
    "agentId": Field(st.sampled_from(AGENT_IDS), st.sampled_from(["Main", "", "nosuchagent"])),
    "attachments": Field(st.just([]), st.just([{"type": "image"}])),
    "thinking": Field(st.sampled_from(["low", "high"])),
}
WS_AGENT = {
    **WS_CHAT_SEND,
    "timeout": Field(st.integers(3, 86_400), st.sampled_from([0, -1, 86_401, 1.5, "60"])),
    "deliver": Field(st.booleans()),
}
WS_HISTORY = {
    "sessionKey": Field(SESSION_KEYS, BAD_SESSION_KEYS, required=True),
    "limit": Field(st.integers(1, 1000), st.sampled_from([0, -1, 1001, 2**63, 2**64])),
    "runId": Field(RUN_IDS),
}
WS_SESSIONS_LIST = {
    "limit": Field(st.integers(1, 1000), st.sampled_from([0, -1, 1001, 2**63])),
    "offset": Field(st.integers(0, 1000), st.sampled_from([-1, 2**63 - 1, 2**63, 2**64])),
    "activeOnly": Field(st.booleans(), st.sampled_from(["yes", 1, None])),
}
UNKNOWN_METHODS = st.one_of(
    st.sampled_from(
        ["connect", "chat.inject", "Chat.Send", "health ", "sessions.delete", "x" * 64]
    ),
    st.text(min_size=1, max_size=20),
)
WS_METHODS: dict[str, st.SearchStrategy[WsFrame]] = {
    "chat.send": frames(request_docs("chat.send", objects(WS_CHAT_SEND))),
    "agent": frames(request_docs("agent", objects(WS_AGENT))),
    "chat.history": frames(request_docs("chat.history", objects(WS_HISTORY))),
    "chat.abort": frames(request_docs("chat.abort", objects(CHAT_ABORT))),
    "sessions.list": frames(request_docs("sessions.list", objects(WS_SESSIONS_LIST))),
    "health": frames(request_docs("health", objects({}))),
    "unknown methods": frames(request_docs(UNKNOWN_METHODS, objects({}))),
}
"""Every method a connected client may call (and some it may not), each with its frames."""

OVERSIZED_FRAMES = st.builds(
    lambda length: WsFrame(
        {
            "type": "req",
            "id": FRESH_ID,
            "method": "chat.send",
            "params": {"sessionKey": "agent:main:main", "message": LongText(length)},
        }
    ),
    st.sampled_from(
        [
            WS_FRAME_BYTES_MAX,
            WS_FRAME_BYTES_MAX * 2,
            WS_FRAME_BYTES_MAX * 4 - 200,
            WS_FRAME_BYTES_MAX * 4,
        ]
    ),
)
MALFORMED_FRAMES = either(
    st.builds(WsFrame, st.none(), st.sampled_from(["", " ", "{", "nul", "{'a': 1}", "[]", "{}"])),
    st.builds(WsFrame, st.none(), st.text(max_size=30)),
    st.builds(WsFrame, NOT_OBJECTS),
    st.builds(
        WsFrame, st.builds(Nested, st.sampled_from([990, 1000, 5000, 30_000]), st.booleans())
    ),
    st.builds(WsFrame, st.none(), st.binary(max_size=40), st.just(True)),
    st.builds(WsFrame, st.none(), BROKEN_BYTES, st.just(True)),
    st.builds(
        WsFrame,
        objects({"type": Field(st.just("req")), "id": Field(st.just(FRESH_ID))}),
    ),
    OVERSIZED_FRAMES,
)
"""Frames that are no request at all: not JSON, not an object, bad UTF-8, too deep, too big."""

CONNECT = {
    "minProtocol": Field(st.sampled_from([1, 3, 4]), st.sampled_from([5, 99, "4", 4.0]), True),
    "maxProtocol": Field(st.sampled_from([4, 5, 10]), st.sampled_from([3, 0, -1, "4", 4.0]), True),
    "client": Field(
        st.just({"id": "cli", "version": "fuzz", "platform": "linux", "mode": "cli"}),
        st.sampled_from([[], "cli", {"id": 1}]),
    ),
    "role": Field(st.sampled_from(["operator", "node"]), st.sampled_from([1, ""])),
    "scopes": Field(
        st.just(["operator.read", "operator.write"]),
        st.sampled_from([[1], "operator.read", [None]]),
    ),
    "auth": Field(
        st.sampled_from([{"token": TOKEN}, {"password": TOKEN}]),
        st.sampled_from(
            [
                {},
                {"token": "wrong-token-0123456789"},
                {"token": 1},
                {"token": None},
                {"token": [TOKEN]},
                {"password": ""},
                {"token": TOKEN + "x"},
            ]
        ),
        required=True,
    ),
    "device": Field(st.fixed_dictionaries({"id": st.text(max_size=10)})),
}
FIRST_FRAMES = either(
    frames(request_docs("connect", objects(CONNECT))),
    frames(request_docs("connect", objects(CONNECT))),
    MALFORMED_FRAMES,
    WS_METHODS["health"],
    WS_METHODS["chat.send"],
)
"""A connection's first frame: mostly a ``connect`` request, with one thing wrong or none."""
