"""Hypothesis strategies for the gateway fuzz: the gateway's settings, the field values both
surfaces share, and HTTP requests for every route (see :mod:`tests.fuzz.ws_strategies` for
WebSocket frames).

Bodies are mostly objects with at most one thing wrong (:func:`~tests.fuzz.documents.objects`),
else broken as a whole: empty, not JSON, not an object, bad UTF-8, cut short, nested too deep,
over the size limit. Headers carry the gateway's token and a JSON content type, or one of the
two is wrong; the OpenAI route gets its session and idempotency headers, right or wrong.

The gateway under fuzz is configured by :data:`GATEWAY_OVERRIDES`, so that every limit is small
enough to be crossed cheaply and every route has something real to do (a cron job to run, two
agents to name).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from tests.fuzz.documents import (
    NOT_OBJECTS,
    ODD_VALUES,
    SURROGATES,
    Field,
    Json,
    LongText,
    Repeat,
    either,
    encode,
    objects,
)
from tests.secrets import FUZZ_TOKEN

TOKEN = FUZZ_TOKEN
BODY_BYTES_MAX = 65_536
MESSAGE_CHARS_MAX = 4096
WS_FRAME_BYTES_MAX = 65_536
AGENT_IDS = ("main", "fuzz")
CRON_JOB = "nightly"
TIMEOUT_MS_SAFE_MIN = 3000
"""Valid deadlines start here: with an instant model, a turn never legitimately expires."""
GATEWAY_OVERRIDES: dict[str, Any] = {
    "echo_latency_ms": 0,
    "token": TOKEN,
    "turn_timeout_s": 5.0,
    "body_bytes_max": BODY_BYTES_MAX,
    "message_chars_max": MESSAGE_CHARS_MAX,
    "ws_frame_bytes_max": WS_FRAME_BYTES_MAX,
    "ws_frames_per_s_max": 100_000.0,  # every frame reaches its handler, none is rate limited
    "agents": (
        {"id": "main", "cron": ({"id": CRON_JOB, "schedule": "0 3 * * *", "message": "cron"},)},
        {"id": "fuzz"},
    ),
}
"""Settings of the gateway under fuzz (besides its state directory)."""


# -- field values ----------------------------------------------------------------------------


def short_deadline(value: Json) -> bool:
    """A valid deadline short enough that the turn could truly expire (not a fault)."""
    return (
        isinstance(value, int) and not isinstance(value, bool) and 0 < value < TIMEOUT_MS_SAFE_MIN
    )


ODD_DEADLINES = ODD_VALUES.filter(lambda value: not short_deadline(value))
SEGMENTS = st.from_regex(r"[A-Za-z0-9_.@+=-]{1,12}", fullmatch=True)
SESSION_KEYS = st.one_of(
    st.sampled_from([f"agent:{agent}:main" for agent in AGENT_IDS]),
    st.builds(
        lambda agent, rest: ":".join(["agent", agent, *rest]),
        st.sampled_from(AGENT_IDS),
        st.lists(SEGMENTS, min_size=1, max_size=3),
    ),
)
BAD_SESSION_KEYS: st.SearchStrategy[Json] = st.one_of(
    st.sampled_from(
        [
            "",
            "agent",
            "agent:",
            "agent:main",
            "agent:main:",
            "agent::main",
            "agent:Main:main",
            "agent:nosuchagent:main",
            "AGENT:main:main",
            "agent:main:a b",
            "agent:main:../../etc/passwd",
            "agent:main:main\n",
            " agent:main:main",
            "agent:main:é",
            "agent:main:\x00",
            "agent:main:" + "a" * 129,
            "agent:" + "a" * 65 + ":main",
            ":".join(["agent", "main", *["a"] * 17]),
            "agent:main:" + ":".join(["a" * 100] * 5),
        ]
    ),
    SURROGATES,
    st.text(max_size=30),
)
MESSAGES = st.one_of(st.just("hello"), st.text(min_size=1, max_size=60))
BAD_MESSAGES: st.SearchStrategy[Json] = st.one_of(
    st.sampled_from(["", " ", "\n\t"]),
    st.builds(LongText, st.sampled_from([MESSAGE_CHARS_MAX, MESSAGE_CHARS_MAX + 1, 30_000])),
    SURROGATES,
)
IDEMPOTENCY_KEYS = st.one_of(
    st.sampled_from(["fuzz-1", "fuzz-2", "fuzz-3"]),
    st.from_regex(r"[A-Za-z0-9._:@+=-]{1,40}", fullmatch=True),
)
BAD_IDEMPOTENCY_KEYS: st.SearchStrategy[Json] = st.one_of(
    st.sampled_from(["", "a b", "x" * 129, "ключ", "a/b", "\x00", "a\n"]), SURROGATES
)
QUEUE_MODES = st.sampled_from(["followup", "collect", "interrupt", "steer", "reject"])
BAD_QUEUE_MODES: st.SearchStrategy[Json] = st.one_of(
    st.sampled_from(["", "FOLLOWUP", "queue", "followup ", "drop"]), st.text(max_size=10)
)
TIMEOUTS_MS = st.integers(TIMEOUT_MS_SAFE_MIN, 86_400_000)
BAD_TIMEOUTS_MS: st.SearchStrategy[Json] = st.sampled_from(
    [0, -1, 86_400_001, 2**63, 1.5, "5000", None, True]
)
RUN_IDS = st.one_of(IDEMPOTENCY_KEYS, st.text(max_size=20))

# -- HTTP ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JsonBody:
    """A body that is ``doc`` as JSON."""

    doc: Json

    def encode(self) -> bytes:
        return encode(self.doc)


@dataclass(frozen=True, slots=True)
class RawBody:
    """A body of exactly these bytes."""

    data: bytes

    def encode(self) -> bytes:
        return self.data


@dataclass(frozen=True, slots=True)
class SplicedBody:
    """``doc`` as JSON with ``insert`` spliced in at byte ``at`` (and the rest cut if ``cut``)."""

    doc: Json
    at: int
    insert: bytes
    cut: bool = False

    def encode(self) -> bytes:
        data = encode(self.doc)
        at = min(self.at, len(data))
        return data[:at] + self.insert + (b"" if self.cut else data[at:])


Body = JsonBody | RawBody | SplicedBody


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One HTTP request: ``path`` is already percent-encoded (query included)."""

    method: str
    path: str
    headers: tuple[tuple[str, bytes], ...] = ()
    body: Body | None = None


