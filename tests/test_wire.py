"""streamer.wire: decoding, encoding, validation and the fuzz contract (sans-I/O)."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import (
    API_TYPES,
    INGEST_TYPES,
    hello_messages,
    json_values,
    msgpack_values,
    mutated,
    valid_ish_messages,
    wire_messages,
)

from streamer import wire
from streamer.errors import (
    BadAudio,
    BadHello,
    StreamerError,
    TooLarge,
    UnknownPerson,
    UnknownType,
    WireError,
)
from streamer.wire import Encoding

MP = Encoding.MSGPACK
JS = Encoding.JSON
PCM = bytes(range(256)) * 4  # 1024 bytes: whole samples for every format/channels


def packb(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def roundtrip(msg: dict[str, Any], encoding: Encoding) -> dict[str, Any]:
    """Encode then decode, as a peer's message reaches the server."""
    decoded, got = wire.decode(wire.encode(msg, encoding))
    assert got is encoding
    return decoded


def expect(exc: type[StreamerError], code: str, fn: Any, *args: Any, field: str | None = None
           ) -> StreamerError:
    """Call ``fn`` and check it raises exactly ``exc`` with ``code`` and names ``field``."""
    with pytest.raises(exc) as info:
        fn(*args)
    err = info.value
    assert type(err) is exc
    assert err.code == code
    message = str(err)
    assert message and "\n" not in message
    if field is not None:
        assert field in message
    return err


# -- decode / encode --------------------------------------------------------------------


class TestRoundTrip:
    def test_msgpack_keeps_bytes(self) -> None:
        msg = {"type": "audio", "seq": 3, "pcm": b"\x00\x01\xff", "x": [1.5, None, True]}
        data = wire.encode(msg, MP)
        assert isinstance(data, bytes)
        assert wire.decode(data) == (msg, MP)

    def test_json_bytes_become_standard_padded_base64(self) -> None:
        data = wire.encode({"type": "audio", "seq": 0, "pcm": b"\xfb\xff"}, JS)
        assert isinstance(data, str)
        assert data == '{"type":"audio","seq":0,"pcm":"+/8="}'  # compact, standard alphabet
        msg, encoding = wire.decode(data)
        assert encoding is JS
        assert wire.parse_audio(msg, encoding).pcm == b"\xfb\xff"

    def test_json_and_msgpack_audio_decode_alike(self) -> None:
        msg = {"type": "audio", "seq": 7, "pcm": PCM}
        assert wire.parse_ingest(*_decoded(msg, MP)) == wire.parse_ingest(*_decoded(msg, JS))

    def test_bytearray_and_memoryview_are_msgpack(self) -> None:
        data = packb({"type": "end"})
        assert wire.decode(bytearray(data)) == ({"type": "end"}, MP)
        assert wire.decode(memoryview(data)) == ({"type": "end"}, MP)

    def test_tuples_encode_as_arrays(self) -> None:
        assert roundtrip({"type": "x", "a": (1, 2)}, MP) == {"type": "x", "a": [1, 2]}
        assert roundtrip({"type": "x", "a": (1, 2)}, JS) == {"type": "x", "a": [1, 2]}

    @given(wire_messages(msgpack_values()))
    def test_msgpack_roundtrip(self, msg: dict[str, Any]) -> None:
        assert roundtrip(msg, MP) == msg

    @given(wire_messages(json_values()))
    def test_json_roundtrip(self, msg: dict[str, Any]) -> None:
        assert roundtrip(msg, JS) == msg

    def test_max_bytes_boundary(self) -> None:
        data = packb({"type": "end"})
        assert wire.decode(data, max_bytes=len(data))[0] == {"type": "end"}
        text = '{"type":"é"}'  # 13 UTF-8 bytes, 12 characters
        assert wire.decode(text, max_bytes=13)[0] == {"type": "é"}


def _decoded(msg: dict[str, Any], encoding: Encoding) -> tuple[dict[str, Any], Encoding]:
    return wire.decode(wire.encode(msg, encoding))


