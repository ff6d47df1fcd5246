"""The one error hierarchy of turngate, and the one place error codes are defined.

Every error a user can cause, and every way a turn can end badly, has a stable
:class:`ErrorCode`. The code is what clients match on; the message is for people
and names the field or the session concerned.

Tree::

    TurngateError                 root; carries .code and .message
    ├── RequestError              the caller sent something we refuse (4xx)
    │   ├── InvalidFieldError     a field is missing, mistyped or out of range
    │   ├── InvalidSessionKeyError
    │   ├── UnknownAgentError     the session key names an agent this gateway does not serve
    │   ├── PayloadTooLargeError  body or message over its limit
    │   ├── IdempotencyConflictError  key reused for a different message
    │   ├── NotFoundError         no such turn / session, no such route
    │   ├── UnauthorizedError     the gateway token is missing or wrong
    │   ├── ForbiddenError        refused whatever the credentials: a console request
    │   │                         that changes something, sent from another origin
    │   └── SlowClientError       headers or body not sent in time (408)
    ├── UnavailableError          the gateway cannot take the turn now (shutting down,
    │                             too many connections)
    ├── StoreError                the store refused or failed a write
    │   ├── StaleEpochError       a write carried a fencing epoch that is no longer current
    │   └── StorageUnavailableError  the disk is full or failing: nothing was written (503)
    ├── StateDirError             the state directory cannot be used (in use by another
    │                             gateway, not writable)
    ├── ChannelError              a chat platform failed an operation (tried again)
    │   ├── DeliveryRefusedError  the platform refused a message for good
    │   └── ChannelRefusedError   the platform refused the connection for good: its
    │       │                     supervisor stops
    │       └── ToolServerRefusedError  an MCP server cannot be started as configured (a
    │                             variable its configuration names is not set): stops too
    ├── ProviderError             the model provider failed a call (retry, then next model)
    │   ├── ProviderTimeoutError  no answer (or no first token) in time (retry)
    │   ├── ProviderAuthError     the provider refused our credentials (next model at once)
    │   ├── ProviderResponseError the answer was cut off, empty or unreadable (retry)
    │   └── ProviderRejectedError the request itself was refused: context too long, content
    │                             refused, bad request (the turn fails; never retried)
    └── IllegalTransitionError    a state machine was asked for a transition it does not have
                                  (always a bug in turngate, never the user's fault)

Terminal outcomes of turns (``busy``, ``queue_full``, ``superseded``, ``stalled``, ...) are
not raised: they are values recorded on the turn. They share the code space so a client
sees one vocabulary.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """Stable, machine-readable error codes. Never rename a member: clients match on them."""

    # Request validation.
    INVALID_JSON = "invalid_json"
    INVALID_FIELD = "invalid_field"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    BODY_TOO_LARGE = "body_too_large"
    MESSAGE_TOO_LARGE = "message_too_large"
    INVALID_SESSION_KEY = "invalid_session_key"
    UNKNOWN_AGENT = "unknown_agent"
    INVALID_QUEUE_MODE = "invalid_queue_mode"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    BAD_REQUEST = "bad_request"
    """The HTTP request itself could not be parsed."""
    REQUEST_TIMEOUT = "request_timeout"
    """The client did not send its headers or body in time."""
    TOO_MANY_CONNECTIONS = "too_many_connections"
    # Turn outcomes other than a reply.
    BUSY = "busy"
    QUEUE_FULL = "queue_full"
    SUPERSEDED = "superseded"
    STALLED = "stalled"
    RUN_TIMEOUT = "run_timeout"
    USER_ABORT = "user_abort"
    SHUTDOWN = "shutdown"
    TURN_EXPIRED = "turn_expired"
    INTERRUPTED = "interrupted"
    PROVIDER_ERROR = "provider_error"
    PROVIDER_TIMEOUT = "provider_timeout"
    PROVIDER_AUTH = "provider_auth"
    PROVIDER_REJECTED = "provider_rejected"
    CONTEXT_TOO_LONG = "context_too_long"
    CONTENT_REFUSED = "content_refused"
    ALL_MODELS_FAILED = "all_models_failed"
    INCOMPLETE_RESPONSE = "incomplete_response"
    """The model's answer stopped before the provider said it was finished."""
    EMPTY_RESPONSE = "empty_response"
    """The model finished without any content."""
    BAD_RESPONSE = "bad_response"
    """The provider's answer could not be read (not a stream, malformed, wrong shape)."""
    MAX_STEPS = "max_steps"
    """The model was still calling tools after the agent's ``max_steps`` model steps."""
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    """Refused whatever the credentials (a console request from another origin)."""
    RATE_LIMITED = "rate_limited"
    FRAME_TOO_LARGE = "frame_too_large"
    # Coordination and internals.
    STALE_EPOCH = "stale_epoch"
    ILLEGAL_TRANSITION = "illegal_transition"
    STORE_ERROR = "store_error"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    STATE_DIR_IN_USE = "state_dir_in_use"
    STATE_DIR_UNUSABLE = "state_dir_unusable"
    CHANNEL_UNAVAILABLE = "channel_unavailable"
    """A chat platform failed or could not be reached; the message is tried again."""
    DELIVERY_REFUSED = "delivery_refused"
    """A chat platform refused a message for good (chat gone, bot blocked, bad request)."""
    CHANNEL_REFUSED = "channel_refused"
    """A chat platform refused the channel's connection for good (a bad token, a banned bot,
    a forbidden intent): the channel stops until its configuration is fixed."""
    INTERNAL = "internal"