BROKEN_BYTES = st.sampled_from(
    [
        b"\xff",
        b"\xc0\xaf",
        b"\xed\xa0\x80",
        b"\x80",
        b"\x00",
        b"}",
        b",",
        b"garbage",
        b"\xef\xbb\xbf",
    ]
)
RAW_BODIES = st.one_of(
    st.sampled_from(
        [
            b"",
            b" ",
            b"{",
            b"not json",
            b"{'a': 1}",
            b"\xef\xbb\xbf{}",
            b'{"a":1,"a":2}',
            b"\xff\xfe",
        ]
    ),
    st.binary(max_size=40),
)


def bodies(fields: Mapping[str, Field]) -> st.SearchStrategy[Body]:
    """Mostly ``fields`` objects with one mutation; else a broken body of any kind."""
    docs = objects(fields)
    return either(
        docs.map(JsonBody),
        docs.map(JsonBody),
        st.builds(JsonBody, NOT_OBJECTS),
        st.builds(SplicedBody, docs, st.integers(0, 200), BROKEN_BYTES, st.booleans()),
        st.builds(RawBody, RAW_BODIES),
    )


HEADER_BYTES = st.lists(
    st.sampled_from([bytes([b]) for b in (9, *range(0x20, 0x7F), 0x80, 0xC3, 0xA9, 0xFF)]),
    max_size=30,
).map(b"".join)
"""Any header value HTTP allows: visible ASCII, space, tab, and bytes over 0x7F."""
GOOD_HEADERS: dict[str, bytes] = {
    "Authorization": f"Bearer {TOKEN}".encode(),
    "Content-Type": b"application/json",
}
BAD_HEADERS: dict[str, st.SearchStrategy[bytes | None]] = {
    "Authorization": st.one_of(
        st.sampled_from(
            [
                None,
                b"Bearer wrong-token-0123456789",
                b"Bearer",
                b"Basic Zm9vOmJhcg==",
                b"bearer " + TOKEN.encode(),
                TOKEN.encode(),
                f"Bearer {TOKEN}x".encode(),
                b"Bearer \xff\xfe",
                b"Bearer " + b"a" * 8000,
            ]
        ),
        HEADER_BYTES.map(lambda value: b"Bearer " + value),
    ),
    "Content-Type": st.one_of(
        st.sampled_from(
            [
                None,
                b"text/plain",
                b"application/json; charset=latin-1",
                b"multipart/form-data; boundary=x",
                b"application/x-www-form-urlencoded",
            ]
        ),
        HEADER_BYTES,
    ),
}
QUERY = st.one_of(
    st.just(""),
    st.just(""),
    st.text(max_size=20).map(lambda text: "?" + quote(text, safe="=&")),
)