class TestDecodeRejects:
    @pytest.mark.parametrize(
        "data",
        [
            b"",  # nothing
            b"\xc1",  # never-used msgpack byte
            b"\x81\xa4type",  # truncated map
            packb({"type": "end"}) + b"\x00",  # trailing bytes
            packb({"type": "end"}) + packb({"type": "end"}),  # two messages
            b"\x81\xa4type\xa2\xff\xfe",  # invalid UTF-8 in a str
            b"\x91" * 100_000 + b"\xc0",  # msgpack nesting beyond its stack
            b"\xdd\xff\xff\xff\xff",  # array header claiming 4 G items
            packb({1: 2, "type": "end"}),  # int key
            packb({(1, 2): 0}),  # array key
        ],
        ids=["empty", "c1", "truncated", "trailing", "two", "utf8", "deep", "huge-array",
             "int-key", "array-key"],
    )
    def test_not_msgpack(self, data: bytes) -> None:
        err = expect(WireError, "bad_message", wire.decode, data)
        assert str(err) == "the message is not valid msgpack"

    @pytest.mark.parametrize(
        "text",
        ["", "{", '{"type": "end"} x', "\ufeff{}", "{'type': 'end'}", '{"type": NaN}',
         '{"type": "x", "v": Infinity}', '{"type": "x", "v": -Infinity}',
         '{"type": "x", "v": 1e999}', '{"type": "x", "v": -1e400}', "[" * 100_000,
         '{"type": "x", "v": ' + "9" * 5000 + "}"],
        ids=["empty", "open", "trailing", "bom", "single-quotes", "nan", "inf", "-inf",
             "overflow", "-overflow", "deep", "long-int"],
    )
    def test_not_json(self, text: str) -> None:
        err = expect(WireError, "bad_message", wire.decode, text)
        assert str(err) == "the message is not valid JSON"

    @pytest.mark.parametrize(
        "data, kind",
        [(packb([1, 2]), "array"), (packb(3), "integer"), (packb(None), "null"),
         (packb(b"x"), "binary"), ('"hello"', "string"), ("[]", "array"), ("1.5", "float"),
         ("true", "boolean")],
    )
    def test_not_a_map(self, data: bytes | str, kind: str) -> None:
        err = expect(WireError, "bad_message", wire.decode, data)
        assert str(err) == f"a message must be a map, got a {kind}"

    @pytest.mark.parametrize("encoding", [MP, JS])
    def test_missing_type(self, encoding: Encoding) -> None:
        data = wire.encode({"room": "a"}, encoding)
        expect(WireError, "bad_message", wire.decode, data, field="type")

    @pytest.mark.parametrize("value", [1, None, True, ["hello"], {"a": 1}, 1.5, b"hello"])
    def test_type_not_a_string(self, value: Any) -> None:
        expect(WireError, "bad_message", wire.decode, packb({"type": value}), field="type")

    def test_bytes_key(self) -> None:
        expect(WireError, "bad_message", wire.decode, packb({b"type": "end"}), field="key")

    def test_nested_non_string_key(self) -> None:
        data = b"\x82\xa4type\xa1x\xa4info\x81\xc4\x01k\x01"  # {"info": {b"k": 1}}
        expect(WireError, "bad_message", wire.decode, data, field="key")

    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
    def test_msgpack_non_finite_float(self, value: float) -> None:
        data = packb({"type": "x", "info": {"v": [value]}})
        expect(WireError, "bad_message", wire.decode, data, field="NaN")

    @pytest.mark.parametrize(
        "value",
        [msgpack.ExtType(5, b"\x01"), msgpack.Timestamp(1, 0)],
        ids=["ext", "timestamp"],
    )
    def test_msgpack_ext_types(self, value: Any) -> None:
        data = packb({"type": "x", "v": value})
        expect(WireError, "bad_message", wire.decode, data, field="extension")

    def test_invalid_timestamp_ext(self) -> None:
        data = b"\x82\xa4type\xa1x\xa1v\xd5\xff\x00\x00"  # ext -1 with 2 bytes
        expect(WireError, "bad_message", wire.decode, data)

    @pytest.mark.parametrize("encoding", [MP, JS])
    def test_too_deep(self, encoding: Encoding) -> None:
        value: Any = 1
        for _ in range(wire.MAX_DEPTH):
            value = [value]
        data = wire.encode({"type": "x", "v": value}, encoding)
        expect(WireError, "bad_message", wire.decode, data, field=str(wire.MAX_DEPTH))
        ok = wire.encode({"type": "x", "v": value[0]}, encoding)  # exactly MAX_DEPTH
        assert wire.decode(ok)[0]["type"] == "x"

    @pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 10**30])
    def test_json_int_beyond_64_bits(self, value: int) -> None:
        text = '{"type": "x", "v": %d}' % value
        expect(WireError, "bad_message", wire.decode, text, field="64-bit")

    def test_json_64_bit_extremes(self) -> None:
        text = '{"type": "x", "v": [%d, %d]}' % (2**64 - 1, -(2**63))
        assert wire.decode(text)[0]["v"] == [2**64 - 1, -(2**63)]

    @pytest.mark.parametrize("text", ['{"type": "\\ud800"}', '{"type": "x", "\\udfff": 1}'])
    def test_json_lone_surrogate(self, text: str) -> None:
        expect(WireError, "bad_message", wire.decode, text, field="Unicode")

    @pytest.mark.parametrize(
        "value, kind",
        [(42, "integer"), (None, "null"), (1.5, "float"), (["x"], "array"), ({}, "map"),
         (object(), "object")],
    )
    def test_not_bytes_or_text(self, value: Any, kind: str) -> None:
        err = expect(WireError, "bad_message", wire.decode, value)
        assert str(err) == f"a message must be bytes or text, got a {kind}"

    def test_too_large(self) -> None:
        data = packb({"type": "end"})
        err = expect(TooLarge, "too_large", wire.decode, data, len(data) - 1)
        assert str(err) == f"the message has {len(data)} bytes, more than the limit of " \
                           f"{len(data) - 1} bytes"
        expect(TooLarge, "too_large", wire.decode, '{"type":"é"}', 12)


