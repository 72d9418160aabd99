"""Property-based fuzzing of the wire decoder (sans-I/O, no server).

The contract of :mod:`streamer.wire`: any payload a peer can send, decoded and parsed
the way the server does it, either gives a valid typed message or raises a
:class:`~streamer.errors.StreamerError` subclass with a protocol error code and the
close code the protocol fixes for it; never another exception, never a hang (each
example has a generous deadline). "Valid typed message" is checked field by field
against ``protocol.md`` and against what the layers behind the decoder need (a name a
person can read, ``info`` that can be stored as JSON), so that nothing the decoder
accepts can crash the server later.

Inputs: random bytes and text, any msgpack/JSON value, valid messages of every
client type (hello, audio, end; enroll, identify, verify, people, update_person,
delete_person, analyze) in both encodings, the same with fields dropped, nulled,
wrong-typed, extreme (huge, negative, NaN, infinite), nested junk and extra fields,
and all of these with bytes flipped, inserted, deleted or cut off.
"""

from __future__ import annotations

import base64
import json
import math
from datetime import timedelta
from typing import Any

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strategies import (
    API_TYPES,
    ENCODINGS,
    INGEST_TYPES,
    corrupted,
    encode_frame,
    field_mutations,
    frames,
    json_values,
    msgpack_values,
    valid_messages,
)

from streamer import wire
from streamer.errors import StreamerError, TooLarge

#: The codes and close codes ``protocol.md`` gives for what a client sends.
PROTOCOL_CLOSE = {"bad_message": 1003, "unknown_type": 1003, "bad_hello": 1003,
                  "bad_audio": 1003, "too_large": 1009}
ALL_TYPES = INGEST_TYPES + API_TYPES + ("analyze",)
ENCODING = {"msgpack": wire.Encoding.MSGPACK, "json": wire.Encoding.JSON}
INT_MIN, INT_MAX = -(2**63), 2**64 - 1

#: A hang fails the example instead of the run (decoding takes microseconds).
fuzz = settings(deadline=timedelta(seconds=5), max_examples=300)


def _outcome(fn: Any, *args: Any) -> Any:
    """``fn(*args)``, or the :class:`StreamerError` it raised, checked against the protocol.

    Any other exception propagates and fails the test.
    """
    try:
        return fn(*args)
    except StreamerError as err:
        assert err.code in PROTOCOL_CLOSE, (type(err), err.code)
        assert err.close_code == PROTOCOL_CLOSE[err.code], (type(err), err.close_code)
        message = str(err)
        assert message and "\n" not in message and len(message) <= 200, message
        return err


def _check_request_id(value: Any) -> None:
    if isinstance(value, str):
        assert len(value) <= wire.MAX_ID_CHARS
    else:
        assert type(value) is int and INT_MIN <= value <= INT_MAX


def _check_text(value: Any, max_chars: int) -> None:
    assert isinstance(value, str) and 1 <= len(value) <= max_chars, value


def _check_name(value: Any) -> None:
    """A display name: non-blank text (the registry refuses blank names)."""
    _check_text(value, wire.MAX_NAME_CHARS)
    assert value.strip(), value


def _check_info(value: Any) -> None:
    """``info`` must be storable as JSON (the registry keeps it as JSON text)."""
    assert isinstance(value, dict)
    json.dumps(value, allow_nan=False)


def _check_audio(audio: Any) -> None:
    if isinstance(audio, wire.AudioFile):
        assert isinstance(audio.data, bytes)
        return
    assert isinstance(audio, wire.RawPcm)
    assert audio.sample_rate in wire.SAMPLE_RATES and audio.format in wire.FORMATS
    assert audio.channels in wire.CHANNELS
    assert len(audio.data) % (wire.FORMATS[audio.format] * audio.channels) == 0


def check_typed(item: Any) -> None:
    """Every field of a parsed message is within what ``protocol.md`` allows."""
    if isinstance(item, wire.Hello):
        _check_text(item.room, wire.MAX_ROOM_CHARS)
        _check_text(item.mic, wire.MAX_MIC_CHARS)
        assert item.sample_rate in wire.SAMPLE_RATES and item.format in wire.FORMATS
        assert item.channels in wire.CHANNELS
    elif isinstance(item, wire.Audio):
        assert type(item.seq) is int and 0 <= item.seq <= INT_MAX
        assert isinstance(item.pcm, bytes)
    elif isinstance(item, wire.End):
        pass
    else:
        _check_request_id(item.id)
        if isinstance(item, wire.Enroll):
            if item.person is None:
                _check_name(item.name)
            else:
                _check_text(item.person, wire.MAX_ID_CHARS)
                if item.name is not None:
                    _check_name(item.name)
            if item.info is not None:
                _check_info(item.info)
            _check_audio(item.audio)
        elif isinstance(item, wire.Identify):
            assert 1 <= item.top_k <= wire.MAX_TOP_K
            _check_audio(item.audio)
        elif isinstance(item, (wire.Verify, wire.DeletePerson)):
            _check_text(item.person, wire.MAX_ID_CHARS)
            if isinstance(item, wire.Verify):
                _check_audio(item.audio)
        elif isinstance(item, wire.UpdatePerson):
            _check_text(item.person, wire.MAX_ID_CHARS)
            if item.name is not None:
                _check_name(item.name)
            if item.info is not None:
                _check_info(item.info)
        elif isinstance(item, wire.Analyze):
            _check_audio(item.audio)
        else:
            assert isinstance(item, wire.People), item


