"""End to end: every configured limit of a real server, with its protocol error.

- ``server.max_connections`` / ``max_connections_per_room``: ``error`` ``overloaded``
  naming the limit, then close 1013; places are released on every exit path.
- ``server.max_request_audio_s``: ``too_large`` for enroll, identify and verify, PCM and
  files; the connection stays open and serves the next request.
- ``server.max_ingest_speed`` / ``ingest_burst_s``: a client pushing audio as fast as it
  can is slowed to the allowance (a lower bound on its wall-clock time), while a
  real-time stream and an API client are served normally.
- ``server.hello_timeout_s`` and ``server.idle_timeout_s``: ``error`` ``timeout``, then
  close 1008 "hello timeout" / "idle timeout"; an idle ingest stream's open segment is
  finished first; displays are exempt.

The size limit (``max_message_bytes``, close 1009) is tested in test_e2e_bad_input.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import soundfile as sf
from server_support import (
    LIBRI_DIR,
    api_call,
    api_client,
    audio_fields,
    manifest,
    pcm_fields,
    read_flac,
    read_until_closed,
    running_server,
    to_s16le,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from clients.stream_file import stream_file
from streamer import wire

pytestmark = pytest.mark.slow

RATE = 16000
MSGPACK, JSON = wire.Encoding.MSGPACK, wire.Encoding.JSON
HELLO = {"type": "hello", "room": "a", "mic": "m", "sample_rate": RATE, "format": "s16le",
         "channels": 1}


def speaker_files(speaker: str) -> list[Path]:
    return [p for p, s, _ in manifest(LIBRI_DIR) if s == speaker]


def mp(message: dict[str, Any]) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (at most 10 s) until the server has processed a close, say."""
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


async def refused(url: str, frames: list[bytes | str] = ()) -> tuple[list[Any], int | None, str]:
    """Connect, send ``frames``, read until closed: ([(message, type)], code, reason)."""
    async with connect(url) as ws:
        for frame in frames:
            await ws.send(frame)
        got = await read_until_closed(ws)
        return got, ws.close_code, ws.close_reason


def assert_overloaded(result: tuple[list[Any], int | None, str], limit: str,
                      frame_type: type = str) -> None:
    got, code, reason = result
    assert (code, reason) == (1013, "try again later"), result
    errors = [(m, t) for m, t in got if m["type"] == "error"]
    assert len(errors) == 1 and len(got) == 1, got  # nothing else: no snapshot, no ready
    error, kind = errors[0]
    assert error["code"] == "overloaded" and limit in error["message"], error
    assert kind is frame_type, "error not in the connection's encoding"


async def open_display(url: str, room: str) -> ClientConnection:
    ws = await connect(f"{url}/v1/events?room={room}")
    assert json.loads(await ws.recv())["type"] == "snapshot"
    return ws


async def open_ingest(url: str, room: str) -> ClientConnection:
    ws = await connect(url + "/v1/ingest")
    await ws.send(mp({**HELLO, "room": room}))
    assert wire.decode(await ws.recv())[0]["type"] == "ready"
    return ws


# -- max connections -------------------------------------------------------------------------


