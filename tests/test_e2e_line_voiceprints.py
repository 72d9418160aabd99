"""Line voiceprints end to end (``enroll.line_voiceprints``, :mod:`streamer.line_voiceprints`):
real servers on 127.0.0.1, the real model and its telephone-line variant, LibriSpeech
speakers of the test half (the variant was trained on the tune half only), real SQLite
files. Probes go through the benchmark's G.712 phone channel (``bench/conditions.py``),
not through the random lines the server copies enrolments through.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from server_support import LIBRI_DIR, api_client, manifest, pcm_fields, read_flac, running_server

from bench.conditions import telephone
from streamer.evaluation import speaker_halves
from streamer.line_voiceprints import line_model_id
from streamer.room_profiles import parse_rooms

pytestmark = pytest.mark.slow

ROOMS = parse_rooms({"dial-in-*": "phone"})
SPEAKERS = 5


def _voices() -> dict[str, tuple[np.ndarray, list[np.ndarray]]]:
    """Test-half speaker -> (enrolment audio: first two utterances, phone-line probes of
    the next three)."""
    rows: dict[str, list[Path]] = defaultdict(list)
    for path, speaker, _ in manifest(LIBRI_DIR):
        rows[speaker].append(path)
    _, test_half = speaker_halves(sorted(rows))
    assert len(test_half) >= SPEAKERS
    out = {}
    for speaker in sorted(test_half)[:SPEAKERS]:
        files = rows[speaker]
        enrol = np.concatenate([read_flac(p) for p in files[:2]])
        probes = [telephone(read_flac(p)).astype(np.float32) for p in files[2:5]]
        out[speaker] = (enrol, probes)
    return out


def _rows(data_dir: Path, person_id: str) -> dict[str, list[bytes]]:
    """model id -> the person's stored voiceprints (read-only, as anyone with the disk)."""
    db = sqlite3.connect(f"file:{data_dir / 'registry.sqlite3'}?mode=ro", uri=True)
    try:
        found: dict[str, list[bytes]] = defaultdict(list)
        for model_id, blob in db.execute(
                "SELECT v.model_id, v.embedding FROM voiceprints v JOIN people p "
                "ON p.key = v.person_key WHERE p.id = ? ORDER BY v.id", (person_id,)):
            found[model_id].append(blob)
        return dict(found)
    finally:
        db.close()


async def _own_distances(url: str, ids: dict[str, str],
                         voices: dict[str, tuple[np.ndarray, list[np.ndarray]]]
                         ) -> tuple[list[float], int]:
    """Each probe identified in a phone room: its distance to its own person, top-1 hits."""
    own, top = [], 0
    async with api_client(url) as client:
        for speaker, (_, probes) in voices.items():
            for j, probe in enumerate(probes):
                reply = await client.call({"type": "identify", "id": f"{speaker}.{j}",
                                           "top_k": len(ids), "room": "dial-in-1",
                                           **pcm_fields(probe)})
                assert reply["type"] == "identified" and reply["channel"] == "telephone"
                own.append(next(r["distance"] for r in reply["results"]
                                if r["id"] == ids[speaker]))
                top += reply["results"][0]["id"] == ids[speaker]
    return own, top