class TurngateError(Exception):
    """Root of every error turngate raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code.value!r}, message={self.message!r})"


class RequestError(TurngateError):
    """The caller sent something the gateway refuses; nothing was accepted."""

    code = ErrorCode.INVALID_FIELD


class InvalidFieldError(RequestError):
    """A request field is missing, of the wrong type, or out of range."""

    def __init__(self, field: str, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(f"{field}: {message}", code=code or ErrorCode.INVALID_FIELD)
        self.field = field


class InvalidSessionKeyError(RequestError):
    """A session key does not follow ``agent:<agentId>:<rest>``."""

    code = ErrorCode.INVALID_SESSION_KEY


class UnknownAgentError(RequestError):
    """A session key names an agent that is not configured."""

    code = ErrorCode.UNKNOWN_AGENT


class PayloadTooLargeError(RequestError):
    """The request body, or the message in it, is over its configured limit."""

    code = ErrorCode.BODY_TOO_LARGE


class IdempotencyConflictError(RequestError):
    """An idempotency key was reused for a different session or message."""

    code = ErrorCode.IDEMPOTENCY_CONFLICT


class NotFoundError(RequestError):
    """The turn or session asked for does not exist."""

    code = ErrorCode.NOT_FOUND


class SlowClientError(RequestError):
    """A client did not finish sending its request in time; the connection is dropped."""

    code = ErrorCode.REQUEST_TIMEOUT


class UnavailableError(TurngateError):
    """The gateway cannot accept turns right now (it is starting or shutting down)."""

    code = ErrorCode.SHUTDOWN


class StoreError(TurngateError):
    """The store failed or refused a write."""

    code = ErrorCode.STORE_ERROR


class StaleEpochError(StoreError):
    """A write carried a fencing epoch that no longer holds the session's lease."""

    code = ErrorCode.STALE_EPOCH

    def __init__(self, session_key: str, run_id: str, epoch: int) -> None:
        super().__init__(
            f"session {session_key}: write by run {run_id} with epoch {epoch} refused;"
            " that run no longer holds the session's lease"
        )
        self.session_key = session_key
        self.run_id = run_id
        self.epoch = epoch


class SessionTakenError(StaleEpochError):
    """A write by a gateway process that no longer holds the session's claim: another
    process took the session over (this one was paused, or cut off from the store, past its
    claim's expiry)."""

    def __init__(self, session_key: str, holder: str) -> None:
        StoreError.__init__(
            self,
            f"session {session_key}: write by gateway process {holder!r} refused; another"
            " process holds the session now",
        )
        self.session_key = session_key
        self.run_id = ""
        self.epoch = 0
        self.holder = holder