async def test_connection_limits_total_and_per_room(tmp_path: Path) -> None:
    limits = {"max_connections": 4, "max_connections_per_room": 2}
    async with running_server(tmp_path, server=limits) as server:
        url, counts = server.url, server.limits
        display_a = await open_display(url, "a")
        ingest_a = await open_ingest(url, "a")
        assert counts.total == 2 and counts.rooms == {"a": 2}

        # room a is full: a display (JSON) and a mic (msgpack hello) are refused
        assert_overloaded(await refused(url + "/v1/events?room=a"),
                          "server.max_connections_per_room")
        assert_overloaded(await refused(url + "/v1/ingest", [mp(HELLO)]),
                          "server.max_connections_per_room", bytes)
        await until(lambda: counts.total == 2)  # refused connections released their place

        # another room is not full; an API connection counts in the total only
        display_b = await open_display(url, "b")
        async with api_client(url) as api:
            assert (await api.call({"type": "people", "id": 1}))["people"] == []
            assert counts.total == 4 and counts.rooms == {"a": 2, "b": 1}
            # the server is full: every endpoint is refused, in its first encoding
            assert_overloaded(await refused(url + "/v1/api"), "server.max_connections")
            assert_overloaded(await refused(url + "/v1/events?room=c&encoding=msgpack"),
                              "server.max_connections", bytes)
            assert_overloaded(await refused(url + "/v1/ingest"), "server.max_connections")
            # the admitted connections are still served
            assert (await api.call({"type": "people", "id": 2}))["id"] == 2
        await until(lambda: counts.total == 3)

        # close one in room a: the next one is accepted
        await display_a.close()
        await until(lambda: counts.in_room("a") == 1)
        display_a2 = await open_display(url, "a")
        assert counts.rooms == {"a": 2, "b": 1}

        # every exit path releases its place: a broken stream (bad audio), a mic that
        # ends normally, a connection dropped without a close handshake
        await ingest_a.send(mp({"type": "audio", "seq": 0, "pcm": b"\x00\x01\x02"}))
        got = await read_until_closed(ingest_a)
        assert [m["code"] for m, _ in got if m["type"] == "error"] == ["bad_audio"]
        assert ingest_a.close_code == 1003
        await until(lambda: counts.in_room("a") == 1)
        mic = await open_ingest(url, "a")
        await mic.send(mp({"type": "end"}))
        assert [m["type"] for m, _ in await read_until_closed(mic)][-1] == "bye"
        await until(lambda: counts.in_room("a") == 1)
        mic = await open_ingest(url, "a")
        mic.transport.abort()
        await until(lambda: counts.in_room("a") == 1)
        for ws in (display_a2, display_b):
            await ws.close()
        await until(lambda: counts.total == 0)
        assert counts.rooms == {}
        assert server.limits.refused == 5
        assert server.streams == {}


# -- request audio length --------------------------------------------------------------------


async def test_request_audio_limit_for_every_request_and_format(tmp_path: Path) -> None:
    limit_s = 14.0
    files = speaker_files("1998")
    enrol = read_flac(files[0])
    probe = read_flac(files[1])
    assert len(enrol) / RATE < limit_s and len(probe) / RATE < limit_s
    too_long = np.concatenate([enrol, probe])[: int(16 * RATE)]
    assert len(too_long) / RATE > limit_s
    async with running_server(tmp_path, server={"max_request_audio_s": limit_s}) as server:
        reply = await api_call(server.url, {"type": "enroll", "id": 0, "name": "Grace Hopper",
                                            **pcm_fields(enrol)})
        assert reply["type"] == "enrolled", reply
        person = reply["person"]["id"]
        requests = {
            "enroll": {"type": "enroll", "name": "Too Long"},
            "identify": {"type": "identify"},
            "verify": {"type": "verify", "person": person},
        }
        for encoding in (MSGPACK, JSON):
            async with api_client(server.url, encoding) as client:
                for kind, request in requests.items():
                    for audio in ("pcm", "WAV", "FLAC"):
                        fields = (pcm_fields(too_long) if audio == "pcm"
                                  else audio_fields(too_long, audio))
                        request_id = f"{kind}-{audio}"
                        reply = await client.call({**request, "id": request_id, **fields})
                        assert reply["type"] == "error" and reply["code"] == "too_large", reply
                        assert reply["id"] == request_id
                        assert "14 s" in reply["message"], reply["message"]
                        # the same connection serves the next request
                        ok = await client.call({"type": "identify", "id": "next",
                                                **pcm_fields(probe)})
                        assert ok["type"] == "identified" and ok["match"]["id"] == person, ok
        people = (await api_call(server.url, {"type": "people", "id": 9}))["people"]
        assert [p["name"] for p in people] == ["Grace Hopper"]  # nothing too long enrolled