@st.composite
def requests(
    draw: st.DrawFn,
    /,
    method: str,
    path: str | st.SearchStrategy[str],
    body: st.SearchStrategy[Body | None] | None = None,
    **extra_headers: st.SearchStrategy[bytes | None],
) -> HttpRequest:
    """Requests of ``method`` to ``path`` (plus a query sometimes), with the gateway's token
    and a JSON content type, or one of the two wrong; each of ``extra_headers`` (``_`` for
    ``-`` in names) drawn too, and left out when drawn as None."""
    headers: dict[str, bytes | None] = dict(GOOD_HEADERS)
    wrong = draw(st.sampled_from([None, None, None, *BAD_HEADERS]))
    if wrong is not None:
        headers[wrong] = draw(BAD_HEADERS[wrong])
    for name, strategy in extra_headers.items():
        headers[name.replace("_", "-")] = draw(strategy)
    return HttpRequest(
        method,
        draw(st.just(path) if isinstance(path, str) else path) + draw(QUERY),
        # HTTP trims a value's surrounding whitespace; clients refuse to send it.
        tuple((name, value.strip(b" \t")) for name, value in headers.items() if value is not None),
        None if body is None else draw(body),
    )


CHAT_SEND = {
    "sessionKey": Field(SESSION_KEYS, BAD_SESSION_KEYS, required=True),
    "message": Field(MESSAGES, BAD_MESSAGES, required=True),
    "idempotencyKey": Field(IDEMPOTENCY_KEYS, BAD_IDEMPOTENCY_KEYS),
    "queueMode": Field(QUEUE_MODES, BAD_QUEUE_MODES),
    "wait": Field(st.booleans(), st.sampled_from(["true", 1, 0, None])),
    "timeoutMs": Field(TIMEOUTS_MS, BAD_TIMEOUTS_MS, odd=ODD_DEADLINES),
}
CHAT_ABORT = {
    "sessionKey": Field(SESSION_KEYS, BAD_SESSION_KEYS, required=True),
    "runId": Field(RUN_IDS, SURROGATES),
}
UNSTICK = {"sessionKey": Field(SESSION_KEYS, BAD_SESSION_KEYS, required=True)}
CRON_RUN = {"job": Field(st.just(CRON_JOB), st.sampled_from(["", "other", CRON_JOB + " "]), True)}

MODELS = st.sampled_from(
    ["turngate", "openclaw", "turngate/main", "openclaw/fuzz", "openclaw:main"]
)
BAD_MODELS: st.SearchStrategy[Json] = st.sampled_from(
    ["", "gpt-4o", "turngate/", "turngate/nosuchagent", "openclaw/Main", "turngate/" + "a" * 100]
)
ROLES = st.sampled_from(["user", "system", "assistant"])


@st.composite
def chat_messages(draw: st.DrawFn, /) -> Json:
    """OpenAI ``messages``: a few earlier ones, then the user's (a string or text parts)."""
    earlier: list[Json] = [
        {"role": draw(ROLES), "content": draw(MESSAGES)} for _ in range(draw(st.integers(0, 2)))
    ]
    parts: list[Json] = [
        {"type": "text", "text": draw(MESSAGES)} for _ in range(draw(st.integers(1, 3)))
    ]
    content: Json = draw(MESSAGES) if draw(st.booleans()) else parts
    return [*earlier, {"role": "user", "content": content}]