async def test_phone_rooms_search_voiceprints_made_for_the_line(tmp_path: Path) -> None:
    """People enrolled from desk audio are nearer their line voiceprint than their
    wideband one when they call in, named at least as often; each enrolment stores one
    voiceprint of each kind. The same data dir with line voiceprints off searches the
    wideband voiceprints."""
    voices = _voices()
    data_dir = tmp_path / "data"
    ids: dict[str, str] = {}
    async with running_server(tmp_path, data_dir=data_dir, rooms=ROOMS) as server:
        model_id = server.app.embedder.model_id
        async with api_client(server.url) as client:
            for speaker, (enrol, _) in voices.items():
                reply = await client.call({"type": "enroll", "id": speaker,
                                           "name": f"Speaker {speaker}", **pcm_fields(enrol)})
                assert reply["type"] == "enrolled", reply
                ids[speaker] = reply["person"]["id"]
        line_own, line_top = await _own_distances(server.url, ids, voices)
    for pid in ids.values():
        rows = _rows(data_dir, pid)
        assert set(rows) == {model_id, line_model_id(model_id, "telephone")}
        assert len(rows[model_id]) == len(rows[line_model_id(model_id, "telephone")]) == 1
        assert rows[model_id] != rows[line_model_id(model_id, "telephone")]

    async with running_server(tmp_path, data_dir=data_dir, rooms=ROOMS,
                              enroll={"line_voiceprints": False}) as server:
        wide_own, wide_top = await _own_distances(server.url, ids, voices)
    print(f"\nphone-line probes, {len(line_own)}: own distance median "
          f"{np.median(wide_own):.3f} (wideband voiceprint) -> {np.median(line_own):.3f} "
          f"(line voiceprint); top-1 {wide_top} -> {line_top}")
    assert np.median(line_own) < np.median(wide_own) - 0.05
    assert line_top >= wide_top


async def test_line_voiceprints_follow_enrolments_renames_and_deletions(tmp_path: Path) -> None:
    """People enrolled while no room took phone calls get their wideband voiceprint as
    line voiceprint when a phone room is configured; a later enrolment adds a real one;
    a rename shows in phone rooms; a deletion erases the line voiceprint from the
    database, the phone room's index and every file."""
    voices = _voices()
    speakers = sorted(voices)[:3]
    data_dir = tmp_path / "data"
    ids: dict[str, str] = {}
    async with running_server(tmp_path, data_dir=data_dir) as server:  # no phone room
        model_id = server.app.embedder.model_id
        line_id = line_model_id(model_id, "telephone")
        async with api_client(server.url) as client:
            for speaker in speakers:
                reply = await client.call({"type": "enroll", "id": speaker, "name": speaker,
                                           **pcm_fields(voices[speaker][0])})
                ids[speaker] = reply["person"]["id"]
    assert all(set(_rows(data_dir, pid)) == {model_id} for pid in ids.values())

    first, second = ids[speakers[0]], ids[speakers[1]]
    probe = voices[speakers[0]][1][0]
    async with running_server(tmp_path, data_dir=data_dir, rooms=ROOMS) as server:
        # filled in at start: the wideband voiceprint stands in
        for pid in ids.values():
            rows = _rows(data_dir, pid)
            assert rows[line_id] == rows[model_id]
        async with api_client(server.url) as client:
            ask: dict[str, Any] = {"type": "identify", "top_k": 3, "room": "dial-in-4",
                                   **pcm_fields(probe)}
            before = await client.call({**ask, "id": "before"})
            assert before["results"][0]["id"] == first
            # another enrolment adds a line voiceprint made for the line
            reply = await client.call({"type": "enroll", "id": "more", "person": first,
                                       **pcm_fields(voices[speakers[0]][0][: 16000 * 6])})
            assert reply["type"] == "enrolled", reply
            assert len(_rows(data_dir, first)[line_id]) == 2
            renamed = await client.call({"type": "update_person", "id": "name",
                                         "person": first, "name": "Ann Caller"})
            assert renamed["person"]["name"] == "Ann Caller"
            after = await client.call({**ask, "id": "after"})
            assert after["results"][0] == {**after["results"][0], "id": first,
                                           "name": "Ann Caller"}
            line_blobs = _rows(data_dir, first)[line_id]
            deleted = await client.call({"type": "delete_person", "id": "del", "person": first})
            assert deleted["type"] == "deleted"
            gone = await client.call({**ask, "id": "gone"})
            assert first not in {r["id"] for r in gone["results"]}
            assert {r["id"] for r in gone["results"]} == {second, ids[speakers[2]]}
            verify = await client.call({"type": "verify", "id": "v", "person": first,
                                        "room": "dial-in-4", **pcm_fields(probe)})
            assert verify["type"] == "error" and verify["code"] == "unknown_person"
            for blob in line_blobs:  # while the server still runs
                assert not [p.name for p in data_dir.iterdir()
                            if p.is_file() and blob in p.read_bytes()]
    assert _rows(data_dir, first) == {}