# -- ingest rate -----------------------------------------------------------------------------


async def test_a_fast_client_is_slowed_while_others_are_served(tmp_path: Path) -> None:
    speed, burst_s = 4.0, 2.0
    files = speaker_files("1998")
    fast_audio = np.concatenate([read_flac(files[0]), read_flac(files[2])])[: 16 * RATE]
    fast_path, paced_path = tmp_path / "fast.wav", tmp_path / "paced.wav"
    sf.write(str(fast_path), fast_audio, RATE, subtype="PCM_16")
    sf.write(str(paced_path), read_flac(files[3])[: 3 * RATE], RATE, subtype="PCM_16")
    n_s = len(fast_audio) / RATE
    lower_bound_s = (n_s - burst_s) / speed  # 3.5 s
    config = {"max_ingest_speed": speed, "ingest_burst_s": burst_s}
    async with running_server(tmp_path, server=config) as server:
        enrolled = await api_call(server.url, {"type": "enroll", "id": 0, "name": "Grace Hopper",
                                               **pcm_fields(read_flac(files[1]))})
        person = enrolled["person"]["id"]

        async def fast() -> tuple[float, list[dict[str, Any]]]:
            started = time.monotonic()
            messages = await stream_file(server.url, fast_path, "fast", speed=0, chunk_ms=100)
            return time.monotonic() - started, messages

        async def api_user() -> list[dict[str, Any]]:
            async with api_client(server.url) as client:
                return [await client.call({"type": "identify", "id": i,
                                           **pcm_fields(read_flac(files[4]))})
                        for i in range(3)]

        (elapsed_s, fast_messages), paced, replies = await asyncio.gather(
            fast(), stream_file(server.url, paced_path, "paced", speed=1.0, chunk_ms=100),
            api_user())

        assert elapsed_s >= lower_bound_s, (elapsed_s, lower_bound_s)
        bye = fast_messages[-1]
        assert bye["type"] == "bye" and bye["stats"]["throttled_s"] > 0, bye
        assert bye["stats"]["audio_s"] == pytest.approx(n_s, abs=0.05)
        finals = [m for m in fast_messages if m["type"] == "speaker" and m["final"]]
        assert finals and any(m["person"] and m["person"]["id"] == person for m in finals)
        assert server.app.counters["ingest_throttled_seconds"] > 0
        # the real-time stream and the API client on other connections: served normally
        assert paced[0]["type"] == "ready" and paced[-1]["type"] == "bye"
        assert paced[-1]["stats"]["throttled_s"] == 0
        assert paced[-1]["stats"]["audio_s"] == pytest.approx(3.0, abs=0.05)
        assert all(r["type"] == "identified" and r["match"]["id"] == person for r in replies)


# -- hello and idle timeouts -------------------------------------------------------------------


async def test_hello_timeout_sends_an_error_then_closes(tmp_path: Path) -> None:
    async with running_server(tmp_path, server={"hello_timeout_s": 0.3}) as server:
        for query, frame_type in (("", str), ("?encoding=msgpack", bytes)):
            async with connect(server.url + "/v1/ingest" + query) as ws:
                got = await read_until_closed(ws)
                assert (ws.close_code, ws.close_reason) == (1008, "hello timeout")
            assert len(got) == 1, got
            error, kind = got[0]
            assert error["type"] == "error" and error["code"] == "timeout", error
            assert "server.hello_timeout_s" in error["message"] and kind is frame_type
        # a hello in time is served as usual
        async with connect(server.url + "/v1/ingest") as ws:
            await ws.send(json.dumps(HELLO))
            assert json.loads(await ws.recv())["type"] == "ready"
        await until(lambda: server.limits.total == 0)
        assert server.app.counters["hello_timeouts"] == 2