BAD_CHAT_MESSAGES: st.SearchStrategy[Json] = st.one_of(
    st.sampled_from(
        [
            [],
            [{}],
            [{"role": "system", "content": "x"}],
            [{"role": "user"}],
            [{"role": "user", "content": None}],
            [{"role": "user", "content": [{"type": "text"}]}],
            [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}],
            [{"role": "user", "content": ["text"]}],
            [{"role": 1, "content": "x"}],
            Repeat({"role": "user", "content": "x"}, 10_001),
        ]
    ),
    st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": ODD_VALUES}), min_size=1),
    st.lists(ODD_VALUES, min_size=1, max_size=3),
)
COMPLETIONS = {
    "model": Field(MODELS, BAD_MODELS, required=True),
    "messages": Field(chat_messages(), BAD_CHAT_MESSAGES, required=True),
    "stream": Field(st.booleans(), st.sampled_from(["true", 1, None])),
    "user": Field(st.text(max_size=40), st.builds(LongText, st.just(1000))),
}
SESSION_HEADER = st.one_of(
    st.none(),
    st.none(),
    st.sampled_from(
        [
            b"agent:main:fuzz",
            b"agent:fuzz:fuzz",
            b"linkedin-invitations",
            b"agent:main:",
            b"agent:nosuchagent:x",
            b"\xe9t\xe9",
            b"a" * 600,
        ]
    ),
    HEADER_BYTES,
)
IDEMPOTENCY_HEADER = st.one_of(
    st.none(),
    IDEMPOTENCY_KEYS.map(str.encode),
    st.sampled_from([b"", b"a b", b"x" * 129, b"\xff"]),
    HEADER_BYTES,
)

KNOWN_PATHS = {
    "/chat.send": "POST",
    "/chat.abort": "POST",
    "/turns/fuzz-1": "GET",
    "/sessions/unstick": "POST",
    "/cron": "GET",
    "/cron/run": "POST",
    "/health": "GET",
    "/healthz": "GET",
    "/metrics": "GET",
    "/v1/chat/completions": "POST",
    "/v1/models": "GET",
}
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")
WRONG_METHODS = st.sampled_from(
    [
        (method, path)
        for path, allowed in KNOWN_PATHS.items()
        for method in METHODS
        if method != allowed
    ]
)
RUN_ID_SEGMENTS = st.one_of(
    st.sampled_from(
        ["fuzz-1", "fuzz-2", "%ff", "%00", "%ED%A0%80", "..", "%2e%2e", "%2F", "a" * 5000]
    ),
    IDEMPOTENCY_KEYS,
    st.text(min_size=1, max_size=30).map(lambda text: quote(text, safe="")),
)
UNKNOWN_PATHS = st.one_of(
    st.sampled_from(
        [
            "/",
            "/ws",
            "/chat.send/",
            "//chat.send",
            "/CHAT.SEND",
            "/turns/",
            "/turns/a/b",
            "/v1",
            "/v1/chat/completions/x",
            "/%00",
            "/..%2f..%2fetc/passwd",
            "/" + "a" * 5000,
        ]
    ),
    st.text(max_size=30).map(lambda text: "/" + quote(text, safe="/")),
)

HTTP_ROUTES: dict[str, st.SearchStrategy[HttpRequest]] = {
    "POST /chat.send": requests("POST", "/chat.send", bodies(CHAT_SEND)),
    "POST /chat.abort": requests("POST", "/chat.abort", bodies(CHAT_ABORT)),
    "GET /turns/{runId}": requests("GET", RUN_ID_SEGMENTS.map(lambda run_id: "/turns/" + run_id)),
    "POST /sessions/unstick": requests("POST", "/sessions/unstick", bodies(UNSTICK)),
    "GET /cron": requests("GET", "/cron"),
    "POST /cron/run": requests("POST", "/cron/run", bodies(CRON_RUN)),
    "GET /health": requests("GET", st.sampled_from(["/health", "/healthz"])),
    "GET /metrics": requests("GET", "/metrics"),
    "POST /v1/chat/completions": requests(
        "POST",
        "/v1/chat/completions",
        bodies(COMPLETIONS),
        X_Turngate_Session=SESSION_HEADER,
        x_openclaw_session_key=SESSION_HEADER,
        Idempotency_Key=IDEMPOTENCY_HEADER,
    ),
    "GET /v1/models": requests("GET", "/v1/models"),
    "unknown paths": st.sampled_from(METHODS).flatmap(
        lambda method: requests(method, UNKNOWN_PATHS, st.none() | bodies(CHAT_SEND))
    ),
    "wrong methods": WRONG_METHODS.flatmap(
        lambda pair: requests(pair[0], pair[1], st.none() | bodies(CHAT_SEND))
    ),
}
"""Every HTTP route (and what is no route), each with the requests it gets."""
