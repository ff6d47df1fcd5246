"""JSON documents for the fuzz, and the odd values that go into them.

A document is plain JSON data (``None``, ``bool``, ``int``, ``float``, ``str``, lists, dicts)
plus a few *tokens* for what Python's ``json`` cannot or should not build: a 5,000-digit
integer, ``NaN`` or ``1e309`` as raw text, a lone surrogate as a ``\\ud800`` escape, 50,000
nested arrays, a 70,000-character string. A token stays small in hypothesis's report of a
falsifying example (``HugeInt(digits=4301)``) and is written out in full only by
:func:`render`, on the way to the wire.

:func:`objects` builds what a body or a frame's ``params`` is: an object that starts valid
and then gets at most one *mutation*: a field set to a value of the wrong type or out of range
(:data:`ODD_VALUES`, or a bad value of that very field), a required field dropped, or an
unknown field added.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

from hypothesis import strategies as st


@dataclass(frozen=True, slots=True)
class HugeInt:
    """An integer literal of ``digits`` nines (Python refuses to parse more than 4,300)."""

    digits: int
    negative: bool = False


@dataclass(frozen=True, slots=True)
class RawJson:
    """Text written verbatim where a value goes: ``1e309``, ``NaN``, ``"\\ud800"``."""

    text: str


@dataclass(frozen=True, slots=True)
class LongText:
    """A string of ``length`` copies of ``char``."""

    length: int
    char: str = "x"


@dataclass(frozen=True, slots=True)
class Nested:
    """``depth`` arrays (or objects) nested inside each other."""

    depth: int
    objects: bool = False


@dataclass(frozen=True, slots=True)
class Repeat:
    """An array of ``count`` copies of ``item``."""

    item: Json
    count: int


@dataclass(frozen=True, slots=True)
class FreshId:
    """Where the sender writes a new, unique request id (so the answer can be matched)."""


FRESH_ID = FreshId()
T = TypeVar("T")

Token: TypeAlias = HugeInt | RawJson | LongText | Nested | Repeat | FreshId
Json: TypeAlias = "bool | int | float | str | Token | list[Json] | dict[str, Json] | None"


def render(value: Json, request_id: str = "fresh") -> str:
    """``value`` as JSON text, tokens written out in full; :class:`FreshId` as ``request_id``."""
    match value:
        case HugeInt(digits, negative):
            return ("-" if negative else "") + "9" * digits
        case RawJson(text):
            return text
        case LongText(length, char):
            return json.dumps(char * length, ensure_ascii=False)
        case Nested(depth, objects):
            return '{"a":' * depth + "1" + "}" * depth if objects else "[" * depth + "]" * depth
        case Repeat(item, count):
            return "[" + ",".join([render(item, request_id)] * count) + "]"
        case FreshId():
            return json.dumps(request_id)
        case list():
            return "[" + ",".join(render(item, request_id) for item in value) + "]"
        case dict():
            return (
                "{"
                + ",".join(
                    f"{json.dumps(key, ensure_ascii=False)}:{render(item, request_id)}"
                    for key, item in value.items()
                )
                + "}"
            )
        case _:
            return json.dumps(value, ensure_ascii=False)


def encode(value: Json, request_id: str = "fresh") -> bytes:
    """:func:`render`, as UTF-8 (an unpaired surrogate in a ``str`` becomes invalid UTF-8)."""
    return render(value, request_id).encode("utf-8", "surrogatepass")


# -- odd values: what a field gets when it is not what it should be --------------------------


def either(*options: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """One of ``options``, each about as likely as the others. (``st.one_of`` flattens the
    ``one_of`` s it is given, so an option made of many would outweigh the rest.)"""

    @st.composite
    def pick(draw: st.DrawFn, /) -> T:
        return draw(options[draw(st.integers(0, len(options) - 1))])

    return pick()


INT_DIGITS_LIMIT = 4300
"""Python's default ``sys.get_int_max_str_digits()``: a longer literal fails to parse."""