class TestEncode:
    def test_json_is_compact_and_ascii(self) -> None:
        text = wire.encode({"type": "x", "name": "Zoë", "v": [1, 2]}, JS)
        assert text == '{"type":"x","name":"Zo\\u00eb","v":[1,2]}'

    def test_json_refuses_nan(self) -> None:
        with pytest.raises(ValueError):
            wire.encode({"type": "x", "v": math.nan}, JS)

    @pytest.mark.parametrize("encoding", [MP, JS])
    def test_unknown_type_is_a_type_error(self, encoding: Encoding) -> None:
        with pytest.raises(TypeError):
            wire.encode({"type": "x", "v": object()}, encoding)

    def test_msgpack_refuses_huge_int(self) -> None:
        with pytest.raises(ValueError):
            wire.encode({"type": "x", "v": 2**64}, MP)

    def test_json_encodes_bytearray_and_memoryview(self) -> None:
        text = wire.encode({"a": bytearray(b"\x01"), "b": memoryview(b"\x02")}, JS)
        assert json.loads(text) == {"a": "AQ==", "b": "Ag=="}


# -- /v1/ingest -------------------------------------------------------------------------


class TestHello:
    def test_defaults(self) -> None:
        hello = wire.parse_hello({"type": "hello", "room": "board-room"})
        assert hello == wire.Hello("board-room", "default", 16000, "s16le", 1)
        assert hello.frame_bytes == 2

    def test_protocol_example(self) -> None:
        msg = {"type": "hello", "room": "board-room", "mic": "ceiling-1",
               "sample_rate": 44100, "format": "f32le", "channels": 2, "future": "ignored"}
        hello = wire.parse_hello(roundtrip(msg, JS))
        assert hello == wire.Hello("board-room", "ceiling-1", 44100, "f32le", 2)
        assert hello.frame_bytes == 8

    def test_nulls_count_as_absent(self) -> None:
        msg = {"type": "hello", "room": "r", "mic": None, "sample_rate": None,
               "format": None, "channels": None}
        assert wire.parse_hello(msg) == wire.Hello("r")

    def test_frozen(self) -> None:
        hello = wire.parse_hello({"type": "hello", "room": "r"})
        with pytest.raises(AttributeError):
            hello.room = "other"  # type: ignore[misc]

    @pytest.mark.parametrize("rate", wire.SAMPLE_RATES)
    def test_every_rate(self, rate: int) -> None:
        assert wire.parse_hello({"type": "hello", "room": "r", "sample_rate": rate}).sample_rate \
            == rate

    @given(hello_messages())
    def test_valid_hellos_parse(self, msg: dict[str, Any]) -> None:
        for encoding in (MP, JS):
            hello = wire.parse_hello(roundtrip(msg, encoding))
            assert hello.room == msg["room"]
            assert hello.sample_rate == msg.get("sample_rate", 16000)

    @pytest.mark.parametrize(
        "fields, field",
        [
            ({}, "room"),
            ({"room": ""}, "room"),
            ({"room": "x" * 129}, "room"),
            ({"room": 5}, "room"),
            ({"room": b"r"}, "room"),
            ({"room": "r", "mic": ""}, "mic"),
            ({"room": "r", "mic": 1}, "mic"),
            ({"room": "r", "mic": "m" * 129}, "mic"),
            ({"room": "r", "sample_rate": 12345}, "sample_rate"),
            ({"room": "r", "sample_rate": 0}, "sample_rate"),
            ({"room": "r", "sample_rate": "16000"}, "sample_rate"),
            ({"room": "r", "sample_rate": 16000.0}, "sample_rate"),
            ({"room": "r", "sample_rate": True}, "sample_rate"),
            ({"room": "r", "format": "s24le"}, "format"),
            ({"room": "r", "format": "S16LE"}, "format"),
            ({"room": "r", "format": 2}, "format"),
            ({"room": "r", "channels": 3}, "channels"),
            ({"room": "r", "channels": 0}, "channels"),
            ({"room": "r", "channels": True}, "channels"),
            ({"room": "r", "channels": "1"}, "channels"),
        ],
    )
    def test_rejects(self, fields: dict[str, Any], field: str) -> None:
        expect(BadHello, "bad_hello", wire.parse_hello, {"type": "hello", **fields}, field=field)

    @pytest.mark.parametrize("kind", ["audio", "end", "enroll", "", None])
    def test_first_message_must_be_hello(self, kind: Any) -> None:
        err = expect(BadHello, "bad_hello", wire.parse_hello, {"type": kind, "room": "r"})
        assert str(err) == "the first message must be hello"

    def test_long_value_is_shortened_in_the_message(self) -> None:
        with pytest.raises(BadHello) as info:
            wire.parse_hello({"type": "hello", "room": "r", "format": "f" * 1000})
        assert len(str(info.value)) < 100


