"""End to end: what a real server does with bad input, auth, and plain HTTP.

Each broken ingest stream must get an ``error`` (in the encoding of its first message)
and the close code the protocol fixes; each bad API request an ``error`` while the
connection stays open. Meanwhile a well-behaved client on another connection (an API
client and a second ingest stream) must still be served correctly.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf
from server_support import (
    LIBRI_DIR,
    api_call,
    api_client,
    audio_fields,
    make_config,
    manifest,
    pcm_fields,
    read_flac,
    running_server,
    to_s16le,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from clients.stream_file import stream_file
from streamer import wire
from streamer.app import App
from streamer.errors import ConfigError
from streamer.server import StreamerServer

pytestmark = pytest.mark.slow

MSGPACK, JSON = wire.Encoding.MSGPACK, wire.Encoding.JSON
RATE = 16000
MAX_REQUEST_AUDIO_S = 20.0


def mp(message: dict[str, Any]) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def js(message: dict[str, Any]) -> str:
    return json.dumps(message)


HELLO = {"type": "hello", "room": "r", "mic": "m", "sample_rate": 16000, "format": "s16le",
         "channels": 1}


class Served:
    """A running server with one enrolled speaker and a probe of their voice."""

    def __init__(self, server: StreamerServer, person: str, probe: np.ndarray,
                 stream_path: Path) -> None:
        self.server = server
        self.url = server.url
        self.person = person
        self.probe = probe
        self.stream_path = stream_path

    async def check_good_client(self, client: Any) -> None:
        """The well-behaved client on its own connection is answered correctly."""
        reply = await client.call({"type": "identify", "id": "good", **pcm_fields(self.probe)})
        assert reply["type"] == "identified" and reply["id"] == "good", reply
        assert reply["match"] is not None and reply["match"]["id"] == self.person

    async def good_stream(self) -> list[dict[str, Any]]:
        messages = await stream_file(self.url, self.stream_path, "good-room", speed=0,
                                     chunk_ms=20)
        assert messages[0]["type"] == "ready" and messages[-1]["type"] == "bye"
        named = [m["person"] and m["person"]["id"] for m in messages
                 if m["type"] == "speaker" and m["final"]]
        assert named and all(pid == self.person for pid in named), named
        return messages


async def _serve(tmp_path: Path, **sections: Any) -> AsyncIterator[Served]:
    rows = [p for p, speaker, _ in manifest(LIBRI_DIR) if speaker == "1998"]
    async with running_server(tmp_path, **sections) as server:
        reply = await api_call(server.url, {"type": "enroll", "id": 1, "name": "Grace Hopper",
                                            **pcm_fields(read_flac(rows[0]))})
        assert reply["type"] == "enrolled", reply
        stream_path = tmp_path / "good.wav"
        sf.write(str(stream_path), np.concatenate([read_flac(rows[2]), read_flac(rows[3])]),
                 RATE, subtype="PCM_16")
        yield Served(server, reply["person"]["id"], read_flac(rows[1]), stream_path)


@pytest_asyncio.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async for s in _serve(tmp_path, server={"max_request_audio_s": MAX_REQUEST_AUDIO_S}):
        yield s


async def broken_stream(url: str, frames: list[bytes | str],
                        path: str = "/v1/ingest") -> tuple[list[tuple[Any, Any]], int | None, str]:
    """Send ``frames``, read until the server closes: ([(message, frame type)], code, reason)."""
    got: list[tuple[Any, Any]] = []
    async with connect(url + path, max_size=None) as ws:
        try:
            for frame in frames:
                await ws.send(frame)
            async with asyncio.timeout(10):
                while True:
                    raw = await ws.recv()
                    got.append((wire.decode(raw)[0], type(raw)))
        except ConnectionClosed:
            pass
        return got, ws.close_code, ws.close_reason


# -- /v1/ingest --------------------------------------------------------------------------------

GOOD_AUDIO = {"type": "audio", "seq": 0, "pcm": b"\x00\x00" * 160}

INGEST_CASES = [
    # (id, frames, error code or None, close code)
    ("not-msgpack", [b"\xc1\xc1 this is not msgpack"], "bad_message", 1003),
    ("not-json", ['{"type": "hello", "room":'], "bad_message", 1003),
    ("msgpack-not-a-map", [msgpack.packb([1, 2, 3])], "bad_message", 1003),
    ("bad-sample-rate", [mp({**HELLO, "sample_rate": 12345})], "bad_hello", 1003),
    ("bad-sample-rate-json", [js({**HELLO, "sample_rate": "16000"})], "bad_hello", 1003),
    ("bad-format", [mp({**HELLO, "format": "s24le"})], "bad_hello", 1003),
    ("bad-channels", [js({**HELLO, "channels": 3})], "bad_hello", 1003),
    ("missing-room", [mp({k: v for k, v in HELLO.items() if k != "room"})], "bad_hello", 1003),
    ("audio-before-hello", [mp(GOOD_AUDIO)], "bad_hello", 1003),
    ("unknown-type", [mp(HELLO), mp({"type": "dance"})], "unknown_type", 1003),
    ("odd-byte-count", [mp(HELLO), mp({**GOOD_AUDIO, "pcm": b"\x00\x01\x02"})], "bad_audio", 1003),
    ("odd-byte-count-stereo", [js({**HELLO, "channels": 2}),
                               js({"type": "audio", "seq": 0, "pcm": "AAAAAAAA"}),
                               js({"type": "audio", "seq": 1, "pcm": "AAEC"})],
     "bad_audio", 1003),
    ("second-hello", [mp(HELLO), mp(GOOD_AUDIO), mp(HELLO)], None, 1008),
]


@pytest.mark.parametrize("frames,code,close_code",
                         [pytest.param(f, c, cc, id=i) for i, f, c, cc in INGEST_CASES])
async def test_broken_ingest_streams(served: Served, frames: list[bytes | str], code: str | None,
                                     close_code: int) -> None:
    async with api_client(served.url, JSON) as good:
        await served.check_good_client(good)
        stream = asyncio.create_task(served.good_stream())
        got, close, reason = await broken_stream(served.url, frames)
        assert close == close_code, (got, close, reason)
        assert reason  # a short fixed reason
        first_kind = str if isinstance(frames[0], str) else bytes
        errors = [(m, kind) for m, kind in got if m["type"] == "error"]
        assert len(errors) == 1, got
        error, kind = errors[0]
        assert kind is first_kind, "error not in the encoding of the first message"
        assert isinstance(error["message"], str) and error["message"]
        if code is not None:
            assert error["code"] == code, error
        # nothing but ready / events / the one error
        assert all(m["type"] in ("ready", "error", "speech_start", "speech_end", "speaker")
                   for m, _ in got)
        await stream
        await served.check_good_client(good)
    assert served.server.streams == {}


async def test_oversized_frame_closes_1009(tmp_path: Path) -> None:
    limit = 600_000  # the enrolment (13 s of s16le PCM) fits, a 1 s audio frame more does not
    async for s in _serve(tmp_path, server={"max_message_bytes": limit}):
        async with api_client(s.url) as good:
            await s.check_good_client(good)
            big = mp({"type": "audio", "seq": 0, "pcm": b"\x00\x00" * (limit // 2 + 10)})
            assert len(big) > limit
            async with connect(s.url + "/v1/ingest") as ws:
                await ws.send(mp(HELLO))
                assert wire.decode(await ws.recv())[0]["type"] == "ready"
                await ws.send(mp({**GOOD_AUDIO, "pcm": b"\x00\x00" * 1600}))
                await ws.send(big)
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(10):
                        while True:
                            message = wire.decode(await ws.recv())[0]
                            assert message["type"] in ("speech_start", "speaker", "speech_end")
                assert ws.close_code == 1009
            # also on /v1/api: the connection is closed with 1009
            _, close, _ = await broken_stream(s.url, [mp({"type": "identify", "id": 1,
                                                          "pcm": b"\x00" * (limit + 2),
                                                          "sample_rate": 16000,
                                                          "format": "s16le"})], "/v1/api")
            assert close == 1009
            await s.check_good_client(good)
            await s.good_stream()


# -- /v1/api -----------------------------------------------------------------------------------


def _garbage_wav() -> bytes:
    return b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x07" * 64


@pytest.mark.parametrize("encoding", [MSGPACK, JSON], ids=["msgpack", "json"])
async def test_bad_api_requests_keep_the_connection(served: Served,
                                                    encoding: wire.Encoding) -> None:
    long_audio = np.tile(served.probe, int(np.ceil(25 * RATE / len(served.probe))))[: 25 * RATE]
    assert len(long_audio) / RATE > MAX_REQUEST_AUDIO_S
    cases: list[tuple[Any, str, Any]] = [
        # (request as a dict to encode, or a raw frame; expected code; expected echoed id)
        (b"\xc1 not msgpack", "bad_message", None),
        ("{not json", "bad_message", None),
        ({"type": "dance", "id": "u1"}, "unknown_type", "u1"),
        ({"type": "people"}, "bad_message", None),  # no id
        ({"type": "people", "id": [1, 2]}, "bad_message", None),  # id of the wrong type
        ({"type": "people", "id": "x" * 129}, "bad_message", None),  # id too long
        ({"type": "identify", "id": 3, "top_k": "five", **pcm_fields(served.probe)},
         "bad_message", 3),
        ({"type": "enroll", "id": 4, "name": 42, **pcm_fields(served.probe)}, "bad_message", 4),
        ({"type": "verify", "id": 5, "person": served.person}, "bad_message", 5),  # no audio
        ({"type": "identify", "id": 6, "pcm": to_s16le(served.probe), "sample_rate": 16000},
         "bad_message", 6),  # no format
        ({"type": "update_person", "id": 7, "person": served.person, "info": "nope"},
         "bad_message", 7),
        ({"type": "identify", "id": 8, "audio": _garbage_wav()}, "bad_audio", 8),
        ({"type": "identify", "id": 9, "audio": b""}, "bad_audio", 9),
        ({"type": "identify", "id": 10, "pcm": b"\x00\x01\x02", "sample_rate": 16000,
          "format": "s16le"}, "bad_audio", 10),
        ({"type": "enroll", "id": 11, "name": "Long", **audio_fields(long_audio, "WAV")},
         "too_large", 11),
        ({"type": "identify", "id": 12, **pcm_fields(long_audio)}, "too_large", 12),
    ]
    async with api_client(served.url, encoding) as bad, api_client(served.url, MSGPACK) as good:
        for request, code, echoed in cases:
            if isinstance(request, dict):
                frame = (wire.encode(request, encoding) if encoding is MSGPACK
                         else _json_frame(request))
            else:
                if isinstance(request, (bytes, str)) and encoding is JSON:
                    request = request if isinstance(request, str) else request.decode("latin-1")
                frame = request
            await bad.ws.send(frame)
            raw = await bad.ws.recv()
            reply, enc = wire.decode(raw)
            expected = JSON if isinstance(frame, str) else MSGPACK
            assert enc is expected
            assert reply["type"] == "error" and reply["code"] == code, (request, reply)
            assert isinstance(reply["message"], str) and reply["message"]
            if echoed is None:
                assert "id" not in reply, reply
            else:
                assert reply["id"] == echoed
            await served.check_good_client(good)
        # the same connection still answers good requests, in its encoding
        reply = await bad.call({"type": "identify", "id": "ok", **pcm_fields(served.probe)})
        assert reply["type"] == "identified" and reply["match"]["id"] == served.person
        reply = await bad.call({"type": "people", "id": "ok2"})
        assert [p["name"] for p in reply["people"]] == ["Grace Hopper"]
    # JSON audio that is not base64
    async with connect(served.url + "/v1/api") as ws:
        await ws.send(js({"type": "identify", "id": 13, "audio": "@@not base64@@"}))
        reply = json.loads(await ws.recv())
        assert reply["code"] == "bad_audio" and reply["id"] == 13
    await served.good_stream()


def _json_frame(request: dict[str, Any]) -> str:
    import base64

    return js({k: base64.b64encode(v).decode() if isinstance(v, bytes) else v
               for k, v in request.items()})


# -- auth --------------------------------------------------------------------------------------

# Every endpoint x role x token: tests/test_e2e_auth.py.


def test_non_loopback_without_tokens_is_refused() -> None:
    app = App(make_config())
    for host in ("0.0.0.0", "192.168.1.10", "::", "example.org"):
        with pytest.raises(ConfigError, match="auth"):
            app.check_listen(host)
    for host in ("127.0.0.1", "::1", "localhost"):
        app.check_listen(host)
    App(make_config(server={"allow_unauthenticated_remote": True})).check_listen("0.0.0.0")


async def test_server_refuses_non_loopback_without_tokens(tmp_path: Path) -> None:
    config = make_config()
    app = App(config, data_dir=tmp_path / "data")
    from server_support import shared_embedder, shared_streamer

    app.embedder = shared_embedder(config)
    app.streamer = shared_streamer(config)
    app.load()
    try:
        with pytest.raises(ConfigError):
            async with StreamerServer(app, "0.0.0.0", 0):
                pass  # pragma: no cover
    finally:
        app.close()


# -- plain HTTP ----------------------------------------------------------------------------------


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read().decode()


async def test_http_healthz_metrics_404(served: Served) -> None:
    http = served.url.replace("ws://", "http://")
    async with api_client(served.url) as good:
        await served.check_good_client(good)
    status, ctype, body = await asyncio.to_thread(_get, http + "/healthz")
    assert status == 200 and ctype.startswith("application/json")
    health = json.loads(body)
    assert health["status"] == "ok" and health["people"] == 1
    assert health["model"] == served.server.app.embedder.model_id

    status, ctype, body = await asyncio.to_thread(_get, http + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    lines = body.splitlines()
    assert "# TYPE streamer_people gauge" in lines and "streamer_people 1" in lines
    values = {line.split()[0]: float(line.split()[1]) for line in lines
              if line and not line.startswith("#")}
    assert values["streamer_api_identify_total"] >= 1
    assert values["streamer_embeddings_total"] >= 2
    for line in lines:
        assert line.startswith("# HELP streamer_") or line.startswith("# TYPE streamer_") \
            or line.startswith("streamer_")

    for path in ("/nope", "/v1/nope", "/v1/api"):  # /v1/api without a websocket upgrade
        status, _, _ = await asyncio.to_thread(_get, http + path)
        assert status == 404, path
    status, ctype, body = await asyncio.to_thread(_get, http + "/")
    assert status == 200 and "text/html" in ctype and "/v1/ingest" in body