ODD_NUMBERS = st.sampled_from(
    [
        RawJson(text)
        for text in (
            "1e308",
            "-1e308",
            "1e309",
            "-1e309",
            "1E400",
            "1e-400",
            "NaN",
            "Infinity",
            "-Infinity",
            "-0",
            "0.0",
            "0.5",
            "-1",
            "0",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775809",
            "18446744073709551616",
        )
    ]
)
HUGE_INTS = st.builds(
    HugeInt,
    st.one_of(
        st.sampled_from([INT_DIGITS_LIMIT, INT_DIGITS_LIMIT + 1, 5000]),
        st.integers(INT_DIGITS_LIMIT - 10, 6000),
    ),
    st.booleans(),
)
SURROGATES = st.sampled_from(
    [
        RawJson(text)
        for text in (
            r'"\ud800"',
            r'"agent:main:\udc00"',
            r'"x\udfff\ud800y"',
            r'"\ud83d\ude00"',
            r'"\u0000"',
            r'"\u202e"',
        )
    ]
)
ODD_STRINGS = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", " ", "\n", "\t\r", "\x00", "null", "{}", "💥", "e\u0301", "\u202e"]),
    st.builds(
        LongText,
        st.one_of(st.sampled_from([129, 513, 4097, 70_000, 300_000]), st.integers(1, 100_000)),
        st.sampled_from(["x", "é", "💥", " ", "\\"]),
    ),
    SURROGATES,
)
NESTING = st.builds(
    Nested,
    st.one_of(st.sampled_from([2, 500, 990, 1000, 1100, 5000, 50_000]), st.integers(1, 3000)),
    st.booleans(),
)
SCALARS: st.SearchStrategy[Json] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
CONTAINERS: st.SearchStrategy[Json] = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
ODD_VALUES: st.SearchStrategy[Json] = either(
    SCALARS, CONTAINERS, ODD_NUMBERS, HUGE_INTS, ODD_STRINGS, NESTING
)
"""Any value at all, biased to the ones parsers and validators trip on."""

NOT_OBJECTS: st.SearchStrategy[Json] = either(
    SCALARS, ODD_NUMBERS, HUGE_INTS, ODD_STRINGS, NESTING, st.lists(SCALARS, max_size=3)
)
"""A JSON value that is not an object."""


# -- objects with one thing wrong ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a JSON object: its valid values, and its own bad ones."""

    valid: st.SearchStrategy[Json]
    bad: st.SearchStrategy[Json] | None = None
    required: bool = False
    odd: st.SearchStrategy[Json] = ODD_VALUES

    @property
    def wrong(self) -> st.SearchStrategy[Json]:
        """The field's own bad values or any odd value, half and half."""
        return self.odd if self.bad is None else either(self.bad, self.odd)


class Mutation(enum.StrEnum):
    """What is wrong with an object (``none`` first: hypothesis shrinks towards it)."""

    NONE = "none"
    BAD_VALUE = "bad_value"
    MISSING = "missing"
    UNKNOWN_FIELD = "unknown_field"


UNKNOWN_FIELD_NAMES = st.one_of(
    st.sampled_from(["extra", "__proto__", "sessionkey", "", "message ", "params"]),
    st.text(max_size=12),
)


def objects(fields: Mapping[str, Field]) -> st.SearchStrategy[dict[str, Json]]:
    """A valid object of ``fields`` (optional ones present or not), then one mutation."""

    @st.composite
    def build(draw: st.DrawFn, /) -> dict[str, Json]:
        doc: dict[str, Json] = {}
        for name, spec in fields.items():
            if spec.required or draw(st.booleans()):
                doc[name] = draw(spec.valid)
        mutation = draw(st.sampled_from(Mutation))
        required = [name for name, spec in fields.items() if spec.required]
        if mutation is Mutation.BAD_VALUE and fields:
            name = draw(st.sampled_from(sorted(fields)))
            doc[name] = draw(fields[name].wrong)
        elif mutation is Mutation.MISSING and required:
            del doc[draw(st.sampled_from(required))]
        elif mutation is Mutation.UNKNOWN_FIELD:
            doc[draw(UNKNOWN_FIELD_NAMES.filter(lambda name: name not in fields))] = draw(
                ODD_VALUES
            )
        return doc

    return build()