class TestAudio:
    def test_msgpack(self) -> None:
        assert wire.parse_audio({"type": "audio", "seq": 0, "pcm": PCM}, MP) == \
            wire.Audio(0, PCM)

    def test_json_base64(self) -> None:
        msg = {"type": "audio", "seq": 5, "pcm": base64.b64encode(PCM).decode()}
        assert wire.parse_audio(msg, JS) == wire.Audio(5, PCM)

    def test_empty_pcm_is_allowed(self) -> None:
        assert wire.parse_audio({"type": "audio", "seq": 1, "pcm": b""}, MP).pcm == b""
        assert wire.parse_audio({"type": "audio", "seq": 1, "pcm": ""}, JS).pcm == b""

    @pytest.mark.parametrize("text", ["AAE", "AA=E", "A", "!!!!", "AA E=", "é"])
    def test_json_invalid_base64(self, text: str) -> None:
        expect(BadAudio, "bad_audio", wire.parse_audio, {"type": "audio", "seq": 0, "pcm": text},
               JS, field="pcm")

    @pytest.mark.parametrize(
        "fields, encoding, field",
        [
            ({"seq": 0}, MP, "pcm"),
            ({"seq": 0, "pcm": None}, JS, "pcm"),
            ({"seq": 0, "pcm": "AAE="}, MP, "pcm"),  # msgpack needs bin
            ({"seq": 0, "pcm": b"\x00\x01"}, JS, "pcm"),  # JSON needs base64 text
            ({"seq": 0, "pcm": [0, 1]}, JS, "pcm"),
            ({"pcm": b""}, MP, "seq"),
            ({"seq": -1, "pcm": b""}, MP, "seq"),
            ({"seq": True, "pcm": b""}, MP, "seq"),
            ({"seq": 1.0, "pcm": b""}, MP, "seq"),
            ({"seq": "1", "pcm": b""}, MP, "seq"),
        ],
    )
    def test_rejects(self, fields: dict[str, Any], encoding: Encoding, field: str) -> None:
        expect(WireError, "bad_message", wire.parse_audio, {"type": "audio", **fields}, encoding,
               field=field)


class TestIngest:
    def test_dispatch(self) -> None:
        assert wire.parse_ingest({"type": "hello", "room": "r"}, MP) == wire.Hello("r")
        assert wire.parse_ingest({"type": "audio", "seq": 0, "pcm": b""}, MP) == wire.Audio(0, b"")
        assert wire.parse_ingest({"type": "end"}, JS) == wire.End()

    @pytest.mark.parametrize("kind", ["enroll", "Audio", "", "bye"])
    def test_unknown_type(self, kind: str) -> None:
        err = expect(UnknownType, "unknown_type", wire.parse_ingest, {"type": kind}, MP)
        assert repr(kind) in str(err)
        assert err.close_code == 1003


# -- /v1/api ----------------------------------------------------------------------------


def _pcm_fields(**extra: Any) -> dict[str, Any]:
    return {"pcm": PCM, "sample_rate": 16000, "format": "s16le", **extra}


