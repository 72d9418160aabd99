"""End to end over /v1/ingest and /v1/events: live streams of real speech.

Streams go through ``clients/stream_file.py``'s ``stream_file()`` as fast as possible
(``speed=0``): every check is on stream time, none on wall-clock speed. Speakers are
enrolled once per module over /v1/api (4 LibriSpeech test-other voices and the two AMI
speakers of ami_dev00/ami_dev01); each test starts its own server on a copy.

Scoring (written here, not imported): reference turns are ``(start, end, label)``; the
hypothesis is the ``final`` speaker events ``(start, end, person name or None)``. On a
10 ms grid, frames within ``collar`` seconds of a reference boundary are not scored;
a scored frame of reference speech counts as named right when a final event covers it
and names one of the speakers talking then (overlap: any of them).
"""

from __future__ import annotations

import asyncio
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import soxr
from server_support import (
    AMI_DIR,
    LIBRI_DIR,
    api_call,
    manifest,
    pcm_fields,
    read_flac,
    running_server,
    to_s16le,
)
from websockets.asyncio.client import connect

from bench.conditions import telephone
from clients.stream_file import stream_file
from streamer import wire
from streamer.evaluation import speaker_halves
from streamer.room_profiles import PRESETS, parse_rooms

pytestmark = pytest.mark.slow

RATE = 16000
#: LibriSpeech speakers of the stitched conversation; enrolled on their first 2 utterances.
CONV_SPEAKERS = ["1688", "2033", "3005", "533"]
#: (speaker, utterance index (never an enrolment one), silence after it in seconds)
CONV_PLAN = [("1688", 3, 0.5), ("2033", 3, 0.5), ("3005", 3, 0.0), ("533", 3, 0.5),
             ("1688", 4, 0.5), ("2033", 4, 0.0)]
AMI_SPEAKERS = ["MEE009", "MEE012"]
COLLAR_S = 0.25
#: Streams are sent as fast as possible; a deep worker queue keeps provisional windows
#: from being dropped (overload), so results do not depend on the machine's speed.
STREAM_CONFIG: dict[str, Any] = {"worker": {"max_queued_jobs": 10_000}}

Turn = tuple[float, float, str]


# -- scoring -------------------------------------------------------------------------------


def read_rttm(path: Path) -> list[Turn]:
    turns = []
    for line in path.read_text().splitlines():
        f = line.split()
        if f and f[0] == "SPEAKER":
            start, dur = float(f[3]), float(f[4])
            turns.append((start, start + dur, f[7]))
    return turns


def finals(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == "speaker" and m["final"]]


def hypothesis(messages: list[dict[str, Any]]) -> list[tuple[float, float, str | None]]:
    return [(m["start"], m["end"], m["person"]["name"] if m["person"] else None)
            for m in finals(messages)]


def named_right_share(ref: list[Turn], hyp: list[tuple[float, float, str | None]],
                      collar: float = COLLAR_S, step: float = 0.01) -> tuple[float, float]:
    """(share of scored reference speech named right, scored seconds)."""
    end = max([e for _, e, _ in ref] + [e for _, e, _ in hyp])
    t = (np.arange(int(np.ceil(end / step))) + 0.5) * step
    scored = np.zeros(len(t), bool)
    for s, e, _ in ref:
        scored |= (t >= s) & (t < e)
    for s, e, _ in ref:
        for b in (s, e):
            scored &= np.abs(t - b) > collar
    right = np.zeros(len(t), bool)
    for hs, he, name in hyp:
        if name is None:
            continue
        covered = (t >= hs) & (t < he)
        for s, e, label in ref:
            if label == name:
                right |= covered & (t >= s) & (t < e)
    total = scored.sum()
    return float((right & scored).sum() / total), float(total * step)


def check_event_order(messages: list[dict[str, Any]]) -> None:
    """Per segment: speech_start, provisionals, one final, speech_end, in that order."""
    state: dict[int, str] = {}
    for m in messages:
        kind = m["type"]
        if kind not in ("speech_start", "speaker", "speech_end"):
            continue
        seg = m["segment"]
        assert isinstance(m["ts"], float) and m["ts"] > 1.6e9
        if kind == "speech_start":
            assert seg not in state, f"segment {seg} started twice"
            state[seg] = "open"
        elif kind == "speaker" and not m["final"]:
            assert state.get(seg) == "open", f"provisional after the final of segment {seg}"
            assert m["start"] <= m["end"]
        elif kind == "speaker":
            assert state.get(seg) == "open", f"second final for segment {seg}"
            state[seg] = "final"
            assert m["start"] < m["end"]
        else:
            assert state.get(seg) == "final", f"speech_end before the final of segment {seg}"
            state[seg] = "closed"
        if kind == "speaker":
            d = [c["distance"] for c in m["candidates"]]
            assert d == sorted(d)
            if m["person"] is not None:
                assert m["person"]["id"] == m["candidates"][0]["id"]
                assert m["distance"] == d[0]
    assert state and all(v == "closed" for v in state.values()), state


