"""Room rosters end to end: ``set_room`` / ``rooms`` over /v1/api, live speech in a room
with a roster (members first, ``scope`` in the events), on a real server with the real
model and LibriSpeech speech."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from server_support import LIBRI_DIR, api_call, manifest, pcm_fields, read_flac, running_server
from websockets.asyncio.client import connect

from clients.stream_file import stream_file
from streamer import wire

pytestmark = pytest.mark.slow

MEMBERS = ["1688", "2033"]
VISITOR = "3005"


def utterances(speaker: str) -> list[Path]:
    return sorted(p for p, s, _ in manifest(LIBRI_DIR) if s == speaker)


async def enrol(url: str, speaker: str) -> dict[str, Any]:
    audio = np.concatenate([read_flac(p) for p in utterances(speaker)[:2]])
    reply = await api_call(url, {"type": "enroll", "id": speaker, "name": f"Speaker {speaker}",
                                 **pcm_fields(audio)})
    assert reply["type"] == "enrolled", reply
    return reply["person"]


async def test_rosters_over_the_api_and_in_live_events(tmp_path: Path) -> None:
    parts = []
    for speaker in (MEMBERS[0], VISITOR, MEMBERS[0], VISITOR):
        parts += [read_flac(utterances(speaker)[3 + len(parts) // 4]),
                  np.zeros(9600, np.float32)]
    talk = tmp_path / "talk.wav"
    sf.write(talk, np.concatenate(parts), 16000)
    async with running_server(tmp_path, worker={"max_queued_jobs": 10_000}) as server:
        url = server.url
        people = {s: await enrol(url, s) for s in (*MEMBERS, VISITOR)}
        ids = {s: p["id"] for s, p in people.items()}
        reply = await api_call(url, {"type": "set_room", "id": 1, "room": "board",
                                     "people": [ids[m] for m in MEMBERS]})
        assert reply == {"type": "room", "id": 1, "room": "board",
                         "people": [ids[m] for m in MEMBERS]}
        reply = await api_call(url, {"type": "set_room", "id": 2, "room": "board",
                                     "people": ["p_nobody"]})
        assert reply["type"] == "error" and reply["code"] == "unknown_person", reply
        reply = await api_call(url, {"type": "set_room", "id": 2, "room": "  ", "people": []})
        assert reply["type"] == "error" and reply["code"] == "bad_message", reply
        rooms = await api_call(url, {"type": "rooms", "id": 3})
        assert rooms == {"type": "rooms", "id": 3,
                         "rooms": [{"room": "board", "people": [ids[m] for m in MEMBERS]}]}

        async with connect(f"{url}/v1/events?room=board") as ws:  # displays see it
            snapshot = wire.decode(await ws.recv())[0]
        assert snapshot["roster"] == [{"id": ids[m], "name": f"Speaker {m}"} for m in MEMBERS]
        async with connect(f"{url}/v1/events?room=lobby") as ws:
            assert "roster" not in wire.decode(await ws.recv())[0]
        messages = await stream_file(url, talk, "board", speed=0)
        finals = [m for m in messages if m["type"] == "speaker" and m["final"]]
        assert finals and all(m["scope"] in ("roster", "all") for m in finals)
        member_finals = [m for m in finals if m["person"] and m["person"]["id"] == ids[MEMBERS[0]]]
        assert member_finals and all(m["scope"] == "roster" for m in member_finals)
        for m in finals:  # a visitor is named only among everyone, within the stricter rule
            if m["person"] and m["person"]["id"] == ids[VISITOR]:
                assert m["scope"] == "all" and m["distance"] <= 0.9
            if m["person"] is None:
                assert m["scope"] == "all"
        assert not any(m["person"] and m["person"]["id"] == ids[MEMBERS[1]] for m in finals)
        # the same speech in a room without a roster: no scope field
        plain = await stream_file(url, talk, "lobby", speed=0)
        assert all("scope" not in m for m in plain if m["type"] == "speaker")

        # a deleted person leaves the roster; null removes it
        await api_call(url, {"type": "delete_person", "id": 4, "person": ids[MEMBERS[1]]})
        rooms = await api_call(url, {"type": "rooms", "id": 5})
        assert rooms["rooms"] == [{"room": "board", "people": [ids[MEMBERS[0]]]}]
        reply = await api_call(url, {"type": "set_room", "id": 6, "room": "board", "people": None})
        assert reply == {"type": "room", "id": 6, "room": "board", "people": None}
        assert (await api_call(url, {"type": "rooms", "id": 7}))["rooms"] == []
