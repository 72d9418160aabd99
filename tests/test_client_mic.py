"""clients/mic.py: the streamer behind the capture layer, fed recorded speech.

No sound card here: :class:`RecordedSource` plays a real LibriSpeech utterance
(resampled to 48 kHz, declared as 48000 in ``hello``) from its own thread, as the
PortAudio callback would. The speakers are enrolled once per session over /v1/api
(``client_people`` in conftest.py); every server test starts its own server on a copy.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

import numpy as np
import pytest
from server_support import make_config, running_server, shared_embedder, shared_streamer

from clients.mic import (
    SUPPORTED_RATES,
    BlockQueue,
    FatalError,
    MicStreamer,
    RecordedSource,
    backoff_delay,
    choose_rate,
    describe,
)
from streamer import wire
from streamer.app import App
from streamer.server import StreamerServer

REPO = Path(__file__).resolve().parents[1]
MIC = REPO / "clients" / "mic.py"
RATE = 48000


@asynccontextmanager
async def server_on_port(tmp_path: Path, data_dir: Path, port: int,
                         **sections: Any) -> AsyncIterator[StreamerServer]:
    """Like ``running_server`` but on a given port (0: a free one)."""
    config = make_config(**sections)
    app = App(config, data_dir=data_dir)
    app.embedder = shared_embedder(config)
    app.streamer = shared_streamer(config)
    app.load()
    try:
        async with StreamerServer(app, "127.0.0.1", port) as server:
            yield server
    finally:
        app.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def data_dir(client_people: dict[str, Any], tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(client_people["data_dir"], target)
    return target


def utterance(client_people: dict[str, Any], *indices: int, **kwargs: Any) -> RecordedSource:
    """Ada's LibriSpeech utterances (never the enrolment ones, 0 and 1) at 48 kHz."""
    assert all(i >= 2 for i in indices)
    parts = [RecordedSource.from_file(client_people["files"]["ada"][i], RATE) for i in indices]
    samples = np.concatenate([p.samples for p in parts])
    return RecordedSource(samples, RATE, **kwargs)


def names(messages: list[dict[str, Any]], final: bool | None = None) -> list[str | None]:
    return [m["person"]["name"] if m["person"] else None for m in messages
            if m["type"] == "speaker" and (final is None or m["final"] == final)]


# -- pure parts ------------------------------------------------------------------------------------


def test_choose_rate() -> None:
    assert choose_rate(48000.0) == 48000
    assert choose_rate(44100.0) == 44100
    assert choose_rate(96000.0) == 48000
    assert choose_rate(11025.0) == 8000  # nearest listed
    assert choose_rate(96000.0, lambda r: r <= 16000) == 16000
    assert choose_rate(48000.0, lambda r: r != 48000) == 44100
    assert choose_rate(48000.0, lambda r: False) is None
    assert all(r in SUPPORTED_RATES for r in (choose_rate(x) for x in (7000, 23000, 50000)))


def test_backoff_is_exponential_bounded_and_jittered() -> None:
    rng = random.Random(1)
    delays = [[backoff_delay(a, rng=rng) for a in range(10)] for _ in range(20)]
    for row in delays:
        assert all(0.5 <= d <= 10.0 for d in row)
        assert row[-1] >= 7.5 and row[0] <= 0.625
    assert len({row[3] for row in delays}) > 1  # jitter


def test_describe() -> None:
    ada = {"id": "p_1", "name": "Ada Lovelace"}
    assert describe({"type": "speaker", "final": False, "person": ada, "distance": 0.6153,
                     "start": 1, "end": 2}) == ("Ada Lovelace speaking (0.62)", False)
    assert describe({"type": "speaker", "final": False, "person": None, "distance": 1.3,
                     "start": 1, "end": 2}) == ("unknown speaker", False)
    assert describe({"type": "speaker", "final": True, "person": ada, "distance": 0.58,
                     "start": 12.3, "end": 15.0}) == ("[12.3-15.0 s] Ada Lovelace (0.58)", True)
    assert describe({"type": "speech_start", "t": 1.0}) == ("…", False)
    assert describe({"type": "snapshot"}) is None


# -- the bounded queue ------------------------------------------------------------------------------


