"""Property-based fuzzing of the live server: random and mutated frames on every endpoint.

One real server (real model, real SQLite) serves the whole module on a background
thread with its own event loop; the Hypothesis tests are synchronous and run each
example's client coroutine on that loop (:meth:`LiveServer.run`). Throughout the
module a well-behaved microphone streams real speech into ``good-room`` over and over
and a display follows that room; every few examples, and at the end of each test, an
``identify`` of the enrolled person's voice must name them.

Expected answers come from the protocol: what the decoder says about a frame
(``tests/test_fuzz_wire.py`` fuzzes the decoder itself) gives the error code, and
``protocol.md`` gives what follows it:

- ``/v1/api``: an ``error`` with that code (and the request's ``id`` when it was
  readable), in the frame's encoding, and the connection stays open: a ``people``
  request on it is answered. A valid request gets its normal reply or one of the
  errors its audio can cause.
- ``/v1/ingest``: ``error`` then close 1003 (bad_message, unknown_type, bad_hello,
  bad_audio), 1008 (a second hello), 1009 (a frame over ``max_message_bytes``); a
  valid message gets normal service (``ready``; ``bye`` and 1000 after ``end``).
- ``/v1/events``: whatever a display sends is ignored and the connection stays open.

The server must never crash: no close 1011 and no ERROR log record ("connection
handler failed", "model job failed", asyncio's "Task exception was never retrieved").
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st
from server_support import (
    LIBRI_DIR,
    api_call,
    audio_fields,
    manifest,
    pcm_fields,
    read_flac,
    read_until_closed,
    running_server,
)
from strategies import (
    API_TYPES,
    ENCODINGS,
    INGEST_TYPES,
    encode_frame,
    frames,
    valid_frames,
    valid_messages,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from clients.stream_file import stream_file
from streamer import wire
from streamer.audio import pcm_to_float
from streamer.errors import BadAudio, StreamerError

pytestmark = pytest.mark.slow

#: ``server.max_message_bytes`` of the fuzzed server (the enrolment FLAC fits).
LIMIT_BYTES = 1024 * 1024
GOOD_ROOM = "good-room"
#: The good microphone streams at this multiple of real time.
GOOD_SPEED = 2.0
#: Liveness bound for every answer (generous: the machine is loaded).
ANSWER_S = 20.0
#: Check the good API client every this many examples.
CHECK_EVERY = 10
#: Close codes ``protocol.md`` gives for the client error codes.
PROTOCOL_CLOSE = {"bad_message": 1003, "unknown_type": 1003, "bad_hello": 1003,
                  "bad_audio": 1003, "too_large": 1009}
#: What may come on an ingest stream besides ``error`` and ``bye``.
STREAM_EVENTS = {"ready", "speech_start", "speaker", "speech_end"}
#: The errors a valid request may still get, by type (its audio is random bytes; its
#: ``person`` never names a real person).
REQUEST_ERRORS = {
    "enroll": {"bad_audio", "too_little_speech", "too_large", "not_one_speaker",
               "unknown_person"},
    "identify": {"bad_audio", "too_little_speech", "too_large"},
    "verify": {"unknown_person"},
    "analyze": {"bad_audio", "too_large"},
    "people": set(),
    "update_person": {"unknown_person"},
    "delete_person": {"unknown_person"},
}
NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target]
REPLY_TYPE = {"enroll": "enrolled", "identify": "identified", "verify": "verified",
              "analyze": "analyzed", "people": "people", "update_person": "person",
              "delete_person": "deleted"}

# No shrinking: each step would rerun live examples for minutes; a failing example is
# reported as generated (they are small anyway).
fuzz = settings(max_examples=80, deadline=None, phases=NO_SHRINK, report_multiple_bugs=False,
                # ``checker`` and ``junk_display`` are meant to span all of a test's examples
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


class ErrorRecords(logging.Handler):
    """Collects ERROR and CRITICAL records from every logger, on every thread."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(f"{r.name}: {r.getMessage()}" for r in self.records)