def check_frame(frame: bytes | str, max_bytes: int | None = None) -> None:
    """Decode ``frame`` and parse it as every endpoint would; check each outcome."""
    decoded = _outcome(wire.decode, frame, max_bytes)
    if isinstance(decoded, StreamerError):
        return
    msg, encoding = decoded
    assert encoding is (wire.Encoding.JSON if isinstance(frame, str) else wire.Encoding.MSGPACK)
    assert isinstance(msg, dict) and isinstance(msg["type"], str)
    # Whatever decodes can be re-encoded in both encodings (rooms, names and info are
    # relayed to clients that may use the other one).
    wire.encode(msg, wire.Encoding.MSGPACK)
    wire.encode(msg, wire.Encoding.JSON)
    for out in (_outcome(wire.parse_hello, msg),
                _outcome(wire.parse_ingest, msg, encoding),
                _outcome(wire.parse_request, msg, encoding)):
        if isinstance(out, StreamerError):
            request_id = wire.request_id_of(out)
            if request_id is not None:  # echoed only when it is the request's valid id
                assert request_id == msg["id"]
                _check_request_id(request_id)
        else:
            check_typed(out)
    hello = _outcome(wire.parse_hello, msg)
    assert isinstance(hello, wire.Hello) or hello.code == "bad_hello"


# -- random input ---------------------------------------------------------------------------


@fuzz
@given(st.binary(max_size=1024))
@example(b"\x81\xa4type\xa0")
@example(b"\xdf\xff\xff\xff\xff")  # a map header claiming 4 G entries
@example(b"\x81\xa4type\xd7\xff" + bytes(8))  # an invalid timestamp ext
def test_random_bytes(data: bytes) -> None:
    check_frame(data)


@fuzz
@given(st.text(max_size=1024))
@example('{"type": "x", "v": ' + "[" * 40 + "]" * 40 + "}")
@example('{"type": "x", "v": 1' + "0" * 400 + ".5}")  # a float too large for a double
@example('{"type": "x", "v": "\\udc00"}')  # a lone surrogate
def test_random_text(text: str) -> None:
    check_frame(text)


@fuzz
@given(st.sampled_from(ENCODINGS).flatmap(
    lambda e: st.tuples(st.just(e), msgpack_values(40) if e == "msgpack" else json_values(40))))
def test_random_values(case: tuple[str, Any]) -> None:
    encoding, value = case
    check_frame(encode_frame(value, encoding))


# -- valid and mutated messages -------------------------------------------------------------


@fuzz
@given(st.sampled_from(ALL_TYPES).flatmap(valid_messages), st.sampled_from(ENCODINGS))
def test_valid_messages_parse_alike_in_both_encodings(msg: dict[str, Any],
                                                      encoding: str) -> None:
    decoded, enc = wire.decode(encode_frame(msg, encoding))
    assert enc is ENCODING[encoding]
    if msg["type"] == "hello":
        item: Any = wire.parse_hello(decoded)
    elif msg["type"] in INGEST_TYPES:
        item = wire.parse_ingest(decoded, enc)
    else:
        item = wire.parse_request(decoded, enc)
    check_typed(item)
    assert type(item).__name__.lower() == msg["type"].replace("_", "")
    other = "json" if encoding == "msgpack" else "msgpack"
    again, enc2 = wire.decode(encode_frame(msg, other))
    parse = wire.parse_request if msg["type"] in API_TYPES + ("analyze",) else wire.parse_ingest
    assert parse(again, enc2) == item