class TestRequests:
    @pytest.mark.parametrize("encoding", [MP, JS])
    def test_every_request(self, encoding: Encoding) -> None:
        def parse(msg: dict[str, Any]) -> wire.Request:
            return wire.parse_request(*_decoded(msg, encoding))

        audio = wire.AudioFile(b"RIFF....")
        assert parse({"type": "enroll", "id": "r1", "name": "Ada", "info": {"team": "x"},
                      "audio": b"RIFF...."}) == \
            wire.Enroll("r1", "Ada", {"team": "x"}, None, audio)
        assert parse({"type": "enroll", "id": 2, "person": "p_1", "audio": b"RIFF...."}) == \
            wire.Enroll(2, None, None, "p_1", audio)
        assert parse({"type": "identify", "id": 3, **_pcm_fields()}) == \
            wire.Identify(3, 5, wire.RawPcm(PCM, 16000, "s16le", 1))
        assert parse({"type": "identify", "id": 3, "top_k": 100,
                      **_pcm_fields(sample_rate=48000, format="f32le", channels=2)}) == \
            wire.Identify(3, 100, wire.RawPcm(PCM, 48000, "f32le", 2))
        assert parse({"type": "verify", "id": "v", "person": "p_1", "audio": b"x"}) == \
            wire.Verify("v", "p_1", wire.AudioFile(b"x"))
        # extension: decide as a room's live streams do (its rooms profile)
        assert parse({"type": "identify", "id": 3, "room": "board", "audio": b"x"}) == \
            wire.Identify(3, 5, wire.AudioFile(b"x"), "board")
        assert parse({"type": "verify", "id": "v", "person": "p_1", "room": "b", "audio": b"x"}) \
            == wire.Verify("v", "p_1", wire.AudioFile(b"x"), "b")
        assert parse({"type": "identify", "id": 3, "room": None, "audio": b"x"}) == \
            wire.Identify(3, 5, wire.AudioFile(b"x"), None)
        assert parse({"type": "people", "id": 0}) == wire.People(0)
        assert parse({"type": "people", "id": 0}) == wire.People(0, 0, None, None)
        assert parse({"type": "people", "id": 0, "offset": 20, "limit": 10, "query": "ada"}) \
            == wire.People(0, 20, 10, "ada")
        assert parse({"type": "people", "id": 0, "offset": None, "limit": None,
                      "query": ""}) == wire.People(0)
        assert parse({"type": "update_person", "id": 1, "person": "p_1", "name": "Ada L."}) == \
            wire.UpdatePerson(1, "p_1", "Ada L.", None)
        assert parse({"type": "update_person", "id": 1, "person": "p_1", "info": {}}) == \
            wire.UpdatePerson(1, "p_1", None, {})
        assert parse({"type": "delete_person", "id": 1, "person": "p_1"}) == \
            wire.DeletePerson(1, "p_1")
        assert parse({"type": "set_room", "id": 1, "room": "board", "people": ["p_1", "p_2"]}) \
            == wire.SetRoom(1, "board", ("p_1", "p_2"))
        assert parse({"type": "set_room", "id": 1, "room": "board", "people": None}) == \
            wire.SetRoom(1, "board", None)
        assert parse({"type": "rooms", "id": 7}) == wire.Rooms(7)

    @pytest.mark.parametrize("msg, words", [
        ({"type": "set_room", "id": 1, "people": []}, "room is required"),
        ({"type": "set_room", "id": 1, "room": "  ", "people": []}, "blank"),
        ({"type": "identify", "id": 1, "room": 7, "audio": b"x"}, "room"),
        ({"type": "verify", "id": 1, "person": "p", "room": "r" * 300, "audio": b"x"}, "room"),
        ({"type": "set_room", "id": 1, "room": "r"}, "people is required"),
        ({"type": "set_room", "id": 1, "room": "r", "people": "p_1"}, "must be a list"),
        ({"type": "set_room", "id": 1, "room": "r", "people": ["p_1", 2]}, "person ids"),
        ({"type": "set_room", "id": 1, "room": "r", "people": [""]}, "person ids"),
        ({"type": "set_room", "id": 1, "room": "r",
          "people": ["p"] * (wire.MAX_ROSTER_PEOPLE + 1)}, "at most"),
    ])
    def test_bad_rosters(self, msg: dict[str, Any], words: str) -> None:
        with pytest.raises(WireError) as err:
            wire.parse_request(msg, MP)
        assert words in str(err.value) and err.value.request_id == 1

    @pytest.mark.parametrize("msg, words", [
        ({"type": "people", "id": 1, "limit": 0}, "limit must be an integer 1..10000, got 0"),
        ({"type": "people", "id": 1, "limit": wire.MAX_PEOPLE_PAGE + 1}, "limit must be"),
        ({"type": "people", "id": 1, "limit": "10"}, "limit must be an integer 1..10000, got a"),
        ({"type": "people", "id": 1, "limit": True}, "limit must be"),
        ({"type": "people", "id": 1, "offset": -1}, "offset must be an integer"),
        ({"type": "people", "id": 1, "offset": 1.5}, "offset must be"),
        ({"type": "people", "id": 1, "query": 7}, "query must be a string"),
        ({"type": "people", "id": 1, "query": "x" * (wire.MAX_NAME_CHARS + 1)}, "query"),
    ])
    def test_bad_people_pages(self, msg: dict[str, Any], words: str) -> None:
        with pytest.raises(WireError) as err:
            wire.parse_request(msg, MP)
        assert words in str(err.value) and err.value.request_id == 1

    def test_null_optional_fields_count_as_absent(self) -> None:
        msg = {"type": "enroll", "id": 1, "name": "Ada", "info": None, "person": None,
               "pcm": None, "audio": b"x"}
        assert wire.parse_request(msg, MP) == wire.Enroll(1, "Ada", None, None,
                                                          wire.AudioFile(b"x"))
        assert wire.parse_request({"type": "identify", "id": 1, "top_k": None, "audio": b"x"},
                                  MP).top_k == 5  # type: ignore[union-attr]

    @pytest.mark.parametrize(
        "msg, field",
        [
            ({"type": "people"}, "id"),
            ({"type": "people", "id": None}, "id"),
            ({"type": "people", "id": True}, "id"),
            ({"type": "people", "id": 1.5}, "id"),
            ({"type": "people", "id": [1]}, "id"),
            ({"type": "people", "id": "i" * 129}, "id"),
        ],
    )
    def test_unreadable_id(self, msg: dict[str, Any], field: str) -> None:
        err = expect(WireError, "bad_message", wire.parse_request, msg, MP, field=field)
        assert err.request_id is None  # type: ignore[attr-defined]
        assert wire.request_id_of(err) is None
        assert "id" not in wire.error_from_exception(err)

    def test_unknown_type_keeps_the_id(self) -> None:
        err = expect(UnknownType, "unknown_type", wire.parse_request,
                     {"type": "hello", "id": "q"}, JS)
        assert wire.request_id_of(err) == "q"
        assert wire.error_from_exception(err) == {
            "type": "error", "code": "unknown_type",
            "message": "unknown request type 'hello' on /v1/api", "id": "q"}

    @pytest.mark.parametrize(
        "msg, encoding, exc, field",
        [
            # audio input
            ({"type": "identify"}, MP, WireError, "audio or pcm"),
            ({"type": "identify", "audio": b"x", **_pcm_fields()}, MP, WireError, "not both"),
            ({"type": "identify", "audio": "x"}, MP, WireError, "audio"),
            ({"type": "identify", "audio": "@@@@"}, JS, BadAudio, "audio"),
            ({"type": "identify", "audio": 5}, JS, WireError, "audio"),
            ({"type": "identify", "pcm": "AAE="}, MP, WireError, "pcm"),
            ({"type": "identify", "pcm": "AAE"}, JS, BadAudio, "pcm"),
            ({"type": "identify", "pcm": PCM, "format": "s16le"}, MP, WireError, "sample_rate"),
            ({"type": "identify", "pcm": PCM, "sample_rate": 16000}, MP, WireError, "format"),
            ({"type": "identify", **_pcm_fields(sample_rate=11025)}, MP, BadAudio, "sample_rate"),
            ({"type": "identify", **_pcm_fields(sample_rate="16000")}, MP, WireError,
             "sample_rate"),
            ({"type": "identify", **_pcm_fields(format="u8")}, MP, BadAudio, "format"),
            ({"type": "identify", **_pcm_fields(format=16)}, MP, WireError, "format"),
            ({"type": "identify", **_pcm_fields(channels=3)}, MP, BadAudio, "channels"),
            ({"type": "identify", **_pcm_fields(channels="2")}, MP, WireError, "channels"),
            ({"type": "identify", **_pcm_fields(pcm=b"\x00\x01\x02")}, MP, BadAudio, "3 bytes"),
            ({"type": "identify", **_pcm_fields(pcm=b"\x00" * 6, format="f32le")}, MP, BadAudio,
             "4 bytes"),
            ({"type": "identify", **_pcm_fields(pcm=b"\x00" * 6, channels=2)}, MP, BadAudio,
             "4 bytes"),
            # top_k
            ({"type": "identify", "audio": b"x", "top_k": 0}, MP, WireError, "top_k"),
            ({"type": "identify", "audio": b"x", "top_k": 101}, MP, WireError, "top_k"),
            ({"type": "identify", "audio": b"x", "top_k": True}, MP, WireError, "top_k"),
            ({"type": "identify", "audio": b"x", "top_k": "5"}, MP, WireError, "top_k"),
            # enroll
            ({"type": "enroll", "audio": b"x"}, MP, WireError, "name"),
            ({"type": "enroll", "audio": b"x", "name": ""}, MP, WireError, "name"),
            ({"type": "enroll", "audio": b"x", "name": "n" * 201}, MP, WireError, "name"),
            ({"type": "enroll", "audio": b"x", "name": 7}, MP, WireError, "name"),
            ({"type": "enroll", "audio": b"x", "person": "p", "name": ""}, MP, WireError, "name"),
            ({"type": "enroll", "audio": b"x", "person": ""}, MP, WireError, "person"),
            ({"type": "enroll", "audio": b"x", "person": 3}, MP, WireError, "person"),
            ({"type": "enroll", "audio": b"x", "name": "A", "info": [1]}, MP, WireError, "info"),
            ({"type": "enroll", "audio": b"x", "name": "A", "info": "x"}, MP, WireError, "info"),
            ({"type": "enroll", "name": "A"}, MP, WireError, "audio or pcm"),
            # verify / update / delete
            ({"type": "verify", "audio": b"x"}, MP, WireError, "person"),
            ({"type": "verify", "audio": b"x", "person": "p" * 129}, MP, WireError, "person"),
            ({"type": "verify", "person": "p"}, MP, WireError, "audio or pcm"),
            ({"type": "update_person", "name": "A"}, MP, WireError, "person"),
            ({"type": "update_person", "person": "p", "name": ""}, MP, WireError, "name"),
            ({"type": "update_person", "person": "p", "info": 1}, MP, WireError, "info"),
            ({"type": "delete_person"}, MP, WireError, "person"),
            ({"type": "delete_person", "person": False}, MP, WireError, "person"),
        ],
    )
    def test_rejects_with_id(self, msg: dict[str, Any], encoding: Encoding,
                             exc: type[WireError], field: str) -> None:
        for request_id in ("req-1", 0, 2**63):
            err = expect(exc, exc.code, wire.parse_request, {**msg, "id": request_id}, encoding,
                         field=field)
            assert wire.request_id_of(err) == request_id
            assert wire.error_from_exception(err)["id"] == request_id

    def test_request_id_of_other_errors(self) -> None:
        assert wire.request_id_of(ValueError("x")) is None
        err = UnknownPerson("p_1")
        assert wire.error_from_exception(err, request_id=9) == {
            "type": "error", "code": "unknown_person",
            "message": "no enrolled person has id 'p_1'", "id": 9}