class LiveServer:
    """The server and the well-behaved clients, on a thread with its own event loop."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.url = ""
        self.person = ""
        self.probe = np.zeros(0, dtype=np.float32)
        #: One entry per finished good stream: ``None`` when served right, else why not.
        self.good_streams: list[str | None] = []
        #: Messages received by the good-room display that nobody fuzzes.
        self.display_messages: list[dict[str, Any]] = []
        self.display_closed: int | None = None
        self.server: Any = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="fuzz-server", daemon=True)

    # -- lifecycle (test thread) ------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(300):
            raise TimeoutError("the fuzz server did not start within 300 s")
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(120)
        assert not self._thread.is_alive(), "the fuzz server did not stop"
        if self._failure is not None:
            raise self._failure

    def run(self, coro: Coroutine[Any, Any, Any], timeout_s: float = 120.0) -> Any:
        """Run ``coro`` on the server's loop and return its result (raise its error)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    # -- the server thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # noqa: BLE001 - re-raised in the test thread by start()/stop()
            self._failure = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        rows = [p for p, speaker, _ in manifest(LIBRI_DIR) if speaker == "1998"]
        stream_path = self.tmp_path / "good.wav"
        sf.write(str(stream_path), np.concatenate([read_flac(rows[2]), read_flac(rows[3])]),
                 16000, subtype="PCM_16")
        self.probe = read_flac(rows[1])[: 4 * 16000]
        async with running_server(self.tmp_path,
                                  server={"max_message_bytes": LIMIT_BYTES}) as server:
            self.server = server
            self.url = server.url
            reply = await api_call(server.url, {"type": "enroll", "id": 1, "name": "Grace Hopper",
                                                **audio_fields(read_flac(rows[0]), "FLAC")})
            assert reply["type"] == "enrolled", reply
            self.person = reply["person"]["id"]
            tasks = [asyncio.create_task(self._good_streams(stream_path)),
                     asyncio.create_task(self._good_display())]
            self._ready.set()
            await self._stop.wait()
            # the good stream ends normally (a cancelled client would close with 1011)
            await asyncio.wait_for(tasks[0], timeout=60)
            tasks[1].cancel()
            await asyncio.gather(tasks[1], return_exceptions=True)

    async def _good_streams(self, path: Path) -> None:
        """Stream real speech into ``good-room`` again and again; record each outcome."""
        assert self._stop is not None
        while not self._stop.is_set():
            try:
                messages = await stream_file(self.url, path, GOOD_ROOM, speed=GOOD_SPEED,
                                             chunk_ms=20)
            except (ConnectionClosed, OSError) as exc:
                self.good_streams.append(f"stream failed: {exc!r}")
                await asyncio.sleep(1)
                continue
            named = [m["person"] and m["person"]["id"] for m in messages
                     if m["type"] == "speaker" and m["final"]]
            ok = (messages[0]["type"] == "ready" and messages[-1]["type"] == "bye"
                  and bool(named) and all(pid == self.person for pid in named))
            self.good_streams.append(None if ok else f"wrong answers: {messages}")

    async def _good_display(self) -> None:
        async with connect(f"{self.url}/v1/events?room={GOOD_ROOM}") as ws:
            try:
                async for raw in ws:
                    self.display_messages.append(wire.decode(raw)[0])
            finally:
                self.display_closed = ws.close_code

    # -- checks (server loop) ---------------------------------------------------------------

    async def check_identify(self) -> None:
        """The well-behaved API client on its own connection names the enrolled person."""
        async with asyncio.timeout(ANSWER_S):
            reply = await api_call(self.url, {"type": "identify", "id": "good",
                                              **pcm_fields(self.probe)})
        assert reply["type"] == "identified" and reply["id"] == "good", reply
        assert reply["match"] is not None and reply["match"]["id"] == self.person, reply


