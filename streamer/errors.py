"""One error hierarchy; every error knows its protocol code and websocket close code.

::

    StreamerError                 code "internal", close 1011
    ├── ConfigError               bad configuration or model/index mismatch at start-up
    ├── WireError                 "bad_message", close 1003 (not a map, bad field)
    │   ├── UnknownType           "unknown_type"
    │   ├── BadHello              "bad_hello"
    │   └── BadAudio              "bad_audio" (undecodable file, odd byte count)
    ├── TooLarge                  "too_large", close 1009
    ├── PolicyError               close 1008 (wrong order, auth)
    │   ├── Unauthorized          "unauthorized"
    │   ├── Forbidden             "forbidden"
    │   └── TimedOut              "timeout" (extension): a client sent nothing in time
    │       ├── HelloTimeout      close reason "hello timeout"
    │       └── IdleTimeout       close reason "idle timeout"
    ├── TooLittleSpeech           "too_little_speech" (request error, connection stays open)
    ├── NotOneSpeaker             "not_one_speaker" (enrolment audio holds two voices)
    ├── UnknownPerson             "unknown_person"
    ├── RegistryError             "internal", storage failure
    └── Overloaded                "overloaded", close 1013

A request error on ``/v1/api`` is answered with an ``error`` message and the connection
stays open. On ``/v1/ingest`` a broken stream is answered with ``error`` and then closed
with ``close_code``. The close *reason* is the short fixed ``close_reason``, never
exception text (websockets ``protocol.py``: "Don't include exception details").
Close codes are from RFC 6455 section 7.4.1.
"""

from __future__ import annotations

import math

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_TOO_BIG",
    "CLOSE_TRY_AGAIN",
    "CLOSE_UNSUPPORTED",
    "BadAudio",
    "BadHello",
    "ConfigError",
    "Forbidden",
    "HelloTimeout",
    "IdleTimeout",
    "NotOneSpeaker",
    "Overloaded",
    "PolicyError",
    "RegistryError",
    "StreamerError",
    "TimedOut",
    "TooLarge",
    "TooLittleSpeech",
    "Unauthorized",
    "UnknownPerson",
    "UnknownType",
    "WireError",
    "format_shortfall",
]

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013


class StreamerError(Exception):
    """Base class. ``str(err)`` is one sentence meant for a person."""

    code = "internal"
    close_code = CLOSE_INTERNAL
    close_reason = "internal error"


class ConfigError(StreamerError):
    """The configuration, the model file or the index cannot be used. Raised at start-up."""


class WireError(StreamerError):
    """A message is not a map, not msgpack/JSON, or has a missing or wrong-typed field."""

    code = "bad_message"
    close_code = CLOSE_UNSUPPORTED
    close_reason = "bad message"


class UnknownType(WireError):
    """A message's ``type`` is not one this endpoint knows."""

    code = "unknown_type"
    close_reason = "unknown message type"


class BadHello(WireError):
    """An ingest ``hello`` is missing or declares an unsupported audio format."""

    code = "bad_hello"
    close_reason = "bad hello"


class BadAudio(WireError):
    """Audio bytes cannot be decoded (bad file, odd byte count, NaN samples)."""

    code = "bad_audio"
    close_reason = "bad audio"


class TooLarge(StreamerError):
    """A frame or an audio payload exceeds a configured limit."""

    code = "too_large"
    close_code = CLOSE_TOO_BIG
    close_reason = "message too big"


class PolicyError(StreamerError):
    """The peer broke a rule of the protocol (wrong order, not allowed)."""

    code = "bad_message"
    close_code = CLOSE_POLICY
    close_reason = "policy violation"


class Unauthorized(PolicyError):
    """A token is missing or wrong."""

    code = "unauthorized"
    close_reason = "unauthorized"


class Forbidden(PolicyError):
    """The token lacks the role this endpoint needs."""

    code = "forbidden"
    close_reason = "forbidden"


class TimedOut(PolicyError):
    """The client sent nothing within a configured time (``timeout``, an extension code)."""

    code = "timeout"
    close_reason = "timeout"


class HelloTimeout(TimedOut):
    """An ingest client sent no ``hello`` within ``server.hello_timeout_s``."""

    close_reason = "hello timeout"


class IdleTimeout(TimedOut):
    """An ingest or API client sent nothing for ``server.idle_timeout_s``."""

    close_reason = "idle timeout"


def format_shortfall(found_s: float, needed_s: float) -> tuple[str, str]:
    """``(found, needed)`` as text that never rounds a shortfall away.

    ``needed`` is shown with one decimal (two when one would change it, e.g. 2.25) and
    rounded *up*; ``found`` with as many decimals, rounded *down*. So a value below the
    target always reads below it: 3.96 of 4.0 is "3.9" of "4.0", never "4.0" of "4.0".
    """
    decimals = 1 if abs(round(needed_s, 1) - needed_s) < 1e-9 else 2
    scale = 10 ** decimals
    need = math.ceil(needed_s * scale - 1e-9) / scale
    found = math.floor(found_s * scale + 1e-9) / scale
    if found_s < needed_s and found >= need:  # pragma: no cover - guarded by the maths
        found = need - 1 / scale
    return f"{found:.{decimals}f}", f"{need:.{decimals}f}"


class TooLittleSpeech(StreamerError):
    """Enrolment or verification audio holds too little detected speech.

    The message shows the found seconds rounded down and the needed ones rounded up
    (:func:`format_shortfall`): "found 3.9 s of speech, need at least 4.0 s" for 3.96 s.
    """

    code = "too_little_speech"
    close_code = CLOSE_UNSUPPORTED
    close_reason = "too little speech"

    def __init__(self, found_s: float, needed_s: float) -> None:
        found, needed = format_shortfall(found_s, needed_s)
        super().__init__(f"found {found} s of speech, need at least {needed} s")
        self.found_s = found_s
        self.needed_s = needed_s


class NotOneSpeaker(StreamerError):
    """Enrolment audio does not sound like one speaker (``enroll.consistency: refuse``).

    The message names the part of the recording that disagrees, its distance and the
    limit, e.g. "the speech from 6.0 s to 8.5 s sounds like a different person
    (distance 1.21, limit 1.05); enrol one speaker at a time".
    """

    code = "not_one_speaker"
    close_code = CLOSE_UNSUPPORTED
    close_reason = "not one speaker"


class UnknownPerson(StreamerError):
    """No enrolled person has this id."""

    code = "unknown_person"
    close_code = CLOSE_UNSUPPORTED
    close_reason = "unknown person"

    def __init__(self, person_id: str) -> None:
        super().__init__(f"no enrolled person has id {person_id!r}")
        self.person_id = person_id


class RegistryError(StreamerError):
    """The registry's storage failed (disk full, corrupt database)."""


class Overloaded(StreamerError):
    """The server cannot take more work now; try again later."""

    code = "overloaded"
    close_code = CLOSE_TRY_AGAIN
    close_reason = "try again later"