class StorageUnavailableError(StoreError):
    """The store cannot write (disk full, I/O error, read-only file): nothing was written.

    Transient by nature: a turn that was not accepted may be sent again; turns already
    accepted stay owed and run once writes succeed again.
    """

    code = ErrorCode.STORAGE_UNAVAILABLE


class StateDirError(TurngateError):
    """The state directory cannot be used: another gateway holds it, or it is not writable."""

    code = ErrorCode.STATE_DIR_UNUSABLE


class ChannelError(TurngateError):
    """A chat platform failed an operation (a send, a poll, a connection); tried again.

    ``retry_after_s`` is the platform's own hint (Telegram's ``retry_after``, Discord's
    ``retry_after``, ``Retry-After``), when it gave one. It pauses the whole bot unless
    ``conversation_only`` says the limit is the conversation's alone (Discord's per-route
    limits): then only that conversation's next message waits.
    """

    code = ErrorCode.CHANNEL_UNAVAILABLE

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        retry_after_s: float | None = None,
        conversation_only: bool = False,
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s
        self.conversation_only = conversation_only


class DeliveryRefusedError(ChannelError):
    """The platform refused a message for good: trying again would not help."""

    code = ErrorCode.DELIVERY_REFUSED


class ChannelRefusedError(ChannelError):
    """The platform refused the connection for good: a bad token, a banned bot, a forbidden
    intent. Retrying cannot help, so the channel's supervisor stops instead of looping. The
    message is shown in ``/health``: it names the cause, never the credential."""

    code = ErrorCode.CHANNEL_REFUSED


class ToolServerRefusedError(ChannelRefusedError):
    """An MCP tool server cannot be started as configured, and retrying cannot help: an
    environment variable its configuration names is not set. Its supervisor stops (like a
    channel refused for good) and its tools are not offered; the message names the variable
    and the key, never a value. Shares ``channel_refused``: a connection the supervisor gave
    up on."""


class ProviderError(TurngateError):
    """A model provider failed a call (rate limit, 5xx, overloaded, connection lost).

    ``retry_after_s`` is the provider's own hint (``Retry-After``), when it gave one.
    """

    code = ErrorCode.PROVIDER_ERROR

    def __init__(
        self, message: str, *, code: ErrorCode | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class ProviderTimeoutError(ProviderError):
    """A model provider did not answer within its deadline."""

    code = ErrorCode.PROVIDER_TIMEOUT


class ProviderAuthError(ProviderError):
    """A model provider refused the gateway's credentials (401/403)."""

    code = ErrorCode.PROVIDER_AUTH


class ProviderResponseError(ProviderError):
    """The provider answered, but not with a finished reply: the stream was cut off
    (``incomplete_response``), had no content (``empty_response``), or could not be read
    (``bad_response``). Retried, then the next model, like a 5xx."""

    code = ErrorCode.BAD_RESPONSE


class ProviderRejectedError(ProviderError):
    """A model provider refused the request itself; retrying it anywhere would not help.

    ``code`` is ``context_too_long``, ``content_refused`` or ``provider_rejected``.
    """

    code = ErrorCode.PROVIDER_REJECTED


class UnauthorizedError(RequestError):
    """A client presented no gateway token, or a wrong one."""

    code = ErrorCode.UNAUTHORIZED


class ForbiddenError(RequestError):
    """A request refused whoever sends it: a console request that changes something and
    does not come from the console's own page (its origin is another site's)."""

    code = ErrorCode.FORBIDDEN


class IllegalTransitionError(TurngateError):
    """A state machine was asked for a transition its table does not have (a turngate bug)."""

    code = ErrorCode.ILLEGAL_TRANSITION

    def __init__(self, machine: str, state: str, event: str) -> None:
        super().__init__(f"{machine}: no transition from state {state!r} on event {event!r}")
        self.machine = machine
        self.state = state
        self.event = event