async def test_queue_drops_oldest_and_never_blocks_the_producer() -> None:
    queue = BlockQueue(5, asyncio.get_running_loop())
    blocks = [np.full((480, 1), i, np.int16) for i in range(40)]
    took: list[float] = []

    def producer() -> None:  # an audio callback thread
        for block in blocks:
            t0 = time.perf_counter()
            queue.push_threadsafe(block)
            took.append(time.perf_counter() - t0)

    thread = threading.Thread(target=producer)
    thread.start()
    await asyncio.to_thread(thread.join)  # the consumer is stalled meanwhile
    await asyncio.sleep(0)  # let the scheduled puts run
    assert max(took) < 0.05
    assert len(queue) == 5 and queue.dropped == 35 and queue.pushed == 40
    got = []
    for _ in range(5):
        block = await queue.get()
        assert block is not None
        got.append(int(block[0, 0]))
    assert got == [35, 36, 37, 38, 39]  # the newest survive
    queue.close()
    assert await queue.get() is None


class SlowSink:
    """A fake ``/v1/ingest`` connection: answers ``ready``, takes ``send_s`` per message."""

    def __init__(self, send_s: float) -> None:
        self.send_s = send_s
        self.sent: list[dict[str, Any]] = []
        self._replies: asyncio.Queue[bytes | str | None] = asyncio.Queue()
        self.close_code: int | None = None
        self.close_reason = ""

    def __call__(self, url: str, **kwargs: Any) -> Self:  # the connect() factory
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, raw: bytes | str) -> None:
        message, _ = wire.decode(raw)
        self.sent.append(message)
        if message["type"] == "hello":
            await self._replies.put(wire.encode(wire.ready("s_fake", 16000, "m"),
                                                wire.Encoding.MSGPACK))
        elif message["type"] == "end":
            await self._replies.put(wire.encode(wire.bye({}), wire.Encoding.MSGPACK))
            await self._replies.put(None)
        else:
            await asyncio.sleep(self.send_s)

    async def recv(self) -> bytes | str:
        raw = await self._replies.get()
        assert raw is not None
        return raw

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes | str:
        raw = await self._replies.get()
        if raw is None:
            raise StopAsyncIteration
        return raw

    async def close(self) -> None:
        self.close_code = self.close_code or 1000


async def test_slow_sink_drops_oldest_blocks_without_blocking_capture() -> None:
    # 4 s of audio pushed in 40 blocks at 10x real time (a block every 10 ms) into a
    # 4-block queue; the sink takes 50 ms per block, so most blocks are dropped (the
    # oldest first); the capture thread never waits.
    x = np.arange(RATE * 4, dtype=np.int64) % 30000
    source = RecordedSource(x.astype(np.int16), RATE, block_ms=100, speed=10)
    queue = BlockQueue(4, asyncio.get_running_loop())
    sink = SlowSink(0.05)
    streamer = MicStreamer("ws://sink", "r", queue, RATE, connect=sink, out=None)
    source.start(queue)
    started = time.monotonic()
    run = asyncio.create_task(streamer.run())
    await asyncio.wait_for(asyncio.to_thread(source.finished.wait), 5)
    capture_s = time.monotonic() - started
    await asyncio.wait_for(run, 10)
    audio = [m for m in sink.sent if m["type"] == "audio"]
    assert sink.sent[0]["type"] == "hello" and sink.sent[0]["sample_rate"] == RATE
    assert sink.sent[-1]["type"] == "end"
    assert [m["seq"] for m in audio] == list(range(len(audio)))
    assert queue.dropped > 0 and len(audio) + queue.dropped == queue.pushed
    assert capture_s < 1.0 and max(source.push_seconds) < 0.05
    # the last block captured is the last sent (the oldest ones were dropped)
    last = np.frombuffer(audio[-1]["pcm"], np.int16)
    assert np.array_equal(last, source.samples[-len(last):, 0])


# -- against a real server ------------------------------------------------------------------------