def speaker_key(m: dict[str, Any]) -> tuple[Any, ...]:
    person = m.get("person")
    return (m["type"], m["segment"], m.get("final"), person["id"] if person else None)


# -- fixtures ------------------------------------------------------------------------------


@dataclass
class Setup:
    data_dir: Path
    ids: dict[str, str]  # label -> person id
    notes: list[str]


def _libri() -> dict[str, list[Path]]:
    by: dict[str, list[Path]] = defaultdict(list)
    for path, speaker, _ in manifest(LIBRI_DIR):
        by[speaker].append(path)
    return by


async def _enrol(url: str, notes: list[str]) -> dict[str, str]:
    ids = {}
    libri = _libri()
    for speaker in CONV_SPEAKERS:
        x = np.concatenate([read_flac(p) for p in libri[speaker][:2]])
        reply = await api_call(url, {"type": "enroll", "id": speaker, "name": speaker,
                                     **pcm_fields(x)})
        assert reply["type"] == "enrolled", reply
        ids[speaker] = reply["person"]["id"]
    for speaker in AMI_SPEAKERS:
        folder = AMI_DIR / "segments" / speaker
        files = sorted(folder.glob("ami_dev01_*.flac"))
        # the streamed recording's own segments, shortest first, only if dev01 is too short
        spare = sorted(folder.glob("ami_dev00_*.flac"), key=lambda p: sf.info(str(p)).frames)
        while True:
            x = np.concatenate([read_flac(p) for p in files])
            reply = await api_call(url, {"type": "enroll", "id": speaker, "name": speaker,
                                         **pcm_fields(x)})
            if reply["type"] == "enrolled":
                break
            assert reply["code"] == "too_little_speech" and spare, reply
            files.append(spare.pop(0))
            notes.append(f"{speaker}: ami_dev01 alone is too short ({reply['message']}); "
                         f"added {files[-1].name}")
        ids[speaker] = reply["person"]["id"]
        notes.append(f"{speaker} enrolled from {', '.join(p.name for p in files)}: "
                     f"{reply['person']['speech_s']:.1f} s of speech")
    return ids


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, speech_dir: Path) -> Setup:
    base = tmp_path_factory.mktemp("stream")
    notes: list[str] = []

    async def run() -> dict[str, str]:
        async with running_server(base) as server:
            return await _enrol(server.url, notes)

    ids = asyncio.run(run())
    print("\n" + "\n".join(notes))
    return Setup(base / "data", ids, notes)


