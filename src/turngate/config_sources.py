"""Where each setting came from, and configuration problems told in plain words.

Settings are merged key by key at the top level (defaults < file < environment < flags), so
the source of any value, however deeply nested, is the source of its top-level key. Inside
the file, :func:`toml_key_lines` finds the line of each key, of each ``[[agents]]`` /
``[[providers]]`` / ``[[agents.cron]]`` block, and of each table header; a key inside an
inline table is given the line of its nearest located parent.

A :class:`Problem` reads ``<source>: <key path> <message>``, for instance::

    file /etc/turngate.toml line 12: agents[1].stall_timeout must be > 0, got -1
    environment TURNGATE_PORT: port must be a whole number, got 'abc'
    flag --port: port must be <= 65535, got 70000

This module knows no particular settings: the model is passed in, so that ``config.py`` can
use it without an import cycle.
"""

from __future__ import annotations

import difflib
import enum
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from turngate.config_toml_lines import toml_key_lines

ENV_PREFIX = "TURNGATE_"
STATE_DIR_DEFAULT = "~/.turngate"
CONFIG_FILE_NAME = "turngate.toml"
REDACTED = "[redacted]"
SHOWN_CHARS_MAX = 60
"""A bad value quoted in a message is cut to this many characters (a prompt can be long)."""

Loc = tuple[str | int, ...]
"""A key path as pydantic gives it: ``("agents", 1, "stall_timeout")``."""