@st.composite
def _mutated_cases(draw: st.DrawFn, types: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    encoding = draw(st.sampled_from(ENCODINGS))
    message = draw(st.sampled_from(types).flatmap(valid_messages))
    return encoding, draw(field_mutations(message, encoding))


@fuzz
@given(_mutated_cases(INGEST_TYPES))
@example(("json", {"type": "hello", "room": "r", "sample_rate": float("nan")}))
@example(("json", {"type": "audio", "seq": 2**64, "pcm": ""}))
@example(("msgpack", {"type": "audio", "seq": -1, "pcm": b""}))
def test_mutated_ingest_messages(case: tuple[str, dict[str, Any]]) -> None:
    encoding, msg = case
    check_frame(encode_frame(msg, encoding))


@fuzz
@given(_mutated_cases(API_TYPES + ("analyze",)))
@example(("msgpack", {"type": "update_person", "id": 1, "person": "p_1",
                      "info": {"photo": b"\x89PNG"}}))
@example(("msgpack", {"type": "enroll", "id": 1, "name": "x", "info": {"a": [b""]},
                      "audio": b"x"}))
@example(("json", {"type": "update_person", "id": 1, "person": "p_1", "name": " \t"}))
@example(("json", {"type": "enroll", "id": 1, "name": "\u3000", "audio": "eA=="}))
@example(("json", {"type": "identify", "id": 2**64, "top_k": 1e999, "audio": "eA=="}))
def test_mutated_api_requests(case: tuple[str, dict[str, Any]]) -> None:
    encoding, msg = case
    check_frame(encode_frame(msg, encoding))


@fuzz
@given(frames(ALL_TYPES))
def test_corrupted_and_mixed_frames(frame: bytes | str) -> None:
    check_frame(frame)


@fuzz
@given(st.sampled_from(ALL_TYPES).flatmap(valid_messages), st.sampled_from(ENCODINGS),
       st.data())
def test_truncated_messages_never_decode_to_something_else(msg: dict[str, Any], encoding: str,
                                                           data: st.DataObject) -> None:
    """A cut-off frame is an error, not a shorter valid message."""
    frame = encode_frame(msg, encoding)
    cut = data.draw(st.integers(0, len(frame) - 1))
    out = _outcome(wire.decode, frame[:cut])
    assert isinstance(out, StreamerError) and out.code == "bad_message"


@fuzz
@given(frames(ALL_TYPES), st.integers(0, 600))
def test_max_bytes(frame: bytes | str, max_bytes: int) -> None:
    size = len(frame.encode("utf-8")) if isinstance(frame, str) else len(frame)
    if size > max_bytes:
        with pytest.raises(TooLarge) as info:
            wire.decode(frame, max_bytes)
        assert info.value.code == "too_large" and info.value.close_code == 1009
    else:
        check_frame(frame, max_bytes)


@fuzz
@given(st.sampled_from(API_TYPES + ("analyze",)).flatmap(valid_messages), st.data())
def test_corrupted_valid_requests(msg: dict[str, Any], data: st.DataObject) -> None:
    for encoding in ENCODINGS:
        check_frame(data.draw(corrupted(encode_frame(msg, encoding))))


# -- fixed cases for the bugs fuzzing found ---------------------------------------------------


@pytest.mark.parametrize("encoding", [wire.Encoding.MSGPACK, wire.Encoding.JSON])
@pytest.mark.parametrize("name", [" ", "\t\n", "\u3000", "\u2003 "])
def test_blank_names_are_refused(encoding: wire.Encoding, name: str) -> None:
    for msg in ({"type": "enroll", "id": 7, "name": name, "audio": b"x"},
                {"type": "enroll", "id": 7, "person": "p_1", "name": name, "audio": b"x"},
                {"type": "update_person", "id": 7, "person": "p_1", "name": name}):
        frame = wire.encode(msg, encoding)
        with pytest.raises(StreamerError) as info:
            wire.parse_request(*wire.decode(frame))
        assert info.value.code == "bad_message" and "name" in str(info.value)
        assert wire.request_id_of(info.value) == 7


@pytest.mark.parametrize("info", [{"photo": b"\x89PNG"}, {"a": [1, {"b": b""}]}])
def test_binary_in_info_is_refused(info: dict[str, Any]) -> None:
    for msg in ({"type": "enroll", "id": "e", "name": "Ada", "info": info, "audio": b"x"},
                {"type": "update_person", "id": "e", "person": "p_1", "info": info}):
        with pytest.raises(StreamerError) as err:
            wire.parse_request(*wire.decode(msgpack.packb(msg, use_bin_type=True)))
        assert err.value.code == "bad_message" and "info" in str(err.value)
        assert wire.request_id_of(err.value) == "e"


def test_json_info_is_kept_as_sent() -> None:
    info = {"team": "ops", "badge": 42, "tags": ["a", None, 1.5], "nested": {"ok": True}}
    msg = {"type": "update_person", "id": 1, "person": "p_1", "info": info, "name": " Ada "}
    for encoding in (wire.Encoding.MSGPACK, wire.Encoding.JSON):
        request = wire.parse_request(*wire.decode(wire.encode(msg, encoding)))
        assert request == wire.UpdatePerson(1, "p_1", " Ada ", info)
    # base64 in JSON is just a string inside info (not decoded)
    text = json.dumps({**msg, "info": {"b": base64.b64encode(b"x").decode()}})
    request = wire.parse_request(*wire.decode(text))
    assert isinstance(request, wire.UpdatePerson) and request.info == {"b": "eA=="}


def test_nan_never_reaches_a_typed_field() -> None:
    for text in ('{"type": "identify", "id": 1, "top_k": NaN, "audio": "eA=="}',
                 '{"type": "audio", "seq": Infinity, "pcm": ""}'):
        with pytest.raises(StreamerError) as info:
            wire.decode(text)
        assert info.value.code == "bad_message"
    packed = msgpack.packb({"type": "hello", "room": "r", "sample_rate": math.nan})
    with pytest.raises(StreamerError) as info:
        wire.decode(packed)
    assert info.value.code == "bad_message"
