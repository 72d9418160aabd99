"""``streamer demo``: see the product work within a minute, with no microphone and no files.

What it does, in one process (:func:`run_demo`, called by ``streamer demo``):

1. Starts a real server (:class:`~streamer.app.App` and
   :class:`~streamer.server.StreamerServer`, as ``streamer serve`` does) on
   ``--host``/``--port`` (``--port 0`` picks a free port) with a fresh temporary data
   dir, removed when the demo ends, and prints the addresses of the room display
   (``http://HOST:PORT/room/demo``) and the people page as soon as it listens.
2. Enrols four people (:data:`PEOPLE`) from the speech shipped in the package
   (``streamer/samples``, LibriSpeech test-other, CC BY 4.0; see
   ``streamer/samples/CREDITS.md``) through the server's own ``/v1/api`` websocket, the
   path every user's enrolment takes.
3. Streams a stitched conversation (:data:`CONVERSATION`: turns of the four people and
   of one never-enrolled voice, from different utterances than the enrolments, with
   :data:`PAUSE_S` of silence between turns) into room ``demo`` over the server's real
   ``/v1/ingest`` websocket, as one microphone (``mic`` ``demo``) paced at real time
   times ``--speed``, ``--loops`` times (0: until Ctrl-C or SIGTERM). Each final
   decision is printed beside who really spoke.

Choices: the demo's data dir is always temporary (``--data-dir`` is refused, so a real
data dir is never filled with sample voices); the demo runs without tokens (``auth`` of
a config file is ignored) so its pages open without ``?token=``, and for that reason it
listens only on a loopback address unless ``server.allow_unauthenticated_remote`` is
set; every other config section (thresholds, VAD, model) is used as configured. The
samples are unmodified LibriSpeech FLAC files (16 kHz mono), found next to this module
(package data, so an installed wheel runs the demo from any folder).

Ctrl-C or SIGTERM ends the demo cleanly: the stream sends ``end`` (its open segment
is finished and its final event sent), the server shuts down as ``streamer serve``
does, and :func:`run_demo` returns 0.

Raises :class:`DemoError` (a :class:`~streamer.errors.StreamerError`: one line for the
CLI) for bad options (``--speed``, ``--loops``, ``--data-dir``, a non-loopback host),
a port already in use, missing sample files, or a server that refuses an enrolment or
closes the stream; :class:`~streamer.errors.ConfigError` from loading the model.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from . import wire
from .app import App, is_loopback
from .config import AuthConfig, Config
from .errors import StreamerError

__all__ = ["CONVERSATION", "PEOPLE", "ROOM", "SAMPLES", "DemoError", "Person", "Turn",
           "build_conversation", "enrol", "run_demo", "stream_conversation"]

logger = logging.getLogger("streamer.demo")

#: The packaged speech (package data ``streamer/samples/*``).
SAMPLES = Path(__file__).parent / "samples"
ROOM = "demo"
MIC = "demo"
RATE = 16000
#: Silence between two turns of the conversation, seconds of audio.
PAUSE_S = 1.0
#: Audio per ``audio`` message, seconds (what a microphone client sends).
CHUNK_S = 0.1
#: How long a stopped demo waits for its stream to finish before giving up on it.
STOP_GRACE_S = 15.0


class DemoError(StreamerError):
    """The demo cannot run or the server refused it; ``str(err)`` says what to do."""


@dataclass(frozen=True)
class Person:
    """An enrolled person of the demo: a display name, the LibriSpeech reader id, and the
    sample files of the enrolment."""

    name: str
    speaker: str
    enrol_files: tuple[str, ...]


@dataclass(frozen=True)
class Turn:
    """One turn of the conversation: who speaks (``None``: the never-enrolled voice) and
    the sample file."""

    name: str | None
    file: str


#: LibriSpeech test-other readers, with invented names (the readers are anonymous).
#: Enrolled on 13-21 s of speech each.
PEOPLE: tuple[Person, ...] = (
    Person("Alex Morgan", "2033", ("2033-164914-0000.flac", "2033-164914-0001.flac")),
    Person("Sam Rivera", "3005", ("3005-163389-0000.flac", "3005-163389-0001.flac",
                                  "3005-163389-0002.flac")),
    Person("Robin Chen", "533", ("533-1066-0000.flac", "533-1066-0001.flac",
                                 "533-1066-0002.flac")),
    Person("Jordan Blake", "1998", ("1998-15444-0000.flac", "1998-15444-0001.flac")),
)
#: Never enrolled: LibriSpeech train-clean-100 reader 1081.
VISITOR = "1081-125237-0000.flac"
VISITOR_LABEL = "a never-enrolled voice"
#: The conversation, about 61 s of speech plus the pauses: every turn is an utterance
#: the enrolment did not use.
CONVERSATION: tuple[Turn, ...] = (
    Turn("Alex Morgan", "2033-164914-0003.flac"),
    Turn("Sam Rivera", "3005-163389-0008.flac"),
    Turn("Robin Chen", "533-1066-0003.flac"),
    Turn("Jordan Blake", "1998-15444-0006.flac"),
    Turn(None, VISITOR),
    Turn("Alex Morgan", "2033-164914-0009.flac"),
    Turn("Sam Rivera", "3005-163389-0005.flac"),
    Turn("Robin Chen", "533-1066-0008.flac"),
    Turn("Jordan Blake", "1998-15444-0003.flac"),
)


def _read(name: str) -> np.ndarray:
    """A packaged sample as int16 samples at 16 kHz. Raises :class:`DemoError`."""
    path = SAMPLES / name
    try:
        samples, rate = sf.read(str(path), dtype="int16")
    except (OSError, RuntimeError, sf.LibsndfileError) as err:
        raise DemoError(f"the demo's sample {path} cannot be read ({err}); reinstall the "
                        "package (the samples are package data)") from None
    if rate != RATE or samples.ndim != 1:
        raise DemoError(f"the demo's sample {path} is not 16 kHz mono")
    return np.asarray(samples, dtype=np.int16)


def build_conversation(turns: Sequence[Turn] = CONVERSATION, pause_s: float = PAUSE_S
                       ) -> tuple[np.ndarray, list[tuple[float, float, str | None]]]:
    """The stitched conversation as int16 samples at 16 kHz, and its turns as
    ``(start_s, end_s, name)`` in stream seconds. Starts and ends with a pause."""
    pause = np.zeros(int(pause_s * RATE), dtype=np.int16)
    parts = [pause]
    spans: list[tuple[float, float, str | None]] = []
    at = len(pause)
    for turn in turns:
        x = _read(turn.file)
        spans.append((at / RATE, (at + len(x)) / RATE, turn.name))
        parts += [x, pause]
        at += len(x) + len(pause)
    return np.concatenate(parts), spans


def _who(spans: Sequence[tuple[float, float, str | None]], length_s: float,
         start: float, end: float) -> str | None:
    """Who really spoke most of ``[start, end]`` (stream seconds; the conversation repeats
    every ``length_s``): a name, :data:`VISITOR_LABEL` for the never-enrolled voice, or
    ``None`` when no turn overlaps."""
    base = (start // length_s) * length_s
    best, best_overlap = None, 0.0
    for offset in (base - length_s, base, base + length_s):
        for a, b, name in spans:
            overlap = min(end, b + offset) - max(start, a + offset)
            if overlap > best_overlap:
                best, best_overlap = name or VISITOR_LABEL, overlap
    return best


async def enrol(url: str, people: Sequence[Person] = PEOPLE,
                say: Callable[[str], None] = print) -> dict[str, str]:
    """Enrol ``people`` over ``url``/v1/api; their ids by name. Raises :class:`DemoError`
    when the server refuses one."""
    from websockets.asyncio.client import connect

    ids: dict[str, str] = {}
    async with connect(url + "/v1/api", max_size=None, compression=None) as ws:
        for n, person in enumerate(people, 1):
            pcm = np.concatenate([_read(f) for f in person.enrol_files]).astype("<i2")
            await ws.send(wire.encode({
                "type": "enroll", "id": n, "name": person.name,
                "info": {"source": "LibriSpeech", "reader": person.speaker},
                "pcm": pcm.tobytes(), "sample_rate": RATE, "format": "s16le",
            }, wire.Encoding.MSGPACK))
            reply, _ = wire.decode(await ws.recv())
            if reply.get("type") != "enrolled":
                raise DemoError(f"the server refused to enrol {person.name}: "
                                f"{reply.get('code')}: {reply.get('message')}")
            record = reply["person"]
            ids[person.name] = record["id"]
            say(f"enrolled {person.name} ({record['speech_s']:.1f} s of speech, "
                f"LibriSpeech reader {person.speaker})")
    return ids


async def stream_conversation(url: str, audio: np.ndarray, *, speed: float, loops: int,
                              stop: asyncio.Event,
                              on_message: Callable[[dict[str, Any]], None] | None = None,
                              on_pass: Callable[[int], None] | None = None) -> int:
    """Send ``audio`` (int16, 16 kHz) to ``url``/v1/ingest into room ``demo`` as one
    microphone, ``loops`` times (0: until ``stop``), paced at ``speed`` times real time;
    each message from the server goes to ``on_message``. Sends ``end`` when done or when
    ``stop`` is set and returns once the server has closed the stream (its open segment
    finished): the number of passes begun. Raises :class:`DemoError` when the server
    closes the stream with an error."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    step = int(CHUNK_S * RATE)
    errors: list[dict[str, Any]] = []
    passes = 0
    async with connect(url + "/v1/ingest", max_size=None, compression=None) as ws:

        async def reader() -> None:
            async for raw in ws:
                message, _ = wire.decode(raw)
                if message.get("type") == "error":
                    errors.append(message)
                if on_message is not None:
                    on_message(message)

        reading = asyncio.create_task(reader())
        try:
            await ws.send(wire.encode({"type": "hello", "room": ROOM, "mic": MIC,
                                       "sample_rate": RATE, "format": "s16le",
                                       "channels": 1}, wire.Encoding.MSGPACK))
            started = time.monotonic()
            sent = 0  # samples
            seq = 0
            while not stop.is_set() and (loops == 0 or passes < loops) and not reading.done():
                passes += 1
                if on_pass is not None:
                    on_pass(passes)
                for offset in range(0, len(audio), step):
                    if stop.is_set() or reading.done():
                        break
                    chunk = audio[offset : offset + step].astype("<i2")
                    await ws.send(wire.encode({"type": "audio", "seq": seq,
                                               "pcm": chunk.tobytes()},
                                              wire.Encoding.MSGPACK))
                    seq += 1
                    sent += len(chunk)
                    delay = started + sent / RATE / speed - time.monotonic()
                    if delay > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), delay)
            if not reading.done():
                await ws.send(wire.encode({"type": "end"}, wire.Encoding.MSGPACK))
            try:
                await asyncio.wait_for(asyncio.shield(reading), STOP_GRACE_S)
            except TimeoutError:
                raise DemoError(f"the server did not close the demo's stream within "
                                f"{STOP_GRACE_S:g} s of its end") from None
        except ConnectionClosed:
            with contextlib.suppress(TimeoutError, ConnectionClosed):
                await asyncio.wait_for(asyncio.shield(reading), 5.0)
            if not errors:
                raise DemoError("the server closed the demo's stream") from None
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await reading
    if errors:
        e = errors[0]
        raise DemoError(f"the server closed the demo's stream: {e.get('code')}: "
                        f"{e.get('message')}")
    return passes