async def test_an_idle_mic_is_finished_and_closed_but_displays_stay(tmp_path: Path) -> None:
    idle_s = 1.0
    speech = read_flac(speaker_files("1998")[0])[RATE : 4 * RATE]  # mid-utterance
    async with running_server(tmp_path, server={"idle_timeout_s": idle_s}) as server:
        display = await open_display(server.url, "a")
        await asyncio.sleep(2 * idle_s)  # a display that only listens is never idle-closed
        async with connect(server.url + "/v1/ingest") as mic:
            await mic.send(mp(HELLO))
            pcm = to_s16le(speech)
            step = RATE // 10 * 2
            for seq, offset in enumerate(range(0, len(pcm), step)):
                await mic.send(mp({"type": "audio", "seq": seq, "pcm": pcm[offset:offset + step]}))
            started = time.monotonic()
            got = [m for m, _ in await read_until_closed(mic)]
            waited_s = time.monotonic() - started
            assert (mic.close_code, mic.close_reason) == (1008, "idle timeout")
        assert waited_s >= idle_s * 0.9
        kinds = [m["type"] for m in got]
        assert kinds[0] == "ready" and kinds[-1] == "error", kinds
        assert got[-1]["code"] == "timeout" and "server.idle_timeout_s" in got[-1]["message"]
        # the open segment was finished before the error: every start has its final and end
        starts = {m["segment"] for m in got if m["type"] == "speech_start"}
        assert starts
        assert starts == {m["segment"] for m in got if m["type"] == "speaker" and m["final"]}
        assert starts == {m["segment"] for m in got if m["type"] == "speech_end"}
        # the display got the same finals and is still open
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while len({m["segment"] for m in seen if m["type"] == "speech_end"}) < len(starts):
                seen.append(json.loads(await display.recv()))
        assert display.state is State.OPEN
        await display.close()
        await until(lambda: server.limits.total == 0)
        assert server.app.counters["idle_timeouts"] == 1 and server.streams == {}


async def test_an_idle_api_connection_is_closed(tmp_path: Path) -> None:
    idle_s = 1.5
    async with running_server(tmp_path, server={"idle_timeout_s": idle_s}) as server:
        for encoding, frame_type in ((MSGPACK, bytes), (JSON, str)):
            async with api_client(server.url, encoding) as client:
                started = time.monotonic()
                # requests more often than the timeout keep it open past the timeout
                for i in range(4):
                    reply = await client.call({"type": "people", "id": i})
                    assert reply == {"type": "people", "id": i, "people": [], "total": 0,
                                     "offset": 0}
                    await asyncio.sleep(idle_s / 3)
                assert time.monotonic() - started > idle_s
                got = await read_until_closed(client.ws)
                assert (client.ws.close_code, client.ws.close_reason) == (1008, "idle timeout")
            assert len(got) == 1, got
            error, kind = got[0]
            assert error["type"] == "error" and error["code"] == "timeout" and "id" not in error
            assert kind is frame_type, "error not in the connection's encoding"
        assert server.app.counters["idle_timeouts"] == 2


async def test_limits_can_be_disabled(tmp_path: Path) -> None:
    off = {"max_connections": None, "max_connections_per_room": None,
           "max_ingest_speed": None, "idle_timeout_s": None}
    files = speaker_files("1998")
    path = tmp_path / "s.wav"
    sf.write(str(path), read_flac(files[0]), RATE, subtype="PCM_16")
    async with running_server(tmp_path, server={**off, "ingest_burst_s": 0.1}) as server:
        messages = await stream_file(server.url, path, "a", speed=0, chunk_ms=100)
        assert messages[-1]["type"] == "bye"
        assert messages[-1]["stats"]["throttled_s"] == 0  # a tiny burst, but no speed limit
        displays = [await open_display(server.url, "a") for _ in range(5)]
        assert server.limits.in_room("a") == 5
        for ws in displays:
            await ws.close()