@pytest.fixture(scope="module")
def errors() -> Iterator[ErrorRecords]:
    handler = ErrorRecords()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, errors: ErrorRecords) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("fuzz_server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert not errors.records, errors.text()


class Checker:
    """Per test: counts examples, checks the good clients and the error log."""

    def __init__(self, live: LiveServer, errors: ErrorRecords) -> None:
        self.live = live
        self.errors = errors
        self.examples = 0

    def after_example(self) -> None:
        assert not self.errors.records, self.errors.text()
        self.examples += 1
        if self.examples % CHECK_EVERY == 0:
            self.live.run(self.live.check_identify())

    def finish(self) -> None:
        self.live.run(self.live.check_identify())
        assert not self.errors.records, self.errors.text()
        assert all(s is None for s in self.live.good_streams), self.live.good_streams
        assert self.live.display_closed is None, self.live.display_closed


@pytest.fixture
def checker(live: LiveServer, errors: ErrorRecords) -> Iterator[Checker]:
    c = Checker(live, errors)
    yield c
    c.finish()


# -- frames -------------------------------------------------------------------------------


def _size(frame: bytes | str) -> int:
    return len(frame.encode("utf-8")) if isinstance(frame, str) else len(frame)


def _oversized(frame: bytes | str) -> bytes | str:
    """``frame`` padded past ``max_message_bytes`` (websockets refuses it: 1009)."""
    if isinstance(frame, str):
        return frame + " " * (LIMIT_BYTES + 1)
    return frame + bytes(LIMIT_BYTES + 1)


def any_frames(types: tuple[str, ...]) -> st.SearchStrategy[bytes | str]:
    """Frames of :func:`strategies.frames` (more often valid), about one in 30 made too
    large.

    (Not the draw's smallest value: Hypothesis favours those in the first examples.)
    """
    return st.tuples(frames(types) | valid_frames(types), st.integers(0, 29)).map(
        lambda t: _oversized(t[0]) if t[1] == 17 else t[0])


def _kind(frame: bytes | str) -> type:
    return str if isinstance(frame, str) else bytes


# -- /v1/api ----------------------------------------------------------------------------------


def _api_expectation(frame: bytes | str) -> tuple[str, Any, Any]:
    """``("close", 1009, None)``, ``("error", code, id or None)`` or ``("request", req, None)``."""
    if _size(frame) > LIMIT_BYTES:
        return "close", 1009, None
    try:
        message, encoding = wire.decode(frame)
    except StreamerError as err:
        return "error", err.code, None
    try:
        return "request", wire.parse_request(message, encoding), message["type"]
    except StreamerError as err:
        return "error", err.code, wire.request_id_of(err)


async def _api_example(live: LiveServer, frame: bytes | str) -> str:
    """Send ``frame`` on a new connection, check the answer; return what happened."""
    what, detail, extra = _api_expectation(frame)
    encoding = wire.Encoding.JSON if isinstance(frame, str) else wire.Encoding.MSGPACK
    async with connect(live.url + "/v1/api", max_size=None) as ws:
        await ws.send(frame)
        if what == "close":
            got = await read_until_closed(ws, ANSWER_S)
            assert got == [] and ws.close_code == 1009, (got, ws.close_code)
            return "closed 1009"
        async with asyncio.timeout(ANSWER_S):
            raw = await ws.recv()
        assert isinstance(raw, _kind(frame)), "reply not in the request's encoding"
        reply = wire.decode(raw)[0]
        if what == "error":
            assert reply["type"] == "error" and reply["code"] == detail, (reply, detail)
            assert isinstance(reply["message"], str) and reply["message"]
            assert reply.get("id") == extra and (extra is not None or "id" not in reply), reply
        else:
            kind = extra
            assert reply["id"] == detail.id, reply
            if reply["type"] == "error":
                assert reply["code"] in REQUEST_ERRORS[kind], (kind, reply)
            else:
                assert reply["type"] == REPLY_TYPE[kind], (kind, reply)
        # the connection stays open and serves a valid request, in its encoding
        await ws.send(wire.encode({"type": "people", "id": "after"}, encoding))
        async with asyncio.timeout(ANSWER_S):
            raw = await ws.recv()
        assert isinstance(raw, _kind(frame))
        people = wire.decode(raw)[0]
        assert people["type"] == "people" and people["id"] == "after", people
        assert live.person in [p["id"] for p in people["people"]]
    if what == "error":
        return f"error {detail} ({'decoder' if extra is None else 'request'})"
    return f"{extra}: {reply['type']} {reply.get('code', '')}".strip()


@fuzz
@given(frame=any_frames(API_TYPES + ("analyze",)))
# found by fuzzing: these reached the registry, which raised ValueError (close 1011)
@example(frame=encode_frame({"type": "update_person", "id": 1, "person": "p_1",
                             "info": {"photo": b"\x89PNG"}}, "msgpack"))
@example(frame=encode_frame({"type": "update_person", "id": 2, "person": "p_1", "name": " "},
                            "json"))
@example(frame=_oversized(encode_frame({"type": "people", "id": 3}, "msgpack")))
def test_fuzz_api(live: LiveServer, checker: Checker, frame: bytes | str) -> None:
    event(live.run(_api_example(live, frame)))
    checker.after_example()


# -- /v1/ingest --------------------------------------------------------------------------------

#: An ingest outcome: ``("ok",)`` (keep going), ``("bye",)`` (``end``: bye then 1000),
#: ``("error", code, close code)`` or ``("close", 1009)`` (too big: no error message).
Outcome = tuple[Any, ...]


def _hello_outcome(frame: bytes | str) -> Outcome:
    if _size(frame) > LIMIT_BYTES:
        return ("close", 1009)
    try:
        wire.parse_hello(wire.decode(frame)[0])
    except StreamerError as err:
        return ("error", err.code, PROTOCOL_CLOSE[err.code])
    return ("ok",)


def _stream_outcome(frame: bytes | str, hello: wire.Hello, encoding: wire.Encoding) -> Outcome:
    """What the protocol says about ``frame`` on a stream opened by ``hello``."""
    if _size(frame) > LIMIT_BYTES:
        return ("close", 1009)
    try:
        item = wire.parse_ingest(wire.decode(frame)[0], encoding)
    except StreamerError as err:
        return ("error", err.code, PROTOCOL_CLOSE[err.code])
    if isinstance(item, wire.Hello):
        return ("error", "bad_message", 1008)  # a second hello breaks the protocol's order
    if isinstance(item, wire.End):
        return ("bye",)
    assert isinstance(item, wire.Audio)
    try:
        pcm_to_float(item.pcm, hello.format, hello.channels)
    except BadAudio:
        return ("error", "bad_audio", 1003)
    return ("ok",)


def _check_ingest_end(got: list[tuple[dict[str, Any], type]], close_code: int | None,
                      reason: str | None, outcome: Outcome, kind: type) -> None:
    """Check what a stream received once the server closed it."""
    errors = [m for m, _ in got if m["type"] == "error"]
    byes = [m for m, _ in got if m["type"] == "bye"]
    assert all(k is kind for _, k in got), "a message not in the stream's encoding"
    assert all(m["type"] in STREAM_EVENTS | {"error", "bye"} for m, _ in got), got
    if outcome[0] == "bye":
        assert not errors and len(byes) == 1 and got[-1][0]["type"] == "bye", got
        assert close_code == 1000, close_code
    elif outcome[0] == "close":
        assert not errors and not byes and close_code == 1009, (got, close_code)
    else:
        _, code, expected_close = outcome
        assert not byes and len(errors) == 1 and errors[0]["code"] == code, (got, code)
        assert isinstance(errors[0]["message"], str) and errors[0]["message"]
        assert close_code == expected_close and reason, (close_code, reason)


async def _ingest_before_hello(live: LiveServer, frame: bytes | str) -> str:
    outcome = _hello_outcome(frame)
    async with connect(live.url + "/v1/ingest", max_size=None) as ws:
        await ws.send(frame)
        if outcome[0] == "ok":  # a valid hello: normal service
            async with asyncio.timeout(ANSWER_S):
                ready, _ = wire.decode(await ws.recv())
            assert ready["type"] == "ready" and ready["stream"].startswith("s_"), ready
            await ws.send(wire.encode({"type": "end"}, wire.decode(frame)[1]))
            outcome = ("bye",)
        got = await read_until_closed(ws, ANSWER_S)
        _check_ingest_end(got, ws.close_code, ws.close_reason, outcome, _kind(frame))
    return " ".join(map(str, outcome))


@fuzz
@given(frame=any_frames(INGEST_TYPES))
@example(frame=_oversized('{"type": "hello", "room": "r"}'))
def test_fuzz_ingest_before_hello(live: LiveServer, checker: Checker,
                                  frame: bytes | str) -> None:
    event(live.run(_ingest_before_hello(live, frame)))
    checker.after_example()


async def _ingest_after_hello(live: LiveServer, hello_msg: dict[str, Any], encoding: str,
                              stream: list[bytes | str]) -> str:
    hello_frame = encode_frame(hello_msg, encoding)
    enc = wire.Encoding.JSON if encoding == "json" else wire.Encoding.MSGPACK
    hello = wire.parse_hello(hello_msg)
    async with connect(live.url + "/v1/ingest", max_size=None) as ws:
        await ws.send(hello_frame)
        async with asyncio.timeout(ANSWER_S):
            ready, _ = wire.decode(await ws.recv())
        assert ready["type"] == "ready", ready
        outcome: Outcome = ("ok",)
        for frame in stream:
            await ws.send(frame)
            outcome = _stream_outcome(frame, hello, enc)
            if outcome[0] != "ok":
                break
        if outcome[0] == "ok":  # every frame was served normally; the client ends
            await ws.send(wire.encode({"type": "end"}, enc))
            outcome = ("bye",)
        got = await read_until_closed(ws, ANSWER_S)
        _check_ingest_end(got, ws.close_code, ws.close_reason, outcome, _kind(hello_frame))
    return " ".join(map(str, outcome))


#: ``audio`` with any bytes as ``pcm``: partial samples, NaN or infinite f32le samples.
raw_audio_frames = st.builds(
    lambda seq, pcm, encoding: encode_frame({"type": "audio", "seq": seq, "pcm": pcm}, encoding),
    st.integers(0, 5), st.binary(max_size=64), st.sampled_from(ENCODINGS))


@fuzz
@given(hello=valid_messages("hello"), encoding=st.sampled_from(ENCODINGS),
       stream=st.lists(any_frames(INGEST_TYPES) | raw_audio_frames, min_size=1, max_size=3))
@example(hello={"type": "hello", "room": "r", "format": "f32le"}, encoding="msgpack",
         stream=[encode_frame({"type": "audio", "seq": 0,
                               "pcm": b"\x00\x00\xc0\x7f" * 4}, "msgpack")])  # NaN
def test_fuzz_ingest_after_hello(live: LiveServer, checker: Checker, hello: dict[str, Any],
                                 encoding: str, stream: list[bytes | str]) -> None:
    event(live.run(_ingest_after_hello(live, hello, encoding, stream)))
    checker.after_example()


# -- /v1/events --------------------------------------------------------------------------------


class JunkDisplay:
    """A display of ``good-room`` that every example sends junk to, kept across examples."""

    def __init__(self) -> None:
        self.ws: ClientConnection | None = None
        self.messages: list[dict[str, Any]] = []
        self.reader: asyncio.Task[None] | None = None

    async def open(self, url: str) -> ClientConnection:
        if self.ws is None:
            self.ws = await connect(f"{url}/v1/events?room={GOOD_ROOM}")
            self.reader = asyncio.create_task(self._read(self.ws))
        return self.ws

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            self.messages.append(wire.decode(raw)[0])

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            assert self.reader is not None
            await self.reader


async def _alive(ws: ClientConnection) -> None:
    """The server has read everything sent before (pings are answered in order)."""
    pong = await ws.ping()
    async with asyncio.timeout(ANSWER_S):
        await pong
    assert ws.state is State.OPEN


async def _events_example(live: LiveServer, junk: JunkDisplay, room: str, msgpack: bool,
                          sent: list[bytes | str]) -> None:
    query = f"room={quote(room, safe='')}" + ("&encoding=msgpack" if msgpack else "")
    async with connect(f"{live.url}/v1/events?{query}") as ws:
        async with asyncio.timeout(ANSWER_S):
            raw = await ws.recv()
        assert isinstance(raw, bytes if msgpack else str)
        snapshot = wire.decode(raw)[0]
        assert snapshot["type"] == "snapshot" and snapshot["room"] == room, snapshot
        for frame in sent:
            await ws.send(frame)
        await _alive(ws)
    assert ws.close_code == 1000
    shared = await junk.open(live.url)
    for frame in sent:
        await shared.send(frame)
    await _alive(shared)


@fuzz
@given(room=st.text(min_size=1, max_size=40) | st.just(GOOD_ROOM), msgpack=st.booleans(),
       sent=st.lists(frames(INGEST_TYPES + API_TYPES), min_size=1, max_size=4))
def test_fuzz_events(live: LiveServer, checker: Checker, junk_display: JunkDisplay, room: str,
                     msgpack: bool, sent: list[bytes | str]) -> None:
    live.run(_events_example(live, junk_display, room, msgpack, sent))
    checker.after_example()


@pytest.fixture
def junk_display(live: LiveServer) -> Iterator[JunkDisplay]:
    junk = JunkDisplay()
    yield junk
    live.run(_junk_display_served(live, junk))


async def _junk_display_served(live: LiveServer, junk: JunkDisplay) -> None:
    """After all the junk, the display still gets the good stream's live events."""
    assert junk.ws is not None, "no example ran"
    seen = len(junk.messages)
    async with asyncio.timeout(60):
        while not any(m["type"] == "speaker" for m in junk.messages[seen:]):
            await asyncio.sleep(0.1)
    assert junk.messages[0]["type"] == "snapshot"
    await junk.close()
    assert junk.ws.close_code == 1000


def test_good_clients_were_served_throughout(live: LiveServer, errors: ErrorRecords) -> None:
    """Runs last: the good microphone finished streams, all named the right person, and
    the good-room display got their events; the server holds no leftover stream."""
    live.run(live.check_identify())
    live.run(_a_good_stream_finished(live))
    assert all(s is None for s in live.good_streams), live.good_streams
    speakers = [m for m in live.display_messages if m["type"] == "speaker" and m["final"]]
    assert speakers and all(m["person"] and m["person"]["id"] == live.person
                            for m in speakers), speakers[:3]
    assert live.display_closed is None
    assert set(live.run(_streams(live))) <= {"good"}, "a fuzzed stream was left open"
    assert not errors.records, errors.text()


async def _streams(live: LiveServer) -> list[str]:
    # the good stream may be open right now; nothing else may be
    return ["good" if s.room == GOOD_ROOM else s.room for s in live.server.streams.values()]


async def _a_good_stream_finished(live: LiveServer) -> None:
    """Wait (bounded) until the good microphone has finished at least one stream."""
    async with asyncio.timeout(90):
        while not live.good_streams:
            await asyncio.sleep(0.2)
