"""End to end over /v1/api: ``analyze`` (an addition) on real speech and on silence.

``analyze`` measures audio for live feedback while someone records an enrolment: the
speech the VAD finds, the level and clipping. It embeds nothing and stores nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
from server_support import (
    LIBRI_DIR,
    api_client,
    audio_fields,
    manifest,
    pcm_fields,
    read_flac,
    running_server,
)

from streamer import wire

pytestmark = pytest.mark.slow

MSGPACK, JSON = wire.Encoding.MSGPACK, wire.Encoding.JSON
RATE = 16000
FIELDS = {"type", "id", "speech_s", "audio_s", "min_speech_s", "recommended_speech_s",
          "level_dbfs", "peak", "clipped_share", "warnings", "percent"}


def _long_utterance() -> np.ndarray:
    path = next(p for p, _, seconds in manifest(LIBRI_DIR) if seconds >= 10)
    return read_flac(path)


@pytest.mark.parametrize("encoding", [MSGPACK, JSON])
async def test_analyze_speech_and_silence(tmp_path, encoding: wire.Encoding) -> None:
    x = _long_utterance()
    async with running_server(tmp_path) as server:
        cfg = server.app.config
        async with api_client(server.url, encoding) as client:
            # the whole utterance as a FLAC file
            whole = await client.call({"type": "analyze", "id": "whole",
                                       **audio_fields(x, "FLAC")})
            assert set(whole) == FIELDS, whole
            assert whole["type"] == "analyzed" and whole["id"] == "whole"
            assert whole["audio_s"] == pytest.approx(len(x) / RATE, abs=0.01)
            assert 0.6 * whole["audio_s"] <= whole["speech_s"] <= whole["audio_s"]
            assert whole["min_speech_s"] == cfg.enroll.min_speech_s
            assert whole["recommended_speech_s"] == cfg.enroll.recommended_speech_s
            assert -40 < whole["level_dbfs"] < -3
            assert 0 < whole["peak"] <= 1 and whole["clipped_share"] < 0.001
            assert whole["warnings"] == []

            # the same speech in 1 s pcm chunks, as the people page sends it while recording:
            # the chunks' speech adds up to about the whole's
            total = 0.0
            for i in range(0, len(x), RATE):
                reply = await client.call({"type": "analyze", "id": i,
                                           **pcm_fields(x[i:i + RATE])})
                assert reply["type"] == "analyzed" and reply["id"] == i, reply
                assert 0 <= reply["speech_s"] <= reply["audio_s"] <= 1.0
                total += reply["speech_s"]
            assert total == pytest.approx(whole["speech_s"], rel=0.25)

            # f32le at 48 kHz (a browser's AudioContext rate)
            x48 = np.repeat(x, 3).astype("<f4")
            reply = await client.call({"type": "analyze", "id": "48k", "pcm": x48.tobytes(),
                                       "sample_rate": 48000, "format": "f32le"})
            assert reply["type"] == "analyzed", reply
            assert reply["speech_s"] == pytest.approx(whole["speech_s"], rel=0.15)

            # digital silence: no speech, very quiet
            reply = await client.call({"type": "analyze", "id": "silence",
                                       **pcm_fields(np.zeros(3 * RATE, np.float32))})
            assert set(reply) == FIELDS
            assert reply["speech_s"] == 0 and reply["audio_s"] == 3.0
            assert reply["level_dbfs"] == -120.0 and reply["peak"] == 0
            assert "no speech detected" in reply["warnings"]
            assert "the recording is very quiet" in reply["warnings"]

            # quiet noise: no speech either; empty pcm: zero seconds
            noise = (np.random.default_rng(0).standard_normal(2 * RATE) * 0.001).astype("f4")
            reply = await client.call({"type": "analyze", "id": "noise", **pcm_fields(noise)})
            assert reply["speech_s"] == 0 and "the recording is very quiet" in reply["warnings"]
            reply = await client.call({"type": "analyze", "id": "empty",
                                       "pcm": b"", "sample_rate": 16000, "format": "s16le"})
            assert reply["type"] == "analyzed" and reply["audio_s"] == 0

            # quiet speech on a microphone with a DC offset: its level is the speech's,
            # not the offset's, so the quiet warning still comes
            quiet = x * np.float32(10 ** (-50 / 20) / np.sqrt(np.mean(x**2)))
            reply = await client.call({"type": "analyze", "id": "dc",
                                       **pcm_fields(quiet + np.float32(0.05))})
            assert reply["level_dbfs"] < -40 and "the recording is very quiet" in reply["warnings"]

            # clipping: the utterance driven far into saturation
            loud = np.clip(x * 40, -1, 1)
            reply = await client.call({"type": "analyze", "id": "loud", **pcm_fields(loud)})
            assert reply["clipped_share"] > 0.001
            assert "the recording is clipping" in reply["warnings"]

            # errors keep the connection; nothing was ever stored
            reply = await client.call({"type": "analyze", "id": "bad", "audio": b"not audio"})
            assert reply["type"] == "error" and reply["code"] == "bad_audio"
            assert reply["id"] == "bad"
            reply = await client.call({"type": "people", "id": "p"})
            assert reply["people"] == []
        assert len(server.registry) == 0
