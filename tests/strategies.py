"""Reusable Hypothesis strategies for wire messages and untrusted input.

Used by the fuzz tests: anything a peer can send must either be accepted or raise a
:class:`~streamer.errors.WireError` (the contract of ``streamer.wire``).
"""

from __future__ import annotations

import base64
from typing import Any

import msgpack
from hypothesis import strategies as st

__all__ = [
    "API_TYPES",
    "FIELDS",
    "INGEST_TYPES",
    "INT64",
    "TYPE_FIELDS",
    "field_values",
    "hello_messages",
    "json_values",
    "msgpack_values",
    "mutated",
    "valid_ish_messages",
    "wire_messages",
]

#: Integers that both encodings carry.
INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
_finite = st.floats(allow_nan=False, allow_infinity=False)
_keys = st.text(max_size=12)


def _scalars(binary: bool) -> st.SearchStrategy[Any]:
    base = st.none() | st.booleans() | INT64 | _finite | st.text(max_size=40)
    return base | st.binary(max_size=64) if binary else base


def msgpack_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Any value a valid msgpack message may hold (including ``bytes``)."""
    return st.recursive(
        _scalars(binary=True),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
        max_leaves=max_leaves,
    )


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Any value a valid JSON message may hold (no ``bytes``)."""
    return st.recursive(
        _scalars(binary=False),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
        max_leaves=max_leaves,
    )


def wire_messages(
    values: st.SearchStrategy[Any] | None = None,
) -> st.SearchStrategy[dict[str, Any]]:
    """Valid messages: a map with a ``str`` ``type`` and arbitrary other fields."""
    values = msgpack_values() if values is None else values
    return st.builds(
        lambda kind, rest: {**rest, "type": kind},
        st.text(max_size=20),
        st.dictionaries(_keys, values, max_size=6),
    )


INGEST_TYPES = ("hello", "audio", "end")
API_TYPES = ("enroll", "identify", "verify", "people", "update_person", "delete_person")
#: Every field name the client->server messages use.
FIELDS = (
    "room", "mic", "sample_rate", "format", "channels", "seq", "pcm", "id", "name",
    "info", "person", "audio", "top_k",
)


def field_values() -> st.SearchStrategy[Any]:
    """Plausible and implausible values for any field: right and wrong types, edge cases."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from([0, 1, 2, 3, -1, 5, 100, 101, 8000, 16000, 44100, 12345, 2**63]),
        INT64,
        _finite,
        st.sampled_from(["", "s16le", "f32le", "s24le", "board-room", "p_1", "AAE=", "A",
                         "!!!", "x" * 129, "x" * 201, "é"]),
        st.text(max_size=30),
        st.binary(max_size=32),
        st.lists(st.integers(0, 3), max_size=3),
        st.dictionaries(_keys, st.integers(0, 3) | st.text(max_size=5), max_size=3),
    )


def _good_values() -> dict[str, st.SearchStrategy[Any]]:
    """A value that is valid for each field (for JSON, bytes are given as base64)."""
    pcm = st.integers(0, 8).map(lambda n: bytes(8 * n))
    return {
        "room": st.text(min_size=1, max_size=20),
        "mic": st.text(min_size=1, max_size=20),
        "sample_rate": st.sampled_from([8000, 16000, 22050, 24000, 32000, 44100, 48000]),
        "format": st.sampled_from(["s16le", "f32le"]),
        "channels": st.sampled_from([1, 2]),
        "seq": st.integers(0, 10),
        "pcm": pcm | pcm.map(lambda b: base64.b64encode(b).decode()),
        "audio": st.binary(min_size=1, max_size=16) | st.just("UklGRg=="),
        "id": st.text(max_size=10) | st.integers(0, 10),
        "name": st.text(min_size=1, max_size=20),
        "info": st.dictionaries(_keys, st.integers(0, 3) | st.text(max_size=5), max_size=3),
        "person": st.just("p_1"),
        "top_k": st.integers(1, 100),
    }


#: The fields each message type reads (``pcm`` requests also read the format fields).
TYPE_FIELDS = {
    "hello": ("room", "mic", "sample_rate", "format", "channels"),
    "audio": ("seq", "pcm"),
    "end": (),
    "enroll": ("id", "name", "info", "person", "audio"),
    "identify": ("id", "top_k", "audio"),
    "verify": ("id", "person", "audio"),
    "people": ("id",),
    "update_person": ("id", "person", "name", "info"),
    "delete_person": ("id", "person"),
}


@st.composite
def valid_ish_messages(draw: st.DrawFn, types: tuple[str, ...]) -> dict[str, Any]:
    """Messages of a known ``type`` with mostly its own fields, some foreign ones.

    Each field present gets a valid value or, about one time in six, a random value of
    any type, so that parsers see valid, almost-valid and broken messages alike.
    """
    good = _good_values()
    kind = draw(st.sampled_from(types + ("", "bogus")))
    own = set(TYPE_FIELDS.get(kind, ()))
    if "audio" in own and draw(st.booleans()):  # raw PCM instead of a file
        own = (own - {"audio"}) | {"pcm", "sample_rate", "format", "channels"}
    msg: dict[str, Any] = {"type": kind}
    for name in FIELDS:
        if draw(st.integers(0, 9)) < (9 if name in own else 1):
            bad = draw(st.integers(0, 5)) == 0
            msg[name] = draw(field_values() if bad else good[name])
    return msg


def hello_messages() -> st.SearchStrategy[dict[str, Any]]:
    """Valid ``hello`` messages (optional fields present or not)."""
    optional = st.fixed_dictionaries(
        {},
        optional={
            "mic": st.text(min_size=1, max_size=128),
            "sample_rate": st.sampled_from([8000, 16000, 22050, 24000, 32000, 44100, 48000]),
            "format": st.sampled_from(["s16le", "f32le"]),
            "channels": st.sampled_from([1, 2]),
        },
    )
    return st.builds(
        lambda room, rest: {"type": "hello", "room": room, **rest},
        st.text(min_size=1, max_size=128),
        optional,
    )


@st.composite
def mutated(draw: st.DrawFn, messages: st.SearchStrategy[dict[str, Any]]) -> bytes:
    """The msgpack encoding of a message with bytes flipped, cut or appended."""
    data = bytearray(msgpack.packb(draw(messages), use_bin_type=True))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "append"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif op == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        else:
            data += draw(st.binary(min_size=1, max_size=4))
    return bytes(data)