async def test_mic_streams_recorded_speech_and_names_the_speaker(
        tmp_path: Path, data_dir: Path, client_people: dict[str, Any]) -> None:
    source = utterance(client_people, 3, speed=4)
    queue = BlockQueue(50)
    out = io.StringIO()
    async with running_server(tmp_path, data_dir=data_dir) as server:
        streamer = MicStreamer(server.url, "board", queue, RATE, mic="ceiling", out=out,
                               tty=True)
        queue.bind(asyncio.get_running_loop())
        source.start(queue)
        await asyncio.wait_for(streamer.run(), 20)
    kinds = [m["type"] for m in streamer.messages]
    assert kinds[0] == "ready" and kinds[-1] == "bye"
    assert queue.dropped == 0 and streamer.connections == 1
    assert streamer.sent_blocks == source.pushed == -(-len(source.samples) // source.blocksize)
    assert streamer.messages[-1]["stats"]["audio_s"] == pytest.approx(source.duration_s,
                                                                       abs=0.035)
    # one utterance: one segment or a few (pauses over the 400 ms hang-over), all Ada's
    finals = names(streamer.messages, final=True)
    assert finals and set(finals) == {"Ada Lovelace"}
    assert "Ada Lovelace" in names(streamer.messages, final=False)
    text = out.getvalue()
    assert "\rAda Lovelace speaking (0." in text.replace("\x1b[K", "")  # the status line
    final = next(m for m in streamer.messages if m["type"] == "speaker" and m["final"])
    assert f"[{final['start']:.1f}-{final['end']:.1f} s] Ada Lovelace (" in text


async def test_mic_waits_for_a_server_that_is_not_up_yet(
        tmp_path: Path, data_dir: Path, client_people: dict[str, Any]) -> None:
    port = free_port()
    source = utterance(client_people, 4, speed=2)  # 4.5 s of audio in 2.2 s
    queue = BlockQueue(200)
    out = io.StringIO()
    streamer = MicStreamer(f"ws://127.0.0.1:{port}", "board", queue, RATE, out=out)
    queue.bind(asyncio.get_running_loop())
    source.start(queue)
    run = asyncio.create_task(streamer.run())
    await asyncio.sleep(1.0)
    assert streamer.connections == 0 and streamer.attempts >= 2
    started = time.monotonic()
    async with server_on_port(tmp_path, data_dir, port):
        async with asyncio.timeout(5):
            while not streamer.connections:
                await asyncio.sleep(0.02)
        connect_s = time.monotonic() - started
        await asyncio.wait_for(run, 20)
    print(f"\nconnected {connect_s:.2f} s after the server started; "
          f"back-off delays {[round(d, 2) for d in streamer.delays]}")
    # within the back-off: the wait that spanned the server's start, plus connecting
    assert connect_s < streamer.delays[-1] + 1.0 and streamer.delays[-1] <= 2.5
    assert "disconnected" in out.getvalue()
    assert streamer.messages[0]["type"] == "ready" and streamer.messages[-1]["type"] == "bye"
    # nothing was lost: the audio captured while the server was down was queued
    assert queue.dropped == 0 and streamer.sent_blocks == source.pushed
    assert streamer.messages[-1]["stats"]["audio_s"] == pytest.approx(source.duration_s,
                                                                       abs=0.035)
    assert names(streamer.messages, final=True) == ["Ada Lovelace"]


async def test_mic_reconnects_after_a_server_shutdown(
        tmp_path: Path, data_dir: Path, client_people: dict[str, Any]) -> None:
    source = utterance(client_people, 6, 7, speed=3, close_at_end=False)  # 15 s, endless
    queue = BlockQueue(100)
    streamer = MicStreamer("ws://unset", "board", queue, RATE, out=None)
    queue.bind(asyncio.get_running_loop())
    named = {1: asyncio.Event(), 2: asyncio.Event()}  # per connection

    def on_message(m: dict[str, Any]) -> None:
        if m["type"] == "speaker" and m["person"] and m["person"]["name"] == "Ada Lovelace":
            named[streamer.connections].set()

    streamer.on_message = on_message
    async with server_on_port(tmp_path, data_dir, 0) as first:
        port = first.port
        streamer.url = f"{first.url}/v1/ingest"
        source.start(queue)
        run = asyncio.create_task(streamer.run())
        await asyncio.wait_for(named[1].wait(), 10)
    first_stream = streamer.messages[0]["stream"]
    stopped = time.monotonic()
    async with server_on_port(tmp_path, data_dir, port):
        await asyncio.wait_for(named[2].wait(), 10)
        reconnect_s = time.monotonic() - stopped
        streamer.stop()
        await asyncio.wait_for(run, 10)
    source.stop()
    print(f"\nnamed again {reconnect_s:.2f} s after the first server stopped "
          f"(back-off {[round(d, 2) for d in streamer.delays]})")
    readies = [m for m in streamer.messages if m["type"] == "ready"]
    assert len(readies) == 2 and readies[1]["stream"] != first_stream
    assert streamer.connections == 2 and len(streamer.delays) >= 1
    assert streamer.messages[-1]["type"] == "bye"  # stop(): end sent, bye received
    # each connection's segment ends with a final naming Ada (the server finishes the
    # open segment on shutdown, and after ``end``); early 1 s guesses may be unknown
    finals = [m for m in streamer.messages if m["type"] == "speaker" and m["final"]]
    assert [m["person"] and m["person"]["name"] for m in finals] == ["Ada Lovelace"] * 2


async def test_mic_gives_up_when_refused(tmp_path: Path, data_dir: Path) -> None:
    from streamer.config import AuthConfig, AuthToken

    config = AuthConfig((AuthToken("display-only-token", ("display",)),))
    queue = BlockQueue(10)
    queue.put_nowait(np.zeros((4800, 1), np.int16))
    async with running_server(tmp_path, data_dir=data_dir, auth=config) as server:
        for token in (None, "display-only-token"):
            streamer = MicStreamer(server.url, "board", queue, RATE, token=token, out=None)
            with pytest.raises(FatalError, match="1008"):
                await asyncio.wait_for(streamer.run(), 5)
            assert streamer.attempts == 1


# -- the command line ------------------------------------------------------------------------------

#: A stand-in for the ``sounddevice`` package (no sound card here): one input device whose
#: native rate, 96 kHz, the protocol does not list and which supports 44.1 and 48 kHz
#: only; its stream plays ``FAKE_SD_FILE`` in a loop from a thread, at real time.
FAKE_SOUNDDEVICE = """
import os, threading, time
import numpy as np
from streamer.audio import read_file, resample

class PortAudioError(Exception):
    pass

class _Default:
    device = [0, -1]

default = _Default()
_DEVICE = {"name": "Fake Mic", "index": 0, "max_input_channels": 2,
           "max_output_channels": 0, "default_samplerate": 96000.0}

def query_devices(device=None, kind=None):
    return [_DEVICE] if device is None and kind is None else _DEVICE

def check_input_settings(device=None, channels=None, dtype=None, samplerate=None, **kw):
    if samplerate not in (44100, 48000):
        raise PortAudioError("Invalid sample rate")

class _Status:
    input_overflow = False
    def __bool__(self):
        return False

class InputStream:
    def __init__(self, device=None, samplerate=None, channels=1, dtype=None, blocksize=None,
                 callback=None, **kw):
        x = resample(read_file(os.environ["FAKE_SD_FILE"]), 16000, int(samplerate))
        x = (np.clip(x, -1, 1) * 32767).astype(np.int16)
        self.x = np.repeat(x[:, None], channels, axis=1)
        self.rate, self.blocksize, self.callback = samplerate, blocksize, callback
        self.stopped = threading.Event()

    def start(self):
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        t0, n = time.monotonic(), 0
        while not self.stopped.is_set():
            i = n % (len(self.x) - self.blocksize)
            self.callback(self.x[i : i + self.blocksize], self.blocksize, None, _Status())
            n += self.blocksize
            self.stopped.wait(max(0.0, t0 + n / self.rate - time.monotonic()))

    def abort(self):
        self.stopped.set()

    def close(self):
        self.stopped.set()
"""


async def test_mic_command_streams_a_device_and_stops_cleanly_on_ctrl_c(
        tmp_path: Path, data_dir: Path, client_people: dict[str, Any]) -> None:
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "sounddevice.py").write_text(FAKE_SOUNDDEVICE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(REPO)]),
           "PYTHONUNBUFFERED": "1", "FAKE_SD_FILE": str(client_people["files"]["ada"][5])}
    lines: list[str] = []
    async with running_server(tmp_path, data_dir=data_dir) as server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(MIC), "--room", "board", "--url", server.url, "--mic", "desk",
            "--channels", "2", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=env)
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(15):
                while not any("Ada Lovelace speaking" in line for line in lines):
                    raw = await proc.stdout.readline()
                    assert raw, f"mic.py exited: {lines}"
                    lines.append(raw.decode())
        finally:
            proc.send_signal(signal.SIGINT)  # Ctrl-C: end, bye, exit 0
            out, err = await asyncio.wait_for(proc.communicate(), 10)
    text = "".join(lines) + out.decode()
    print("\n" + text)
    assert proc.returncode == 0, err.decode()
    assert "capturing 'Fake Mic' at 48000 Hz, 2 channel(s)" in text  # 96 kHz is not listed
    assert "connected: stream s_" in text
    assert "] Ada Lovelace (0." in text  # the final of the segment cut by Ctrl-C
    assert "bye: 1 segments" in text


def test_list_devices_runs_without_a_sound_card() -> None:
    proc = subprocess.run([sys.executable, str(MIC), "--list-devices"], capture_output=True,
                          text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    assert out == "no input devices" or out.splitlines()[0].split()[:2] == ["index", "name"]


def test_help() -> None:
    proc = subprocess.run([sys.executable, str(MIC), "--help"], capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode == 0
    for option in ("--room", "--url", "--device", "--mic", "--token", "--list-devices",
                   "--block-ms", "--max-queue-blocks"):
        assert option in proc.stdout
