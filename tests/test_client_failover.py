"""Client failover (issue 13): several server addresses; the next one when a server dies.

Pure parts: the address list (``clients.failover.server_urls``), the rotation
(``clients.failover.Failover``) and :class:`~clients.mic.MicStreamer` moving between fake
connections. Against real parts: two real servers (``streamer serve`` subprocesses on
127.0.0.1, separate data dirs holding the same two enrolled people, standalone SQLite,
no cluster), real speech, the clients pointed at both; the first server is killed with
SIGKILL mid-stream and the tests check what arrives from the second: a new ``ready`` for
the microphone within 2 s and its speaker named there, a new snapshot and the new
stream's turns for the display, the rest of the file decided there for
``stream_file``, and the command-line clients saying where they moved.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from test_client_mic import FAKE_SOUNDDEVICE, RATE, SlowSink, utterance
from websockets.exceptions import ConnectionClosed

from clients.display import RoomView, run_display
from clients.failover import Failover, lost_reason, server_urls
from clients.mic import BlockQueue, MicStreamer
from clients.stream_file import stream_file

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "STREAMER_LOG": "WARNING",
       "PYTHONUNBUFFERED": "1",
       "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
SERVE = [sys.executable, "-c", "from streamer.cli import main; main()", "serve", "--port", "0"]


# -- the address list and the rotation -----------------------------------------------------------


def test_server_urls_take_repeats_and_comma_lists() -> None:
    assert server_urls(None) == ["ws://127.0.0.1:8765"]
    assert server_urls("http://a:1/") == ["ws://a:1"]
    assert server_urls(["ws://a:1,b:2", " https://c ", "ws://a:1"]) == [
        "ws://a:1", "ws://b:2", "wss://c"]  # mapped as ws_url does, duplicates dropped
    assert server_urls("a:1,,b:2,") == ["ws://a:1", "ws://b:2"]
    with pytest.raises(ValueError, match="ftp://x"):
        server_urls(["a:1", "ftp://x"])  # the one bad address, in ws_url's words
    with pytest.raises(ValueError, match="names no server"):
        server_urls([" , "])


def test_failover_moves_at_once_and_backs_off_after_a_whole_round() -> None:
    servers = Failover(["a", "b", "c"])
    assert servers.current == "a" and servers.several
    assert [servers.failed() for _ in range(7)] == [None, None, 0, None, None, 1, None]
    assert servers.current == "b"  # cycling: a b c a b c a -> b
    servers.succeeded()  # b accepted: a lost b moves on at once again
    assert servers.failed() is None and servers.current == "c"
    single = Failover(["a"])  # one address: every failure is a round, as one --url was
    assert not single.several
    assert [single.failed() for _ in range(3)] == [0, 1, 2] and single.current == "a"
    single.succeeded()
    assert single.failed() == 0
    with pytest.raises(ValueError):
        Failover([])


def test_lost_reason() -> None:
    assert lost_reason(None) == "closed before the end"
    assert lost_reason(ConnectionRefusedError(111, "Connect call failed")) == "connection refused"
    assert lost_reason(TimeoutError()) == "timed out"
    assert lost_reason(ConnectionClosed(None, None)) == "connection lost"


class Refuse:
    """A ``connect()`` factory: refuses addresses containing ``dead``, else ``sink``."""

    def __init__(self, sink: SlowSink | None = None) -> None:
        self.sink = sink
        self.tried: list[tuple[float, str]] = []

    def __call__(self, url: str, **kwargs: Any) -> SlowSink:
        self.tried.append((time.monotonic(), url))
        if "dead" in url or self.sink is None:
            raise ConnectionRefusedError(111, "Connect call failed")
        return self.sink


async def test_mic_moves_to_the_next_address_without_waiting() -> None:
    queue_ = BlockQueue(10)
    for i in range(3):
        queue_.put_nowait(np.full((4800, 1), i, np.int16))
    queue_.close()
    connect = Refuse(SlowSink(0.0))
    out = io.StringIO()
    streamer = MicStreamer("ws://dead-1:1,ws://live:2", "r", queue_, RATE, connect=connect,
                           out=out)
    await asyncio.wait_for(streamer.run(), 5)
    assert [url for _, url in connect.tried] == ["ws://dead-1:1/v1/ingest", "ws://live:2/v1/ingest"]
    assert streamer.delays == [] and streamer.moves == [("ws://dead-1:1", "ws://live:2")]
    assert ("ws://dead-1:1: [Errno 111] Connect call failed; moving to ws://live:2"
            in out.getvalue())
    sent = connect.sink.sent if connect.sink else []
    assert [m["type"] for m in sent] == ["hello", "audio", "audio", "audio", "end"]


async def test_mic_backs_off_only_after_every_address_failed() -> None:
    queue_ = BlockQueue(10)
    connect = Refuse()  # nothing answers
    streamer = MicStreamer(["ws://dead-a:1", "ws://dead-b:2", "ws://dead-c:3"], "r", queue_,
                           RATE, connect=connect, out=None, backoff_initial_s=0.05,
                           backoff_max_s=0.2)
    run = asyncio.create_task(streamer.run())
    async with asyncio.timeout(5):
        while len(connect.tried) < 9:
            await asyncio.sleep(0.005)
    streamer.stop()
    await asyncio.wait_for(run, 5)
    urls = [url.split("/")[2] for _, url in connect.tried[:9]]
    assert urls == ["dead-a:1", "dead-b:2", "dead-c:3"] * 3
    assert len(streamer.delays) >= 2 and len(streamer.moves) >= 6
    times = [t for t, _ in connect.tried[:9]]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # within a round the next address is tried at once; between rounds: the back-off
    assert max(gaps[0], gaps[1], gaps[3], gaps[4]) < 0.03
    assert min(gaps[2], gaps[5]) >= 0.05 * 0.75


# -- two real servers --------------------------------------------------------------------------


@dataclass
class Served:
    """A ``streamer serve`` subprocess."""

    proc: subprocess.Popen[str]
    url: str
    log: Path
    lines: queue.Queue[str] = field(default_factory=queue.Queue)

    def kill(self) -> float:
        """SIGKILL (``kill -9``): no close frame, no final events; returns the time."""
        self.proc.kill()
        return time.monotonic()


@contextmanager
def serve(tmp_path: Path, name: str, data: Path) -> Iterator[Served]:
    """``streamer serve --port 0`` on a copy of ``data`` (killed on exit)."""
    data_dir = tmp_path / f"data-{name}"
    shutil.copytree(data, data_dir)
    log = tmp_path / f"serve-{name}.log"
    with log.open("w") as err:
        proc = subprocess.Popen([*SERVE, "--data-dir", str(data_dir)], cwd=tmp_path, env=ENV,
                                stdout=subprocess.PIPE, stderr=err, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "the server did not print its address"
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                assert proc.poll() is None, log.read_text()
                continue
            if line.startswith("listening on ws://"):
                break
        yield Served(proc, line.split()[-1], log, lines)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture
def people_data(client_people: dict[str, Any]) -> Path:
    """A data dir with Ada Lovelace and Grace Hopper enrolled (copied per server)."""
    return Path(client_people["data_dir"])


def finals(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == "speaker" and m["final"]]


async def test_mic_and_display_move_to_the_second_server_when_the_first_is_killed(
        tmp_path: Path, people_data: Path, client_people: dict[str, Any]) -> None:
    with serve(tmp_path, "a", people_data) as a, serve(tmp_path, "b", people_data) as b:
        urls = [a.url, b.url]
        view = RoomView("board")
        statuses: list[tuple[float, str]] = []
        stop = asyncio.Event()

        def on_update(v: RoomView) -> None:
            if not statuses or statuses[-1][1] != v.status:
                statuses.append((time.monotonic(), v.status))

        display = asyncio.create_task(run_display(urls, "board", view=view,
                                                  on_update=on_update, stop=stop))
        async with asyncio.timeout(10):
            while view.status != f"connected to {a.url}":
                await asyncio.sleep(0.01)

        source = utterance(client_people, 6, 7, speed=1, close_at_end=False)  # 15 s, endless
        blocks = BlockQueue(100)
        out = io.StringIO()
        streamer = MicStreamer(urls, "board", blocks, RATE, mic="ceiling", out=out)
        blocks.bind(asyncio.get_running_loop())
        named = {1: asyncio.Event(), 2: asyncio.Event()}  # per connection
        ready_at: list[float] = []

        def on_message(m: dict[str, Any]) -> None:
            if m["type"] == "ready":
                ready_at.append(time.monotonic())
            if m["type"] == "speaker" and m["person"] and m["person"]["name"] == "Ada Lovelace":
                if streamer.connections in named:
                    named[streamer.connections].set()

        streamer.on_message = on_message
        source.start(blocks)
        run = asyncio.create_task(streamer.run())
        try:
            await asyncio.wait_for(named[1].wait(), 15)
            killed = a.kill()
            async with asyncio.timeout(5):
                while view.status != f"connected to {b.url}":
                    await asyncio.sleep(0.01)
            display_s = time.monotonic() - killed
            await asyncio.wait_for(named[2].wait(), 10)
            streamer.stop()  # end: b closes the segment (a final event), bye
            await asyncio.wait_for(run, 10)
            readies = [m for m in streamer.messages if m["type"] == "ready"]
            assert len(readies) == 2
            second = readies[1]["stream"]
            # the display, now on b, gets the final turn of the mic's stream on b
            async with asyncio.timeout(10):
                while not any(t.stream == second for t in view.turns):
                    await asyncio.sleep(0.02)
        finally:
            source.stop()
            stop.set()
            await asyncio.wait_for(display, 5)
    mic_s = ready_at[1] - killed
    print(f"\nafter kill -9 of the first server: the mic streamed on the second in "
          f"{mic_s:.2f} s, the display had its snapshot there in {display_s:.2f} s")
    # the mic: at once to b (no back-off), a new hello answered by a new stream there
    assert streamer.moves == [(a.url, b.url)] and streamer.delays == []
    assert mic_s < 2.0
    assert streamer.url == f"{b.url}/v1/ingest"
    assert readies[0]["stream"] != second
    assert f"moving to {b.url}" in out.getvalue()
    # the audio captured during the switch was sent to b, none dropped; b named Ada
    assert blocks.dropped == 0
    after = streamer.messages[streamer.messages.index(readies[1]):]
    assert [m["person"] and m["person"]["name"] for m in finals(after)][-1] == "Ada Lovelace"
    bye = streamer.messages[-1]
    assert bye["type"] == "bye" and bye["stats"]["audio_s"] > 0
    # the display: moved at once, said where, and follows b's room
    texts = [s for _, s in statuses]
    moving = next(s for s in texts if s.startswith("moving to"))
    assert moving.startswith(f"moving to {b.url} ({a.url}: closed ")
    assert texts[-1] == f"connected to {b.url}" and display_s < 2.0
    assert not any(s.startswith("disconnected") for s in texts)  # no back-off
    turn = next(t for t in view.turns if t.stream == second)
    assert turn.name == "Ada Lovelace" and turn.mic == "ceiling"


async def test_stream_file_goes_on_on_the_second_server_from_the_last_decided_segment(
        tmp_path: Path, people_data: Path, client_people: dict[str, Any]) -> None:
    # three of Ada's held-out utterances with 1.5 s pauses: several segments
    parts = [utterance(client_people, i).samples[:, 0] for i in (2, 3, 4)]
    pause = np.zeros(int(1.5 * RATE), np.int16)
    talk = np.concatenate([parts[0], pause, parts[1], pause, parts[2]])
    path = tmp_path / "talk.wav"
    sf.write(str(path), talk, RATE, subtype="PCM_16")
    duration_s = len(talk) / RATE
    killed: list[float] = []
    arrived: list[tuple[float, dict[str, Any]]] = []
    moves: list[tuple[str, str, Exception | None, float]] = []

    with serve(tmp_path, "a", people_data) as a, serve(tmp_path, "b", people_data) as b:

        def on_message(m: dict[str, Any], _: float) -> None:
            arrived.append((time.monotonic(), m))
            decided = [x for _, x in arrived if x["type"] == "speaker" and x["final"]]
            # kill a while it analyses a segment, after it decided an earlier one
            if not killed and decided and m["type"] == "speech_start" \
                    and m["segment"] > decided[-1]["segment"]:
                killed.append(a.kill())

        def on_failover(failed: str, to: str, error: Exception | None, resume_s: float) -> None:
            moves.append((failed, to, error, resume_s))

        messages = await asyncio.wait_for(
            stream_file([a.url, b.url], path, "board", speed=2, on_message=on_message,
                        on_failover=on_failover), 60)
    assert killed, "the first server was never killed"
    readies = [i for i, m in enumerate(messages) if m["type"] == "ready"]
    assert len(readies) == 2
    on_a, on_b = messages[: readies[1]], messages[readies[1]:]
    # moved once, at once, to b; it resumed at the end of a's last decided segment
    assert len(moves) == 1
    failed, to, error, resume_s = moves[0]
    assert (failed, to) == (a.url, b.url) and isinstance(error, ConnectionClosed)
    assert resume_s == pytest.approx(finals(on_a)[-1]["end"], abs=1 / RATE)
    cut = [m for m in on_a if m["type"] == "speech_start"][-1]["segment"]
    assert cut not in {m["segment"] for m in finals(on_a)}  # a died before deciding it
    ready_s = next(t for t, m in arrived if m is messages[readies[1]]) - killed[0]
    assert ready_s < 2.0
    # b got everything from the resume point (the cut segment again, and the rest)
    bye = messages[-1]
    assert bye["type"] == "bye" and on_b[-1] is bye
    # (the server counts whole 30 ms frames, as in test_client_mic)
    assert bye["stats"]["audio_s"] == pytest.approx(duration_s - resume_s, abs=0.035)
    assert bye["stats"]["seq_gaps"] == 0
    names = [m["person"] and m["person"]["name"] for m in finals(on_b)]
    assert len(names) >= 2 and names.count("Ada Lovelace") >= len(names) - 1, names
    # in file time, b's segments start after the resume point and reach the last words
    assert resume_s + finals(on_b)[-1]["end"] > duration_s - 1.5
    print(f"\nkilled during segment {cut}; resumed on the second server from "
          f"{resume_s:.2f} s of {duration_s:.2f} s, ready {ready_s:.2f} s after the kill; "
          f"finals there: {names}")


# -- the command-line clients ---------------------------------------------------------------------


class Client:
    """A client script in a subprocess whose stdout and stderr lines are collected."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out: list[str] = []
        self.err: list[str] = []
        assert proc.stdout is not None and proc.stderr is not None
        self._tasks = [asyncio.create_task(self._collect(proc.stdout, self.out)),
                       asyncio.create_task(self._collect(proc.stderr, self.err))]

    @classmethod
    async def start(cls, script: str, *args: str, env: dict[str, str] | None = None) -> Client:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(REPO / "clients" / script), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env or ENV)
        return cls(proc)

    @staticmethod
    async def _collect(stream: asyncio.StreamReader, into: list[str]) -> None:
        async for raw in stream:
            into.append(raw.decode())

    async def wait_for(self, *needles: str, timeout: float, after: int = 0) -> int:
        """The index of the first stdout line from ``after`` on holding all ``needles``."""
        async with asyncio.timeout(timeout):
            while True:
                for i, line in enumerate(self.out[after:], after):
                    if all(needle in line for needle in needles):
                        return i
                if self.proc.returncode is not None:
                    await asyncio.gather(*self._tasks)
                    raise AssertionError(f"exited before {needles!r}: {self.text()}")
                await asyncio.sleep(0.02)

    async def finish(self, sig: int | None = signal.SIGINT, timeout: float = 30) -> int:
        if sig is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.gather(*self._tasks)
        return code

    def text(self) -> str:
        return "".join(self.out) + "--- stderr ---\n" + "".join(self.err)