class TestAnalyze:
    """``analyze``: an addition to the protocol (measure audio, no embedding, no registry)."""

    @pytest.mark.parametrize("encoding", [MP, JS])
    def test_parses_file_and_pcm(self, encoding: Encoding) -> None:
        def parse(msg: dict[str, Any]) -> wire.Request:
            return wire.parse_request(*_decoded(msg, encoding))

        assert parse({"type": "analyze", "id": "a1", "audio": b"RIFF...."}) == \
            wire.Analyze("a1", wire.AudioFile(b"RIFF...."))
        assert parse({"type": "analyze", "id": 7, **_pcm_fields()}) == \
            wire.Analyze(7, wire.RawPcm(PCM, 16000, "s16le", 1))
        assert parse({"type": "analyze", "id": 8,
                      **_pcm_fields(sample_rate=44100, format="f32le", channels=2)}) == \
            wire.Analyze(8, wire.RawPcm(PCM, 44100, "f32le", 2))
        # empty pcm is a whole number of samples (zero): the server answers 0 s of speech
        assert parse({"type": "analyze", "id": 9, **_pcm_fields(pcm=b"")}) == \
            wire.Analyze(9, wire.RawPcm(b"", 16000, "s16le", 1))

    def test_unknown_fields_and_nulls_are_ignored(self) -> None:
        msg = {"type": "analyze", "id": 1, "audio": b"x", "pcm": None, "name": "ignored",
               "person": "p_1", "top_k": "x"}
        assert wire.parse_request(msg, MP) == wire.Analyze(1, wire.AudioFile(b"x"))

    @pytest.mark.parametrize(
        "msg, encoding, exc, field",
        [
            ({"type": "analyze"}, MP, WireError, "audio or pcm"),
            ({"type": "analyze", "audio": b"x", **_pcm_fields()}, MP, WireError, "not both"),
            ({"type": "analyze", "audio": "x"}, MP, WireError, "audio"),
            ({"type": "analyze", "audio": "@@@@"}, JS, BadAudio, "audio"),
            ({"type": "analyze", "pcm": "AAE"}, JS, BadAudio, "pcm"),
            ({"type": "analyze", "pcm": PCM, "format": "s16le"}, MP, WireError, "sample_rate"),
            ({"type": "analyze", "pcm": PCM, "sample_rate": 16000}, MP, WireError, "format"),
            ({"type": "analyze", **_pcm_fields(sample_rate=11025)}, MP, BadAudio, "sample_rate"),
            ({"type": "analyze", **_pcm_fields(format="u8")}, MP, BadAudio, "format"),
            ({"type": "analyze", **_pcm_fields(channels=3)}, MP, BadAudio, "channels"),
            ({"type": "analyze", **_pcm_fields(pcm=b"\x00\x01\x02")}, MP, BadAudio, "3 bytes"),
        ],
    )
    def test_rejects_with_id(self, msg: dict[str, Any], encoding: Encoding,
                             exc: type[WireError], field: str) -> None:
        for request_id in ("an-1", 0):
            err = expect(exc, exc.code, wire.parse_request, {**msg, "id": request_id}, encoding,
                         field=field)
            assert wire.request_id_of(err) == request_id
        err = expect(WireError, "bad_message", wire.parse_request,
                     {"type": "analyze", "audio": b"x"}, MP, field="id")
        assert wire.request_id_of(err) is None

    def test_analyzed_reply(self) -> None:
        quality = {"speech_s": 0.87, "audio_s": 1.0, "min_speech_s": 4.0,
                   "recommended_speech_s": 7.0, "level_dbfs": -23.4, "peak": 0.51,
                   "clipped_share": 0.0, "warnings": ["the recording is very quiet"]}
        msg = wire.analyzed("a1", quality)
        assert msg == {"type": "analyzed", "id": "a1", **quality}
        for encoding in (MP, JS):
            assert roundtrip(msg, encoding) == msg
        # the builder never lets a quality map override type or id
        assert wire.analyzed(3, {"type": "x", "id": "y"}) == {"type": "analyzed", "id": 3}