def key_path(loc: Loc) -> str:
    """``("agents", 1, "stall_timeout")`` -> ``agents[1].stall_timeout``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def env_var(name: str) -> str:
    """The environment variable of a top-level key: ``port`` -> ``TURNGATE_PORT``."""
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    """The command-line flag of a top-level key: ``state_dir`` -> ``--state-dir``."""
    return "--" + name.replace("_", "-")


_SECRET_WORDS = frozenset({"token", "secret", "password", "passwd", "passphrase", "key", "apikey"})
_PUBLIC_NAMES = frozenset({"ok_token"})
"""Named like secrets but public by design: the heartbeat marker the model itself prints."""


def is_secret(name: str) -> bool:
    """True for settings whose values must never be shown (``token``, ``*_key``,
    ``*_secret``, ``*_password``): the name's last word says what the value is, so
    ``token_env`` (a variable's name) and ``first_token_timeout`` (a duration) are not."""
    return name not in _PUBLIC_NAMES and name.lower().split("_")[-1] in _SECRET_WORDS


class SourceKind(enum.StrEnum):
    """Where a value can come from."""

    DEFAULT = "default"
    FILE = "file"
    STATE_DIR_FILE = "state_dir_file"
    """``STATE_DIR/turngate.toml``, read because no file was named."""
    ENVIRONMENT = "environment"
    FLAG = "flag"
    COMBINED = "combined"
    """Several sources at once (a check across keys that names none of them)."""


@dataclass(frozen=True)
class Source:
    """One source of a value: the file and line, the variable, or the flag."""

    kind: SourceKind
    name: str = ""
    """The file's path, the variable or the flag."""
    line: int | None = None
    """In a file: the key's line, when it could be found for certain."""

    def __str__(self) -> str:
        where = f" line {self.line}" if self.line is not None else ""
        match self.kind:
            case SourceKind.FILE:
                return f"file {self.name}{where}"
            case SourceKind.STATE_DIR_FILE:
                return f"the state dir's {CONFIG_FILE_NAME} {self.name}{where}"
            case SourceKind.ENVIRONMENT:
                return f"environment {self.name}"
            case SourceKind.FLAG:
                return f"flag {self.name}"
            case SourceKind.COMBINED:
                return "the combined settings"
        return "default"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration: its key path, its source, in plain words."""

    key: str
    """``agents[1].stall_timeout``; empty for the file as a whole (a syntax error)."""
    source: Source
    message: str
    """Reads on from the key: ``must be > 0, got -1``."""

    def __str__(self) -> str:
        about = f"{self.key} " if self.key else ""
        return f"{self.source}: {about}{self.message}"


@dataclass(frozen=True)
class ConfigLayers:
    """The file, environment and flag layers, before they are merged, and the file's lines."""

    file: Path | None = None
    file_implicit: bool = False
    """The file is ``STATE_DIR/turngate.toml``, read because no file was named."""
    from_file: Mapping[str, Any] = field(default_factory=dict)
    from_env: Mapping[str, str] = field(default_factory=dict)
    """Top-level key -> the value of its ``TURNGATE_*`` variable."""
    flags: Mapping[str, Any] = field(default_factory=dict)
    lines: Mapping[Loc, int] = field(default_factory=dict)

    def merged(self) -> dict[str, Any]:
        """What the model validates: each layer overrides the one before, key by key."""
        return {**self.from_file, **self.from_env, **self.flags}

    def file_source(self, line: int | None = None) -> Source:
        """The file, named as how it was found."""
        kind = SourceKind.STATE_DIR_FILE if self.file_implicit else SourceKind.FILE
        return Source(kind, str(self.file), line)

    def source_of(self, loc: Loc) -> Source:
        """Where the value at ``loc`` came from: the layer of its top-level key."""
        if not loc or not isinstance(loc[0], str):
            return Source(SourceKind.COMBINED)
        top = loc[0]
        if top in self.flags:
            return Source(SourceKind.FLAG, flag_name(top))
        if top in self.from_env:
            return Source(SourceKind.ENVIRONMENT, env_var(top))
        if top in self.from_file:
            # The deepest located parent: right for a missing key (its table's header) and,
            # approximately, for a key inside an inline table (the line it starts on).
            for end in range(len(loc), 0, -1):
                if loc[:end] in self.lines:
                    return self.file_source(self.lines[loc[:end]])
            return self.file_source()
        return Source(SourceKind.DEFAULT)

    def problem(self, loc: Loc, message: str) -> Problem:
        """A problem with the value at ``loc``, naming its source."""
        return Problem(key_path(loc), self.source_of(loc), message)


def read_layers(
    config_file: Path | None,
    *,
    env: Mapping[str, str],
    overrides: Mapping[str, Any],
    fields: Iterable[str],
) -> tuple[ConfigLayers, list[Problem]]:
    """The layers for these arguments (``overrides`` are the flags; None means not given),
    and the problems of a file that cannot be read or parsed."""
    flags = {k: v for k, v in overrides.items() if v is not None}
    from_env = {name: env[env_var(name)] for name in fields if env_var(name) in env}
    implicit = False
    if config_file is None and env.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(env[ENV_PREFIX + "CONFIG"])
    if config_file is None:
        state_dir = flags.get("state_dir") or from_env.get("state_dir") or STATE_DIR_DEFAULT
        candidate = Path(state_dir).expanduser() / CONFIG_FILE_NAME
        config_file, implicit = (candidate, True) if candidate.is_file() else (None, False)
    layers = ConfigLayers(config_file, implicit, {}, from_env, flags)
    if config_file is None:
        return layers, []
    try:
        text = config_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return layers, [Problem("", layers.file_source(), f"cannot be read ({reason})")]
    try:
        from_file = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return layers, [_syntax_problem(layers, str(exc))]
    layers = ConfigLayers(config_file, implicit, from_file, from_env, flags, toml_key_lines(text))
    return layers, []


_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def in_reading_order(problems: Iterable[Problem]) -> list[Problem]:
    """Flags, variables and unlocated problems first (as found), then the file's by line:
    the order in which someone fixing them reads the file."""
    return sorted(problems, key=lambda p: p.source.line or 0)


def _syntax_problem(layers: ConfigLayers, message: str) -> Problem:
    # tomllib puts the position at the end of its message, "(at line 3, column 8)".
    match = _AT.search(message)
    text = _AT.sub("", message).replace(" (at end of document)", " at the end of the file")
    text = "is not valid TOML: " + text[:1].lower() + text[1:]
    if match is None:
        return Problem("", layers.file_source(), text)
    return Problem("", layers.file_source(int(match.group(1))), f"{text} (column {match[2]})")


# -- line numbers ---------------------------------------------------------------------------


_PLAIN = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "dict_type": "must be a table",
    "path_type": "must be a path",
}
"""Pydantic's type errors, said the way a TOML user would say them."""
_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}
_LENGTHS = {
    "string_too_short": ("min_length", "at least", "characters"),
    "string_too_long": ("max_length", "at most", "characters"),
    "too_short": ("min_length", "at least", "items"),
    "too_long": ("max_length", "at most", "items"),
}


