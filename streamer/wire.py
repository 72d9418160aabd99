"""Wire protocol v1: decode and encode messages, validate what clients send (pure).

Every websocket message is one map, msgpack in a binary frame or JSON in a text frame
(``docs/protocol.md`` in the shared docs is the contract). This module has no I/O:
the connection handlers call it on each received frame::

    msg, encoding = decode(frame, max_bytes=config.server.max_message_bytes)
    event = parse_ingest(msg, encoding)          # /v1/ingest: Hello | Audio | End
    request = parse_request(msg, encoding)       # /v1/api: Enroll | Identify | ...
    frame = encode(ready(...), encoding)         # answer in the connection's encoding

Rules that hold for every decoded message, whatever its encoding:

- the top level is a map with a ``str`` field ``type``;
- map keys are ``str`` at every depth, nesting is at most :data:`MAX_DEPTH` levels;
- values are nil, bool, integers that fit 64 bits, finite floats, valid Unicode
  strings, bytes (msgpack ``bin`` only), arrays and maps. msgpack ext types are refused.

Validation then builds frozen dataclasses (:class:`Hello`, :class:`Audio`,
:class:`Enroll`, ...). Unknown fields are ignored (the protocol grows by adding
optional fields); an optional field that is ``null`` counts as absent. Errors are the
:class:`~streamer.errors.WireError` family with a one-sentence message naming the
field. Request errors carry the request's ``id`` as ``err.request_id`` when it was
readable (``None`` otherwise), so the reply can echo it.

Server-to-client messages are built by the small functions at the end
(:func:`ready`, :func:`error_message`, :func:`speaker`, ...), which return plain
dicts with exactly the fields the protocol fixes.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, NotRequired, TypedDict, Union

import msgpack

from .errors import BadAudio, BadHello, StreamerError, TooLarge, UnknownType, WireError

__all__ = [
    "CHANNELS",
    "DEFAULT_TOP_K",
    "FORMATS",
    "MAX_DEPTH",
    "MAX_ID_CHARS",
    "MAX_MIC_CHARS",
    "MAX_NAME_CHARS",
    "MAX_ROOM_CHARS",
    "MAX_PEOPLE_OFFSET",
    "MAX_PEOPLE_PAGE",
    "MAX_ROSTER_PEOPLE",
    "MAX_TOP_K",
    "SAMPLE_RATES",
    "Analyze",
    "Rooms",
    "SetRoom",
    "Audio",
    "AudioFile",
    "AudioInput",
    "DeletePerson",
    "Encoding",
    "End",
    "Enroll",
    "ErrorMessage",
    "Hello",
    "Identify",
    "IngestMessage",
    "People",
    "RawPcm",
    "ReadyMessage",
    "Request",
    "RequestId",
    "UpdatePerson",
    "Verify",
    "analyzed",
    "bye",
    "decode",
    "deleted",
    "encode",
    "enrolled",
    "error_from_exception",
    "error_message",
    "identified",
    "parse_audio",
    "parse_hello",
    "parse_ingest",
    "parse_request",
    "people_message",
    "person_message",
    "ready",
    "request_id_of",
    "snapshot",
    "speaker",
    "speech_end",
    "speech_start",
    "verified",
]


class Encoding(enum.Enum):
    """How a connection's messages are encoded; fixed by its first message."""

    MSGPACK = "msgpack"  # binary frames
    JSON = "json"  # text frames


#: Deepest nesting of arrays and maps accepted (the top-level map is depth 1).
MAX_DEPTH = 32
#: Input sample rates (Hz) accepted in ``hello`` and with ``pcm``; resampled to 16 kHz.
SAMPLE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
#: PCM sample formats and their width in bytes.
FORMATS = {"s16le": 2, "f32le": 4}
#: Channel counts accepted; 2 is downmixed to mono.
CHANNELS = (1, 2)
MAX_ROOM_CHARS = 128
MAX_MIC_CHARS = 128
MAX_NAME_CHARS = 200
#: Longest ``id`` string (request ids, person ids) accepted and echoed.
MAX_ID_CHARS = 128
MAX_TOP_K = 100
DEFAULT_TOP_K = 5
#: Most people in one room's roster (``set_room``).
MAX_ROSTER_PEOPLE = 10_000
#: Most people in one page of a ``people`` reply (``limit``), and the largest ``offset``.
MAX_PEOPLE_PAGE = 10_000
MAX_PEOPLE_OFFSET = 100_000_000