def _http(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _demo_config(config: Config, host: str) -> Config:
    """``config`` without tokens; refuses a non-loopback host unless allowed."""
    if not is_loopback(host) and not config.server.allow_unauthenticated_remote:
        raise DemoError(f"the demo runs without tokens, so it listens only on this machine: "
                        f"--host {host} is not a loopback address (use 127.0.0.1, or set "
                        "server.allow_unauthenticated_remote: true in a config file)")
    return config.replace(auth=AuthConfig())


def _check_args(args: argparse.Namespace) -> None:
    if getattr(args, "data_dir", None):
        raise DemoError("the demo keeps its data in a temporary folder: leave out --data-dir "
                        "(the sample voices never go into a real data dir)")
    if not args.speed > 0:
        raise DemoError(f"--speed must be > 0 (1 is real time), got {args.speed}")
    if args.loops < 0:
        raise DemoError(f"--loops must be 0 (until Ctrl-C) or more, got {args.loops}")


def run_demo(config: Config, args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C/SIGTERM (or ``args.loops`` passes); the exit code (0).

    ``args`` needs ``host``, ``port``, ``speed``, ``loops`` (and may have ``data_dir``).
    Call it from the main thread (it installs SIGINT/SIGTERM handlers) with no event loop
    running. Raises :class:`DemoError` or :class:`~streamer.errors.ConfigError`.
    """
    _check_args(args)
    config = _demo_config(config, args.host)
    with tempfile.TemporaryDirectory(prefix="streamer-demo-") as tmp:
        asyncio.run(_demo(config, Path(tmp) / "data", args))
    return 0


async def _demo(config: Config, data_dir: Path, args: argparse.Namespace) -> None:
    from .server import StreamerServer

    audio, spans = build_conversation()
    length_s = len(audio) / RATE
    app = App(config, data_dir=data_dir, command="demo")
    app.check_listen(args.host)
    app.load()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            server_cm = StreamerServer(app, args.host, args.port)
            server = await server_cm.__aenter__()
        except OSError as err:
            if app.worker is not None:  # started before the bind failed
                await app.worker.close(1.0)
            raise DemoError(f"cannot listen on {args.host}:{args.port} ({err.strerror or err}); "
                            "is `streamer serve` running there? pass --port 0 for a free "
                            "port") from None
        try:
            http = _http(args.host, server.port)
            app.listening(server.url)
            print(f"listening on {server.url}", flush=True)
            print(f"room display: {http}/room/{ROOM}  (open it in a browser)", flush=True)
            print(f"people page:  {http}/people", flush=True)
            await _run(server.url, audio, spans, length_s, args, stop)
            print("shutting down", flush=True)
        finally:
            await server_cm.__aexit__(None, None, None)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        app.close()


async def _run(url: str, audio: np.ndarray, spans: list[tuple[float, float, str | None]],
               length_s: float, args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Enrol, then stream until done or ``stop``; prints the timeline."""
    def say(line: str) -> None:
        print(line, flush=True)

    say(f"enrolling {len(PEOPLE)} people from the packaged samples (LibriSpeech, CC BY 4.0)")
    await enrol(url, PEOPLE, say)
    if stop.is_set():
        return
    tally = {"named": 0, "right": 0}

    def show(message: dict[str, Any]) -> None:
        if message.get("type") != "speaker" or not message.get("final"):
            return
        person = message.get("person")
        said = person["name"] if person else "unknown speaker"
        truth = _who(spans, length_s, message["start"], message["end"])
        right = said == truth or (person is None and truth == VISITOR_LABEL)
        tally["named"] += 1
        tally["right"] += right
        dist = message.get("distance")
        dist_text = "" if dist is None else f" ({dist:.2f})"
        say(f"[{message['start']:7.2f} - {message['end']:7.2f} s] {said + dist_text:<24} "
            f"spoken by {truth or 'nobody'}{'' if right else '  (wrong)'}")

    def new_pass(n: int) -> None:
        total = "" if args.loops == 0 else f" of {args.loops}"
        say(f"pass {n}{total}: streaming a {length_s:.0f} s conversation into room "
            f"'{ROOM}' at {args.speed:g}x real time (Ctrl-C stops)")

    passes = await stream_conversation(url, audio, speed=args.speed, loops=args.loops,
                                       stop=stop, on_message=show, on_pass=new_pass)
    how = "stopped" if stop.is_set() else "done"
    say(f"{how}: {passes} pass{'' if passes == 1 else 'es'}, {tally['right']} of "
        f"{tally['named']} final decisions named who spoke (\"unknown speaker\" for the "
        "never-enrolled voice)")

