"""What a message to an agent may be, whichever way it comes in (HTTP, the WebSocket
protocol, the OpenAI surface, the console, another session's ``sessions_send``)."""

from __future__ import annotations

from turngate.errors import ErrorCode, InvalidFieldError, PayloadTooLargeError


def check_message(text: str, chars_max: int, field: str = "message") -> str:
    """``text`` if it is a message a turn can carry; else refused, naming ``field``: empty (or
    only whitespace), not valid Unicode, or longer than ``chars_max`` characters."""
    if not text.strip():
        raise InvalidFieldError(field, "must not be empty")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # JSON's \ud800 escapes decode to lone surrogates, which no store can write.
        raise InvalidFieldError(
            field, "is not valid Unicode text (it contains an unpaired surrogate)"
        ) from None
    if len(text) > chars_max:
        raise PayloadTooLargeError(
            f"{field}: {len(text)} characters, over the limit of {chars_max}",
            code=ErrorCode.MESSAGE_TOO_LARGE,
        )
    return text