async def test_command_line_clients_take_several_addresses_and_move_on(
        tmp_path: Path, people_data: Path, client_people: dict[str, Any]) -> None:
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "sounddevice.py").write_text(FAKE_SOUNDDEVICE)
    mic_env = {**ENV, "PYTHONPATH": os.pathsep.join([str(fake), ENV["PYTHONPATH"]]),
               "FAKE_SD_FILE": str(client_people["files"]["ada"][5])}
    recording = str(client_people["files"]["ada"][8])
    with serve(tmp_path, "a", people_data) as a, serve(tmp_path, "b", people_data) as b:
        http_a, host_b = a.url.replace("ws://", "http://"), b.url.removeprefix("ws://")
        # every way of giving several addresses: repeated, comma-separated, http://, bare
        display = await Client.start("display.py", "--room", "board", "--url", a.url,
                                     "--url", host_b)
        mic = await Client.start("mic.py", "--room", "board", "--mic", "desk",
                                 "--url", f"{http_a},{host_b}", env=mic_env)
        clients = [display, mic]
        try:
            await display.wait_for(f"board: connected to {a.url}", timeout=15)
            await mic.wait_for("connected: stream s_", timeout=15)
            files = await Client.start("stream_file.py", recording, "--room", "board",
                                       "--mic", "file", "--speed", "1",
                                       "--url", f"{a.url},{b.url}")
            clients.append(files)
            await files.wait_for("speech starts", timeout=15)
            killed = a.kill()
            mic_moved = await mic.wait_for(f"moving to {b.url}", timeout=5)
            await mic.wait_for("connected: stream s_", timeout=5, after=mic_moved)
            mic_s = time.monotonic() - killed
            moved = await display.wait_for(f"board: moving to {b.url}", timeout=5)
            await display.wait_for(f"board: connected to {b.url}", timeout=5, after=moved)
            assert await files.finish(None, 60) == 0, files.text()
            await display.wait_for("board: turn Ada Lovelace", "[file]", timeout=10,
                                   after=moved)
            # a one-shot state from the first address that answers
            once = await Client.start("display.py", "--room", "board", "--once-json",
                                      "--url", f"{a.url},{b.url}")
            assert await once.finish(None) == 0, once.text()
            assert await mic.finish() == 0, mic.text()  # Ctrl-C: end, bye from b
            assert await display.finish() == 0, display.text()
        finally:
            for client in clients:
                if client.proc.returncode is None:
                    client.proc.kill()
                    await client.proc.wait()
    print(f"\nmic.py streamed on the second server {mic_s:.2f} s after the kill\n"
          + mic.text() + files.text())
    assert mic_s < 3.0  # 2 s, plus reading the subprocess's lines
    assert mic.out[mic_moved].startswith(f"{a.url}: ")
    assert "bye: " in "".join(mic.out[mic_moved:])
    # stream_file: two streams, the move on stderr, the end of the file on b
    assert sum(line.startswith("ready: ") for line in files.out) == 2
    assert files.out[-1].startswith("bye: ")
    move = [line for line in files.err if "moving to" in line]
    assert len(move) == 1 and move[0].startswith(f"{a.url}: "), files.err
    assert f"; moving to {b.url}, from " in move[0] and move[0].endswith(" s of the file\n")
    assert any(f"{a.url}: " in line and f"trying {b.url}" in line for line in once.err)
    state = json.loads(once.out[-1])
    assert state["room"] == "board" and "Ada Lovelace" in {t["name"] for t in state["turns"]}