@pytest.fixture
def data_dir(setup: Setup, tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(setup.data_dir, target)
    return target


def _speech_onset(x: np.ndarray) -> float:
    """Seconds from the start of an utterance to its first loud 10 ms frame."""
    frames = x[: len(x) // 160 * 160].reshape(-1, 160)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    return float(np.argmax(rms > 0.1 * np.percentile(rms, 95)) * 0.01)


@dataclass
class Conversation:
    path: Path
    samples: np.ndarray
    ref: list[Turn]  # utterance extents
    onsets: list[float]  # speech onset of each turn
    gap_before: list[float | None]  # silence before each turn (None for the first)


@pytest.fixture(scope="module")
def conversation(tmp_path_factory: pytest.TempPathFactory, speech_dir: Path) -> Conversation:
    libri = _libri()
    parts, ref, onsets, gaps = [], [], [], []
    t = 0.0
    previous_gap: float | None = None
    for speaker, index, gap in CONV_PLAN:
        path = libri[speaker][index]
        x = read_flac(path)
        parts.append(x)
        ref.append((t, t + len(x) / RATE, speaker))
        onsets.append(t + _speech_onset(x))
        gaps.append(previous_gap)
        t += len(x) / RATE
        if gap:
            parts.append(np.zeros(int(gap * RATE), np.float32))
            t += gap
        previous_gap = gap
    samples = np.concatenate(parts)
    out = tmp_path_factory.mktemp("conv") / "conversation.wav"
    sf.write(str(out), samples, RATE, subtype="PCM_16")
    return Conversation(out, samples, ref, onsets, gaps)


# -- (a) a stitched conversation -------------------------------------------------------------


@pytest.mark.parametrize("int8_channels, precision", [((), "float32"), (("wideband",), "int8")])
async def test_conversation_named_right(tmp_path: Path, data_dir: Path, setup: Setup,
                                        conversation: Conversation, int8_channels: tuple[str, ...],
                                        precision: str) -> None:
    """With the model's frames graph as exported and as its int8 copy (the default
    ``model.int8_channels``: it runs the live pieces; enrolment stays float32)."""
    async with running_server(tmp_path, data_dir=data_dir, **STREAM_CONFIG,
                              model={"int8_channels": int8_channels}) as server:
        assert server.app.streamer.precision == precision and server.app.streamer.pooled
        messages = await stream_file(server.url, conversation.path, "conf", speed=0)
    assert messages[0]["type"] == "ready" and messages[-1]["type"] == "bye"
    check_event_order(messages)
    share, scored_s = named_right_share(conversation.ref, hypothesis(messages))
    print(f"\nconversation ({precision}): {len(CONV_PLAN)} turns, {scored_s:.1f} s scored, "
          f"named right {share:.1%}")
    assert share >= 0.80
    # every enrolled voice of the conversation is named by some final event
    named = {m["person"]["id"] for m in finals(messages) if m["person"]}
    assert named == {setup.ids[s] for s in CONV_SPEAKERS}

    # first provisional of each turn, in stream time after its speech onset
    provisionals = [m for m in messages if m["type"] == "speaker" and not m["final"]]
    for (start, end, speaker), onset, gap in zip(conversation.ref, conversation.onsets,
                                                 conversation.gap_before):
        in_turn = [m for m in provisionals if m["start"] >= start - 0.5 and m["end"] > onset]
        # an early guess may be "unknown" (too little speech yet), never somebody else
        first = next(m for m in in_turn if m["person"] is not None)
        latency = first["end"] - onset
        print(f"  turn {speaker} at {onset:6.2f} s (gap before: {gap}): first named "
              f"after {latency:.2f} s: {first['person']['name']}")
        if gap == 0.0:
            # No pause: the change is found from two 1.5 s windows far from the turn
            # so far; the new turn starts in the middle of the first of them.
            assert latency <= 1.5 + 0.75 + 0.5
            assert first["start"] <= onset + 1.5
        else:
            assert latency <= 1.5
        assert first["person"]["id"] == setup.ids[speaker]


# -- (b) a real meeting ------------------------------------------------------------------------

#: Enrolled speech of ami_dev00 (far-field mix) named right by the final events, 0.25 s
#: collar. The shipped VAD aggressiveness (2) was chosen on the benchmark: 3 calls quiet
#: far-field stretches non-speech (about 69 % named right here), 2 and 1 keep them.
#: The int8 frames graph (the default ``model.int8_channels``) moves a final's distance
#: by less than this from the float32 graph's (measured here: at most 0.016).
INT8_DISTANCE_TOLERANCE = 0.03


async def test_ami_meeting_named_right(tmp_path: Path, data_dir: Path, setup: Setup) -> None:
    """With the float32 frames graph, and the same finals (bounds, nearest person, distance
    within :data:`INT8_DISTANCE_TOLERANCE`) with its int8 copy, the default: a decision
    differs only where a distance sits that close to the threshold (measured: one 1.9 s
    final at 0.996 vs 1.001 against 1.0, named right 83.8 vs 79.8 %)."""
    recording = AMI_DIR / "recordings" / "ami_dev00.flac"
    ref = read_rttm(AMI_DIR / "rttm" / "ami_dev00.rttm")
    assert {label for _, _, label in ref} == set(AMI_SPEAKERS)
    runs = {}
    for int8_channels in ((), ("wideband",)):
        async with running_server(tmp_path, data_dir=data_dir, **STREAM_CONFIG,
                                  model={"int8_channels": int8_channels}) as server:
            aggressiveness = server.app.config.vad.aggressiveness
            threshold = server.app.config.match.max_distance
            runs[int8_channels] = await stream_file(server.url, recording, "ami", speed=0,
                                                    chunk_ms=100)
    messages, int8 = runs[()], runs[("wideband",)]
    check_event_order(messages)
    check_event_order(int8)
    share, scored_s = named_right_share(ref, hypothesis(messages))
    print(f"\nami_dev00, vad.aggressiveness {aggressiveness}: {scored_s:.1f} s of enrolled "
          f"speech scored (collar {COLLAR_S} s), named right {share:.1%} (float32), "
          f"{named_right_share(ref, hypothesis(int8))[0]:.1%} (int8)")
    for s, e, name in hypothesis(messages):
        print(f"  {s:6.2f} - {e:6.2f} s  {name}")
    assert share >= 0.80
    pairs = list(zip(finals(messages), finals(int8), strict=True))
    for a, b in pairs:
        assert (a["start"], a["end"]) == (b["start"], b["end"])
        assert a["candidates"][0]["id"] == b["candidates"][0]["id"]
        da, db = a["candidates"][0]["distance"], b["candidates"][0]["distance"]
        assert abs(da - db) < INT8_DISTANCE_TOLERANCE, (a, b)
        if (a["person"] is None) != (b["person"] is None):
            assert abs(da - threshold) < INT8_DISTANCE_TOLERANCE


# -- (c) displays ------------------------------------------------------------------------------


async def _collect(ws: Any, until: int, timeout: float = 10.0,
                   states: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Read events until ``until`` have arrived (or ``timeout`` seconds of silence).

    ``room_state`` messages (the extension: the room's speakers merged over its mics,
    interleaved with the events) are not counted or returned; they go to ``states``.
    """
    got: list[dict[str, Any]] = []
    while len(got) < until:
        try:
            raw = await asyncio.wait_for(ws.recv(), timeout)
        except TimeoutError:
            break
        assert isinstance(raw, str), "displays get JSON text frames by default"
        message = wire.decode(raw)[0]
        if message["type"] == "room_state":
            if states is not None:
                states.append(message)
            continue
        got.append(message)
    return got


def check_room_states(states: list[dict[str, Any]], room: str) -> None:
    """Room states name the room, are merged (one entry per person) and end silent."""
    assert states, "no room_state message"
    for state in states:
        assert state["room"] == room and isinstance(state["ts"], float)
        ids = [e["person"]["id"] for e in state["speaking"] if e["person"]]
        assert len(ids) == len(set(ids))
        assert all(e["mics"] for e in state["speaking"])
    assert states[-1]["speaking"] == []


async def test_displays_get_the_room_events(tmp_path: Path, data_dir: Path,
                                            conversation: Conversation) -> None:
    async with running_server(tmp_path, data_dir=data_dir, **STREAM_CONFIG) as server:
        async with connect(f"{server.url}/v1/events?room=board") as display, \
                connect(f"{server.url}/v1/events?room=kitchen") as elsewhere:
            snap = wire.decode(await display.recv())[0]
            assert snap == {"type": "snapshot", "room": "board", "speaking": [], "recent": []}
            state = wire.decode(await display.recv())[0]  # right after the snapshot
            assert state["type"] == "room_state" and state["room"] == "board"
            assert state["speaking"] == []
            other_snap = wire.decode(await elsewhere.recv())[0]
            assert other_snap["type"] == "snapshot" and other_snap["room"] == "kitchen"
            assert wire.decode(await elsewhere.recv())[0]["type"] == "room_state"

            messages = await stream_file(server.url, conversation.path, "board", speed=0)
            events = [m for m in messages if m["type"] not in ("ready", "bye")]
            states: list[dict[str, Any]] = []
            shown = await _collect(display, len(events), states=states)
            assert [speaker_key(m) for m in shown] == [speaker_key(m) for m in events]
            assert shown == events  # the very same events, ts included
            assert all(m["room"] == "board" and m["mic"] == "file" for m in shown)
            # nothing more for this display, nothing at all for the other room
            assert await _collect(display, 1, timeout=0.5, states=states) == []
            check_room_states(states, "board")
            # the display read late, so queued room states were replaced by newer ones;
            # each one it got names only people the events named
            named = {e["person"]["id"] for s in states for e in s["speaking"] if e["person"]}
            assert named <= {m["person"]["id"] for m in events
                             if m["type"] == "speaker" and m["person"]}
            other_states: list[dict[str, Any]] = []
            assert await _collect(elsewhere, 1, timeout=0.5, states=other_states) == []
            assert other_states == []

        # a display joining later gets the recent finals in its snapshot, newest last
        async with connect(f"{server.url}/v1/events?room=board&encoding=msgpack") as late:
            raw = await late.recv()
            assert isinstance(raw, bytes)
            snap = wire.decode(raw)[0]
            raw = await late.recv()
            assert isinstance(raw, bytes)
            assert wire.decode(raw)[0]["type"] == "room_state"
    final_events = finals(messages)
    recent = final_events[-server.app.config.events.recent_events:]
    assert snap["type"] == "snapshot" and snap["speaking"] == []
    assert [speaker_key(m) for m in snap["recent"]] == [speaker_key(m) for m in recent]


# -- (c2) a far-field room profile ---------------------------------------------------------


def _trimmed(x: np.ndarray, within_db: float = 30.0) -> np.ndarray:
    """``x`` from its first to its last 10 ms frame within ``within_db`` of the loudest."""
    frames = x[: len(x) // 160 * 160].reshape(-1, 160).astype(np.float64)
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    loud = np.flatnonzero(db >= db.max() - within_db)
    return x[loud[0] * 160: (loud[-1] + 1) * 160]


async def test_a_far_room_profile_keeps_a_turn_whole_across_a_short_pause(
        tmp_path: Path, data_dir: Path, setup: Setup) -> None:
    """``rooms: {"table-*": far}``: one person's two utterances 0.5 s apart are one
    segment (one final) in a far room (800 ms hang-over) and two elsewhere (400 ms);
    ``ready.threshold`` says which threshold each room's stream uses."""
    libri = _libri()
    a, b = (_trimmed(read_flac(libri["1688"][i])) for i in (5, 6))
    gap_start = len(a) / RATE
    x = np.concatenate([a, np.zeros(RATE // 2, np.float32), b])
    path = tmp_path / "two_utterances.wav"
    sf.write(str(path), x, RATE, subtype="PCM_16")
    async with running_server(tmp_path, data_dir=data_dir, rooms=parse_rooms({"table-*": "far"}),
                              **STREAM_CONFIG) as server:
        near = await stream_file(server.url, path, "lobby", speed=0)
        far = await stream_file(server.url, path, "table-3", speed=0)
    for messages in (near, far):
        check_event_order(messages)
    assert near[0]["type"] == far[0]["type"] == "ready"
    assert near[0]["threshold"] == 1.0
    assert far[0]["threshold"] == PRESETS["far"]["match"]["max_distance"]

    def across_the_pause(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [m for m in finals(messages)
                if m["start"] < gap_start - 0.2 and m["end"] > gap_start + 0.7]

    assert not across_the_pause(near)
    assert len(finals(near)) >= 2
    whole = across_the_pause(far)
    assert len(whole) == 1, hypothesis(far)
    assert whole[0]["person"] == {"id": setup.ids["1688"], "name": "1688"}
    assert len(finals(far)) < len(finals(near))
    # far finals are one pass each, put to the pieces' veto (counted in bye.stats); the
    # close-talk room's pool their pieces and have nothing to veto
    assert far[-1]["type"] == near[-1]["type"] == "bye"
    assert near[-1]["stats"]["vetoed_finals"] == 0
    assert 0 <= far[-1]["stats"]["vetoed_finals"] <= len(finals(far))


async def test_the_segmentation_model_splits_two_voices_the_vad_bridged(
        tmp_path: Path, data_dir: Path, setup: Setup) -> None:
    """``segment.voice_split`` in a room profile: two enrolled people, one answering the
    other after 0.3 s, are one VAD segment under an 800 ms hang-over. With the window
    change detector off, that turn is one final; asked at its end, the segmentation
    model finds where one voice gave way to the other, and the turn becomes two finals
    that name each of them."""
    libri = _libri()
    pairs = [("1688", "2033"), ("3005", "533"), ("2033", "3005")]
    profile = {"vad": {"end_window_ms": 800}, "segment": {"change_distance": None}}
    rooms = parse_rooms({"plain-*": profile,
                         "split-*": {**profile, "segment": {"change_distance": None,
                                                            "voice_split": True}}})
    async with running_server(tmp_path, data_dir=data_dir, rooms=rooms,
                              **STREAM_CONFIG) as server:
        for k, (one, two) in enumerate(pairs):
            a, b = (_trimmed(read_flac(libri[who][4])) for who in (one, two))
            boundary = len(a) / RATE + 0.15
            path = tmp_path / f"pair{k}.wav"
            sf.write(str(path), np.concatenate([a, np.zeros(int(0.3 * RATE), np.float32), b]),
                     RATE, subtype="PCM_16")
            plain = await stream_file(server.url, path, f"plain-{k}", speed=0)
            split = await stream_file(server.url, path, f"split-{k}", speed=0)
            for messages in (plain, split):
                check_event_order(messages)
            assert plain[-1]["stats"]["voice_checks"] == 0
            assert split[-1]["stats"]["voice_checks"] >= 1
            assert len(finals(plain)) == 1, hypothesis(plain)
            got = finals(split)
            assert [m["person"] and m["person"]["name"] for m in got] == [one, two], \
                hypothesis(split)
            assert got[0]["closed_by"] == "change"
            assert abs(got[0]["end"] - boundary) < 0.6, (got[0]["end"], boundary)


# -- (c3) a phone line --------------------------------------------------------------------------


async def test_a_phone_room_names_people_heard_through_a_telephone_line(
        tmp_path: Path, data_dir: Path, setup: Setup) -> None:
    """``rooms: {"dial-in-*": phone}``: a conversation of people enrolled wideband, heard
    through a telephone channel (300-3400 Hz, 8 kHz mu-law), is named better in a phone
    room (the model's telephone-line variant) than in a wideband room. Only speakers of
    the test half: the variant was trained on the tune half's voices."""
    _, test_half = speaker_halves(_libri())
    speakers = [s for s in CONV_SPEAKERS if s in test_half]
    assert len(speakers) >= 3
    libri = _libri()
    parts, ref, t = [], [], 0.0
    for index in (5, 6):
        for speaker in speakers:
            x = telephone(_trimmed(read_flac(libri[speaker][index]))).astype(np.float32)
            parts += [x, np.zeros(RATE * 6 // 10, np.float32)]
            ref.append((t, t + len(x) / RATE, speaker))
            t += len(x) / RATE + 0.6
    path = tmp_path / "phone_call.wav"
    sf.write(str(path), np.concatenate(parts), RATE, subtype="PCM_16")
    async with running_server(tmp_path, data_dir=data_dir,
                              rooms=parse_rooms({"dial-in-*": "phone"}), **STREAM_CONFIG) as server:
        wide = await stream_file(server.url, path, "lobby", speed=0)
        phone = await stream_file(server.url, path, "dial-in-1", speed=0)
    for messages in (wide, phone):
        check_event_order(messages)
    assert "channel" not in wide[0] and phone[0]["channel"] == "telephone"
    wide_right, scored_s = named_right_share(ref, hypothesis(wide))
    phone_right, _ = named_right_share(ref, hypothesis(phone))
    wide_d, phone_d = own_distances(ref, setup.ids, wide), own_distances(ref, setup.ids, phone)
    print(f"\nphone call, {scored_s:.0f} s of speech: named right {wide_right:.1%} in a wideband "
          f"room, {phone_right:.1%} in a phone room; finals' distance to the speaker, median "
          f"{np.median(wide_d):.3f} -> {np.median(phone_d):.3f}")
    assert len(phone_d) >= len(ref) and len(wide_d) >= len(ref)
    assert np.median(phone_d) < np.median(wide_d) - 0.08
    assert phone_right > wide_right


def own_distances(ref: list[Turn], ids: dict[str, str],
                  messages: list[dict[str, Any]]) -> list[float]:
    """Each final's distance to the person who speaks most of it (from its candidates;
    finals whose speaker is not among them are left out)."""
    out = []
    for m in finals(messages):
        overlap: dict[str, float] = defaultdict(float)
        for b, e, s in ref:
            overlap[s] += max(0.0, min(e, m["end"]) - max(b, m["start"]))
        speaker = max(overlap, key=lambda k: overlap[k])
        if overlap[speaker] > 0:
            out += [c["distance"] for c in m["candidates"] if c["id"] == ids[speaker]]
    return out


# -- (d) chunking, (e) bye ---------------------------------------------------------------------


async def test_results_do_not_depend_on_chunking(tmp_path: Path, data_dir: Path) -> None:
    recording = AMI_DIR / "recordings" / "ami_dev00.flac"
    async with running_server(tmp_path, data_dir=data_dir, **STREAM_CONFIG) as server:
        small = await stream_file(server.url, recording, "r", speed=0, chunk_ms=10)
        large = await stream_file(server.url, recording, "r", speed=0, chunk_ms=370)

    def key(m: dict[str, Any]) -> tuple[Any, ...]:
        return (m["segment"], m["start"], m["end"], m["person"] and m["person"]["id"],
                m["distance"])

    assert len(finals(small)) >= 4
    assert [key(m) for m in finals(small)] == [key(m) for m in finals(large)]
    bounds = [(m["type"], m["segment"], m["t"]) for m in small
              if m["type"] in ("speech_start", "speech_end")]
    assert bounds == [(m["type"], m["segment"], m["t"]) for m in large
                      if m["type"] in ("speech_start", "speech_end")]


async def test_concurrent_streams_share_batched_searches(tmp_path: Path, data_dir: Path,
                                                        conversation: Conversation) -> None:
    """Live decisions of streams running at once are searched together (one registry
    call per loop turn) and name exactly what a stream alone names."""
    def key(m: dict[str, Any]) -> tuple[Any, ...]:
        return (m["segment"], m["final"], m["start"], m["end"],
                m["person"] and m["person"]["id"], m["distance"],
                tuple(c["id"] for c in m["candidates"]))

    async with running_server(tmp_path, data_dir=data_dir, **STREAM_CONFIG) as server:
        alone = await stream_file(server.url, conversation.path, "solo", speed=0)
        before = server.search_batch.searches, server.search_batch.batches
        together = await asyncio.gather(*(stream_file(server.url, conversation.path,
                                                      f"room-{i}", speed=0) for i in range(3)))
        searches = server.search_batch.searches - before[0]
        batches = server.search_batch.batches - before[1]
    decided = [m for run in together for m in run if m["type"] == "speaker" and m["candidates"]]
    finals_alone = [key(m) for m in finals(alone)]
    assert finals_alone and all([key(m) for m in finals(run)] == finals_alone
                                for run in together)
    assert searches == len(decided)  # every decision's search went through the batch ...
    print(f"\n3 streams at once: {searches} searches in {batches} registry calls")
    assert batches < searches  # ... and streams shared calls


async def test_bye_has_stats(tmp_path: Path, data_dir: Path, conversation: Conversation) -> None:
    async with running_server(tmp_path, data_dir=data_dir, **STREAM_CONFIG) as server:
        messages = await stream_file(server.url, conversation.path, "r", speed=0, chunk_ms=250)
        # and a client that skips a seq number: counted, not fatal
        async with connect(f"{server.url}/v1/ingest") as ws:
            await ws.send(wire.encode({"type": "hello", "room": "r2"}, wire.Encoding.MSGPACK))
            ready = wire.decode(await ws.recv())[0]
            assert ready["type"] == "ready" and ready["sample_rate"] == 16000
            pcm = to_s16le(conversation.samples[: 3 * RATE])
            for seq, offset in zip((0, 1, 3, 4), range(0, len(pcm), len(pcm) // 4)):
                await ws.send(wire.encode({"type": "audio", "seq": seq,
                                           "pcm": pcm[offset: offset + len(pcm) // 4]},
                                          wire.Encoding.MSGPACK))
            await ws.send(wire.encode({"type": "end"}, wire.Encoding.MSGPACK))
            rest = [wire.decode(raw)[0] async for raw in ws]
            assert ws.close_code == 1000
    bye = messages[-1]
    assert bye["type"] == "bye"
    stats = bye["stats"]
    events = [m for m in messages if m["type"] not in ("ready", "bye")]
    print(f"\nbye stats: {stats}")
    assert stats["segments"] == len(finals(messages)) >= len(CONV_PLAN) - 1
    assert stats["events"] == len(events)
    assert stats["seq_gaps"] == 0
    assert stats["audio_s"] == pytest.approx(len(conversation.samples) / RATE, abs=0.05)
    assert stats["jobs"] >= stats["segments"]
    assert stats["dropped_jobs"] == 0 and stats["short_segments"] >= 0
    assert rest[-1]["type"] == "bye" and rest[-1]["stats"]["seq_gaps"] == 1
    assert rest[-1]["stats"]["audio_s"] == pytest.approx(3.0, abs=0.05)


# -- (f) another sample rate and channel count ----------------------------------------------


async def test_48khz_stereo_names_the_same_people(tmp_path: Path, data_dir: Path,
                                                  conversation: Conversation) -> None:
    x48 = soxr.resample(conversation.samples, RATE, 48000, quality="HQ").astype(np.float32)
    stereo = np.stack([x48, 0.7 * x48], axis=1)
    path48 = tmp_path / "conversation_48k_stereo.wav"
    sf.write(str(path48), stereo, 48000, subtype="PCM_16")
    assert sf.info(str(path48)).channels == 2 and sf.info(str(path48)).samplerate == 48000
    async with running_server(tmp_path, data_dir=data_dir, **STREAM_CONFIG) as server:
        mono = await stream_file(server.url, conversation.path, "r", speed=0)
        hi = await stream_file(server.url, path48, "r", speed=0, chunk_ms=50)
    check_event_order(hi)

    def people(messages: list[dict[str, Any]]) -> list[str | None]:
        seq: list[str | None] = []
        for m in finals(messages):
            name = m["person"] and m["person"]["name"]
            if not seq or seq[-1] != name:
                seq.append(name)
        return seq

    share_mono, _ = named_right_share(conversation.ref, hypothesis(mono))
    share_hi, _ = named_right_share(conversation.ref, hypothesis(hi))
    print(f"\n16 kHz mono: {people(mono)} named right {share_mono:.1%}; "
          f"48 kHz stereo: {people(hi)} named right {share_hi:.1%}")
    assert people(hi) == people(mono)
    assert share_hi >= 0.80
    assert hi[-1]["stats"]["audio_s"] == pytest.approx(len(conversation.samples) / RATE, abs=0.05)


# -- (g) a microphone that goes away -----------------------------------------------------------


async def test_mic_disconnect_mid_segment(tmp_path: Path, data_dir: Path, setup: Setup,
                                          conversation: Conversation) -> None:
    first_turn_end = conversation.ref[0][1]
    cut = int((conversation.onsets[0] + 3.0) * RATE)  # three seconds into the first turn
    assert cut < first_turn_end * RATE - RATE
    async with running_server(tmp_path, data_dir=data_dir, **STREAM_CONFIG) as server:
        async with connect(f"{server.url}/v1/events?room=lobby") as display:
            assert wire.decode(await display.recv())[0]["type"] == "snapshot"
            assert wire.decode(await display.recv())[0]["type"] == "room_state"
            mic = await connect(f"{server.url}/v1/ingest")
            await mic.send(wire.encode({"type": "hello", "room": "lobby", "mic": "m1"},
                                       wire.Encoding.MSGPACK))
            assert wire.decode(await mic.recv())[0]["type"] == "ready"
            pcm = to_s16le(conversation.samples[:cut])
            step = 3200  # 100 ms
            for seq, offset in enumerate(range(0, len(pcm), step)):
                await mic.send(wire.encode({"type": "audio", "seq": seq,
                                            "pcm": pcm[offset:offset + step]},
                                           wire.Encoding.MSGPACK))
            # wait until the display has seen speech (the segment is open), then drop TCP
            seen: list[dict[str, Any]] = []
            while not any(m["type"] == "speaker" for m in seen):
                seen += await _collect(display, 1)
                assert seen, "no event before the disconnect"
            mic.transport.abort()
            states: list[dict[str, Any]] = []
            # finals until the one that closes the open segment where the audio stopped
            while not any(m["type"] == "speech_end" and m["t"] >= cut / RATE - 0.1 for m in seen):
                more = await _collect(display, 1, states=states)
                assert more, "no final after the microphone went away"
                seen += more
            while not states or states[-1]["speaking"]:  # the room falls silent
                assert not await _collect(display, 1, timeout=2.0, states=states)
                assert states, "no room_state after the microphone went away"
            check_room_states(states, "lobby")
            final = [m for m in seen if m["type"] == "speaker" and m["final"]]
            assert final and all(m["mic"] == "m1" for m in final)
            assert all(m["person"] is not None for m in final)
            assert {m["person"]["id"] for m in final} == {setup.ids[CONV_PLAN[0][0]]}
            assert final[-1]["end"] == pytest.approx(cut / RATE, abs=0.1)
            assert final[-1]["closed_by"] == "end"
            check_event_order(seen)

            # the server goes on serving: a second stream in the same room
            messages = await stream_file(server.url, conversation.path, "lobby", speed=0)
            assert messages[-1]["type"] == "bye"
            share, _ = named_right_share(conversation.ref, hypothesis(messages))
            assert share >= 0.80
            shown = await _collect(display, len(messages) - 2)
            assert [speaker_key(m) for m in shown] == [
                speaker_key(m) for m in messages if m["type"] not in ("ready", "bye")]
        assert server.streams == {}
