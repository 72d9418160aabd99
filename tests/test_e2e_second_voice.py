"""End to end over /v1/api: the enrolment's second-voice check (``enroll.second_voice``).

Real CAM++ and segmentation models, real LibriSpeech test-other voices, real servers on
127.0.0.1:0. Each of the ten speakers gives 5 s of speech and the next one answers for
2.5 s. The pieces check alone misses some of these mixes; with the second-voice check
the server refuses every mix the pieces refuse, and more, with a message that names
the second voice. Every single speaker is still enrolled, and the reply says what the
check heard. Switched off, the model is not loaded and the reply has no
``second_voice``; under ``consistency: warn`` a second voice is a warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from server_support import (
    LIBRI_DIR,
    api_client,
    make_config,
    manifest,
    pcm_fields,
    read_flac,
    running_server,
    shared_embedder,
)

from streamer import wire
from streamer.app import App

pytestmark = pytest.mark.slow

RATE = 16000
FIRST_S, ANSWER_S = 5.0, 2.5


def long_utterances() -> dict[str, np.ndarray]:
    """Each LibriSpeech test-other speaker's first utterance of 8 s or more."""
    out: dict[str, np.ndarray] = {}
    for path, speaker, seconds in manifest(LIBRI_DIR):
        if seconds >= 8.0 and speaker not in out:
            out[speaker] = read_flac(path)
    return out


def mixes() -> list[tuple[str, np.ndarray]]:
    """One speaker for 5 s, then the next (sorted) speaker for 2.5 s."""
    voices = long_utterances()
    names = sorted(voices)
    return [(f"{a}+{b}", np.concatenate([voices[a][: int(FIRST_S * RATE)],
                                         voices[b][: int(ANSWER_S * RATE)]]))
            for a, b in zip(names, names[1:] + names[:1])]


async def enrol_all(url: str, items: list[tuple[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    replies = {}
    async with api_client(url, wire.Encoding.MSGPACK) as client:
        for name, x in items:
            replies[name] = await client.call({"type": "enroll", "id": name, "name": name,
                                               **pcm_fields(x)})
    return replies


def refused(replies: dict[str, dict[str, Any]]) -> set[str]:
    for r in replies.values():
        assert r["type"] in ("enrolled", "error"), r
        assert r["type"] == "enrolled" or r["code"] == "not_one_speaker", r
    return {k for k, r in replies.items() if r["type"] == "error"}


async def test_a_second_voice_the_pieces_miss_is_refused(tmp_path: Path) -> None:
    items = mixes()
    assert len(items) == 10
    async with running_server(tmp_path / "off", enroll={"second_voice": False},
                              segment={"voice_check": False}) as off:
        assert not off.app.worker.has_segmenter
        without = await enrol_all(off.url, items)
    async with running_server(tmp_path / "on") as on:
        assert on.app.config.enroll.second_voice and on.app.worker.has_segmenter
        with_check = await enrol_all(on.url, items)
    pieces_only, both = refused(without), refused(with_check)
    assert pieces_only <= both  # nothing the pieces refuse gets through
    assert len(both) > len(pieces_only), (pieces_only, both)
    for name in both - pieces_only:
        message = with_check[name]["message"]
        assert "second voice" in message and "enrol one speaker at a time" in message, message
    for name in set(dict(items)) - pieces_only:  # the pieces let it through: what was heard
        assert "second_voice" not in without[name]["quality"]


async def test_single_speakers_are_enrolled_and_told_what_was_heard(tmp_path: Path) -> None:
    singles = [(name, x[: 8 * RATE]) for name, x in sorted(long_utterances().items())]
    async with running_server(tmp_path) as server:
        replies = await enrol_all(server.url, singles)
        people = len(server.app.registry)
    assert not refused(replies) and people == len(singles)
    for name, reply in replies.items():
        heard = reply["quality"]["second_voice"]
        assert heard["checked"] is True and heard["one_speaker"] is True, (name, heard)
        assert heard["limit"] == 1.1 and heard["min_s"] == 1.5
        if "distance" in heard:  # two local voices with enough speech: the same person
            assert heard["distance"] < heard["limit"] and heard["seconds"] >= heard["min_s"]
            assert 0 <= heard["start_s"] < heard["end_s"] <= 8.0


async def test_warn_mode_enrols_with_the_second_voice_in_the_warnings(tmp_path: Path) -> None:
    items = mixes()
    async with running_server(tmp_path / "refuse") as server:
        caught = {k for k, r in (await enrol_all(server.url, items)).items()
                  if r["type"] == "error" and "second voice" in r["message"]}
    assert caught
    chosen = [(k, x) for k, x in items if k in caught]
    async with running_server(tmp_path / "warn", enroll={"consistency": "warn"}) as server:
        replies = await enrol_all(server.url, chosen)
        assert len(server.app.registry) == len(chosen)
    for name, reply in replies.items():
        assert reply["type"] == "enrolled", reply
        assert reply["quality"]["second_voice"]["one_speaker"] is False
        assert any("second voice" in w for w in reply["quality"]["warnings"]), reply


async def test_switched_off_the_model_is_not_loaded(tmp_path: Path) -> None:
    """Off for enrolments (``second_voice: false`` or ``consistency: off``) and for live
    streams (``segment.voice_check: false``): the model is not loaded. Off for enrolments
    only: it is loaded (live streams ask it about their changes) but enrolments are not
    checked with it."""
    name, x = mixes()[0]
    live_off = {"voice_check": False}
    for k, enroll in enumerate(({"second_voice": False}, {"consistency": "off"})):
        app = App(make_config(enroll=enroll, segment=live_off), data_dir=tmp_path / f"fresh{k}")
        app.embedder = shared_embedder(app.config)
        app.load()
        try:
            assert app.segmenter is None and not app.worker.has_segmenter
        finally:
            app.close()
        for live, segment in (("off", live_off), ("on", {})):
            async with running_server(tmp_path / f"server{k}{live}", enroll=enroll,
                                      segment=segment) as server:
                assert server.app.worker.has_segmenter == (live == "on")
                (reply,) = (await enrol_all(server.url, [(name, x)])).values()
            if reply["type"] == "enrolled":
                assert "second_voice" not in reply["quality"]
    assert reply["type"] == "enrolled"  # nothing checks one speaker under "off"