@given(valid_ish_messages(("analyze",)), st.sampled_from([MP, JS]))
def test_fuzz_parse_analyze(msg: dict[str, Any], encoding: Encoding) -> None:
    out = _only_wire_errors(wire.parse_request, msg, encoding)
    if isinstance(out, WireError):
        request_id = wire.request_id_of(out)
        assert request_id is None or request_id == msg.get("id")
    else:
        assert isinstance(out, wire.Analyze) and out.id == msg["id"]


# -- server -> client -------------------------------------------------------------------


class TestBuilders:
    def test_error_message(self) -> None:
        assert wire.error_message("bad_hello", "room is required") == {
            "type": "error", "code": "bad_hello", "message": "room is required"}
        assert wire.error_message("internal", "x", request_id=0)["id"] == 0  # falsy but given

    def test_server_messages_have_exactly_the_protocol_fields(self) -> None:
        cand = {"id": "p_1", "name": "Ada", "distance": 0.5}
        ev = wire.speaker(room="r", mic="m", stream="s1", segment=7, final=False, start=12.34,
                          end=13.5, person={"id": "p_1", "name": "Ada"}, distance=0.71,
                          candidates=[cand], ts=1.0)
        cases: list[tuple[dict[str, Any], set[str]]] = [
            (dict(wire.ready("s1", 16000, "campplus")), {"stream", "sample_rate", "model"}),
            (wire.bye({"chunks": 3}), {"stats"}),
            (wire.speech_start("r", "m", "s1", 7, 12.34, 1.0),
             {"room", "mic", "stream", "segment", "t", "ts"}),
            (wire.speech_end("r", "m", "s1", 7, 15.02, 1.0),
             {"room", "mic", "stream", "segment", "t", "ts"}),
            (ev, {"room", "mic", "stream", "segment", "final", "start", "end", "person",
                  "distance", "candidates", "ts"}),
            (wire.snapshot("r", [ev], []), {"room", "speaking", "recent"}),
            (wire.enrolled(1, {"id": "p_1", "name": "Ada", "info": {}, "speech_s": 7.5}, {}),
             {"id", "person", "quality"}),
            (wire.identified(1, cand, [cand]), {"id", "match", "results"}),
            (wire.identified(1, None, []), {"id", "match", "results"}),
            (wire.verified(1, "p_1", True, 0.62, 0.95),
             {"id", "person", "accepted", "distance", "threshold"}),
            (wire.people_message(1, []), {"id", "people", "total", "offset"}),
            (wire.person_message(1, {"id": "p_1"}), {"id", "person"}),
            (wire.deleted(1, "p_1"), {"id", "person"}),
        ]
        for msg, fields in cases:
            assert set(msg) == fields | {"type"}, msg["type"]
            for encoding in (MP, JS):
                assert roundtrip(msg, encoding) == msg
        assert ev["type"] == "speaker" and ev["person"] == {"id": "p_1", "name": "Ada"}
        assert wire.speaker(room="r", mic="m", stream="s", segment=0, final=True, start=0.0,
                            end=1.0, person=None, distance=None, candidates=[],
                            ts=0.0)["person"] is None
        assert wire.identified(1, None, [])["match"] is None
        assert wire.people_message(1, [{"id": "p"}])["type"] == "people"
        assert wire.people_message(1, [{"id": "p"}])["total"] == 1
        assert wire.people_message(1, [{"id": "p"}], total=40, offset=20)["offset"] == 20
        assert wire.person_message(1, {"id": "p"})["type"] == "person"


