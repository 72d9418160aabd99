"""Reusable Hypothesis strategies for wire messages and untrusted input.

Used by the fuzz tests: anything a peer can send must either be accepted or raise a
:class:`~streamer.errors.WireError` (the contract of ``streamer.wire``).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import msgpack
from hypothesis import strategies as st

__all__ = [
    "API_TYPES",
    "ENCODINGS",
    "FIELDS",
    "INGEST_TYPES",
    "INT64",
    "TYPE_FIELDS",
    "corrupted",
    "corrupted_frames",
    "encode_frame",
    "extreme_values",
    "field_mutations",
    "field_values",
    "frames",
    "hello_messages",
    "json_values",
    "msgpack_values",
    "mutated",
    "mutated_frames",
    "nested_junk",
    "valid_frames",
    "valid_ish_messages",
    "valid_messages",
    "value_frames",
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


# -- frames for the fuzz tests (tests/test_fuzz_wire.py, tests/test_fuzz_server.py) ------

#: Encodings a frame can use: ``msgpack`` (a binary frame) or ``json`` (a text frame).
ENCODINGS = ("msgpack", "json")
#: Person ids the strategies use; none can be a real id (``p_`` + 12 hex digits).
_person_ids = st.text(alphabet="0123456789abcdef", min_size=1, max_size=8).map(lambda s: "p_" + s)
_request_ids = st.text(max_size=128) | INT64
_names = st.text(min_size=1, max_size=200).filter(lambda s: s.strip() != "")


def _pcm(frame_bytes: int) -> st.SearchStrategy[bytes]:
    """Whole sample frames of PCM (every byte value, so f32le may hold NaN)."""
    return st.integers(0, 16).flatmap(
        lambda n: st.binary(min_size=n * frame_bytes, max_size=n * frame_bytes))


@st.composite
def _audio_fields(draw: st.DrawFn) -> dict[str, Any]:
    """``audio`` (file bytes, usually not a valid file) or ``pcm`` with its format."""
    if draw(st.booleans()):
        return {"audio": draw(st.binary(min_size=1, max_size=64) | st.just(_tiny_wav()))}
    fmt = draw(st.sampled_from(["s16le", "f32le"]))
    channels = draw(st.sampled_from([1, 2]))
    fields: dict[str, Any] = {
        "pcm": draw(_pcm({"s16le": 2, "f32le": 4}[fmt] * channels)),
        "sample_rate": draw(st.sampled_from([8000, 16000, 22050, 24000, 32000, 44100, 48000])),
        "format": fmt,
    }
    if channels == 2 or draw(st.booleans()):
        fields["channels"] = channels
    return fields


def _tiny_wav() -> bytes:
    """A valid 16 kHz WAV file of 0.1 s of silence (header + data, built by hand)."""
    data = bytes(3200)
    header = (b"RIFF" + (36 + len(data)).to_bytes(4, "little") + b"WAVEfmt "
              + (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little")
              + (16000).to_bytes(4, "little") + (32000).to_bytes(4, "little")
              + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
              + b"data" + len(data).to_bytes(4, "little"))
    return header + data


def _optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


def valid_messages(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    """Fully valid client messages of ``kind`` (a type of ``INGEST_TYPES``, ``API_TYPES``
    or ``"analyze"``), ``bytes`` as ``bytes`` (:func:`encode_frame` base64s them for JSON).

    ``person`` ids never name a real person, so no valid message changes real data
    except an ``enroll`` of new speech (which random bytes never hold).
    """
    info = st.dictionaries(_keys, json_values(max_leaves=6), max_size=3)

    def build(fixed: dict[str, Any], *parts: st.SearchStrategy[dict[str, Any]]
              ) -> st.SearchStrategy[dict[str, Any]]:
        return st.tuples(st.fixed_dictionaries(fixed), *parts).map(
            lambda ds: {k: v for d in ds for k, v in d.items()} | {"type": kind})

    if kind == "hello":
        return hello_messages()
    if kind == "audio":
        return build({"seq": st.integers(0, 2**64 - 1), "pcm": _pcm(8)})
    if kind == "end":
        return st.just({"type": "end"})
    if kind == "enroll":
        return build({"id": _request_ids}, _audio_fields(),
                     st.one_of(st.fixed_dictionaries({"name": _names}, optional={"info": info}),
                               st.fixed_dictionaries({"person": _person_ids},
                                                     optional={"name": _names, "info": info})))
    if kind == "identify":
        return build({"id": _request_ids}, _audio_fields(),
                     _optional(top_k=st.integers(1, 100)))
    if kind in ("verify",):
        return build({"id": _request_ids, "person": _person_ids}, _audio_fields())
    if kind == "analyze":
        return build({"id": _request_ids}, _audio_fields())
    if kind == "people":
        return build({"id": _request_ids})
    if kind == "update_person":
        return build({"id": _request_ids, "person": _person_ids},
                     _optional(name=_names, info=info))
    if kind == "delete_person":
        return build({"id": _request_ids, "person": _person_ids})
    raise ValueError(f"no valid messages of type {kind!r}")


def extreme_values(encoding: str) -> st.SearchStrategy[Any]:
    """Numbers and values at or past every edge: huge, negative, NaN, infinite, -0.0.

    msgpack cannot carry integers outside [-2**63, 2**64 - 1], so only JSON gets those.
    """
    values: list[Any] = [0, -1, -(2**63), 2**63 - 1, 2**63, 2**64 - 1, float("nan"),
                         float("inf"), float("-inf"), -0.0, 1e308, 5e-324, 16000.0, 1.5,
                         True, False, "", " ", "\t\n", "\x00", "\u202e", "\U0001f600" * 200]
    if encoding == "json":
        values += [2**64, -(2**63) - 1, 10**40, -(10**40)]
    return st.sampled_from(values)


def nested_junk(encoding: str) -> st.SearchStrategy[Any]:
    """Deeply nested arrays and maps (around the decoder's depth limit) with junk inside."""
    leaf = msgpack_values(6) if encoding == "msgpack" else json_values(6)

    def nest(depth: int, inner: Any, as_map: bool) -> Any:
        for _ in range(depth):
            inner = {"k": inner} if as_map else [inner]
        return inner

    return st.builds(nest, st.integers(1, 40), leaf, st.booleans())


@st.composite
def field_mutations(draw: st.DrawFn, message: dict[str, Any], encoding: str) -> dict[str, Any]:
    """``message`` with 1 to 3 field-level mutations: a field dropped, nulled, given a
    wrong-typed, extreme or deeply nested value, extra fields, or a different ``type``."""
    msg = dict(message)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["drop", "null", "wrong", "extreme", "junk", "extra",
                                   "retype"]))
        name = draw(st.sampled_from(sorted(msg) + list(FIELDS) + ["type"]))
        if op == "drop":
            msg.pop(name, None)
        elif op == "null":
            msg[name] = None
        elif op == "wrong":
            msg[name] = draw(field_values())
        elif op == "extreme":
            msg[name] = draw(extreme_values(encoding))
        elif op == "junk":
            msg[name] = draw(nested_junk(encoding))
        elif op == "extra":
            values = msgpack_values(8) if encoding == "msgpack" else json_values(8)
            msg.update(draw(st.dictionaries(_keys, values, min_size=1, max_size=3)))
        else:
            msg["type"] = draw(st.sampled_from(INGEST_TYPES + API_TYPES + ("analyze",))
                               | field_values())
    return msg


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(type(value).__name__)


