"""End to end: /metrics, /healthz, SIGTERM, slow displays and broken peers (issue 6).

Real server (in-process on 127.0.0.1:0, or a real ``python -m streamer serve``
subprocess for SIGTERM), the real CAM++ model, real LibriSpeech speech streamed at real
time by websocket microphones. Peers that misbehave at the TCP level (a display that
never reads, a client that never answers pings) are raw sockets that do the websocket
handshake by hand and then stop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_support import (
    LIBRI_DIR,
    api_call,
    manifest,
    pcm_fields,
    read_flac,
    running_server,
    to_s16le,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamer import wire
from streamer.config import REPO_ROOT

pytestmark = pytest.mark.slow

RATE = 16000
MSGPACK = wire.Encoding.MSGPACK
CHUNK_S = 0.1
SPEAKERS = ["1688", "2033", "3005", "533"]


# -- helpers -------------------------------------------------------------------------------


def speech(speaker: str, seconds: float = 9.0) -> np.ndarray:
    """``seconds`` of a LibriSpeech speaker: two utterances' starts with a pause between
    (so a stream holds at least two segments)."""
    paths = [p for p, s, _ in manifest(LIBRI_DIR) if s == speaker][:2]
    half = int(seconds / 2 * RATE)
    parts = [read_flac(paths[0])[:half], np.zeros(RATE, np.float32), read_flac(paths[1])[:half]]
    return np.concatenate(parts)


class Mic:
    """A websocket microphone streaming at real time; records what it sent and got."""

    def __init__(self, url: str, room: str, name: str, samples: np.ndarray) -> None:
        self.url, self.room, self.name, self.samples = url, room, name, samples
        #: (stream time reached by a chunk, monotonic time it was sent)
        self.sent: list[tuple[float, float]] = []
        #: (message, monotonic time it arrived)
        self.got: list[tuple[dict[str, Any], float]] = []
        self.close_code: int | None = None
        self.speaking = asyncio.Event()  # a provisional guess arrived: a segment is open

    async def run(self, send_end: bool = True) -> None:
        async with connect(f"{self.url}/v1/ingest", max_size=None, compression=None) as ws:
            await ws.send(wire.encode({"type": "hello", "room": self.room, "mic": self.name},
                                      MSGPACK))
            assert wire.decode(await ws.recv())[0]["type"] == "ready"
            reader = asyncio.create_task(self._read(ws))
            pcm = to_s16le(self.samples)
            step = int(CHUNK_S * RATE) * 2
            started = time.monotonic()
            try:
                for seq, offset in enumerate(range(0, len(pcm), step)):
                    chunk = pcm[offset:offset + step]
                    await ws.send(wire.encode({"type": "audio", "seq": seq, "pcm": chunk},
                                              MSGPACK))
                    reached = (offset + len(chunk)) / 2 / RATE
                    self.sent.append((reached, time.monotonic()))
                    await asyncio.sleep(max(0.0, started + reached - time.monotonic()))
                if send_end:
                    await ws.send(wire.encode({"type": "end"}, MSGPACK))
            except ConnectionClosed:
                pass  # the server closed the stream (shutdown): the reader has the rest
            await reader
            self.close_code = ws.close_code

    async def _read(self, ws: Any) -> None:
        try:
            async for raw in ws:
                message = wire.decode(raw)[0]
                self.got.append((message, time.monotonic()))
                if message["type"] == "speaker" and not message["final"]:
                    self.speaking.set()
        except ConnectionClosed:
            pass

    def finals(self) -> list[tuple[dict[str, Any], float]]:
        return [(m, t) for m, t in self.got if m["type"] == "speaker" and m["final"]]

    def lags(self) -> list[float]:
        """Per final: arrival here minus the sending of the chunk that held its end."""
        out = []
        for event, arrived in self.finals():
            sent = next((t for reached, t in self.sent if reached >= event["end"] - 1e-6),
                        self.sent[-1][1])
            out.append(arrived - sent)
        return out


def http_get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read().decode()


async def scrape(ws_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics, check the format strictly, return {(sample, labels): value}."""
    status, ctype, body = await asyncio.to_thread(
        http_get, ws_url.replace("ws://", "http://") + "/metrics")
    assert status == 200 and ctype == "text/plain; version=0.0.4"
    lines = body.splitlines()
    assert body.endswith("\n") and all(lines), "no blank lines"
    typed: set[str] = set()
    for i, line in enumerate(lines):
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:]
            assert kind in ("counter", "gauge", "histogram"), line
            assert lines[i - 1].startswith(f"# HELP {name} "), "HELP before TYPE"
            typed.add(name)
        elif not line.startswith("#"):
            assert line.startswith("streamer_"), line
            assert any(line.split("{")[0].split()[0].startswith(n) for n in typed), line
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: dict[Any, float], name: str, **labels: str) -> float:
    return metrics[(name, tuple(sorted(labels.items())))]