def validation_problems(
    error: ValidationError, layers: ConfigLayers, model: type[BaseModel]
) -> list[Problem]:
    """One problem per error pydantic found, in plain words, naming its source."""
    return [
        layers.problem(tuple(detail["loc"]), describe(detail, model))
        for detail in error.errors(include_url=False)
    ]


def describe(detail: ErrorDetails, model: type[BaseModel]) -> str:
    """One pydantic error in plain words, reading on from its key path. The value is quoted
    only when the key is not a secret."""
    kind, ctx, loc = detail["type"], detail.get("ctx") or {}, tuple(detail["loc"])
    names = [part for part in loc if isinstance(part, str)]
    secret = bool(names) and is_secret(names[-1])
    got = "" if secret else f", got {show(detail['input'])}"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _field_names(model, loc[:-1]), n=1)
        return "is not a setting" + (f" (did you mean {close[0]}?)" if close else "")
    if kind in _BOUNDS:
        bound, op = _BOUNDS[kind]
        return f"must be {op} {show(ctx.get(bound))}{got}"
    if kind in _LENGTHS:
        bound, word, unit = _LENGTHS[kind]
        return f"must be {word} {ctx.get(bound)} {unit} long{got}"
    if kind in ("literal_error", "enum"):
        return f"must be one of {ctx.get('expected')}{got}"
    if kind == "string_pattern_mismatch":
        return f"must match the pattern {ctx.get('pattern')}{got}"
    if kind in ("value_error", "assertion_error"):
        # A validator's own message often quotes the value; a secret's is never shown.
        return "is not valid" if secret else str(ctx.get("error") or _unjargon(detail["msg"]))
    if kind in _PLAIN:
        return _PLAIN[kind] + got
    return _unjargon(detail["msg"]) + got


def _unjargon(message: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    message = message.replace("Input should be", "must be").replace("Input ", "the value ")
    return message[:1].lower() + message[1:]


def show(value: object) -> str:
    """A value as a TOML user would write it, cut to :data:`SHOWN_CHARS_MAX` characters."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = repr(redact("", value))  # a URL's password stays out of the message
    return text if len(text) <= SHOWN_CHARS_MAX else text[: SHOWN_CHARS_MAX - 3] + "..."


def _field_names(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys allowed in the table at ``loc`` (for "did you mean")."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue
        if current is None or part not in current.model_fields:
            return []
        current = _model_in(current.model_fields[part].annotation)
    return list(current.model_fields) if current is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


# -- the effective configuration ------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One row of ``config show``: a key, its effective value (secrets redacted), its source."""

    key: str
    value: Any
    """JSON-ready: text, number, bool, None, list or table."""
    source: Source


def effective_settings(config: BaseModel, layers: ConfigLayers) -> list[Setting]:
    """Every top-level key with its effective value and source; a list of tables (agents,
    providers) gives one row per table, with that table's line. Secrets are redacted."""
    rows = []
    for name, value in config.model_dump(mode="json").items():
        value = redact(name, value)
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            rows += [
                Setting(f"{name}[{i}]", item, layers.source_of((name, i)))
                for i, item in enumerate(value)
            ]
        else:
            rows.append(Setting(name, value, layers.source_of((name,))))
    return rows


def redact(name: str, value: Any, marker: str = REDACTED) -> Any:
    """``value`` with every secret in it (by key name, at any depth) replaced by ``marker``,
    and the password of a URL (``scheme://user:password@host``) too; an unset secret stays
    None."""
    if isinstance(value, dict):
        return {key: redact(key, item, marker) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(name, item, marker) for item in value]
    if value is not None and is_secret(name):
        return marker
    if isinstance(value, str):
        return _URL_PASSWORD.sub(rf"\1{marker}@", value)
    return value


_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@")
"""A URL's ``user:password@``, the password to blank."""