# -- fuzz contract ----------------------------------------------------------------------


def _decodes_or_wire_error(data: bytes | str) -> None:
    try:
        msg, encoding = wire.decode(data)
    except WireError:
        return
    assert isinstance(msg, dict) and isinstance(msg["type"], str)
    # Whatever decodes can be re-encoded in either encoding (the server relays
    # room names and info to displays that may use the other one).
    wire.encode(msg, MP)
    wire.encode(msg, JS)


@given(st.binary(max_size=512))
@example(b"\x81\xa4type\xa0")
@example(b"\x81\xa4type\xc7\x00\x05")
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _decodes_or_wire_error(data)


@given(st.text(max_size=512))
@example('{"type": ""}')
@example('{"type": "\\ud83d\\ude00"}')  # a valid surrogate pair
def test_fuzz_arbitrary_text(text: str) -> None:
    _decodes_or_wire_error(text)


@given(st.text(alphabet='{}[]":,.-+0123456789eEtrufalsnNI \\u', max_size=64))
def test_fuzz_json_like_text(text: str) -> None:
    _decodes_or_wire_error(text)


@given(mutated(wire_messages()))
def test_fuzz_mutated_msgpack(data: bytes) -> None:
    _decodes_or_wire_error(data)


def _only_wire_errors(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except WireError as err:
        assert str(err) and "\n" not in str(err)
        return err


@given(valid_ish_messages(INGEST_TYPES), st.sampled_from([MP, JS]))
def test_fuzz_parse_ingest(msg: dict[str, Any], encoding: Encoding) -> None:
    for fn in (wire.parse_hello, ):
        out = _only_wire_errors(fn, msg)
        assert isinstance(out, (wire.Hello, WireError))
    out = _only_wire_errors(wire.parse_audio, msg, encoding)
    assert isinstance(out, (wire.Audio, WireError))
    out = _only_wire_errors(wire.parse_ingest, msg, encoding)
    assert isinstance(out, (wire.Hello, wire.Audio, wire.End, WireError))


@given(valid_ish_messages(API_TYPES), st.sampled_from([MP, JS]))
def test_fuzz_parse_request(msg: dict[str, Any], encoding: Encoding) -> None:
    out = _only_wire_errors(wire.parse_request, msg, encoding)
    if isinstance(out, WireError):
        request_id = wire.request_id_of(out)
        assert request_id is None or request_id == msg.get("id")
    else:
        assert out.id == msg["id"]


@given(valid_ish_messages(INGEST_TYPES + API_TYPES), st.sampled_from([MP, JS]))
def test_fuzz_through_the_wire(msg: dict[str, Any], encoding: Encoding) -> None:
    # The same maps, but after an encode/decode trip (JSON turns bytes into base64).
    try:
        decoded, got = wire.decode(wire.encode(msg, encoding))
    except WireError:
        return
    for fn in (wire.parse_ingest, wire.parse_request):
        _only_wire_errors(fn, decoded, got)