def encode_frame(message: Any, encoding: str) -> bytes | str:
    """A websocket payload as a client would send it: msgpack bytes, or JSON text with
    ``bytes`` as base64 and NaN/Infinity written as JSON's non-standard tokens."""
    if encoding == "msgpack":
        data: bytes = msgpack.packb(message, use_bin_type=True)
        return data
    return json.dumps(message, allow_nan=True, default=_json_default)


@st.composite
def corrupted(draw: st.DrawFn, frame: bytes | str) -> bytes | str:
    """``frame`` with bytes flipped, inserted, deleted or the end cut off (1 to 4 times).

    Text stays text: the mutated UTF-8 is decoded with replacement characters, as a
    websocket text frame must be valid UTF-8.
    """
    data = bytearray(frame.encode("utf-8") if isinstance(frame, str) else frame)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[i:]
        elif op == "delete" and data:
            del data[i:i + draw(st.integers(1, 4))]
        else:
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
    return data.decode("utf-8", "replace") if isinstance(frame, str) else bytes(data)


def valid_frames(types: tuple[str, ...]) -> st.SearchStrategy[bytes | str]:
    """A valid message of one of ``types`` in either encoding."""
    return st.tuples(st.sampled_from(types).flatmap(valid_messages),
                     st.sampled_from(ENCODINGS)).map(lambda t: encode_frame(*t))


@st.composite
def mutated_frames(draw: st.DrawFn, types: tuple[str, ...]) -> bytes | str:
    """A valid message of one of ``types`` with fields mutated, in either encoding."""
    encoding = draw(st.sampled_from(ENCODINGS))
    message = draw(st.sampled_from(types).flatmap(valid_messages))
    return encode_frame(draw(field_mutations(message, encoding)), encoding)


@st.composite
def corrupted_frames(draw: st.DrawFn, types: tuple[str, ...]) -> bytes | str:
    """A valid or field-mutated message with its bytes corrupted."""
    frame = draw(valid_frames(types) | mutated_frames(types))
    return draw(corrupted(frame))


def value_frames() -> st.SearchStrategy[bytes | str]:
    """Any msgpack or JSON value (a map with a ``type`` or not)."""
    return (st.one_of(msgpack_values(), wire_messages(msgpack_values()))
            .map(lambda v: encode_frame(v, "msgpack"))
            | st.one_of(json_values(), wire_messages(json_values()))
            .map(lambda v: encode_frame(v, "json")))


def frames(types: tuple[str, ...]) -> st.SearchStrategy[bytes | str]:
    """One websocket payload (``bytes``: binary frame, ``str``: text frame) of any kind:
    random bytes or text, any msgpack/JSON value, a valid message of one of ``types``,
    that message with fields mutated, or either of these with bytes corrupted."""
    return st.one_of(valid_frames(types), mutated_frames(types), corrupted_frames(types),
                     value_frames(), st.binary(max_size=512), st.text(max_size=256))
