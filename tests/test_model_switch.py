"""Switching the embedding model on one data dir: vectors of different models never meet.

A real server on 127.0.0.1:0 with the real models. Three LibriSpeech voices are enrolled
with CAM++ (the default config); the server is restarted on the same data dir with GE2E
(``config-ge2e.yaml``'s model, match, segment and enroll sections): everyone is still
listed, with no speech for this model, and identification finds nobody, without an error. Enrolling
them again under GE2E makes them identifiable; back on CAM++, the CAM++ voiceprints work
as before, untouched by the GE2E ones.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from server_support import LIBRI_DIR, api_client, manifest, pcm_fields, read_flac, running_server

from streamer.config import REPO_ROOT, load_config

pytestmark = pytest.mark.slow

GE2E = load_config(REPO_ROOT / "config-ge2e.yaml")
GE2E_SECTIONS: dict[str, Any] = {"model": GE2E.model, "match": GE2E.match,
                                 "segment": GE2E.segment, "enroll": GE2E.enroll}
SPEAKERS = 3


def _voices() -> dict[str, tuple[np.ndarray, list[np.ndarray]]]:
    """speaker -> (enrolment audio: first two utterances, test utterances: the next two)."""
    rows: dict[str, list[Path]] = {}
    for path, speaker, _ in manifest(LIBRI_DIR):
        rows.setdefault(speaker, []).append(path)
    voices = {}
    for speaker in sorted(rows)[:SPEAKERS]:
        files = rows[speaker]
        enrol = np.concatenate([read_flac(p) for p in files[:2]])
        voices[speaker] = (enrol, [read_flac(p) for p in files[2:4]])
    return voices


async def _enrol(client: Any, voices: dict[str, tuple[np.ndarray, list[np.ndarray]]],
                 ids: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Enrol each voice (a new person, or another voiceprint of ``ids[speaker]``)."""
    people = {}
    for speaker, (enrol, _) in voices.items():
        target = {"person": ids[speaker]} if ids else {"name": f"Speaker {speaker}"}
        reply = await client.call({"type": "enroll", "id": f"e{speaker}", **target,
                                   **pcm_fields(enrol)})
        assert reply["type"] == "enrolled", reply
        people[speaker] = reply["person"]
    return people


async def _identify(client: Any, voices: dict[str, tuple[np.ndarray, list[np.ndarray]]]
                    ) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for speaker, (_, tests) in voices.items():
        for k, x in enumerate(tests):
            reply = await client.call({"type": "identify", "id": f"i{speaker}{k}", "top_k": 5,
                                       **pcm_fields(x)})
            assert reply["type"] == "identified", reply
            out.append((speaker, reply))
    return out


def _speech_s(people_reply: dict[str, Any]) -> dict[str, float]:
    assert people_reply["type"] == "people", people_reply
    return {p["id"]: p["speech_s"] for p in people_reply["people"]}


async def test_switching_models_never_compares_across_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    voices = _voices()

    # 1. CAM++ (default config): enrol and identify.
    async with running_server(tmp_path, data_dir=data) as server, \
            api_client(server.url) as client:
        cam_people = await _enrol(client, voices)
        ids = {s: p["id"] for s, p in cam_people.items()}
        cam_replies = await _identify(client, voices)
        assert all(r["match"] is not None and r["match"]["id"] == ids[s]
                   for s, r in cam_replies)
        cam_speech = _speech_s(await client.call({"type": "people", "id": "p"}))
    assert all(cam_speech[ids[s]] > 4.0 for s in voices)

    # 2. Same data dir, GE2E: people are listed, but nobody has a GE2E voiceprint.
    async with running_server(tmp_path, data_dir=data, **GE2E_SECTIONS) as server, \
            api_client(server.url) as client:
        # GE2E has no telephone-line variant: phone-line enrolments are checked by the
        # model itself (enroll.telephone_below_db is on by default) and the server starts
        assert server.app.config.enroll.telephone_below_db is not None
        assert server.app.channels == {}
        listed = _speech_s(await client.call({"type": "people", "id": "p"}))
        assert set(listed) == set(ids.values())
        assert all(v == 0.0 for v in listed.values())
        for _, reply in await _identify(client, voices):
            assert reply["match"] is None and reply["results"] == [], reply
            assert reply["threshold"] == GE2E.match.max_distance
        # The connection still works: enrol them again, now with GE2E.
        ge2e_people = await _enrol(client, voices, ids)
        assert {s: p["id"] for s, p in ge2e_people.items()} == ids
        ge2e_replies = await _identify(client, voices)
        listed = _speech_s(await client.call({"type": "people", "id": "p2"}))
    for speaker, person in ge2e_people.items():
        # Only the GE2E voiceprint counts under GE2E, not the earlier CAM++ one.
        assert person["speech_s"] == pytest.approx(cam_speech[ids[speaker]], abs=0.05)
        assert listed[ids[speaker]] == person["speech_s"]
    # GE2E ranks the right person first; whether it also *matches* depends on its strict
    # threshold (0.6 rejects most genuine items: see docs/model.md "Choosing the model").
    assert all(len(r["results"]) == SPEAKERS and r["results"][0]["id"] == ids[s]
               for s, r in ge2e_replies), ge2e_replies
    assert all(r["match"] is None or r["match"]["id"] == ids[s] for s, r in ge2e_replies)

    # 3. Back to CAM++: its voiceprints are as they were; GE2E's are not mixed in.
    async with running_server(tmp_path, data_dir=data) as server, \
            api_client(server.url) as client:
        assert _speech_s(await client.call({"type": "people", "id": "p"})) == cam_speech
        again = await _identify(client, voices)
    for (speaker, before), (_, after) in zip(cam_replies, again):
        assert after["match"] is not None and after["match"]["id"] == ids[speaker]
        assert after["results"][0]["distance"] == pytest.approx(
            before["results"][0]["distance"], abs=1e-4)

    # Each voiceprint row carries its model; the index caches are per model.
    with sqlite3.connect(data / "registry.sqlite3") as db:
        rows = db.execute("SELECT model_id, COUNT(*), LENGTH(embedding) FROM voiceprints "
                          "GROUP BY model_id ORDER BY model_id").fetchall()
    assert [(m.split("-")[0], n, size) for m, n, size in rows] == [
        ("campplus", SPEAKERS, 192 * 4), ("resemblyzer", SPEAKERS, 256 * 4)]
    assert len(list(data.glob("index-campplus-*.usearch"))) == 1
    assert len(list(data.glob("index-resemblyzer-*.usearch"))) == 1