def raw_websocket(port: int, path: str, rcvbuf: int | None = None) -> tuple[socket.socket, bytes]:
    """A blocking socket after a hand-made websocket handshake; returns it and any bytes
    already read past the response headers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connect, so the advertised window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(1)  # byte by byte: leave the frames after it in the kernel
        assert more, "closed during the handshake"
        data += more
    assert data.startswith(b"HTTP/1.1 101"), data[:100]
    return sock, b""


def read_frames(sock: socket.socket, buf: bytes, timeout_s: float) -> tuple[list[tuple[int, bytes]], str]:
    """Read server frames (unmasked) until the connection ends or ``timeout_s``.

    Returns ``[(opcode, payload)]`` and how it ended: "eof", "reset" or "timeout"."""
    frames: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout_s
    ended = "timeout"
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            more = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            ended = "reset"
            break
        if not more:
            ended = "eof"
            break
        buf += more
        while len(buf) >= 2:
            opcode, length, offset = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    break
                length, offset = struct.unpack("!H", buf[2:4])[0], 4
            elif length == 127:
                if len(buf) < 10:
                    break
                length, offset = struct.unpack("!Q", buf[2:10])[0], 10
            if len(buf) < offset + length:
                break
            frames.append((opcode, buf[offset:offset + length]))
            buf = buf[offset + length:]
    return frames, ended


async def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


# -- /metrics and /healthz -------------------------------------------------------------------


async def test_metrics_move_with_real_traffic(tmp_path: Path, speech_dir: Path) -> None:
    async with running_server(tmp_path) as server:
        before = await scrape(server.url)
        assert value(before, "streamer_people") == 0
        assert value(before, "streamer_connections", kind="ingest") == 0
        assert value(before, "streamer_final_event_lag_seconds_count") == 0
        assert value(before, "streamer_embedding_latency_seconds_bucket", le="+Inf") == 0

        first = next(p for p, s, _ in manifest(LIBRI_DIR) if s == "1688")
        enrol = read_flac(first)[:8 * RATE]
        reply = await api_call(server.url, {"type": "enroll", "id": 1, "name": "Ada",
                                            **pcm_fields(enrol)})
        assert reply["type"] == "enrolled", reply

        async with connect(f"{server.url}/v1/events?room=ops") as display:
            mic = Mic(server.url, "ops", "m1", speech("1688", 5.0))
            streaming = asyncio.create_task(mic.run())
            await asyncio.wait_for(mic.speaking.wait(), 30)
            live = await scrape(server.url)
            assert value(live, "streamer_connections", kind="ingest") == 1
            assert value(live, "streamer_connections", kind="display") == 1
            assert value(live, "streamer_ingest_connections") == 1  # the old name stays
            assert value(live, "streamer_streams") == 1
            assert value(live, "streamer_segments_total") >= 1  # counted while live
            await asyncio.wait_for(streaming, 60)
            assert display.close_code is None
        after = await scrape(server.url)

    finals = mic.finals()
    events = [m for m, _ in mic.got if m["type"] not in ("ready", "bye")]
    assert finals and mic.got[-1][0]["type"] == "bye"
    assert value(after, "streamer_people") == 1
    assert value(after, "streamer_streams") == 0
    assert value(after, "streamer_connections", kind="ingest") == 0
    assert value(after, "streamer_segments_total") == mic.got[-1][0]["stats"]["segments"] > 0
    assert value(after, "streamer_events_total") - value(before, "streamer_events_total") \
        == len(events)
    # one lag per final; the embedding histogram counted the enrolment and live jobs
    assert value(after, "streamer_final_event_lag_seconds_count") == len(finals)
    assert value(after, "streamer_final_event_lag_seconds_bucket", le="+Inf") == len(finals)
    assert value(after, "streamer_final_event_lag_seconds_sum") > 0
    jobs = value(after, "streamer_embedding_latency_seconds_count")
    assert jobs >= mic.got[-1][0]["stats"]["jobs"] - mic.got[-1][0]["stats"]["dropped_jobs"]
    assert value(after, "streamer_embedding_latency_seconds_sum") > 0
    buckets = sorted((float(dict(k[1])["le"]), v) for k, v in after.items()
                     if k[0] == "streamer_embedding_latency_seconds_bucket")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    assert buckets[-1] == (float("inf"), jobs)


async def test_healthz_is_ok_then_503_when_the_registry_is_closed(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        http = server.url.replace("ws://", "http://")
        status, ctype, body = await asyncio.to_thread(http_get, http + "/healthz")
        assert status == 200 and ctype == "application/json"
        health = json.loads(body)
        assert health["status"] == "ok" and health["model_loaded"] is True
        assert health["registry_open"] is True and health["people"] == 0
        assert health["model"] == server.app.embedder.model_id

        server.registry.close()  # what a failed disk or a broken database looks like
        status, _, body = await asyncio.to_thread(http_get, http + "/healthz")
        assert status == 503
        health = json.loads(body)
        assert health["status"] == "unavailable" and health["registry_open"] is False
        assert health["model_loaded"] is True


# -- SIGTERM ---------------------------------------------------------------------------------


def _start_server(tmp_path: Path, shutdown_timeout_s: float) -> tuple[subprocess.Popen[str], str]:
    config = tmp_path / "config.yaml"
    config.write_text(
        "server:\n  host: 127.0.0.1\n"
        f"  shutdown_timeout_s: {shutdown_timeout_s}\n  close_timeout_s: 2\n"
        f"model:\n  path: {REPO_ROOT / 'models' / 'campplus.onnx'}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer", "--config", str(config), "serve", "--port", "0",
         "--data-dir", str(tmp_path / "data")],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert proc.stdout is not None
    lines: list[str] = []
    found: list[str] = []
    ready = threading.Event()

    def pump() -> None:  # keeps reading so the child never blocks on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("listening on ws://"):
                found.append(line.split()[-1])
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(120) or not found:
        proc.kill()
        raise AssertionError("server did not start:\n" + "".join(lines))
    return proc, found[0]


async def test_sigterm_sends_the_open_segments_final_then_1001_and_exits(
        tmp_path: Path, speech_dir: Path) -> None:
    shutdown_timeout_s = 5.0
    proc, url = _start_server(tmp_path, shutdown_timeout_s)
    try:
        async with connect(f"{url}/v1/events?room=hall") as display:
            assert wire.decode(await display.recv())[0]["type"] == "snapshot"
            mic = Mic(url, "hall", "m1", speech("2033", 12.0))
            streaming = asyncio.create_task(mic.run())
            await asyncio.wait_for(mic.speaking.wait(), 30)  # mid-segment
            open_segment = max(m["segment"] for m, _ in mic.got if m["type"] == "speech_start")
            sent_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            shown: list[dict[str, Any]] = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    shown.append(wire.decode(await asyncio.wait_for(display.recv(), 30))[0])
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
            await asyncio.wait_for(streaming, 30)
            # a new connection is refused while (or after) the server shuts down
            with pytest.raises(OSError):
                async with connect(f"{url}/v1/events?room=hall", open_timeout=5):
                    pass
        exit_code = await asyncio.to_thread(proc.wait, shutdown_timeout_s + 2 + 10)
        elapsed = time.monotonic() - sent_at
    finally:
        if proc.poll() is None:
            proc.kill()
    assert exit_code == 0
    assert elapsed < shutdown_timeout_s + 2 + 10
    assert mic.close_code == 1001
    final = [m for m, _ in mic.finals() if m["segment"] == open_segment]
    assert len(final) == 1 and final[0]["closed_by"] == "end"
    kinds = [m["type"] for m, _ in mic.got]
    assert kinds[-1] == "speech_end" and mic.got[-1][0]["segment"] == open_segment
    assert "bye" not in kinds  # the client never sent end
    shown_finals = [m for m in shown if m["type"] == "speaker" and m["final"]]
    assert final[0] in shown_finals  # the display got the very same final, then 1001


# -- a display that never reads --------------------------------------------------------------


async def test_a_display_that_never_reads_does_not_delay_four_mics(
        tmp_path: Path, speech_dir: Path) -> None:
    async with running_server(
            tmp_path, events={"max_queued_events": 4},
            server={"ping_interval_s": None, "write_limit_bytes": 4096, "close_timeout_s": 1.0,
                    "shutdown_timeout_s": 3.0}) as server:
        cfg = server.app.config
        slow, _ = await asyncio.to_thread(raw_websocket, server.port, "/v1/events?room=big",
                                          4096)
        # Linux lets a loopback send buffer grow to tcp_wmem's max (4 MiB): hours of
        # events. Pin the server side of this one connection small, as a long-stuck
        # display would end up, so its relay blocks within seconds.
        assert server._server is not None
        (stuck,) = [c for c in server._server.connections
                    if c.remote_address[1] == slow.getsockname()[1]]
        stuck.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        try:
            async with connect(f"{server.url}/v1/events?room=big", max_size=None) as normal:
                shown: list[dict[str, Any]] = []

                async def watch() -> None:
                    async for raw in normal:
                        shown.append(wire.decode(raw)[0])

                watching = asyncio.create_task(watch())
                mics = [Mic(server.url, "big", f"m{i}", speech(s, 10.0))
                        for i, s in enumerate(SPEAKERS)]
                await asyncio.wait_for(asyncio.gather(*(m.run() for m in mics)), 120)
                await wait_for(lambda: value_now(server, "display_overload_closes") >= 1, 10,
                               "the slow display to be closed with 1013")
                await asyncio.sleep(0.5)  # the last events reach the normal display
                watching.cancel()
            metrics = await scrape(server.url)
            frames, ended = await asyncio.to_thread(read_frames, slow, b"", 5.0)
        finally:
            slow.close()

    bound_s = cfg.vad.end_window_ms / 1000 + cfg.server.shutdown_timeout_s
    lags = [lag for m in mics for lag in m.lags()]
    print(f"\n4 mics: {len(lags)} finals, lag median {np.median(lags):.2f} s, "
          f"max {max(lags):.2f} s (bound {bound_s:.2f} s); slow display got "
          f"{len(frames)} frames, then {ended}")
    for m in mics:
        assert m.finals(), f"{m.name} got no final"
        assert m.got[-1][0]["type"] == "bye"
        assert max(m.lags()) < bound_s, (m.name, m.lags())
    # the normal display got every final of every mic
    mic_finals = {(m["stream"], m["segment"]) for mic in mics for m, _ in mic.finals()}
    shown_finals = {(m["stream"], m["segment"]) for m in shown
                    if m["type"] == "speaker" and m["final"]}
    assert shown_finals == mic_finals
    assert value(metrics, "streamer_display_overload_closes_total") >= 1
    assert value(metrics, "streamer_connections", kind="display") == 0
    # the slow display got less than everything, and its connection is gone
    assert ended in ("eof", "reset")
    assert sum(1 for op, _ in frames if op == 1) < len(shown) + 2


def value_now(server: Any, counter: str) -> float:
    return float(server.app.counters.get(counter, 0))


# -- broken peers ----------------------------------------------------------------------------


async def test_a_peer_that_never_answers_pings_is_closed(tmp_path: Path) -> None:
    ping_interval_s, ping_timeout_s, close_timeout_s = 0.5, 0.5, 0.5
    async with running_server(tmp_path, server={
            "ping_interval_s": ping_interval_s, "ping_timeout_s": ping_timeout_s,
            "close_timeout_s": close_timeout_s}) as server:
        opened = time.monotonic()
        sock, buf = await asyncio.to_thread(raw_websocket, server.port, "/v1/events?room=r")
        try:
            # read everything (so nothing blocks), answer nothing: no pong ever goes out
            frames, ended = await asyncio.to_thread(read_frames, sock, buf, 10.0)
        finally:
            sock.close()
        elapsed = time.monotonic() - opened
        await wait_for(lambda: server.connections["display"] == 0, 5, "the handler to end")
        assert server.app.hub.room_count == 0
    opcodes = [op for op, _ in frames]
    assert 9 in opcodes, "no ping was sent"
    assert ended in ("eof", "reset")
    closes = [payload for op, payload in frames if op == 8]
    if closes:  # the close frame, when it got out before the TCP connection ended
        assert struct.unpack("!H", closes[0][:2])[0] == 1011
    assert ping_interval_s + ping_timeout_s - 0.1 <= elapsed
    assert elapsed <= ping_interval_s + ping_timeout_s + close_timeout_s + 3.0


async def test_a_mic_that_vanishes_mid_segment_leaves_nothing_behind(
        tmp_path: Path, speech_dir: Path) -> None:
    async with running_server(tmp_path, events={"recent_events": 0}) as server:
        before = await scrape(server.url)
        ws = await connect(f"{server.url}/v1/ingest", compression=None)
        await ws.send(wire.encode({"type": "hello", "room": "gone", "mic": "m1"}, MSGPACK))
        assert wire.decode(await ws.recv())[0]["type"] == "ready"
        pcm = to_s16le(speech("3005", 8.0)[: 4 * RATE])  # stops inside the first utterance
        for seq, offset in enumerate(range(0, len(pcm), 3200)):
            await ws.send(wire.encode({"type": "audio", "seq": seq,
                                       "pcm": pcm[offset:offset + 3200]}, MSGPACK))
        while not any(wire.decode(m)[0]["type"] == "speaker" for m in [await ws.recv()]):
            pass  # a provisional guess: the segment is open
        ws.transport.abort()  # no close frame, no end

        await wait_for(lambda: not server.streams, 20, "the stream to be dropped")
        await wait_for(lambda: server.worker.in_flight == 0, 20, "the worker to drain")
        after = await scrape(server.url)
    assert server.app.hub.room_count == 0
    assert server.app.hub.snapshot("gone")["speaking"] == []
    for kind in ("ingest", "display", "api"):
        assert value(after, "streamer_connections", kind=kind) == 0
    assert value(after, "streamer_streams") == 0
    assert value(after, "streamer_queue_depth") == 0
    # the open segment still got its final (published to the room), and was measured
    assert value(after, "streamer_segments_total") == 1
    assert value(after, "streamer_final_event_lag_seconds_count") - \
        value(before, "streamer_final_event_lag_seconds_count") == 1