# msgpack can carry integers in [-2**63, 2**64 - 1]; JSON integers are held to the same
# range so that anything decoded from one encoding can be re-encoded in the other.
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_MISSING: Any = object()


# -- decoding ---------------------------------------------------------------------------


def _reject_constant(name: str) -> NoReturn:
    # json.loads accepts NaN, Infinity and -Infinity by default; the protocol does not.
    raise ValueError(f"{name} is not a number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # "1e999" parses to inf
        raise ValueError("number out of range")
    return value


def _check_value(value: Any, depth: int) -> None:
    """Walk a decoded value; raise :class:`WireError` for anything outside the rules."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise WireError("the message holds an integer outside the 64-bit range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise WireError("the message holds a NaN or infinite number")
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise WireError("the message holds a string that is not valid Unicode") from None
        return
    if isinstance(value, bytes):
        return
    if isinstance(value, (list, dict)):
        if depth > MAX_DEPTH:
            raise WireError(f"the message is nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, list):
            for item in value:
                _check_value(item, depth + 1)
            return
        for key, item in value.items():
            if not isinstance(key, str):
                raise WireError("the message has a map key that is not a string")
            _check_value(key, depth + 1)
            _check_value(item, depth + 1)
        return
    # msgpack ExtType and Timestamp.
    raise WireError("the message holds a msgpack extension type, which is not supported")


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise TooLarge(f"the message has {size} bytes, more than the limit of {max_bytes} bytes")


def decode(
    data: bytes | bytearray | memoryview | str, max_bytes: int | None = None
) -> tuple[dict[str, Any], Encoding]:
    """Decode one websocket message into a map and tell which encoding it used.

    Call it on every received frame: binary frames (``bytes``) are msgpack, text
    frames (``str``) are JSON. msgpack ``bin`` stays ``bytes``; JSON audio stays a
    base64 ``str`` until :func:`parse_audio` / :func:`parse_request` decode it.

    Args:
        data: the frame's payload.
        max_bytes: largest payload accepted (UTF-8 bytes for text); ``None`` disables
            the check (websockets' ``max_size`` usually enforces it first).

    Returns:
        ``(message, encoding)``; ``message["type"]`` is a ``str``.

    Raises:
        TooLarge: the payload exceeds ``max_bytes``.
        WireError: anything else that is not one valid message: not msgpack or JSON,
            trailing bytes, not a map, missing or non-``str`` ``type``, non-``str``
            keys, NaN or infinite numbers, ext types, too deep. Any input either
            decodes or raises one of these two; never another exception.
    """
    message: Any
    # ValueError covers JSONDecodeError, msgpack's ExtraData/FormatError/StackError,
    # invalid UTF-8 and over-long JSON integers; RecursionError comes from deeply
    # nested JSON.
    if isinstance(data, str):
        encoding = Encoding.JSON
        if max_bytes is not None:
            _check_size(len(data.encode("utf-8", "surrogatepass")), max_bytes)
        try:
            message = json.loads(
                data, parse_constant=_reject_constant, parse_float=_finite_float
            )
        except (ValueError, RecursionError):
            raise WireError("the message is not valid JSON") from None
    elif isinstance(data, (bytes, bytearray, memoryview)):
        encoding = Encoding.MSGPACK
        if max_bytes is not None:
            _check_size(memoryview(data).nbytes, max_bytes)
        try:
            message = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, TypeError, OverflowError, RecursionError):
            raise WireError("the message is not valid msgpack") from None
    else:
        raise WireError(f"a message must be bytes or text, got a {_kind(data)}")

    if not isinstance(message, dict):
        raise WireError(f"a message must be a map, got a {_kind(message)}")
    _check_value(message, 1)
    kind = message.get("type", _MISSING)
    if kind is _MISSING:
        raise WireError("the message has no type field")
    if not isinstance(kind, str):
        raise WireError(f"the message's type must be a string, got a {_kind(kind)}")
    return message, encoding


# -- encoding ---------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} cannot be sent on the wire")


def encode(message: Mapping[str, Any], encoding: Encoding) -> bytes | str:
    """Encode a message for sending in ``encoding``.

    msgpack gives ``bytes`` (a binary frame) with ``bytes`` values as ``bin``; JSON gives
    a compact ``str`` (a text frame) with ``bytes`` values as standard padded base64.
    Values must be plain Python types (dict, list, tuple, str, int, float, bool,
    None, bytes).

    Raises:
        ValueError: a float is NaN or infinite (JSON), or an integer does not fit msgpack.
        TypeError: a value of another type (a programming error, not a peer's).
    """
    if encoding is Encoding.MSGPACK:
        try:
            packed: bytes = msgpack.packb(message, use_bin_type=True)
        except OverflowError as exc:
            raise ValueError(str(exc)) from None
        return packed
    return json.dumps(message, separators=(",", ":"), allow_nan=False, default=_json_default)


# -- field helpers ----------------------------------------------------------------------


def _kind(value: Any) -> str:
    """Name a value's wire type for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (bytes, bytearray)):
        return "binary"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "map"
    return type(value).__name__


def _show(value: Any) -> str:
    """A short repr for error messages (never echo a whole payload)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _get(msg: Mapping[str, Any], name: str) -> Any:
    """The field's value, or ``_MISSING`` when absent or ``null``."""
    value = msg.get(name)
    return _MISSING if value is None else value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(
    msg: Mapping[str, Any],
    name: str,
    max_chars: int,
    error: type[WireError],
    default: str | None = None,
) -> str:
    """A non-empty string field of at most ``max_chars`` characters."""
    value = _get(msg, name)
    if value is _MISSING:
        if default is None:
            raise error(f"{name} is required")
        return default
    if not isinstance(value, str):
        raise error(f"{name} must be a string, got a {_kind(value)}")
    if not value:
        raise error(f"{name} must not be empty")
    if len(value) > max_chars:
        raise error(f"{name} must be at most {max_chars} characters, got {len(value)}")
    return value


def _optional_text(msg: Mapping[str, Any], name: str, max_chars: int) -> str | None:
    if _get(msg, name) is _MISSING:
        return None
    return _text(msg, name, max_chars, WireError)


def _binary(
    msg: Mapping[str, Any], name: str, encoding: Encoding, error: type[WireError]
) -> bytes:
    """A bytes field: msgpack ``bin``, or a base64 string in JSON.

    A missing or wrong-typed field raises :class:`WireError`; invalid base64 raises
    ``error``.
    """
    value = _get(msg, name)
    if value is _MISSING:
        raise WireError(f"{name} is required")
    if encoding is Encoding.MSGPACK:
        if not isinstance(value, bytes):
            raise WireError(f"{name} must be binary (msgpack bin), got a {_kind(value)}")
        return value
    if not isinstance(value, str):
        raise WireError(f"{name} must be a base64 string in JSON, got a {_kind(value)}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII characters
        raise error(f"{name} is not valid base64") from None


def _sample_rate(value: Any, error: type[WireError], invalid: type[WireError]) -> int:
    if not _is_int(value):
        raise error(f"sample_rate must be an integer (Hz), got a {_kind(value)}")
    if value not in SAMPLE_RATES:
        rates = ", ".join(map(str, SAMPLE_RATES))
        raise invalid(f"sample_rate must be one of {rates} Hz, got {_show(value)}")
    return int(value)


def _format(value: Any, error: type[WireError], invalid: type[WireError]) -> str:
    if not isinstance(value, str):
        raise error(f"format must be a string, got a {_kind(value)}")
    if value not in FORMATS:
        raise invalid(f"format must be s16le or f32le, got {_show(value)}")
    return value


def _channels(value: Any, error: type[WireError], invalid: type[WireError]) -> int:
    if not _is_int(value):
        raise error(f"channels must be an integer, got a {_kind(value)}")
    if value not in CHANNELS:
        raise invalid(f"channels must be 1 or 2, got {_show(value)}")
    return int(value)


# -- /v1/ingest -------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    """The first message of a microphone stream: where it is and how its PCM looks."""

    room: str
    mic: str = "default"
    sample_rate: int = 16000
    format: str = "s16le"
    channels: int = 1

    @property
    def frame_bytes(self) -> int:
        """Bytes per sample frame (all channels); ``pcm`` lengths are multiples of it."""
        return FORMATS[self.format] * self.channels


@dataclass(frozen=True)
class Audio:
    """A chunk of PCM in the format declared by :class:`Hello`; ``seq`` counts from 0."""

    seq: int
    pcm: bytes


@dataclass(frozen=True)
class End:
    """The client is done: finish the open segment, reply ``bye`` and close."""


IngestMessage = Union[Hello, Audio, End]


def parse_hello(msg: Mapping[str, Any]) -> Hello:
    """Validate the first message of ``/v1/ingest``.

    Call it on the decoded first message. ``mic`` defaults to ``"default"``,
    ``sample_rate`` to 16000, ``format`` to ``"s16le"``, ``channels`` to 1.

    Raises:
        BadHello: the message is not a ``hello``, or any field is missing, has the
            wrong type or an unsupported value.
    """
    if msg.get("type") != "hello":
        raise BadHello("the first message must be hello")
    room = _text(msg, "room", MAX_ROOM_CHARS, BadHello)
    mic = _text(msg, "mic", MAX_MIC_CHARS, BadHello, default="default")
    rate = _get(msg, "sample_rate")
    fmt = _get(msg, "format")
    channels = _get(msg, "channels")
    return Hello(
        room=room,
        mic=mic,
        sample_rate=16000 if rate is _MISSING else _sample_rate(rate, BadHello, BadHello),
        format="s16le" if fmt is _MISSING else _format(fmt, BadHello, BadHello),
        channels=1 if channels is _MISSING else _channels(channels, BadHello, BadHello),
    )


def parse_audio(msg: Mapping[str, Any], encoding: Encoding) -> Audio:
    """Validate an ``audio`` message of ``/v1/ingest``.

    ``pcm`` is msgpack ``bin`` or, in JSON, a base64 string. Whether its length is a
    whole number of samples depends on the ``hello``; :func:`streamer.audio.pcm_to_float`
    checks that.

    Raises:
        WireError: ``seq`` is missing, not an integer or negative; ``pcm`` is missing
            or has the wrong type.
        BadAudio: ``pcm`` is a string that is not valid base64.
    """
    seq = _get(msg, "seq")
    if seq is _MISSING:
        raise WireError("seq is required")
    if not _is_int(seq):
        raise WireError(f"seq must be an integer, got a {_kind(seq)}")
    if seq < 0:
        raise WireError(f"seq must be >= 0, got {seq}")
    return Audio(seq=int(seq), pcm=_binary(msg, "pcm", encoding, BadAudio))


def parse_ingest(msg: Mapping[str, Any], encoding: Encoding) -> IngestMessage:
    """Turn a decoded ``/v1/ingest`` message into :class:`Hello`, :class:`Audio` or :class:`End`.

    Whether a message may come now (``hello`` first and only once) is the caller's
    rule, not this function's.

    Raises:
        UnknownType: ``type`` is not hello, audio or end.
        BadHello, BadAudio, WireError: as :func:`parse_hello` and :func:`parse_audio`.
    """
    kind = msg.get("type")
    if kind == "audio":
        return parse_audio(msg, encoding)
    if kind == "hello":
        return parse_hello(msg)
    if kind == "end":
        return End()
    raise UnknownType(f"unknown message type {_show(kind)} on /v1/ingest")


# -- /v1/api ----------------------------------------------------------------------------

#: A client-chosen request id, echoed as-is.
RequestId = Union[str, int]


@dataclass(frozen=True)
class AudioFile:
    """Request audio given as the bytes of a WAV, FLAC, OGG or MP3 file (``"audio"``)."""

    data: bytes


@dataclass(frozen=True)
class RawPcm:
    """Request audio given as raw PCM (``"pcm"`` with ``sample_rate``, ``format``, ``channels``).

    ``data`` holds a whole number of sample frames (checked when parsing).
    """

    data: bytes
    sample_rate: int
    format: str
    channels: int = 1


AudioInput = Union[AudioFile, RawPcm]


@dataclass(frozen=True)
class Enroll:
    """Create a person (``person is None``; ``name`` given) or add speech to one."""

    id: RequestId
    name: str | None
    info: dict[str, Any] | None
    person: str | None
    audio: AudioInput


@dataclass(frozen=True)
class Identify:
    """1:N identification: the ``top_k`` nearest enrolled people.

    Extension: ``room`` (optional): decide as that room's live streams do, with its
    ``rooms`` profile's VAD and threshold (e.g. a far-field microphone)."""

    id: RequestId
    top_k: int
    audio: AudioInput
    room: str | None = None


@dataclass(frozen=True)
class Verify:
    """1:1 verification against one enrolled ``person``. Extension: ``room``, as for
    :class:`Identify`."""

    id: RequestId
    person: str
    audio: AudioInput
    room: str | None = None


@dataclass(frozen=True)
class People:
    """List the enrolled people: everyone (protocol v1), or one page of them.

    Extensions: ``offset`` (people to skip, oldest enrolment first), ``limit`` (at most
    :data:`MAX_PEOPLE_PAGE`; None: everyone, up to ``server.max_people_reply``) and
    ``query`` (only people whose name contains it, case-insensitively, or whose id it
    is). The reply always carries ``total`` (people matching) and ``offset``."""

    id: RequestId
    offset: int = 0
    limit: int | None = None
    query: str | None = None


@dataclass(frozen=True)
class UpdatePerson:
    """Change a person's ``name`` and/or ``info``; ``None`` leaves a field unchanged."""

    id: RequestId
    person: str
    name: str | None
    info: dict[str, Any] | None


@dataclass(frozen=True)
class DeletePerson:
    """Delete a person and their voice data."""

    id: RequestId
    person: str


@dataclass(frozen=True)
class Analyze:
    """Measure audio without embedding or storing it (live feedback while recording).

    An addition to the protocol: ``{"type": "analyze", "id", audio}``, answered with
    ``analyzed`` (speech seconds, level, clipping, warnings).
    """

    id: RequestId
    audio: AudioInput




def _request_id(msg: Mapping[str, Any]) -> RequestId:
    value = _get(msg, "id")
    if value is _MISSING:
        raise WireError("id is required in every request")
    if isinstance(value, str):
        if len(value) > MAX_ID_CHARS:
            raise WireError(f"id must be at most {MAX_ID_CHARS} characters, got {len(value)}")
        return value
    if _is_int(value):
        return int(value)
    raise WireError(f"id must be a string or an integer, got a {_kind(value)}")


def _has_binary(value: Any) -> bool:
    """Whether a decoded value holds msgpack ``bin`` at any depth (not storable as JSON)."""
    if isinstance(value, bytes):
        return True
    if isinstance(value, list):
        return any(_has_binary(item) for item in value)
    if isinstance(value, dict):
        return any(_has_binary(item) for item in value.values())
    return False


def _info(msg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The free-form ``info`` map; it is stored as JSON, so binary values are refused."""
    value = _get(msg, "info")
    if value is _MISSING:
        return None
    if not isinstance(value, dict):
        raise WireError(f"info must be a map, got a {_kind(value)}")
    if _has_binary(value):
        raise WireError("info must hold only JSON values (no binary)")
    return value


def _name(msg: Mapping[str, Any], required: bool) -> str | None:
    """A person's display name: text of at most ``MAX_NAME_CHARS``, not only whitespace."""
    if not required and _get(msg, "name") is _MISSING:
        return None
    name = _text(msg, "name", MAX_NAME_CHARS, WireError)
    if not name.strip():
        raise WireError("name must not be blank")
    return name


@dataclass(frozen=True)
class SetRoom:
    """Give ``room`` a roster of person ids (``None``: remove it). An addition to the
    protocol, answered with ``{"type": "room", "id", "room", "people"}``."""

    id: RequestId
    room: str
    people: tuple[str, ...] | None


@dataclass(frozen=True)
class Rooms:
    """List the rooms with a roster; answered with ``{"type": "rooms", "id", "rooms"}``."""

    id: RequestId


Request = Union[Enroll, Identify, Verify, People, UpdatePerson, DeletePerson, Analyze,
                SetRoom, Rooms]


def _roster(msg: Mapping[str, Any]) -> tuple[str, ...] | None:
    if "people" not in msg:  # here null is a value: it removes the roster
        raise WireError("people is required (a list of person ids, or null)")
    value = msg["people"]
    if value is None:
        return None
    if not isinstance(value, list):
        raise WireError(f"people must be a list of person ids or null, got a {_kind(value)}")
    if len(value) > MAX_ROSTER_PEOPLE:
        raise WireError(f"people may list at most {MAX_ROSTER_PEOPLE} ids, got {len(value)}")
    for pid in value:
        if not isinstance(pid, str) or not pid or len(pid) > MAX_ID_CHARS:
            raise WireError(f"people must hold person ids (strings of 1..{MAX_ID_CHARS} "
                            f"characters), got {_show(pid)}")
    return tuple(value)


def _audio_input(msg: Mapping[str, Any], encoding: Encoding) -> AudioInput:
    has_file = _get(msg, "audio") is not _MISSING
    has_pcm = _get(msg, "pcm") is not _MISSING
    if has_file and has_pcm:
        raise WireError("give either audio or pcm, not both")
    if has_file:
        return AudioFile(_binary(msg, "audio", encoding, BadAudio))
    if not has_pcm:
        raise WireError("audio or pcm is required")
    data = _binary(msg, "pcm", encoding, BadAudio)
    rate = _get(msg, "sample_rate")
    if rate is _MISSING:
        raise WireError("sample_rate is required with pcm")
    fmt = _get(msg, "format")
    if fmt is _MISSING:
        raise WireError("format is required with pcm")
    channels = _get(msg, "channels")
    pcm = RawPcm(
        data=data,
        sample_rate=_sample_rate(rate, WireError, BadAudio),
        format=_format(fmt, WireError, BadAudio),
        channels=1 if channels is _MISSING else _channels(channels, WireError, BadAudio),
    )
    frame_bytes = FORMATS[pcm.format] * pcm.channels
    if len(data) % frame_bytes:
        raise BadAudio(
            f"pcm holds {len(data)} bytes, not a multiple of {frame_bytes} bytes "
            f"({pcm.format} x {pcm.channels} channel(s))"
        )
    return pcm


def _top_k(msg: Mapping[str, Any]) -> int:
    value = _get(msg, "top_k")
    if value is _MISSING:
        return DEFAULT_TOP_K
    if not _is_int(value):
        raise WireError(f"top_k must be an integer, got a {_kind(value)}")
    if not 1 <= value <= MAX_TOP_K:
        raise WireError(f"top_k must be 1..{MAX_TOP_K}, got {value}")
    return int(value)


def _page(msg: Mapping[str, Any]) -> tuple[int, int | None, str | None]:
    """``offset``, ``limit`` and ``query`` of a ``people`` request (all optional)."""
    offset = _get(msg, "offset")
    if offset is _MISSING or offset is None:
        offset = 0
    elif not _is_int(offset) or not 0 <= offset <= MAX_PEOPLE_OFFSET:
        raise WireError(f"offset must be an integer 0..{MAX_PEOPLE_OFFSET}, got "
                        f"{_show(offset) if _is_int(offset) else 'a ' + _kind(offset)}")
    limit = _get(msg, "limit")
    if limit is _MISSING or limit is None:
        limit = None
    elif not _is_int(limit) or not 1 <= limit <= MAX_PEOPLE_PAGE:
        raise WireError(f"limit must be an integer 1..{MAX_PEOPLE_PAGE}, got "
                        f"{_show(limit) if _is_int(limit) else 'a ' + _kind(limit)}")
    query = None
    if _get(msg, "query") not in (_MISSING, None, ""):  # empty or null: no filter
        query = _text(msg, "query", MAX_NAME_CHARS, WireError)
    return int(offset), None if limit is None else int(limit), query


def _parse_request(kind: Any, request_id: RequestId, msg: Mapping[str, Any],
                   encoding: Encoding) -> Request:
    if kind == "enroll":
        person_id = _optional_text(msg, "person", MAX_ID_CHARS)
        name = _name(msg, required=person_id is None)
        info = _info(msg)
        return Enroll(request_id, name, info, person_id, _audio_input(msg, encoding))
    if kind == "identify":
        top_k = _top_k(msg)
        room = _optional_text(msg, "room", MAX_ROOM_CHARS)  # null: none
        return Identify(request_id, top_k, _audio_input(msg, encoding), room)
    if kind == "verify":
        person_id = _text(msg, "person", MAX_ID_CHARS, WireError)
        room = _optional_text(msg, "room", MAX_ROOM_CHARS)
        return Verify(request_id, person_id, _audio_input(msg, encoding), room)
    if kind == "people":
        return People(request_id, *_page(msg))
    if kind == "update_person":
        person_id = _text(msg, "person", MAX_ID_CHARS, WireError)
        name = _name(msg, required=False)
        return UpdatePerson(request_id, person_id, name, _info(msg))
    if kind == "delete_person":
        return DeletePerson(request_id, _text(msg, "person", MAX_ID_CHARS, WireError))
    if kind == "analyze":
        return Analyze(request_id, _audio_input(msg, encoding))
    if kind == "set_room":
        room = _text(msg, "room", MAX_ROOM_CHARS, WireError)
        if not room.strip():
            raise WireError("room must not be blank")
        return SetRoom(request_id, room, _roster(msg))
    if kind == "rooms":
        return Rooms(request_id)
    raise UnknownType(f"unknown request type {_show(kind)} on /v1/api")


def parse_request(msg: Mapping[str, Any], encoding: Encoding) -> Request:
    """Turn a decoded ``/v1/api`` message into a :data:`Request`.

    Call it on each decoded API message; answer errors with
    :func:`error_from_exception` and keep the connection open. Every error raised
    here has ``request_id``: the request's ``id`` when it was readable, else ``None``.

    Raises:
        UnknownType: ``type`` is not a known request.
        WireError: ``id`` or another field is missing or has the wrong type or range,
            ``name`` is blank, ``info`` holds binary values, or both or neither of
            ``audio`` / ``pcm`` are given.
        BadAudio: ``audio`` / ``pcm`` is not valid base64 (JSON), ``sample_rate``,
            ``format`` or ``channels`` has an unsupported value, or ``pcm`` is not a
            whole number of samples.
    """
    request_id: RequestId | None = None
    try:
        request_id = _request_id(msg)
        return _parse_request(msg.get("type"), request_id, msg, encoding)
    except WireError as err:
        err.request_id = request_id  # type: ignore[attr-defined]
        raise


def request_id_of(err: BaseException) -> RequestId | None:
    """The request ``id`` attached to an error by :func:`parse_request`, or ``None``."""
    value = getattr(err, "request_id", None)
    return value if isinstance(value, (str, int)) else None


# -- server -> client -------------------------------------------------------------------


class ErrorMessage(TypedDict):
    """``{"type": "error", "code", "message", "id"?}``."""

    type: Literal["error"]
    code: str
    message: str
    id: NotRequired[RequestId]


class ReadyMessage(TypedDict):
    """The answer to a good ``hello``."""

    type: Literal["ready"]
    stream: str
    sample_rate: int
    model: str


def error_message(code: str, message: str, request_id: RequestId | None = None) -> ErrorMessage:
    """An ``error`` message; ``id`` is included only when ``request_id`` is not ``None``."""
    out: ErrorMessage = {"type": "error", "code": code, "message": message}
    if request_id is not None:
        out["id"] = request_id
    return out


def error_from_exception(err: StreamerError, request_id: RequestId | None = None) -> ErrorMessage:
    """The ``error`` message for ``err``: its ``code`` and ``str(err)``.

    ``request_id`` defaults to the id :func:`parse_request` attached to ``err``.
    """
    if request_id is None:
        request_id = request_id_of(err)
    return error_message(err.code, str(err), request_id)


def ready(stream: str, sample_rate: int, model: str) -> ReadyMessage:
    """The answer to a good ``hello``: the stream id, the model's rate (Hz) and model id."""
    return {"type": "ready", "stream": stream, "sample_rate": sample_rate, "model": model}


def bye(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The answer to ``end``, before the close with 1000."""
    return {"type": "bye", "stats": dict(stats)}


def speech_start(room: str, mic: str, stream: str, segment: int, t: float, ts: float
                 ) -> dict[str, Any]:
    """Speech began at stream time ``t`` (s); ``ts`` is wall-clock UNIX time (s)."""
    return {"type": "speech_start", "room": room, "mic": mic, "stream": stream,
            "segment": segment, "t": t, "ts": ts}


def speech_end(room: str, mic: str, stream: str, segment: int, t: float, ts: float
               ) -> dict[str, Any]:
    """Speech ended at stream time ``t`` (s); ``ts`` is wall-clock UNIX time (s)."""
    return {"type": "speech_end", "room": room, "mic": mic, "stream": stream,
            "segment": segment, "t": t, "ts": ts}


def speaker(
    *,
    room: str,
    mic: str,
    stream: str,
    segment: int,
    final: bool,
    start: float,
    end: float,
    person: Mapping[str, Any] | None,
    distance: float | None,
    candidates: Sequence[Mapping[str, Any]],
    ts: float,
) -> dict[str, Any]:
    """Who is speaking in ``[start, end]`` (stream seconds).

    ``person`` is ``{"id", "name"}`` or ``None`` (unknown speaker); ``distance`` is the
    protocol's Euclidean distance; ``candidates`` are ``{"id", "name", "distance"}``,
    nearest first.
    """
    return {"type": "speaker", "room": room, "mic": mic, "stream": stream,
            "segment": segment, "final": final, "start": start, "end": end,
            "person": None if person is None else dict(person), "distance": distance,
            "candidates": [dict(c) for c in candidates], "ts": ts}


def snapshot(room: str, speaking: Sequence[Mapping[str, Any]],
             recent: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The first message on ``/v1/events``: current and recent final speaker events."""
    return {"type": "snapshot", "room": room, "speaking": [dict(e) for e in speaking],
            "recent": [dict(e) for e in recent]}


def enrolled(request_id: RequestId, person: Mapping[str, Any], quality: Mapping[str, Any]
             ) -> dict[str, Any]:
    """Reply to ``enroll``: ``person`` is ``{"id", "name", "info", "speech_s"}``."""
    return {"type": "enrolled", "id": request_id, "person": dict(person),
            "quality": dict(quality)}


def identified(request_id: RequestId, match: Mapping[str, Any] | None,
               results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Reply to ``identify``: ``match`` or ``None``, ``results`` nearest first."""
    return {"type": "identified", "id": request_id,
            "match": None if match is None else dict(match),
            "results": [dict(r) for r in results]}


def verified(request_id: RequestId, person: str, accepted: bool, distance: float,
             threshold: float) -> dict[str, Any]:
    """Reply to ``verify``: accepted when ``distance <= threshold`` (both distances)."""
    return {"type": "verified", "id": request_id, "person": person, "accepted": accepted,
            "distance": distance, "threshold": threshold}


def people_message(request_id: RequestId, persons: Sequence[Mapping[str, Any]],
                   total: int | None = None, offset: int = 0) -> dict[str, Any]:
    """Reply to ``people``: ``{"id", "name", "info", "speech_s", "created"}`` each, with
    ``total`` (people matching the request; default: as many as listed) and ``offset``."""
    return {"type": "people", "id": request_id, "people": [dict(p) for p in persons],
            "total": len(persons) if total is None else total, "offset": offset}


def person_message(request_id: RequestId, record: Mapping[str, Any]) -> dict[str, Any]:
    """Reply to ``update_person`` with the updated person."""
    return {"type": "person", "id": request_id, "person": dict(record)}


def analyzed(request_id: RequestId, quality: Mapping[str, Any]) -> dict[str, Any]:
    """Reply to ``analyze``: the fields of ``quality`` (``speech_s``, ``audio_s``,
    ``level_dbfs``, ``peak``, ``clipped_share``, ``warnings``, ...) at the top level."""
    return {**dict(quality), "type": "analyzed", "id": request_id}


def deleted(request_id: RequestId, person_id: str) -> dict[str, Any]:
    """Reply to ``delete_person``."""
    return {"type": "deleted", "id": request_id, "person": person_id}
