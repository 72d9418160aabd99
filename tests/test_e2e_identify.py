"""End to end over /v1/api: enrol, identify (1:N), verify (1:1), manage people, restart.

Real CAM++ model, real LibriSpeech voices, a real server on 127.0.0.1:0, real SQLite
files under tmp_path. The 10 test-other speakers are enrolled once per module (on a
server that is then shut down) and every test starts its own server on a copy of
that data dir, so tests do not share state and each start is also a restart.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from server_support import (
    IMPOSTOR_DIR,
    LIBRI_DIR,
    api_call,
    api_client,
    audio_fields,
    manifest,
    pcm_fields,
    read_flac,
    running_server,
)

from bench.conditions import telephone
from streamer import wire
from streamer.evaluation import speaker_halves
from streamer.room_profiles import PRESETS, parse_rooms

pytestmark = pytest.mark.slow

MSGPACK, JSON = wire.Encoding.MSGPACK, wire.Encoding.JSON
#: Enrolment audio: the first utterances of a speaker until this much audio (max 2).
ENROL_AUDIO_S = 7.0
#: How speakers' enrolment audio is sent: file formats ("audio") or raw "pcm".
ENROL_AS = ["WAV", "FLAC", "OGG", "MP3", "pcm", "pcm", "WAV", "pcm", "FLAC", "pcm"]


@dataclass
class Enrolled:
    data_dir: Path
    #: speaker label -> person id
    ids: dict[str, str]
    #: speaker label -> enrolment reply's person map
    people: dict[str, dict[str, Any]]
    #: speaker label -> test utterances (not used for enrolment)
    tests: dict[str, list[Path]]
    #: speaker label -> enrolment utterances
    enrol_files: dict[str, list[Path]]


def _split_speakers() -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    by_speaker: dict[str, list[tuple[Path, float]]] = defaultdict(list)
    for path, speaker, seconds in manifest(LIBRI_DIR):
        by_speaker[speaker].append((path, seconds))
    enrol, tests = {}, {}
    for speaker, rows in by_speaker.items():
        chosen: list[Path] = []
        total = 0.0
        for path, seconds in rows[:2]:
            chosen.append(path)
            total += seconds
            if total >= ENROL_AUDIO_S:
                break
        enrol[speaker] = chosen
        tests[speaker] = [p for p, _ in rows[len(chosen):]]
    return enrol, tests


async def _enrol_all(url: str, enrol: dict[str, list[Path]]) -> dict[str, dict[str, Any]]:
    people = {}
    for i, (speaker, files) in enumerate(sorted(enrol.items())):
        x = np.concatenate([read_flac(p) for p in files])
        how = ENROL_AS[i % len(ENROL_AS)]
        fields = pcm_fields(x) if how == "pcm" else audio_fields(x, how)
        encoding = JSON if i % 2 else MSGPACK
        request_id = f"enrol-{speaker}" if i % 3 else i
        reply = await api_call(url, {"type": "enroll", "id": request_id, "name": f"Speaker {speaker}",
                                     "info": {"corpus": "librispeech", "n": i}, **fields},
                               encoding)
        assert reply["type"] == "enrolled", (speaker, how, reply)
        assert reply["id"] == request_id
        person = reply["person"]
        assert person["id"].startswith("p_")
        assert person["name"] == f"Speaker {speaker}"
        assert person["info"] == {"corpus": "librispeech", "n": i}
        assert person["speech_s"] == pytest.approx(reply["quality"]["speech_s"], abs=0.01)
        assert 5.0 <= person["speech_s"] <= reply["quality"]["audio_s"] <= len(x) / 16000 + 0.1
        people[speaker] = person
    return people


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory: pytest.TempPathFactory, speech_dir: Path) -> Enrolled:
    """The 10 LibriSpeech test-other speakers enrolled over /v1/api; server then closed."""
    base = tmp_path_factory.mktemp("enrolled")
    enrol, tests = _split_speakers()
    assert len(enrol) == 10

    async def run() -> dict[str, dict[str, Any]]:
        async with running_server(base) as server:
            return await _enrol_all(server.url, enrol)

    people = asyncio.run(run())
    return Enrolled(base / "data", {s: p["id"] for s, p in people.items()}, people, tests, enrol)


def _copy_data(enrolled: Enrolled, tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(enrolled.data_dir, target)
    return target


async def _identify_many(url: str, files: list[Path], top_k: int = 5,
                         connections: int = 3) -> list[dict[str, Any]]:
    """Identify each file (raw pcm), spread over a few connections; replies in file order."""
    replies: list[dict[str, Any] | None] = [None] * len(files)

    async def lane(k: int) -> None:
        encoding = JSON if k % 2 else MSGPACK
        async with api_client(url, encoding) as client:
            for i in range(k, len(files), connections):
                reply = await client.call({"type": "identify", "id": i, "top_k": top_k,
                                           **pcm_fields(read_flac(files[i]))})
                assert reply["type"] == "identified" and reply["id"] == i, reply
                replies[i] = reply

    await asyncio.gather(*(lane(k) for k in range(connections)))
    return [r for r in replies if r is not None]


def _check_identified(reply: dict[str, Any]) -> None:
    """Shape rules of an ``identified`` reply (nearest first, match within threshold)."""
    results = reply["results"]
    distances = [r["distance"] for r in results]
    assert distances == sorted(distances)
    assert all(0.0 <= d <= 2.0 for d in distances)
    if reply["match"] is not None:
        assert reply["match"]["id"] == results[0]["id"]
        assert reply["match"]["distance"] <= reply["threshold"]
    elif results:
        assert results[0]["distance"] > reply["threshold"]


async def test_identify_enrolled_speakers_top1(enrolled: Enrolled, tmp_path: Path) -> None:
    files, truth = [], []
    for speaker, paths in sorted(enrolled.tests.items()):
        files += paths
        truth += [enrolled.ids[speaker]] * len(paths)
    async with running_server(tmp_path, data_dir=_copy_data(enrolled, tmp_path)) as server:
        replies = await _identify_many(server.url, files)
    for reply in replies:
        _check_identified(reply)
        assert len(reply["results"]) == 5
    top1 = np.mean([r["results"][0]["id"] == t for r, t in zip(replies, truth)])
    accepted = np.mean([r["match"] is not None and r["match"]["id"] == t
                        for r, t in zip(replies, truth)])
    print(f"\nidentify: {len(files)} utterances of 10 enrolled speakers: top-1 {top1:.1%}, "
          f"matched to the right person (distance <= threshold) {accepted:.1%}")
    assert len(files) >= 80
    assert top1 >= 0.95
    assert accepted >= 0.90


async def test_never_enrolled_voices_are_rejected(enrolled: Enrolled, tmp_path: Path) -> None:
    files = [p for p, _, _ in manifest(IMPOSTOR_DIR)]
    assert len(files) == 100
    async with running_server(tmp_path, data_dir=_copy_data(enrolled, tmp_path)) as server:
        replies = await _identify_many(server.url, files, top_k=3)
    for reply in replies:
        _check_identified(reply)
        assert len(reply["results"]) == 3
    false_accepts = sum(r["match"] is not None for r in replies)
    nearest = np.array([r["results"][0]["distance"] for r in replies])
    print(f"\nopen set: {len(files)} never-enrolled voices: false accepts {false_accepts} "
          f"({false_accepts / len(files):.1%}); nearest distance median {np.median(nearest):.3f}, "
          f"min {nearest.min():.3f}")
    assert false_accepts / len(files) <= 0.05


async def test_the_large_gallery_rule_tightens_identify(enrolled: Enrolled,
                                                       tmp_path: Path) -> None:
    """The rule set to start at 2 people, so the 10 enrolled count as a large gallery:
    the reply reports the tightened threshold and the margin, every match obeys both,
    and the rule only ever takes names away (same speech, same voiceprints)."""
    files = [p for paths in enrolled.tests.values() for p in paths[:4]]
    files += [p for p, _, _ in manifest(IMPOSTOR_DIR)][:40]
    data = _copy_data(enrolled, tmp_path)
    async with running_server(tmp_path, data_dir=data) as server:
        plain = await _identify_many(server.url, files, top_k=1)
    rule = {"large_gallery_from_people": 2, "large_gallery_tighten_per_tenfold": 0.1,
            "large_gallery_margin": 0.1}
    async with running_server(tmp_path, data_dir=data, match=rule) as server:
        ruled = await _identify_many(server.url, files, top_k=2)
        one = await api_call(server.url, {"type": "identify", "id": "k1", "top_k": 1,
                                          **pcm_fields(read_flac(files[0]))})
    assert len(one["results"]) == 1  # top_k is kept although the margin needs two
    expected = round(1.0 - 0.1 * np.log10(10 / 2), 4)
    assert all(r["threshold"] == 1.0 and r["margin"] == 0.0 for r in plain)
    for before, after in zip(plain, ruled):
        assert after["threshold"] == pytest.approx(expected) and after["margin"] == 0.1
        assert after["results"][0] == before["results"][0]
        best, second = after["results"]
        if after["match"] is not None:  # the rule only ever takes names away
            assert before["match"] == after["match"]
            assert after["match"]["distance"] <= expected
            assert second["distance"] - best["distance"] >= 0.1
        else:
            assert best["distance"] > expected or second["distance"] - best["distance"] < 0.1
    named = sum(r["match"] is not None for r in plain)
    named_rule = sum(r["match"] is not None for r in ruled)
    print(f"\nlarge-gallery rule on 10 people: named {named} -> {named_rule} of {len(files)}")
    assert named_rule >= 0.8 * named >= 0.8 * 0.8 * 40  # enrolled voices stand out


async def test_verify_one_to_one(enrolled: Enrolled, tmp_path: Path) -> None:
    speakers = sorted(enrolled.ids)
    own_accepted = other_rejected = 0
    async with running_server(tmp_path, data_dir=_copy_data(enrolled, tmp_path)) as server:
        async with api_client(server.url, JSON) as client:
            for i, speaker in enumerate(speakers):
                pid = enrolled.ids[speaker]
                other = speakers[(i + 1) % len(speakers)]
                for path, own in ((enrolled.tests[speaker][0], True),
                                  (enrolled.tests[other][0], False)):
                    reply = await client.call({"type": "verify", "id": f"v{i}{own}", "person": pid,
                                               **pcm_fields(read_flac(path))})
                    assert reply["type"] == "verified", reply
                    assert reply["id"] == f"v{i}{own}" and reply["person"] == pid
                    assert reply["threshold"] == server.app.config.match.max_distance
                    assert reply["accepted"] == (reply["distance"] <= reply["threshold"])
                    if own:
                        own_accepted += reply["accepted"]
                    else:
                        other_rejected += not reply["accepted"]
    print(f"\nverify: own voice accepted {own_accepted}/10, "
          f"another enrolled voice rejected {other_rejected}/10")
    assert own_accepted >= 8
    assert other_rejected >= 9


async def test_identify_and_verify_for_a_room_use_its_profile(enrolled: Enrolled,
                                                              tmp_path: Path) -> None:
    """``room`` on identify / verify: that room's profile decides (threshold, VAD and
    speech needed), as for its live streams; without it, or for a room with no profile,
    the top-level config does. Same speech, same voiceprints: the decisions move, and in
    the far room (``match.channel: far``) the distances too."""
    speakers = sorted(enrolled.ids)
    files = [enrolled.tests[s][0] for s in speakers[:5]]
    files += [p for p, _, _ in manifest(IMPOSTOR_DIR)][:10]
    rooms = parse_rooms({"board*": "far", "strict": {"match": {"min_request_speech_s": 60}}})
    async with running_server(tmp_path, data_dir=_copy_data(enrolled, tmp_path),
                              rooms=rooms) as server:
        async with api_client(server.url) as client:
            for i, path in enumerate(files):
                pcm = pcm_fields(read_flac(path))
                plain = await client.call({"type": "identify", "id": f"a{i}", **pcm})
                lobby = await client.call({"type": "identify", "id": f"b{i}", "room": "lobby",
                                           **pcm})
                far = await client.call({"type": "identify", "id": f"c{i}",
                                         "room": "boardroom", **pcm})
                for reply in (plain, lobby, far):
                    _check_identified(reply)
                assert plain["threshold"] == lobby["threshold"] == 1.0
                assert lobby["results"] == plain["results"]
                assert far["threshold"] == PRESETS["far"]["match"]["max_distance"]
                strict = await client.call({"type": "identify", "id": f"d{i}", "room": "strict",
                                            **pcm})
                assert strict["type"] == "error" and strict["code"] == "too_little_speech"
                assert "need at least 60" in strict["message"]
            pid = enrolled.ids[speakers[0]]
            pcm = pcm_fields(read_flac(files[0]))
            near = await client.call({"type": "verify", "id": "v1", "person": pid, **pcm})
            far = await client.call({"type": "verify", "id": "v2", "person": pid,
                                     "room": "boardroom", **pcm})
            limit = PRESETS["far"]["match"]["max_distance"]
            assert (near["threshold"], far["threshold"]) == (1.0, limit)
            assert far["accepted"] == (far["distance"] <= limit)
            # the far room embeds with the far-field variant: the same speech, other numbers
            assert far["distance"] != near["distance"]
            bad = await client.call({"type": "identify", "id": "x", "room": 7, **pcm})
            assert bad["type"] == "error" and bad["code"] == "bad_message"
            assert "room" in bad["message"]


async def test_identify_through_a_phone_line_uses_the_telephone_variant(
        enrolled: Enrolled, tmp_path: Path) -> None:
    """A room with the ``phone`` profile embeds its speech with the model's telephone-line
    variant (``match.channel``), compared with the same wideband voiceprints. On speakers
    of the test half (the variant was trained on the tune half only), speech passed
    through a telephone channel lands nearer its own voiceprint than the model puts it,
    and is named at least as often."""
    _, test_half = speaker_halves(enrolled.ids)
    assert len(test_half) >= 4
    rooms = parse_rooms({"dial-in-*": "phone"})
    plain_d, phone_d, plain_top, phone_top = [], [], 0, 0
    async with running_server(tmp_path, data_dir=_copy_data(enrolled, tmp_path),
                              rooms=rooms) as server:
        async with api_client(server.url) as client:
            for i, speaker in enumerate(test_half):
                for j, path in enumerate(enrolled.tests[speaker][:3]):
                    pcm = pcm_fields(telephone(read_flac(path)).astype(np.float32))
                    ask = {"type": "identify", "top_k": len(enrolled.ids), **pcm}
                    plain = await client.call({**ask, "id": f"w{i}.{j}"})
                    phone = await client.call({**ask, "id": f"t{i}.{j}", "room": "dial-in-2"})
                    _check_identified(plain)
                    _check_identified(phone)
                    assert "channel" not in plain and phone["channel"] == "telephone"
                    own = enrolled.ids[speaker]
                    plain_d.append(next(r["distance"] for r in plain["results"] if r["id"] == own))
                    phone_d.append(next(r["distance"] for r in phone["results"] if r["id"] == own))
                    plain_top += plain["results"][0]["id"] == own
                    phone_top += phone["results"][0]["id"] == own
            pid = enrolled.ids[test_half[0]]
            pcm = pcm_fields(telephone(read_flac(enrolled.tests[test_half[0]][0])).astype(np.float32))
            verified = await client.call({"type": "verify", "id": "v", "person": pid,
                                          "room": "dial-in-9", **pcm})
            assert verified["type"] == "verified" and verified["channel"] == "telephone"
    print(f"\nphone line, {len(plain_d)} utterances: own distance median "
          f"{np.median(plain_d):.3f} (model) -> {np.median(phone_d):.3f} (telephone variant); "
          f"top-1 {plain_top} -> {phone_top}")
    assert np.median(phone_d) < np.median(plain_d) - 0.05
    assert phone_top >= plain_top


async def test_people_and_rename(enrolled: Enrolled, tmp_path: Path) -> None:
    speaker = sorted(enrolled.ids)[3]
    pid = enrolled.ids[speaker]
    async with running_server(tmp_path, data_dir=_copy_data(enrolled, tmp_path)) as server:
        async with api_client(server.url, MSGPACK) as client:
            reply = await client.call({"type": "people", "id": "list"})
            assert reply["type"] == "people" and reply["id"] == "list"
            listed = {p["id"]: p for p in reply["people"]}
            assert set(listed) == set(enrolled.ids.values())
            for s, person in enrolled.people.items():
                got = listed[person["id"]]
                assert got["name"] == f"Speaker {s}"
                assert got["info"] == person["info"]
                assert got["speech_s"] == pytest.approx(person["speech_s"], abs=1e-6)
                assert got["created"] > 1.6e9

            reply = await client.call({"type": "update_person", "id": 7, "person": pid,
                                       "name": "Ada Lovelace", "info": {"team": "math"}})
            assert reply == {"type": "person", "id": 7, "person": {
                **listed[pid], "name": "Ada Lovelace", "info": {"team": "math"}}}
            reply = await client.call({"type": "identify", "id": 8,
                                       **pcm_fields(read_flac(enrolled.tests[speaker][1]))})
            assert reply["match"] == {**reply["results"][0], "name": "Ada Lovelace"}
            assert reply["match"]["id"] == pid
        # the other encoding sees the same people
        reply = await api_call(server.url, {"type": "people", "id": 9}, JSON)
        names = {p["id"]: p["name"] for p in reply["people"]}
        assert names[pid] == "Ada Lovelace" and len(names) == 10


async def test_people_in_pages_and_by_query(enrolled: Enrolled, tmp_path: Path) -> None:
    data = _copy_data(enrolled, tmp_path)
    async with running_server(tmp_path, data_dir=data, server={"max_people_reply": 4}) as server:
        async with api_client(server.url, MSGPACK) as client:
            pages, offset = [], 0
            while True:
                reply = await client.call({"type": "people", "id": offset, "offset": offset,
                                           "limit": 3})
                assert reply["total"] == 10 and reply["offset"] == offset
                if not reply["people"]:
                    break
                pages.append([p["id"] for p in reply["people"]])
                offset += len(reply["people"])
            assert [len(page) for page in pages] == [3, 3, 3, 1]
            everyone = [pid for page in pages for pid in page]
            assert sorted(everyone) == sorted(enrolled.ids.values())  # each once
            created = []
            for pid in everyone:
                got = await client.call({"type": "people", "id": 1, "query": pid})
                assert [p["id"] for p in got["people"]] == [pid] and got["total"] == 1
                created.append(got["people"][0]["created"])
            assert created == sorted(created)  # oldest enrolment first
            speaker = sorted(enrolled.ids)[0]
            reply = await client.call({"type": "people", "id": 2,
                                       "query": f"speaker {speaker}".upper()})
            assert [p["id"] for p in reply["people"]] == [enrolled.ids[speaker]]
            reply = await client.call({"type": "people", "id": 3, "query": "Speaker"})
            assert reply["type"] == "error" and reply["code"] == "too_large"
            assert "10 people match" in reply["message"] and "pages" in reply["message"]
            reply = await client.call({"type": "people", "id": 4, "query": "nobody-like-this"})
            assert reply["people"] == [] and reply["total"] == 0
            reply = await client.call({"type": "people", "id": 5, "limit": 0})
            assert reply["type"] == "error" and reply["code"] == "bad_message"


async def test_several_enrolments_add_up(enrolled: Enrolled, tmp_path: Path) -> None:
    # The speaker enrolled on the least speech gets one more utterance (its first test one).
    speaker = min(enrolled.people, key=lambda s: enrolled.people[s]["speech_s"])
    pid = enrolled.ids[speaker]
    extra, rest = enrolled.tests[speaker][0], enrolled.tests[speaker][1:]
    async with running_server(tmp_path, data_dir=_copy_data(enrolled, tmp_path)) as server:
        before = await _identify_many(server.url, rest)
        reply = await api_call(server.url, {"type": "enroll", "id": "more", "person": pid,
                                            **audio_fields(read_flac(extra), "FLAC")}, JSON)
        assert reply["type"] == "enrolled" and reply["person"]["id"] == pid, reply
        added = reply["quality"]["speech_s"]
        assert added > 1.0
        assert reply["person"]["speech_s"] == pytest.approx(
            enrolled.people[speaker]["speech_s"] + added, abs=0.02)
        assert reply["person"]["name"] == f"Speaker {speaker}"
        after = await _identify_many(server.url, rest)
        people = await api_call(server.url, {"type": "people", "id": 1})
        assert {p["id"]: p["speech_s"] for p in people["people"]}[pid] == reply["person"]["speech_s"]

    def own_distance(replies: list[dict[str, Any]]) -> np.ndarray:
        return np.array([next(r["distance"] for r in rep["results"] if r["id"] == pid)
                         for rep in replies])

    top1_before = sum(r["results"][0]["id"] == pid for r in before)
    top1_after = sum(r["results"][0]["id"] == pid for r in after)
    d_before, d_after = own_distance(before), own_distance(after)
    print(f"\nspeaker {speaker}: enrolled {enrolled.people[speaker]['speech_s']:.1f} s -> "
          f"{reply['person']['speech_s']:.1f} s; top-1 {top1_before}/{len(rest)} -> "
          f"{top1_after}/{len(rest)}; mean own distance {d_before.mean():.3f} -> "
          f"{d_after.mean():.3f}")
    assert top1_after >= top1_before
    assert d_after.mean() <= d_before.mean() + 0.01


async def test_request_errors_keep_the_connection(enrolled: Enrolled, tmp_path: Path) -> None:
    speaker = sorted(enrolled.ids)[0]
    x = read_flac(enrolled.tests[speaker][0])
    start = int(np.argmax(np.abs(x) > 0.05))  # 1.2 s from the first loud sample
    clip = x[start:start + int(1.2 * 16000)]  # below enroll.min_speech_s
    async with running_server(tmp_path, data_dir=_copy_data(enrolled, tmp_path)) as server:
        for encoding in (MSGPACK, JSON):
            async with api_client(server.url, encoding) as client:
                reply = await client.call({"type": "enroll", "id": "short", "name": "Shorty",
                                           **audio_fields(clip, "WAV")})
                assert reply["type"] == "error" and reply["code"] == "too_little_speech", reply
                assert reply["id"] == "short"
                m = re.search(r"found (\d+(?:\.\d+)?) s of speech.*?(\d+(?:\.\d+)?) s",
                              reply["message"])
                assert m, reply["message"]
                found, needed = float(m.group(1)), float(m.group(2))
                assert 0.5 <= found <= 1.2
                assert found < needed == server.app.config.enroll.min_speech_s

                for kind in ("verify", "delete_person"):
                    msg: dict[str, Any] = {"type": kind, "id": kind, "person": "p_000000000000"}
                    if kind == "verify":
                        msg.update(pcm_fields(x))
                    reply = await client.call(msg)
                    assert reply["type"] == "error" and reply["code"] == "unknown_person", reply
                    assert reply["id"] == kind and "p_000000000000" in reply["message"]

                # the same connection still answers, and nobody was added
                reply = await client.call({"type": "people", "id": "after"})
                assert reply["type"] == "people" and len(reply["people"]) == 10
                reply = await client.call({"type": "identify", "id": "x", **pcm_fields(x)})
                assert reply["match"]["id"] == enrolled.ids[speaker]


async def test_restart_keeps_people_and_voiceprints(enrolled: Enrolled, tmp_path: Path) -> None:
    data_dir = _copy_data(enrolled, tmp_path)
    speakers = sorted(enrolled.ids)
    probes = [(s, enrolled.tests[s][2]) for s in speakers[:4]]
    new_x = read_flac(enrolled.tests[speakers[5]][3])
    async with running_server(tmp_path, data_dir=data_dir) as server:
        reply = await api_call(server.url, {"type": "update_person", "id": 1,
                                            "person": enrolled.ids[speakers[0]], "name": "Renamed"})
        assert reply["person"]["name"] == "Renamed"
        first = await api_call(server.url, {"type": "people", "id": 2})
        before = await _identify_many(server.url, [p for _, p in probes])
    # a new server (new App, new registry) on the same data dir
    async with running_server(tmp_path, data_dir=data_dir) as server:
        second = await api_call(server.url, {"type": "people", "id": 2}, JSON)
        after = await _identify_many(server.url, [p for _, p in probes])
        reply = await api_call(server.url, {"type": "identify", "id": 3, **pcm_fields(new_x)})
    assert second["people"] == first["people"]
    assert len(second["people"]) == 10
    for (speaker, _), b, a in zip(probes, before, after):
        assert a["match"] is not None and a["match"]["id"] == enrolled.ids[speaker]
        assert a["results"] == b["results"]
    assert after[0]["match"]["name"] == "Renamed"
    assert reply["match"]["id"] == enrolled.ids[speakers[5]]


def _files_holding(data_dir: Path, needle: bytes) -> list[str]:
    names = []
    for path in sorted(data_dir.iterdir()):
        if path.is_file() and needle in path.read_bytes():
            names.append(path.name)
    return names


async def test_delete_person_erases_voice_data(enrolled: Enrolled, tmp_path: Path) -> None:
    data_dir = _copy_data(enrolled, tmp_path)
    speaker = sorted(enrolled.ids)[2]
    pid = enrolled.ids[speaker]
    probe = read_flac(enrolled.tests[speaker][0])
    async with running_server(tmp_path, data_dir=data_dir) as server:
        # read the stored voiceprint (float32 bytes) the way an attacker with the disk would
        db = sqlite3.connect(f"file:{data_dir / 'registry.sqlite3'}?mode=ro", uri=True)
        try:
            (blob,) = db.execute(
                "SELECT v.embedding FROM voiceprints v JOIN people p ON p.key = v.person_key "
                "WHERE p.id = ?", (pid,)).fetchone()
        finally:
            db.close()
        assert len(blob) == 4 * 192
        index_files = [p.name for p in data_dir.glob("index-*.usearch")]
        assert len(index_files) == 1
        holding = _files_holding(data_dir, blob)
        assert "registry.sqlite3" in holding or "registry.sqlite3-wal" in holding
        assert index_files[0] in holding  # one voiceprint: the centroid is the same vector

        async with api_client(server.url, JSON) as client:
            reply = await client.call({"type": "identify", "id": 1, "top_k": 10,
                                       **pcm_fields(probe)})
            assert reply["match"]["id"] == pid
            reply = await client.call({"type": "delete_person", "id": 2, "person": pid})
            assert reply == {"type": "deleted", "id": 2, "person": pid}
            reply = await client.call({"type": "identify", "id": 3, "top_k": 10,
                                       **pcm_fields(probe)})
            assert reply["type"] == "identified"
            assert pid not in {r["id"] for r in reply["results"]}
            assert len(reply["results"]) == 9
            assert reply["match"] is None or reply["match"]["id"] != pid
            reply = await client.call({"type": "people", "id": 4})
            assert pid not in {p["id"] for p in reply["people"]} and len(reply["people"]) == 9
            reply = await client.call({"type": "delete_person", "id": 5, "person": pid})
            assert reply["code"] == "unknown_person" and reply["id"] == 5
        # while the server still runs, and after it has stopped
        assert _files_holding(data_dir, blob) == []
        assert _files_holding(data_dir, blob[:64]) == []
    assert _files_holding(data_dir, blob) == []
    async with running_server(tmp_path, data_dir=data_dir) as server:
        reply = await api_call(server.url, {"type": "people", "id": 1})
        assert pid not in {p["id"] for p in reply["people"]} and len(reply["people"]) == 9
