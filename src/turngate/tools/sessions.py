"""Built-in tools over an agent's own sessions: send a message to one, read one's transcript.

Few and safe, and off unless an agent enables them (by name):

- ``sessions_send`` queues a message as a new turn of another session of the *same* agent,
  in ``followup`` mode, and returns its turn id at once. It never waits for that turn: the
  turn runs when its session is free, and its reply stays in that session. Waiting would tie
  the calling run to another session's queue, and a send to the calling session itself would
  queue behind the very run that is asking; that one is refused.
- ``sessions_history`` reads the last entries of a session of the same agent (the calling
  session's own included) as text lines, bounded in entries and in characters.

What the tools need of the runtime is a :class:`SessionDesk`. The gateway builds its agents
(and their tools) before the engine exists, so the desk is attached later
(:meth:`SessionTools.attach`); until then a call is an error result saying the tool is not
available yet. Every refusal is an error result the model can act on, never an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Any, Protocol

from turngate.core.keys import parse_session_key
from turngate.core.message import check_message
from turngate.core.transcript import EntryKind, TranscriptItem
from turngate.errors import ErrorCode, InvalidSessionKeyError, TurngateError
from turngate.tools.base import ToolContext, ToolResult, ToolSpec

log = logging.getLogger("turngate.tools")

SESSIONS_SEND = "sessions_send"
SESSIONS_HISTORY = "sessions_history"
TOOL_NAMES = (SESSIONS_SEND, SESSIONS_HISTORY)
"""The session tools, in the order they are offered."""
CALL_TIMEOUT_S = 10.0
"""A call stores a turn or reads a transcript: storage that takes longer is failing."""
MESSAGE_CHARS_MAX = 20_000
"""A message sent to another session is refused above this many characters."""
HISTORY_LIMIT_DEFAULT = 20
HISTORY_LIMIT_MAX = 50
"""``sessions_history`` reads at most this many entries."""
HISTORY_CHARS_MAX = 20_000
"""A rendered history is at most this long: the newest entries are kept, the rest left out."""
ENTRY_CHARS_MAX = 4_000
"""One entry of a rendered history is cut to this many characters (with a note saying so):
one huge tool result must not push every other entry out."""
_NOTES_CHARS_MAX = 200
"""Kept free in :data:`HISTORY_CHARS_MAX` for the header and the note on what was left out."""

_SESSION_SCHEMA: dict[str, Any] = {
    "type": "string",
    "description": "A session key of this agent, like agent:<agent id>:<name>.",
}
_SEND_SPEC = ToolSpec(
    SESSIONS_SEND,
    "Send a message to another session of this agent. The message is queued there as a new"
    " turn, behind any turns already waiting, and this call returns at once with the queued"
    " turn's id: it does not wait for that turn, whose reply stays in that session. Not for"
    " the session you are in: answer there in your reply instead.",
    {
        "type": "object",
        "properties": {
            "session": _SESSION_SCHEMA,
            "message": {
                "type": "string",
                "description": "The message, as that session's user would write it.",
                "minLength": 1,
                "maxLength": MESSAGE_CHARS_MAX,
            },
        },
        "required": ["session", "message"],
        "additionalProperties": False,
    },
)
_HISTORY_SPEC = ToolSpec(
    SESSIONS_HISTORY,
    "Read the last entries of a session of this agent (this session included), oldest first:"
    " user messages, assistant replies, tool calls and their results. Long entries are cut,"
    f" and the whole is at most {HISTORY_CHARS_MAX} characters.",
    {
        "type": "object",
        "properties": {
            "session": _SESSION_SCHEMA,
            "limit": {
                "type": "integer",
                "description": "How many of the last entries to read.",
                "minimum": 1,
                "maximum": HISTORY_LIMIT_MAX,
                "default": HISTORY_LIMIT_DEFAULT,
            },
        },
        "required": ["session"],
        "additionalProperties": False,
    },
)
_SPECS = {SESSIONS_SEND: _SEND_SPEC, SESSIONS_HISTORY: _HISTORY_SPEC}


class SessionDesk(Protocol):
    """What the session tools need of the runtime."""

    async def send(self, session_key: str, message: str) -> str:
        """Store ``message`` as a new turn of ``session_key``, queued in ``followup`` mode, and
        return its turn id once it is accepted; never wait for the turn's outcome. Raises a
        :class:`~turngate.errors.TurngateError` when the turn is not accepted."""
        ...

    async def history(self, session_key: str, limit: int) -> list[TranscriptItem]:
        """The last ``limit`` transcript entries of ``session_key``, oldest first (none for a
        session that has none)."""
        ...


class _Refusal(Exception):
    """A call refused before it reached the desk; its text is what the model reads."""


class SessionTools:
    """The :class:`~turngate.tools.base.ToolSource` of the session tools of one agent."""

    def __init__(
        self,
        agent_id: str,
        enabled: Collection[str],
        desk: SessionDesk | None = None,
        *,
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        """``enabled`` names the tools offered, among :data:`TOOL_NAMES` (any other name is a
        ValueError: a configuration mistake). ``desk`` may be attached later."""
        unknown = sorted(set(enabled) - set(TOOL_NAMES))
        if unknown:
            raise ValueError(
                f"enabled: unknown session tools {', '.join(unknown)}; known: "
                + ", ".join(TOOL_NAMES)
            )
        self._agent_id = agent_id
        self._enabled = tuple(name for name in TOOL_NAMES if name in enabled)
        self._desk = desk
        self._call_timeout_s = call_timeout_s

    @property
    def call_timeout_s(self) -> float:
        """The longest a call may take."""
        return self._call_timeout_s

    def attach(self, desk: SessionDesk) -> None:
        """Serve calls through ``desk`` from now on (once the engine exists)."""
        self._desk = desk

    def specs(self) -> list[ToolSpec]:
        """The enabled tools (offered before the desk is attached too: a call then says the
        tool is not available yet, which is true only during start-up)."""
        return [_SPECS[name] for name in self._enabled]

    def owns(self, name: str) -> bool:
        """Whether ``name`` is one of the enabled tools."""
        return name in self._enabled

    async def call(self, name: str, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        """Run ``name`` for the run ``context`` names; every refusal is an error result."""
        try:
            if name == SESSIONS_SEND and self.owns(name):
                return await self._send(arguments, context)
            if name == SESSIONS_HISTORY and self.owns(name):
                return await self._history(arguments)
            raise _Refusal("not offered to this agent")
        except _Refusal as refusal:
            return ToolResult(f"{name}: {refusal}", is_error=True)
        except TurngateError as exc:
            log.warning(
                "tool %s of session %s: %s",
                name,
                context.session_key,
                exc.message,
                extra={"event": "tool_call_failed"},
            )
            return ToolResult(f"{name}: {exc.message}", is_error=True)

    async def _send(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        _only(arguments, ("session", "message"))
        key = self._own_session(arguments.get("session"))
        if key == context.session_key:
            raise _Refusal(
                f"session {key} is the session of this very run: a message sent there would"
                " queue behind the run that is sending it; say it in your reply instead"
            )
        message = _message(arguments.get("message"))
        turn_id = await self._attached().send(key, message)
        log.info(
            "session %s sent a message to session %s: turn %s",
            context.session_key,
            key,
            turn_id,
            extra={"event": "session_message_sent"},
        )
        then = "; read its reply later with sessions_history" if self.owns(SESSIONS_HISTORY) else ""
        return ToolResult(
            f"queued as turn {turn_id} in session {key}. It runs after any turns ahead of it"
            f" there, and its reply stays in that session{then}.",
            is_error=False,
        )

    async def _history(self, arguments: dict[str, Any]) -> ToolResult:
        _only(arguments, ("session", "limit"))
        key = self._own_session(arguments.get("session"))
        limit = _limit(arguments.get("limit", HISTORY_LIMIT_DEFAULT))
        items = await self._attached().history(key, limit)
        return ToolResult(render_history(key, items), is_error=False)

    def _own_session(self, value: object) -> str:
        """``value`` as a valid session key of this agent."""
        try:
            key = parse_session_key(value)
        except InvalidSessionKeyError as exc:
            # The parser names the field as clients send it (sessionKey); here it is "session".
            why = exc.message.replace("sessionKey", "session", 1)
            raise _Refusal(
                f"invalid session key: {why}. Sessions of this agent look like"
                f" agent:{self._agent_id}:<name>"
            ) from None
        if key.agent_id != self._agent_id:
            raise _Refusal(
                f"session {key} refused: these tools reach only sessions of agent"
                f" {self._agent_id}, not of agent {key.agent_id}"
            )
        return str(key)

    def _attached(self) -> SessionDesk:
        if self._desk is None:
            raise _Refusal("not available yet: the gateway is still starting; try again shortly")
        return self._desk


def _only(arguments: dict[str, Any], names: Sequence[str]) -> None:
    """Refuse arguments the tool does not take: a misspelt one would otherwise be ignored."""
    unknown = sorted(set(arguments) - set(names))
    if unknown:
        raise _Refusal(
            f"unknown argument {', '.join(map(repr, unknown))}; it takes {', '.join(names)}"
        )


def _message(value: object) -> str:
    """``value`` as a message another session may be sent."""
    if not isinstance(value, str):
        raise _Refusal("message: must be a string")
    try:
        return check_message(value, MESSAGE_CHARS_MAX)
    except TurngateError as exc:
        hint = "; send a shorter one" if exc.code is ErrorCode.MESSAGE_TOO_LARGE else ""
        raise _Refusal(exc.message + hint) from None


def _limit(value: object) -> int:
    """``value`` as a number of entries to read."""
    # bool is an int in Python, but true is not a number in JSON.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Refusal(f"limit: must be an integer from 1 to {HISTORY_LIMIT_MAX}")
    if not 1 <= value <= HISTORY_LIMIT_MAX:
        raise _Refusal(f"limit: {value} is out of range; it must be from 1 to {HISTORY_LIMIT_MAX}")
    return value


def render_history(session_key: str, items: Sequence[TranscriptItem]) -> str:
    """``items`` as text the model reads: a header, then one block per entry, oldest first.

    Each entry is cut to :data:`ENTRY_CHARS_MAX` characters; then the newest entries that fit
    are kept, so that the whole is at most :data:`HISTORY_CHARS_MAX` characters, and a note
    says how many earlier ones were left out.
    """
    if not items:
        return f"session {session_key} has no transcript entries"
    blocks = [_cut(_render(item), ENTRY_CHARS_MAX) for item in items]
    kept: list[str] = []
    budget = HISTORY_CHARS_MAX - _NOTES_CHARS_MAX
    for block in reversed(blocks):
        budget -= len(block) + 1  # its newline
        if budget < 0:
            break
        kept.append(block)
    kept.reverse()
    lines = [f"session {session_key}: the last {len(kept)} entries, oldest first"]
    left_out = len(blocks) - len(kept)
    if left_out:
        lines.append(
            f"[{left_out} earlier entries left out: the history is bounded at"
            f" {HISTORY_CHARS_MAX} characters]"
        )
    return "\n".join(lines + kept)


def _render(item: TranscriptItem) -> str:
    """One entry as the lines the model reads."""
    match item.kind:
        case EntryKind.USER | EntryKind.ASSISTANT:
            return f"{item.kind.value}: {item.text}"
        case EntryKind.TOOL_CALLS:
            return "\n".join(f"tool call {call.name}({call.arguments})" for call in item.tool_calls)
        case EntryKind.TOOL_RESULT:
            error = " [error]" if item.is_error else ""
            return f"tool result {item.tool_name}{error}: {item.text}"


def _cut(text: str, chars_max: int) -> str:
    if len(text) <= chars_max:
        return text
    return f"{text[:chars_max]} [{len(text) - chars_max} more characters cut]"
