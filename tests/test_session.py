"""streamer.session: chunking invariance, event order, speaker changes, dropped work.

Sans-I/O (style rule 15(a), (b), (f)): the real webrtcvad runs on real speech
(LibriSpeech from ``shared/speech``), while a deterministic fake embedder and a fake
registry search stand in for the model. Each "speaker" of a synthetic conversation
carries a quiet marker tone above 4 kHz, where webrtcvad does not listen (it analyses
0-4 kHz); the fake embedder measures the marker tones, so a window's embedding is a
deterministic function of its audio and two speakers are far apart.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from streamer.audio import float_to_s16le, pcm_to_float, resample
from streamer.config import Config, SegmentConfig
from streamer.errors import BadAudio
from streamer.identify import distance, unit
from streamer.pooling import Stats
from streamer.segmenter import find_speech
from streamer.session import MIN_JOB_SAMPLES, EmbedJob, Session

SR = 16000
#: One marker tone per fake speaker (Hz); the fake embedder has one dimension per tone
#: plus a constant one, so the embedding is never zero.
MARKER_HZ = (5000.0, 6000.0, 7000.0)
MARKER_AMP = 0.02
DIM = len(MARKER_HZ) + 1
#: Three LibriSpeech test-other speakers, a few seconds each.
FILES = (
    "librispeech_testother_10spk/1688/1688-142285-0004.flac",
    "librispeech_testother_10spk/1998/1998-15444-0008.flac",
    "librispeech_testother_10spk/2033/2033-164914-0004.flac",
)
EVENT_TIME_TOLERANCE_S = 0.03
#: These tests build one VAD segment per utterance: an 800 ms hang-over keeps each
#: LibriSpeech utterance whole (the shipped 400 ms splits at its longer pauses; what is
#: tested here does not depend on where segments end). Tests that use another config
#: start from this one.
BASE = Config().replace(vad=dataclasses.replace(Config().vad, end_window_ms=800))


def basis(i: int) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[i] = 1.0
    return v


# -- fakes ------------------------------------------------------------------------------


class FakeEmbedder:
    """Deterministic: the magnitude of each marker tone in ``pcm`` (plus a constant)."""

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, pcm: np.ndarray) -> np.ndarray:
        # Check what the real embedder would be given (style rule 15(f)).
        assert isinstance(pcm, np.ndarray)
        assert pcm.dtype == np.float32 and pcm.ndim == 1
        assert len(pcm) >= 160 and np.isfinite(pcm).all()
        self.calls += 1
        n = np.arange(len(pcm))
        tones = [abs(np.dot(pcm, np.exp(-2j * np.pi * hz * n / SR))) / len(pcm) for hz in MARKER_HZ]
        return np.array(tones + [1e-4], np.float32)


@dataclass(frozen=True)
class Candidate:
    id: str
    name: str
    distance: float


class FakeSearch:
    """The registry's search over enrolled unit vectors; records the ``k`` asked for."""

    def __init__(self, people: dict[str, np.ndarray] | None = None) -> None:
        self.people = people if people is not None else {
            "p_a": basis(0), "p_b": basis(1), "p_c": basis(2), "p_d": basis(3),
        }
        self.ks: list[int] = []

    def __call__(self, embedding: np.ndarray, k: int) -> list[Candidate]:
        assert embedding.shape == (DIM,)
        assert abs(float(np.linalg.norm(embedding)) - 1.0) < 1e-5  # unit length
        self.ks.append(k)
        found = sorted(
            (Candidate(pid, pid.upper(), float(np.linalg.norm(embedding - v)))
             for pid, v in self.people.items()),
            key=lambda c: c.distance,
        )
        return found[:k]


# -- audio ------------------------------------------------------------------------------


def marker(n: int, hz: float, offset: int, rate: int) -> np.ndarray:
    t = (np.arange(n) + offset) / rate
    return (MARKER_AMP * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def read(speech_dir: Path, name: str) -> np.ndarray:
    x, rate = sf.read(speech_dir / name, dtype="float32")
    assert rate == SR and x.ndim == 1
    return x


@dataclass(frozen=True)
class Conversation:
    pcm16: bytes        # s16le mono 16 kHz
    x16: np.ndarray     # the same samples as float32
    pcm48: bytes        # s16le stereo 48 kHz: the recording the 16 kHz version came from
    turns: list[tuple[float, float, str]]  # (start_s, end_s, person) of each utterance


@pytest.fixture(scope="module")
def conversation(speech_dir: Path) -> Conversation:
    """1 s silence, then each speaker's utterance with its marker, 1 s silence after each.

    Built at 48 kHz (like a microphone would capture it); the 16 kHz version is that
    recording downsampled, as a client would do before sending 16 kHz.
    """
    rate = 48000
    gap = np.zeros(rate, np.float32)
    parts, turns, pos = [gap], [], rate
    for i, name in enumerate(FILES):
        x = resample(read(speech_dir, name), SR, rate)
        parts.append(x + marker(len(x), MARKER_HZ[i], pos, rate))
        turns.append((pos / rate, (pos + len(x)) / rate, f"p_{'abc'[i]}"))
        pos += len(x)
        parts.extend([gap])
        pos += len(gap)
    x48 = np.concatenate(parts)
    pcm48 = float_to_s16le(np.repeat(x48, 2))  # two identical channels, interleaved
    x48q = pcm_to_float(pcm48, "s16le", 2)
    pcm16 = float_to_s16le(resample(x48q, rate, SR))
    return Conversation(pcm16, pcm_to_float(pcm16, "s16le", 1), pcm48, turns)


@pytest.fixture(scope="module")
def utterances(speech_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The voiced part of two utterances (VAD-trimmed), for speech without pauses."""
    out = []
    for name in (FILES[0], FILES[2]):
        x = read(speech_dir, name)
        ((a, b),) = find_speech(x, BASE.vad)
        out.append(x[a:b])
    return out[0], out[1]


# -- driving a session like the server does ---------------------------------------------


def fake_head(stats: Stats) -> np.ndarray:
    """The fake network's head: the mean of the pooled fake frames (not unit length: the
    session normalises)."""
    assert stats.n >= 1 and stats.total.shape == (DIM,)
    return stats.mean().astype(np.float32)


def as_stats(job: EmbedJob, vector: np.ndarray) -> Stats:
    """A fake network's answer: ``vector`` for every 20 ms frame of the pooled samples."""
    assert 0 < job.keep_samples <= len(job.pcm)
    return Stats.of_vector(vector, max(1, round(job.keep_samples / 320)))


def make_session(config: Config | None = None, search: Any = None, **kwargs: Any) -> Session:
    return Session(config or BASE, search or FakeSearch(), fake_head, room="board-room",
                   mic="ceiling-1", stream="s1", clock=lambda: 1700000000.0, **kwargs)


def run(
    session: Session,
    chunks: Iterable[bytes | np.ndarray],
    embed: Callable[[EmbedJob], np.ndarray],
    *,
    batch: int = 1,
    reverse: bool = False,
    drop: Callable[[EmbedJob], bool] = lambda job: False,
    finish: bool = True,
    batched: Callable[[np.ndarray, int], list[Candidate]] | None = None,
    voices: Callable[[EmbedJob], np.ndarray | None] | None = None,
) -> list[dict[str, Any]]:
    """Feed ``chunks``; answer jobs in batches of ``batch`` (oldest or newest first);
    with ``batched``, answer the sessions's search requests before taking events (as
    the server's batch does); "voices" jobs with ``voices`` (None: the model failed)."""
    events: list[dict[str, Any]] = []
    pending: list[EmbedJob] = []

    def take() -> list[dict[str, Any]]:
        if batched is not None:
            queries, k = session.search_requests()
            session.supply_searches([batched(q, k) for q in queries])
        return session.take_events()

    def pump(everything: bool) -> None:
        pending.extend(session.take_jobs())
        if len(pending) >= batch or everything:
            jobs = pending[::-1] if reverse else list(pending)
            pending.clear()
            for job in jobs:
                if job.kind == "voices":
                    assert voices is not None, "a voices job nobody expected"
                    answer = voices(job)
                    if answer is None:
                        session.job_failed(job.id)
                    else:
                        session.voices_done(job.id, answer)
                elif drop(job):
                    session.job_dropped(job.id)
                else:
                    session.job_done(job.id, as_stats(job, embed(job)))
        events.extend(take())

    for chunk in chunks:
        if isinstance(chunk, np.ndarray):
            session.feed(chunk)
        else:
            session.feed_pcm(chunk)
        pump(False)
    if finish:
        session.finish()
        for _ in range(100):
            pump(True)
            if session.idle:
                break
        assert session.idle
    else:
        pump(True)
    return events


def by_content(embedder: FakeEmbedder | None = None) -> Callable[[EmbedJob], np.ndarray]:
    fake = embedder or FakeEmbedder()
    return lambda job: fake.embed(job.pcm[len(job.pcm) - job.keep_samples:])


def strip(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events without the wall-clock ``ts``."""
    return [{k: v for k, v in e.items() if k != "ts"} for e in events]


def split_bytes(data: bytes, sizes_samples: Iterable[int], sample_bytes: int) -> list[bytes]:
    out, pos = [], 0
    for n in sizes_samples:
        if pos >= len(data):
            break
        out.append(data[pos : pos + n * sample_bytes])
        pos += n * sample_bytes
    if pos < len(data):
        out.append(data[pos:])
    return out


def random_chunks(data: bytes, seed: int, max_samples: int, sample_bytes: int = 2) -> list[bytes]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_samples + 1, size=len(data) // sample_bytes + 1)
    return split_bytes(data, sizes, sample_bytes)


def every(data: bytes, nbytes: int) -> list[bytes]:
    return [data[i : i + nbytes] for i in range(0, len(data), nbytes)]


def segments(events: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        out.setdefault(e["segment"], []).append(e)
    return out


def finals(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "speaker" and e["final"]]


def person_id(event: dict[str, Any]) -> str | None:
    return event["person"]["id"] if event["person"] else None


@pytest.fixture(scope="module")
def reference(conversation: Conversation) -> list[dict[str, Any]]:
    """The conversation's events, fed whole at 16 kHz, jobs answered at once."""
    return strip(run(make_session(), [conversation.pcm16], by_content()))


# -- chunking invariance ----------------------------------------------------------------


def test_reference_events_describe_the_conversation(
    conversation: Conversation, reference: list[dict[str, Any]]
) -> None:
    segs = segments(reference)
    assert list(segs) == [1, 2, 3]
    assert [person_id(e) for e in finals(reference)] == ["p_a", "p_b", "p_c"]
    for (start_s, end_s, _), evs in zip(conversation.turns, segs.values()):
        # webrtcvad finds each utterance inside its turn, give or take the padding
        assert start_s - 0.35 <= evs[0]["t"] <= end_s
        assert start_s <= evs[-1]["t"] <= end_s + 0.35


@pytest.mark.parametrize(
    "split",
    [
        pytest.param(lambda d: every(d, 320), id="10ms"),
        # one sample at a time for the first 2 s (the first segment starts there)
        pytest.param(lambda d: every(d[: 4 * SR], 2) + [d[4 * SR :]], id="sample-by-sample"),
        pytest.param(lambda d: random_chunks(d, seed=1, max_samples=16000), id="random-1"),
        pytest.param(lambda d: random_chunks(d, seed=2, max_samples=3000), id="random-2"),
        pytest.param(lambda d: random_chunks(d, seed=3, max_samples=37), id="random-tiny"),
    ],
)
def test_events_do_not_depend_on_chunking(
    conversation: Conversation, reference: list[dict[str, Any]], split: Callable[[bytes], list[bytes]]
) -> None:
    chunks = split(conversation.pcm16)
    assert strip(run(make_session(), chunks, by_content())) == reference


@pytest.mark.parametrize("batch, reverse", [(1, True), (5, True), (7, False), (10**9, True)])
def test_events_do_not_depend_on_when_or_in_which_order_jobs_are_answered(
    conversation: Conversation, reference: list[dict[str, Any]], batch: int, reverse: bool
) -> None:
    chunks = random_chunks(conversation.pcm16, seed=4, max_samples=4000)
    events = run(make_session(), chunks, by_content(), batch=batch, reverse=reverse)
    assert strip(events) == reference


def test_feed_float_equals_feed_pcm(
    conversation: Conversation, reference: list[dict[str, Any]]
) -> None:
    x = conversation.x16
    chunks = [x[i : i + 1234] for i in range(0, len(x), 1234)]
    assert strip(run(make_session(), chunks, by_content())) == reference


def test_f32le_input_gives_the_same_events(
    conversation: Conversation, reference: list[dict[str, Any]]
) -> None:
    pcm = conversation.x16.astype("<f4").tobytes()
    chunks = random_chunks(pcm, seed=5, max_samples=5000, sample_bytes=4)
    assert strip(run(make_session(fmt="f32le"), chunks, by_content())) == reference


def test_48k_stereo_input_gives_events_at_the_same_times(
    conversation: Conversation, reference: list[dict[str, Any]]
) -> None:
    session = make_session(sample_rate=48000, channels=2)
    chunks = random_chunks(conversation.pcm48, seed=6, max_samples=9600, sample_bytes=4)
    events = strip(run(session, chunks, by_content()))
    assert [(e["type"], e["segment"], e.get("final")) for e in events] == [
        (e["type"], e["segment"], e.get("final")) for e in reference
    ]
    for got, want in zip(events, reference):
        for key in ("t", "start", "end"):
            if key in want:
                assert got[key] == pytest.approx(want[key], abs=EVENT_TIME_TOLERANCE_S), (key, got)
        if want["type"] == "speaker":
            assert person_id(got) == person_id(want)
    assert session.position_s == pytest.approx(len(conversation.x16) / SR, abs=0.03)


# -- the events contract ----------------------------------------------------------------


def test_event_order_and_fields(reference: list[dict[str, Any]]) -> None:
    cfg = BASE
    seen: list[int] = []
    for e in reference:
        if not seen or seen[-1] != e["segment"]:
            seen.append(e["segment"])
        assert (e["room"], e["mic"], e["stream"]) == ("board-room", "ceiling-1", "s1")
    # segments are numbered 1, 2, 3 ... and their events are not interleaved
    assert seen == list(range(1, len(seen) + 1))
    for number, evs in segments(reference).items():
        kinds = [e["type"] for e in evs]
        assert kinds[0] == "speech_start" and kinds[-1] == "speech_end"
        assert set(kinds[1:-1]) == {"speaker"}
        speakers = evs[1:-1]
        assert [e["final"] for e in speakers] == [False] * (len(speakers) - 1) + [True]
        start_t, end_t = evs[0]["t"], evs[-1]["t"]
        assert all(e["start"] == start_t for e in speakers)
        assert speakers[-1]["end"] == end_t
        ends = [e["end"] for e in speakers]
        assert ends == sorted(ends)
        # the first guess comes first_provisional_s after the onset
        assert speakers[0]["end"] == pytest.approx(start_t + cfg.segment.first_provisional_s)
        for e in speakers:
            dists = [c["distance"] for c in e["candidates"]]
            assert dists == sorted(dists) and len(dists) == 4  # nearest first
            assert e["distance"] == dists[0]
            assert person_id(e) == e["candidates"][0]["id"]
            assert e["distance"] <= cfg.match.max_distance


def test_event_keys_and_wall_clock(conversation: Conversation) -> None:
    events = run(make_session(), [conversation.pcm16], by_content())
    assert {e["ts"] for e in events} == {1700000000.0}
    keys = {e["type"]: list(e) for e in events}
    assert keys["speech_start"] == ["type", "room", "mic", "stream", "segment", "t", "ts"]
    assert keys["speech_end"] == ["type", "room", "mic", "stream", "segment", "t", "ts"]
    speaker = ["type", "room", "mic", "stream", "segment", "final", "start", "end", "person",
               "distance", "candidates"]
    guesses = [list(e) for e in events if e["type"] == "speaker" and not e["final"]]
    assert guesses and all(k == speaker + ["ts"] for k in guesses)
    # finals say why the segment closed (an extension of protocol v1)
    assert all(list(e) == speaker + ["closed_by", "ts"] for e in finals(events))
    assert [e["closed_by"] for e in finals(events)] == ["pause"] * 3


def test_top_k_is_passed_to_search(conversation: Conversation) -> None:
    cfg = BASE
    cfg = cfg.replace(match=type(cfg.match)(top_k=2))
    search = FakeSearch()
    events = run(make_session(cfg, search), [conversation.pcm16], by_content())
    assert set(search.ks) == {2}
    assert all(len(e["candidates"]) == 2 for e in events if e["type"] == "speaker")


def test_person_is_null_when_everyone_is_too_far(conversation: Conversation) -> None:
    far = {"p_x": np.array([0.0, 0.0, 0.0, 1.0], np.float32),
           "p_y": np.array([0.0, 0.0, -1.0, 0.0], np.float32)}
    events = run(make_session(search=FakeSearch(far)), [conversation.pcm16], by_content())
    speakers = [e for e in events if e["type"] == "speaker"]
    assert speakers and all(e["person"] is None for e in speakers)
    for e in speakers:
        # still reported: the nearest distance (> max_distance) and the candidates
        assert e["distance"] > BASE.match.max_distance
        assert [c["id"] for c in e["candidates"]][0] in far
        assert e["distance"] == e["candidates"][0]["distance"]


def test_room_max_distance_sets_the_threshold_of_matching_rooms(conversation: Conversation) -> None:
    cos = 1 - 1.05**2 / 2  # a voice 1.05 from p_a: beyond the default 1.0
    voice = np.array([cos, np.sqrt(1 - cos**2), 0.0, 0.0], np.float32)
    only_a = {"p_a": basis(0)}

    def finals(cfg: Config) -> list[dict[str, Any]]:
        events = run(make_session(cfg, FakeSearch(only_a)), [conversation.pcm16], lambda job: voice)
        out = [e for e in events if e["type"] == "speaker" and e["final"]]
        assert out and all(e["distance"] == pytest.approx(1.05, abs=1e-3) for e in out)
        return out

    assert all(e["person"] is None for e in finals(BASE))
    other_room = BASE.replace(match=dataclasses.replace(BASE.match, room_max_distance={"lobby": 1.1}))
    assert all(e["person"] is None for e in finals(other_room))
    # make_session's room is "board-room": the first matching pattern wins
    far_mics = BASE.replace(match=dataclasses.replace(
        BASE.match, room_max_distance={"board-*": 1.1, "board-room": 1.0}))
    assert far_mics.match.max_distance_for("board-room") == 1.1
    assert far_mics.match.max_distance_for("lobby") == BASE.match.max_distance
    assert all(e["person"] == {"id": "p_a", "name": "P_A"} for e in finals(far_mics))


def test_a_roster_is_asked_first_and_outsiders_need_the_stricter_distance(
        conversation: Conversation) -> None:
    def voice_at(d: float, axis: int) -> np.ndarray:  # a voice ``d`` from basis(axis)
        cos = 1 - d**2 / 2
        v = np.zeros(DIM, np.float32)
        v[axis], v[(axis + 1) % DIM] = cos, np.sqrt(1 - cos**2)
        return v

    everyone = FakeSearch({"p_a": basis(0), "p_b": basis(2)})
    in_roster = FakeSearch({"p_a": basis(0)})
    has_roster = {"yes": True}

    def roster(embedding: np.ndarray, k: int) -> list[Candidate] | None:
        return in_roster(embedding, k) if has_roster["yes"] else None

    def finals(voice: np.ndarray) -> list[dict[str, Any]]:
        everyone.ks.clear()
        events = run(make_session(search=everyone, roster_search=roster),
                     [conversation.pcm16], lambda job: voice)
        out = [e for e in events if e["type"] == "speaker" and e["final"]]
        assert out
        return out

    # a member within the room's threshold: named from the roster, everyone not searched
    member = finals(voice_at(0.95, 0))
    assert all(e["person"]["id"] == "p_a" and e["scope"] == "roster" for e in member)
    assert in_roster.ks and everyone.ks == []
    # an outsider at 0.95 (within 1.0, beyond 0.9): unknown, scope "all"
    outsider = finals(voice_at(0.95, 2))
    assert all(e["person"] is None and e["scope"] == "all" for e in outsider)
    assert all(e["candidates"][0]["id"] == "p_b" for e in outsider)
    # an outsider at 0.85: named among everyone
    close = finals(voice_at(0.85, 2))
    assert all(e["person"]["id"] == "p_b" and e["scope"] == "all" for e in close)
    # no roster: no scope field, the plain threshold
    has_roster["yes"] = False
    plain = finals(voice_at(0.95, 2))
    assert all(e["person"]["id"] == "p_b" and "scope" not in e for e in plain)


def test_large_galleries_tighten_live_decisions_and_ask_for_a_margin(
        conversation: Conversation) -> None:
    def voice_at(d: float, axis: int, other: int = 1) -> np.ndarray:  # ``d`` from basis(axis)
        cos = 1 - d**2 / 2
        v = np.zeros(DIM, np.float32)
        v[axis], v[other] = cos, np.sqrt(1 - cos**2)
        return v

    def finals(voice: np.ndarray, people: int, roster: Any = None,
               search: FakeSearch | None = None) -> list[dict[str, Any]]:
        search = search or FakeSearch({"p_a": basis(0), "p_b": basis(2)})
        events = run(make_session(search=search, roster_search=roster,
                                  gallery_size=lambda: people),
                     [conversation.pcm16], lambda job: voice)
        out = [e for e in events if e["type"] == "speaker" and e["final"]]
        assert out
        return out

    # 0.9 from p_b: named among 100 people (the rule starts beyond), not among 1 M
    # (threshold 1.0 - 0.035 * 4 = 0.86)
    assert all(e["person"]["id"] == "p_b" for e in finals(voice_at(0.9, 2), 100))
    assert all(e["person"] is None for e in finals(voice_at(0.9, 2), 10**6))
    assert all(e["person"]["id"] == "p_b" for e in finals(voice_at(0.84, 2), 10**6))
    # the margin: p_c almost as near as p_b (0.78 vs 0.75) names nobody among 1 k people
    between = unit_vec(basis(2) + 0.97 * basis(3))
    two_near = FakeSearch({"p_b": basis(2), "p_c": basis(3)})
    d_b, d_c = (float(np.linalg.norm(between - basis(i))) for i in (2, 3))
    assert d_b < d_c < d_b + 0.06 and d_b < 0.965
    assert all(e["person"] is None for e in finals(between, 1000, search=two_near))
    assert all(e["person"]["id"] == "p_b" for e in finals(between, 100, search=two_near))

    # a room with a roster of p_a: a visitor is held to the stricter of 0.9 and the rule
    def roster(embedding: np.ndarray, k: int) -> list[Candidate]:
        return FakeSearch({"p_a": basis(0)})(embedding, k)

    assert all(e["person"]["id"] == "p_b" and e["scope"] == "all"
               for e in finals(voice_at(0.88, 2), 1000, roster))  # min(0.9, 0.965)
    assert all(e["person"] is None and e["scope"] == "all"
               for e in finals(voice_at(0.88, 2), 10**6, roster))  # min(0.9, 0.86)


def test_the_shell_may_answer_the_searches_in_a_batch(conversation: Conversation) -> None:
    """search_requests / supply_searches: the same events as searching one by one, and
    every speaker event's search among everyone is asked for exactly once."""
    plain_search = FakeSearch()
    plain = run(make_session(search=plain_search), [conversation.pcm16], by_content())
    own, batch = FakeSearch(), FakeSearch()
    batched = run(make_session(search=own), [conversation.pcm16], by_content(), batched=batch)
    assert strip(batched) == strip(plain)
    decided = [e for e in batched if e["type"] == "speaker" and e["candidates"]]
    top_k = BASE.match.top_k
    assert len(batch.ks) == len(decided) > 0 and set(batch.ks) == {top_k}
    # what the session still searched itself (change checks, rejoins) is what the plain
    # run searched for besides the events
    assert own.ks.count(top_k) == plain_search.ks.count(top_k) - len(decided)
    assert own.ks.count(1) == plain_search.ks.count(1)


def test_roster_answers_are_not_asked_for_and_supplies_must_match(
        conversation: Conversation) -> None:
    session = make_session(search=FakeSearch(),
                           roster_search=lambda e, k: FakeSearch({"p_a": basis(0)})(e, k))
    asked: list[int] = []

    def batch(q: np.ndarray, k: int) -> list[Candidate]:
        asked.append(k)
        return FakeSearch()(q, k)

    events = run(session, [conversation.pcm16], lambda job: basis(0), batched=batch)
    assert asked == []  # p_a is in the roster and near: never a search among everyone
    assert all(e["scope"] == "roster" for e in events if e["type"] == "speaker")
    session = make_session(search=FakeSearch())
    session.feed_pcm(conversation.pcm16)
    for job in session.take_jobs():
        session.job_done(job.id, as_stats(job, basis(1)))
    queries, _ = session.search_requests()
    assert queries
    with pytest.raises(ValueError, match="search results for"):
        session.supply_searches([])


def test_a_failing_search_names_nobody_and_loses_no_event(conversation: Conversation) -> None:
    def broken(embedding: np.ndarray, k: int) -> list[Candidate]:
        raise RuntimeError("index gone")

    session = make_session(search=broken)
    events = run(session, [conversation.pcm16], lambda job: basis(0))
    speakers = [e for e in events if e["type"] == "speaker"]
    assert speakers and all(e["person"] is None and e["candidates"] == [] for e in speakers)
    starts = [e for e in events if e["type"] == "speech_start"]
    assert len([e for e in speakers if e["final"]]) == len(starts) > 0
    assert session.stats["failed_searches"] >= len(speakers)


def unit_vec(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_nobody_enrolled(conversation: Conversation) -> None:
    events = run(make_session(search=FakeSearch({})), [conversation.pcm16], by_content())
    speakers = [e for e in events if e["type"] == "speaker"]
    assert speakers
    assert all(e["person"] is None and e["distance"] is None and e["candidates"] == []
               for e in speakers)


# -- jobs -------------------------------------------------------------------------------


def test_jobs_carry_their_audio(conversation: Conversation) -> None:
    session = make_session()
    session.feed_pcm(conversation.pcm16)
    session.finish()
    jobs = session.take_jobs()
    assert jobs and all(j.kind == "piece" for j in jobs)
    assert [j.id for j in jobs] == sorted(j.id for j in jobs)
    context = round(BASE.segment.context_s * SR)
    hop = round(BASE.segment.hop_s * SR)
    for prev, job in zip([None, *jobs], jobs):
        assert job.droppable
        assert job.keep_samples == job.end - job.start
        # the pooled samples come last; before them, up to context_s of the segment
        np.testing.assert_array_equal(job.pcm, conversation.x16[job.end - len(job.pcm) : job.end])
        if prev is not None and prev.end == job.start:  # the next piece of one segment
            assert job.end - job.start == hop
            assert len(job.pcm) == hop + context
        else:  # the first piece of a segment: nothing before the segment is used
            assert len(job.pcm) == job.keep_samples
    assert session.take_jobs() == []
    assert not session.idle
    assert "pcm" not in repr(jobs[0])


def test_dropped_window_jobs_give_no_provisional_but_the_finals_come(
    conversation: Conversation, reference: list[dict[str, Any]]
) -> None:
    session = make_session()
    chunks = every(conversation.pcm16, 3200)
    events = strip(run(session, chunks, by_content(), drop=lambda job: job.droppable))
    assert not any(e["type"] == "speaker" and not e["final"] for e in events)
    without_provisional = [e for e in reference if e["type"] != "speaker" or e["final"]]

    def outline(evs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(e["type"], e["segment"], e.get("t"), e.get("start"), e.get("end"),
                 e.get("person")) for e in evs]

    # The same segments and people; the finals embed each whole turn instead of its
    # pooled pieces, so only their distances differ a little.
    assert outline(events) == outline(without_provisional)
    for got, want in zip(finals(events), finals(without_provisional)):
        assert got["distance"] == pytest.approx(want["distance"], abs=0.05)
    pieces = sum(1 for e in reference if e["type"] == "speaker" and not e["final"])
    assert session.stats["dropped_jobs"] == pieces
    assert session.stats["jobs"] == pieces + 3


def test_some_dropped_windows(conversation: Conversation, reference: list[dict[str, Any]]) -> None:
    # every other window job dropped: the others still give provisional events
    events = strip(run(make_session(), [conversation.pcm16], by_content(),
                       drop=lambda job: job.droppable and job.id % 2 == 0))
    assert [person_id(e) for e in finals(events)] == [person_id(e) for e in finals(reference)]
    provisional = [e for e in events if e["type"] == "speaker" and not e["final"]]
    assert 0 < len(provisional) < len([e for e in reference if e["type"] == "speaker"]) - 3


def test_final_jobs_may_not_be_dropped(conversation: Conversation) -> None:
    session = make_session()
    session.feed_pcm(conversation.pcm16)
    session.finish()
    embed = by_content()
    for _ in range(100):
        jobs = session.take_jobs()
        final = next((j for j in jobs if j.kind == "final"), None)
        if final is not None:
            break
        for job in jobs:
            session.job_done(job.id, as_stats(job, embed(job)))
    else:
        pytest.fail("no final job")
    assert not final.droppable
    with pytest.raises(ValueError, match="final"):
        session.job_dropped(final.id)
    # still answerable afterwards
    session.job_done(final.id, as_stats(final, embed(final)))
    assert finals(session.take_events())


def test_unknown_job_ids_are_ignored(conversation: Conversation) -> None:
    session = make_session()
    session.feed_pcm(conversation.pcm16[: SR * 2 * 4])
    job = session.take_jobs()[0]
    answer = as_stats(job, FakeEmbedder().embed(job.pcm))
    session.job_done(job.id, answer)
    events = session.take_events()
    session.job_done(job.id, answer)  # twice: ignored
    session.job_dropped(job.id)
    session.job_done(10**6, answer)
    session.job_dropped(10**6)
    assert session.take_events() == []
    assert session.stats["dropped_jobs"] == 0
    assert [e["type"] for e in events] == ["speech_start", "speaker"]


# -- speaker change ---------------------------------------------------------------------


def test_speaker_change_without_a_pause_splits_the_segment(
    utterances: tuple[np.ndarray, np.ndarray]
) -> None:
    a, b = utterances
    gap = np.zeros(SR, np.float32)
    change = len(gap) + len(a)
    x = np.concatenate([gap, a + marker(len(a), MARKER_HZ[0], 0, SR),
                        b + marker(len(b), MARKER_HZ[1], 0, SR), gap])
    session = make_session()
    events = strip(run(session, random_chunks(float_to_s16le(x), 7, 4000), by_content()))
    segs = segments(events)
    assert list(segs) == [1, 2]
    assert session.stats["speaker_changes"] == 1 and session.stats["segments"] == 2
    first, second = segs[1], segs[2]
    cut = first[-1]["t"]
    assert second[0]["t"] == cut  # no gap: the second turn starts where the first ended
    # The cut is placed mid-window of the first window far from the first voice, which
    # must be mostly the new voice: it lags the true change by at most a window.
    assert 0 <= cut - change / SR <= BASE.segment.window_s
    assert [person_id(e) for e in finals(events)] == ["p_a", "p_b"]
    # The new turn's first guess comes with its start, and names the new speaker.
    assert second[1]["type"] == "speaker" and not second[1]["final"]
    assert person_id(second[1]) == "p_b"
    assert all(e["start"] == cut for e in second if e["type"] == "speaker")


def test_same_speech_without_markers_is_one_segment(
    utterances: tuple[np.ndarray, np.ndarray]
) -> None:
    gap = np.zeros(SR, np.float32)
    x = np.concatenate([gap, *utterances, gap])
    session = make_session()
    events = run(session, [x], by_content())
    assert list(segments(events)) == [1]
    assert session.stats["speaker_changes"] == 0


class Scripted:
    """Piece frames from a script of letters (one per piece job, in stream order); a final
    job (the tail after the last piece, or a whole turn) gets the majority letter of the
    pieces inside it, or else the letter of the piece just before it. Deterministic."""

    VECTORS = {"A": basis(0), "B": basis(1), "C": basis(2)}

    def __init__(self, script: str) -> None:
        self.script = script
        self.pieces: dict[tuple[int, int], str] = {}
        self.finals: list[tuple[int, int, str]] = []

    def __call__(self, job: EmbedJob) -> np.ndarray:
        if job.kind == "piece":
            k = len(self.pieces)
            letter = self.script[min(k, len(self.script) - 1)]
            self.pieces[(job.start, job.end)] = letter
        else:
            inside = [v for (s, e), v in self.pieces.items() if s >= job.start and e <= job.end]
            before = [v for (s, e), v in sorted(self.pieces.items()) if e <= job.start]
            letter = (Counter(inside).most_common(1)[0][0] if inside
                      else before[-1] if before else "A")
            self.finals.append((job.start, job.end, letter))
        return self.VECTORS[letter] * 3.0  # not unit length: the session normalises


#: The scripted tests use 1 s pieces and 2-piece windows, so one letter is one second.
SCRIPTED = BASE.replace(segment=SegmentConfig(hop_s=1.0, window_s=2.0))


def scripted_run(x: np.ndarray, script: str, config: Config | None = None
                 ) -> tuple[Session, list[dict[str, Any]], Scripted]:
    session = make_session(config or SCRIPTED)
    fake = Scripted(script)
    events = strip(run(session, [x[i : i + 4800] for i in range(0, len(x), 4800)], fake))
    return session, events, fake


@pytest.fixture(scope="module")
def continuous(utterances: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """About 8 s of speech without a pause, between silences (one VAD segment)."""
    gap = np.zeros(SR, np.float32)
    return np.concatenate([gap, *utterances, gap])


def piece_ends(fake: Scripted) -> list[int]:
    return sorted(e for _, e in fake.pieces)


def provisional_at(events: list[dict[str, Any]], end: int) -> dict[str, Any]:
    return next(e for e in events if e["type"] == "speaker" and not e["final"] and e["end"] == _s(end))


def test_pieces_tile_the_segment(continuous: np.ndarray) -> None:
    _, events, fake = scripted_run(continuous, "A")
    spans = sorted(fake.pieces)
    seg = SCRIPTED.segment
    assert spans[0][1] - spans[0][0] == round(seg.first_provisional_s * SR)
    assert all(b - a == round(seg.hop_s * SR) for a, b in spans[1:])
    assert all(p[1] == q[0] for p, q in zip(spans, spans[1:]))  # no gap, no overlap
    ((start, end, letter),) = fake.finals  # one small job: the tail after the last piece
    assert start == spans[-1][1] and end - start < round(seg.hop_s * SR) and letter == "A"
    provisional = [e for e in events if e["type"] == "speaker" and not e["final"]]
    assert [e["end"] for e in provisional] == [_s(b) for _, b in spans]


def test_a_single_far_window_is_a_fluke(continuous: np.ndarray) -> None:
    # Windows are two pieces. The first window that is mostly B (pieces 3-4) is far from
    # the A turn and names B at once; the next one (pieces 4-5, B and A) is not: fluke.
    session, events, fake = scripted_run(continuous, "AAABBAAAAAAAAAAA")
    assert session.stats["speaker_changes"] == 0
    assert list(segments(events)) == [1]
    provisional = [e for e in events if e["type"] == "speaker" and not e["final"]]
    assert len(provisional) == len(fake.pieces)
    ends = piece_ends(fake)
    assert person_id(provisional_at(events, ends[4])) == "p_b"
    after = provisional_at(events, ends[5])
    assert person_id(after) == "p_a"
    assert after["distance"] > 0.1  # the B pieces pull the turn's pooled frames away from A
    assert person_id(finals(events)[0]) == "p_a"


def test_change_is_confirmed_by_the_next_window(continuous: np.ndarray) -> None:
    # Piece 3 is B, then C: the window of pieces 3-4 (B, C) is far from the A turn, and
    # the window of 4-5 (C, C) is far too and close to it: a change, cut where piece 4
    # begins. The new turn starts with pieces 4 and 5.
    session, events, fake = scripted_run(continuous, "AAABCCCCCCCCCCC")
    assert session.stats["speaker_changes"] == 1
    ends = piece_ends(fake)
    second = segments(events)[2]
    assert second[0]["t"] == _s(ends[3])
    assert segments(events)[1][-1]["t"] == _s(ends[3])  # no gap between the turns
    assert [person_id(e) for e in finals(events)] == ["p_a", "p_c"]
    # the first turn's final needed no job: its pieces reach the cut
    assert [f[0] for f in fake.finals] == [ends[-1]]
    # The split is held for segment.change_hold_s (issue 11 part 4; it was made at once,
    # with the guess at piece 5, before): the new turn opens with the piece that decided
    # it, and the guess for piece 5 names the new voice inside the first segment.
    guess = second[1]
    assert guess["type"] == "speaker" and not guess["final"] and guess["end"] == _s(ends[6])
    assert person_id(provisional_at(events, ends[5])) == "p_c"
    assert provisional_at(events, ends[5])["segment"] == 1
    assert finals(events)[0]["closed_by"] == "change" and finals(events)[1]["closed_by"] == "pause"


def test_change_respects_min_turn(continuous: np.ndarray) -> None:
    # B from piece 2: the change is confirmed at piece 4 and cut at piece 3 (3 s in).
    session, events, _ = scripted_run(continuous, "AABBBBBBBBBBBB")
    assert session.stats["speaker_changes"] == 1
    segs = segments(events)
    assert segs[2][0]["t"] - segs[1][0]["t"] == pytest.approx(3.0, abs=0.01)
    # A turn may not be that short: the B pieces join it instead.
    config = SCRIPTED.replace(segment=dataclasses.replace(SCRIPTED.segment, min_turn_s=4.0))
    session, events, _ = scripted_run(continuous, "AABBBBBBBBBBBB", config)
    assert session.stats["speaker_changes"] == 0
    assert list(segments(events)) == [1]


def test_change_detection_can_be_disabled(continuous: np.ndarray) -> None:
    config = SCRIPTED.replace(segment=dataclasses.replace(SCRIPTED.segment, change_distance=None))
    session, events, _ = scripted_run(continuous, "AAABBBBBBBBBBB", config)
    assert session.stats["speaker_changes"] == 0
    assert list(segments(events)) == [1]


def test_after_a_change_every_guess_names_the_new_speaker(continuous: np.ndarray) -> None:
    session, events, _ = scripted_run(continuous, "AAAA" + "B" * 40)
    assert session.stats["speaker_changes"] == 1
    first, second = segments(events)[1], segments(events)[2]
    assert all(person_id(e) == "p_a" for e in first if e["type"] == "speaker" and e["final"])
    assert all(person_id(e) == "p_b" for e in second if e["type"] == "speaker")


def test_a_dropped_piece_makes_the_final_embed_the_whole_turn(continuous: np.ndarray) -> None:
    session = make_session(SCRIPTED)
    fake = Scripted("A")
    x = continuous
    seen: list[int] = []

    def third_piece(job: EmbedJob) -> bool:
        if job.kind == "piece":
            seen.append(job.id)
        return job.kind == "piece" and len(seen) == 3

    events = strip(run(session, [x[i : i + 4800] for i in range(0, len(x), 4800)], fake,
                       drop=third_piece))
    assert session.stats["dropped_jobs"] == 1
    ((start, end, _),) = fake.finals
    assert start == events[0]["t"] * SR and _s(end) == events[-1]["t"]  # the whole turn
    assert person_id(finals(events)[0]) == "p_a"


def test_final_whole_pass_embeds_every_turn_in_one_pass(continuous: np.ndarray) -> None:
    """segment.final_whole_pass: each final is one job over its whole turn (no context
    before it), also for a turn closed by a speaker change, which otherwise needs none;
    provisional guesses still come from the pieces."""
    whole = SCRIPTED.replace(segment=dataclasses.replace(SCRIPTED.segment,
                                                         final_whole_pass=True))
    jobs: list[EmbedJob] = []

    def seen(job: EmbedJob) -> bool:
        jobs.append(job)
        return False

    session = make_session(whole)
    fake = Scripted("AAAA" + "B" * 40)
    x = continuous
    events = strip(run(session, [x[i : i + 4800] for i in range(0, len(x), 4800)], fake,
                       drop=seen))
    assert session.stats["speaker_changes"] == 1
    starts = [round(e["t"] * SR) for e in events if e["type"] == "speech_start"]
    ends = [round(e["end"] * SR) for e in finals(events)]
    assert [(s, e) for s, e, _ in fake.finals] == list(zip(starts, ends))
    assert [letter for _, _, letter in fake.finals] == ["A", "B"]
    final_jobs = [j for j in jobs if j.kind == "final"]
    assert len(final_jobs) == 2
    for job in final_jobs:
        assert len(job.pcm) == job.end - job.start  # the turn alone, no context
    assert [person_id(e) for e in finals(events)] == ["p_a", "p_b"]
    assert any(e["type"] == "speaker" and not e["final"] for e in events)
    # without it: the turn closed by the change has no final job, the other pools its
    # pieces and a tail job after them
    _, pooled_events, pooled = scripted_run(continuous, "AAAA" + "B" * 40)
    assert [person_id(e) for e in finals(pooled_events)] == ["p_a", "p_b"]
    assert len(pooled.finals) == 1 and pooled.finals[0][0] > starts[1]


class OnePassElsewhere(Scripted):
    """Scripted pieces; every final job (a whole turn) answers ``final`` instead."""

    def __init__(self, script: str, final: np.ndarray) -> None:
        super().__init__(script)
        self.final = final

    def __call__(self, job: EmbedJob) -> np.ndarray:
        out = super().__call__(job)
        return self.final if job.kind == "final" else out


def test_final_agree_lets_the_pieces_take_a_one_pass_name_away(continuous: np.ndarray) -> None:
    """segment.final_agree: a one-pass final naming A, whose pieces (all A) put A nearest
    too, keeps its name and distance; one naming B names nobody, with the one pass's
    distance and candidates; one nearest A beyond the threshold stays unknown though the
    pieces name A (they never add a name). The pieces' search is batched with the rest."""
    seg = dataclasses.replace(SCRIPTED.segment, final_whole_pass=True)
    one_pass = SCRIPTED.replace(segment=seg)
    agreeing = SCRIPTED.replace(segment=dataclasses.replace(seg, final_agree=True))
    people = {"p_a": basis(0), "p_b": basis(1), "p_c": basis(2)}  # nobody on the last axis
    near_a = unit(0.95 * basis(0) + 0.3 * basis(1))  # 0.30 from A
    near_b = unit(0.3 * basis(0) + 0.95 * basis(1))  # 0.30 from B, 1.18 from A
    far_a = unit(basis(0) + 0.5 * basis(1) + 2.0 * basis(3))  # A nearest, at 1.06
    assert distance(far_a, basis(0)) > BASE.match.max_distance

    vetoed: list[int] = []  # each run's stats["vetoed_finals"]

    def run_with(config: Config, vector: np.ndarray,
                 batch: FakeSearch | None = None) -> list[dict[str, Any]]:
        fake = OnePassElsewhere("A", vector)
        x = continuous
        session = make_session(config, FakeSearch(people))
        events = strip(run(session, [x[i : i + 4800] for i in range(0, len(x), 4800)], fake,
                           batched=batch))
        vetoed.append(session.stats["vetoed_finals"])
        return events

    def final_of(config: Config, vector: np.ndarray) -> dict[str, Any]:
        (final,) = finals(run_with(config, vector))
        return final

    kept = final_of(agreeing, near_a)
    assert kept == final_of(one_pass, near_a) and person_id(kept) == "p_a"
    assert vetoed == [0, 0]
    assert kept["distance"] == pytest.approx(distance(near_a, basis(0)), abs=1e-4)
    assert person_id(final_of(one_pass, near_b)) == "p_b"
    refused = final_of(agreeing, near_b)
    assert refused["person"] is None and vetoed[-1] == 1  # counted for bye.stats
    assert refused["distance"] == pytest.approx(distance(near_b, basis(1)), abs=1e-4)
    assert [c["id"] for c in refused["candidates"]][0] == "p_b"
    assert final_of(agreeing, far_a) == final_of(one_pass, far_a)
    assert final_of(agreeing, far_a)["person"] is None and vetoed[-1] == 0  # nothing taken
    batch = FakeSearch(people)
    events = run_with(agreeing, near_b, batch)
    assert finals(events) == [refused]
    speaker = [e for e in events if e["type"] == "speaker"]
    assert len(speaker) > 2 and len(batch.ks) == len(speaker) + 1  # the final looks twice


# -- segment boundaries -----------------------------------------------------------------


def test_a_stream_ending_where_a_max_length_cut_falls_gives_no_empty_segment(
        continuous: np.ndarray) -> None:
    """The segmenter cuts at ``max_segment_s`` and restarts at once; when the stream ends
    right there, the restarted segment has no audio: no job, no event for it (found by
    bench/realtime.py: 30 s streams against 30 s segments made a final job of 0 samples)."""
    config = BASE.replace(segment=dataclasses.replace(BASE.segment, max_segment_s=3.0))
    embed = by_content()
    cut = next(e for e in finals(run(make_session(config), [continuous], embed))
               if e["closed_by"] == "max_length")["end"]
    x = continuous[: round(cut * SR)]
    jobs: list[EmbedJob] = []

    def keep(job: EmbedJob) -> np.ndarray:
        jobs.append(job)
        return embed(job)

    session = make_session(config)
    events = run(session, [x[i : i + 4800] for i in range(0, len(x), 4800)], keep)
    assert all(len(job.pcm) >= MIN_JOB_SAMPLES for job in jobs)
    starts = [e for e in events if e["type"] == "speech_start"]
    assert len(starts) == len(finals(events)) == 1
    assert finals(events)[0]["closed_by"] == "max_length" and finals(events)[0]["end"] == cut
    assert session.stats["short_segments"] == 1


def test_finish_closes_the_open_segment(speech_dir: Path) -> None:
    x = np.concatenate([np.zeros(SR, np.float32), read(speech_dir, FILES[0])])
    session = make_session()
    embed = by_content()
    events = run(session, [float_to_s16le(x)], embed, finish=False)
    assert [e["type"] for e in events][:1] == ["speech_start"]
    assert not finals(events) and "speech_end" not in [e["type"] for e in events]
    events += run(session, [], embed)  # finish() only
    assert events[-1]["type"] == "speech_end"
    assert events[-1]["t"] == pytest.approx(len(x) / SR, abs=0.25)
    assert len(finals(events)) == 1 and person_id(finals(events)[0]) is not None


def test_finish_is_idempotent_and_feed_after_finish_fails(speech_dir: Path) -> None:
    x = np.concatenate([np.zeros(SR, np.float32), read(speech_dir, FILES[0])])
    session = make_session()
    session.feed_pcm(float_to_s16le(x))
    session.finish()
    jobs = session.take_jobs()
    session.finish()
    assert session.take_jobs() == []
    with pytest.raises(RuntimeError):
        session.feed_pcm(b"\x00\x00")
    assert jobs[-1].kind == "piece"


def test_finish_flushes_the_resampler(conversation: Conversation) -> None:
    session = make_session(sample_rate=48000, channels=2)
    # 67 frames of 30 ms exactly, some of which soxr holds back until the end
    session.feed_pcm(conversation.pcm48[: 67 * 1440 * 4])
    before = session.position_s
    session.finish()
    assert before < 2.01
    assert session.position_s == pytest.approx(2.01)


def test_short_blips_give_no_events(speech_dir: Path) -> None:
    x = read(speech_dir, FILES[2])
    blip = x[SR : SR + int(0.4 * SR)]  # 0.4 s of speech: a segment shorter than 1 s
    silence = np.zeros(SR, np.float32)
    session = make_session()
    events = run(session, [float_to_s16le(np.concatenate([silence, blip, silence, silence]))],
                 by_content())
    assert events == []
    assert session.stats["short_segments"] == 1 and session.stats["segments"] == 0
    assert session.stats["jobs"] == 0 and session.idle


def test_long_speech_is_cut_at_max_segment(conversation: Conversation) -> None:
    config = BASE.replace(segment=SegmentConfig(max_segment_s=2.0))
    session = make_session(config)
    events = strip(run(session, [conversation.pcm16], by_content()))
    segs = segments(events)
    assert len(segs) > 3
    forced = 0
    for n in range(1, len(segs)):
        a, b = segs[n], segs[n + 1]
        length = a[-1]["t"] - a[0]["t"]
        # decided per 30 ms frame: a segment may pass the maximum by less than a frame
        assert length < 2.0 + 0.03
        if b[0]["t"] == a[-1]["t"]:  # forced cut: the next segment starts right there
            assert length >= 2.0
            forced += 1
    assert forced >= 2
    assert session.stats["segments"] == len(segs)


def test_reset_starts_a_new_stream(conversation: Conversation, reference: list[dict[str, Any]]
                                   ) -> None:
    session = make_session()
    session.feed_pcm(conversation.pcm16[: len(conversation.pcm16) // 2])
    session.take_jobs()
    session.reset()
    assert session.idle and session.position_s == 0.0
    assert session.stats["jobs"] == 0
    assert strip(run(session, [conversation.pcm16], by_content())) == reference


def test_stats_count_everything(conversation: Conversation, reference: list[dict[str, Any]]
                                ) -> None:
    session = make_session()
    embedder = FakeEmbedder()
    run(session, [conversation.pcm16], by_content(embedder))
    assert session.stats == {
        "segments": 3, "short_segments": 0, "speaker_changes": 0, "rejoined_changes": 0,
        "jobs": embedder.calls, "dropped_jobs": 0, "failed_jobs": 0, "abandoned_jobs": 0,
        "events": len(reference), "failed_searches": 0, "voice_checks": 0,
        "vetoed_finals": 0,
    }


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, channels, data",
    [
        ("s16le", 1, b"\x00\x00\x00"),
        ("s16le", 2, b"\x00\x00"),
        ("f32le", 1, b"\x00\x00\x00\x00\x00\x00"),
        ("f32le", 1, np.array([0.0, np.nan], "<f4").tobytes()),
    ],
)
def test_bad_audio(fmt: str, channels: int, data: bytes) -> None:
    session = make_session(fmt=fmt, channels=channels)
    session.feed_pcm(b"\x00" * 480 * channels * (2 if fmt == "s16le" else 4))
    with pytest.raises(BadAudio):
        session.feed_pcm(data)
    # nothing of the bad chunk was used
    assert session.position_s == pytest.approx(0.03)


def _s(samples: int) -> float:
    return round(samples / SR, 3)


def test_segment_confirmed_only_by_its_end(speech_dir: Path) -> None:
    # With an end padding longer than the hang-over, a segment can reach min_segment_s
    # only at the frame that ends it: it is reported then, with its final and no guess.
    vad = dataclasses.replace(BASE.vad, end_window_ms=300, end_pad_ms=1000)
    x = read(speech_dir, FILES[2])
    blip = np.concatenate([np.zeros(SR, np.float32), x[SR : SR + int(0.4 * SR)],
                           np.zeros(2 * SR, np.float32)])
    ((start, end),) = find_speech(blip, vad)
    config = BASE.replace(vad=vad, segment=SegmentConfig(min_segment_s=(end - start) / SR))
    session = make_session(config)
    events = strip(run(session, [blip], by_content()))
    assert [(e["type"], e.get("final")) for e in events] == [
        ("speech_start", None), ("speaker", True), ("speech_end", None)]
    assert (events[0]["t"], events[-1]["t"]) == (_s(start), _s(end))
    assert session.stats["short_segments"] == 0


@pytest.mark.parametrize("pieces_fail", [False, True])
def test_a_failed_final_still_closes_the_segment(conversation: Conversation,
                                                 pieces_fail: bool) -> None:
    """A network failure on the final never stalls the stream: the final is decided on
    the turn's pieces, or, when they failed too, says person null."""
    session = make_session()
    session.feed(conversation.x16)
    session.finish()
    embed = by_content()
    events: list[dict[str, Any]] = []
    failed = 0
    while True:
        jobs = session.take_jobs()
        if not jobs:
            break
        for job in jobs:
            if job.kind == "final" or pieces_fail:
                session.job_failed(job.id)
                failed += 1
            else:
                session.job_done(job.id, as_stats(job, embed(job)))
        events += session.take_events()
    events += session.take_events()
    finals = [e for e in events if e["type"] == "speaker" and e["final"]]
    assert len(finals) == 3
    if pieces_fail:
        assert all(e["person"] is None and e["candidates"] == [] for e in finals)
    else:
        assert [person_id(e) for e in finals] == ["p_a", "p_b", "p_c"]
    assert [e["type"] for e in events].count("speech_end") == len(finals)
    assert session.stats["failed_jobs"] == failed
    assert session.idle


def test_job_failed_for_an_unknown_job_is_ignored() -> None:
    session = make_session()
    session.job_failed(12345)
    assert session.stats["failed_jobs"] == 0 and session.idle


# -- joining the pieces of one turn ----------------------------------------------------


def two_parts(speech_dir: Path, second: int, second_s: float, pause_s: float) -> np.ndarray:
    """Speaker A for ~4 s, a pause, then ``second_s`` of speaker ``second`` (markers)."""
    a = read(speech_dir, FILES[0])[: 4 * SR]
    b = read(speech_dir, FILES[second])[SR : SR + int(second_s * SR)]
    silence = np.zeros(SR, np.float32)
    return np.concatenate([
        silence, a + marker(len(a), MARKER_HZ[0], 0, SR), np.zeros(int(pause_s * SR), np.float32),
        b + marker(len(b), MARKER_HZ[second], 0, SR), silence, silence])


def test_a_short_piece_right_after_a_turn_continues_it(speech_dir: Path) -> None:
    x = two_parts(speech_dir, second=0, second_s=0.4, pause_s=1.2)
    session = make_session()
    events = strip(run(session, [float_to_s16le(x)], by_content()))
    segs = segments(events)
    assert list(segs) == [1, 2]  # the 0.4 s piece is reported: it joins the turn before
    gap = segs[2][0]["t"] - segs[1][-1]["t"]
    assert 0 < gap <= BASE.segment.join_gap_s
    assert [person_id(e) for e in finals(events)] == ["p_a", "p_a"]
    assert session.stats["short_segments"] == 0
    # without joining, the short piece is ignored
    config = BASE.replace(segment=SegmentConfig(join_gap_s=None))
    session = make_session(config)
    events = strip(run(session, [float_to_s16le(x)], by_content()))
    assert list(segments(events)) == [1] and session.stats["short_segments"] == 1


def test_a_short_piece_of_someone_else_is_not_named(speech_dir: Path) -> None:
    x = two_parts(speech_dir, second=1, second_s=0.4, pause_s=1.2)
    events = strip(run(make_session(), [float_to_s16le(x)], by_content()))
    assert [person_id(e) for e in finals(events)] == ["p_a", None]
    assert finals(events)[1]["candidates"] == []


def test_a_joined_turn_pools_the_turn_before_while_the_voice_matches(speech_dir: Path) -> None:
    """Same voice after a pause: guesses and final pool both turns; another voice: never."""
    search = FakeSearch()
    same = two_parts(speech_dir, second=0, second_s=2.5, pause_s=1.2)
    other = two_parts(speech_dir, second=1, second_s=2.5, pause_s=1.2)
    for x, want in ((same, ["p_a", "p_a"]), (other, ["p_a", "p_b"])):
        events = strip(run(make_session(search=search), [float_to_s16le(x)], by_content()))
        assert [person_id(e) for e in finals(events)] == want
        second = segments(events)[2]
        assert all(person_id(e) == want[1] for e in second if e["type"] == "speaker")


def test_no_join_after_a_long_pause(speech_dir: Path) -> None:
    x = two_parts(speech_dir, second=0, second_s=0.4, pause_s=3.0)
    session = make_session()
    events = strip(run(session, [float_to_s16le(x)], by_content()))
    assert list(segments(events)) == [1] and session.stats["short_segments"] == 1


def test_a_far_window_at_the_end_of_a_segment_stays_in_its_turn(continuous: np.ndarray) -> None:
    _, _, probe = scripted_run(continuous, "A")
    n = len(probe.pieces)
    # the last window (two B pieces) is far, but the segment ends before it is confirmed
    session, events, _ = scripted_run(continuous, "A" * (n - 2) + "BB")
    assert session.stats["speaker_changes"] == 0 and list(segments(events)) == [1]
    provisional = [e for e in events if e["type"] == "speaker" and not e["final"]]
    assert person_id(provisional[-1]) == "p_b"  # the far window was announced
    assert person_id(finals(events)[0]) == "p_a"  # and then folded into the A turn


def test_a_dropped_piece_after_a_far_window_cancels_the_change(continuous: np.ndarray) -> None:
    session = make_session(SCRIPTED)
    fake = Scripted("AAAABBBBBBBBBBBBB")
    seen: list[int] = []

    def sixth_piece(job: EmbedJob) -> bool:
        if job.kind == "piece":
            seen.append(job.id)
        return job.kind == "piece" and len(seen) == 7  # right after the first far window

    x = continuous
    events = strip(run(session, [x[i : i + 4800] for i in range(0, len(x), 4800)], fake,
                       drop=sixth_piece))
    assert session.stats["dropped_jobs"] == 1
    ends = piece_ends(fake)  # (the dropped piece is not among them)
    assert person_id(provisional_at(events, ends[5])) == "p_b"  # the first far window
    # no change can be confirmed across the gap: the far piece went back to the turn,
    # and no provisional event was made for the dropped piece
    assert not [e for e in events if e["type"] == "speaker" and not e["final"]
                and e["end"] not in {_s(b) for b in ends}]


# -- giving up on outstanding work -------------------------------------------------------


@pytest.mark.parametrize("pieces_answered", [False, True])
def test_abandon_closes_every_segment(conversation: Conversation, pieces_answered: bool) -> None:
    """When the caller stops waiting (end of stream, time up), every segment still gets
    its final: on the pieces already analysed, or person null without any."""
    session = make_session()
    session.feed(conversation.x16)
    session.finish()
    embed = by_content()
    jobs = session.take_jobs()
    if pieces_answered:
        for job in jobs:
            session.job_done(job.id, as_stats(job, embed(job)))
    outstanding = len(session.take_jobs()) if pieces_answered else len(jobs)
    n = session.abandon()
    events = session.take_events()
    assert session.idle and session.take_jobs() == []
    assert [e["segment"] for e in finals(events)] == [1, 2, 3]
    assert [e["type"] for e in events].count("speech_end") == 3
    if pieces_answered:  # the finals' tails: one at a time (ordered release), 3 in all
        assert outstanding == 1 and n == 3
        assert [person_id(e) for e in finals(events)] == ["p_a", "p_b", "p_c"]
    else:  # every piece, then the whole-turn finals they caused
        assert n == outstanding + 3
        assert all(e["person"] is None for e in finals(events))
    assert session.stats["abandoned_jobs"] == n
    assert session.abandon() == 0


# -- false changes inside one voice, and rejoining (issue 11 part 4) ------------------------


class Noisy(Scripted):
    """Scripted, plus ``E``: the A voice on a noisy stretch, 80 degrees off A towards a
    direction nobody is enrolled in (distance 1.29 from A: windows of it are far)."""

    VECTORS = {**Scripted.VECTORS,
               "E": np.array([np.cos(np.radians(80)), 0, np.sin(np.radians(80)), 0], np.float32)}


#: Only A and B are enrolled: the E and C directions belong to nobody.
TWO_PEOPLE = {"p_a": basis(0), "p_b": basis(1)}
#: The rule before issue 11 part 4: one confirming window, the split made at once.
OLD_RULE = dataclasses.replace(SCRIPTED.segment, change_confirm_windows=1, change_hold_s=None)


def noisy_run(x: np.ndarray, script: str, segment: SegmentConfig | None = None,
              max_distance: float = 1.0, people: dict[str, np.ndarray] | None = None
              ) -> tuple[Session, list[dict[str, Any]], Scripted]:
    config = SCRIPTED.replace(segment=segment or SCRIPTED.segment,
                              match=dataclasses.replace(SCRIPTED.match, max_distance=max_distance))
    session = make_session(config, search=FakeSearch(TWO_PEOPLE if people is None else people))
    fake = Noisy(script)
    events = strip(run(session, [x[i : i + 4800] for i in range(0, len(x), 4800)], fake))
    return session, events, fake


def test_a_same_voice_blip_does_not_split(continuous: np.ndarray) -> None:
    # Two far windows (A E, then E E) confirm a change under the old rule, cut before the
    # second E: A A A A E | E A. Held for change_hold_s, the part split off is within
    # rejoin_distance of the turn and names the same person: it rejoins, one final.
    script = "AAAAEEEA" + "A" * 8
    old, events, _ = noisy_run(continuous, script, OLD_RULE)
    assert old.stats["speaker_changes"] == 1 and list(segments(events)) == [1, 2]
    session, events, fake = noisy_run(continuous, script)
    assert session.stats["speaker_changes"] == 0 and session.stats["rejoined_changes"] == 1
    assert list(segments(events)) == [1]
    assert [person_id(e) for e in finals(events)] == ["p_a"]
    assert finals(events)[0]["closed_by"] == "pause"
    ends = piece_ends(fake)
    assert person_id(provisional_at(events, ends[-1])) == "p_a"


def test_a_split_off_unknown_part_near_the_turn_rejoins_it(continuous: np.ndarray) -> None:
    # With a strict threshold the E part alone would be unknown: the old rule gives it a
    # segment of its own labelled unknown; now it rejoins and the final names A.
    script = "AAAAEEEA" + "A" * 8
    _, events, _ = noisy_run(continuous, script, OLD_RULE, max_distance=0.5)
    assert [person_id(e) for e in finals(events)] == ["p_a", None]
    session, events, _ = noisy_run(continuous, script, max_distance=0.5)
    assert session.stats["rejoined_changes"] == 1 and list(segments(events)) == [1]
    assert [person_id(e) for e in finals(events)] == ["p_a"]
    # and the other way round: an unknown start rejoins the named part after it (1.14
    # from it here, so with a rejoin_distance above that)
    wide = dataclasses.replace(SCRIPTED.segment, rejoin_distance=1.2)
    session, events, _ = noisy_run(continuous, "EEEEEAAA" + "A" * 8, wide, max_distance=0.5)
    assert session.stats["rejoined_changes"] == 1 and list(segments(events)) == [1]


@pytest.mark.parametrize("script, want", [
    ("AAAA" + "B" * 12, ["p_a", "p_b"]),  # to another enrolled person
    ("AAAA" + "C" * 12, ["p_a", None]),   # to a voice nobody enrolled, far from A
])
def test_a_real_change_still_splits(continuous: np.ndarray, script: str, want: list[str | None]
                                    ) -> None:
    old, old_events, _ = noisy_run(continuous, script, OLD_RULE)
    session, events, fake = noisy_run(continuous, script)
    assert session.stats["speaker_changes"] == 1 and session.stats["rejoined_changes"] == 0
    assert [person_id(e) for e in finals(events)] == want
    # the same cut as the old rule; the split is only decided one piece later
    assert [e["t"] for e in events if e["type"] == "speech_start"] == [
        e["t"] for e in old_events if e["type"] == "speech_start"]
    assert finals(events)[0]["closed_by"] == "change"
    ends = piece_ends(fake)
    assert person_id(provisional_at(events, ends[5])) == want[1]  # named while held


def test_a_change_held_when_the_segment_ends_is_still_split(continuous: np.ndarray) -> None:
    _, _, probe = noisy_run(continuous, "A")
    n = len(probe.pieces)
    long_hold = dataclasses.replace(SCRIPTED.segment, change_hold_s=30.0)
    session, events, fake = noisy_run(continuous, "A" * (n - 4) + "BBBB", long_hold)
    assert session.stats["speaker_changes"] == 1
    assert list(segments(events)) == [1, 2]
    assert [person_id(e) for e in finals(events)] == ["p_a", "p_b"]
    assert [e["closed_by"] for e in finals(events)] == ["change", "pause"]
    # the new turn's final pools the tail after its last piece (one small job)
    ((start, _, _),) = fake.finals
    assert start == piece_ends(fake)[-1]
    assert session.idle


def test_more_confirming_windows(continuous: np.ndarray) -> None:
    # E E E: two far windows, not three: with three confirming windows it is no change
    confirm2 = dataclasses.replace(OLD_RULE, change_confirm_windows=2)
    session, events, _ = noisy_run(continuous, "AAAAEEAAAAAAAAA", confirm2)
    assert session.stats["speaker_changes"] == 0 and list(segments(events)) == [1]
    session, events, _ = noisy_run(continuous, "AAAA" + "B" * 12, confirm2)
    assert session.stats["speaker_changes"] == 1
    assert [person_id(e) for e in finals(events)] == ["p_a", "p_b"]
    # far windows confirm each other only while they sound alike: B B, B C, C C (the
    # first is 1.41 from the last) are three far windows but no change (the segment
    # ends before a third window like C C comes)
    session, events, fake = noisy_run(continuous, "AAAABBCC", confirm2,
                                      people={"p_a": basis(0), "p_b": basis(1), "p_c": basis(2)})
    assert len(fake.pieces) == 8 and session.stats["speaker_changes"] == 0
    assert person_id(provisional_at(events, piece_ends(fake)[-1])) == "p_c"


def test_far_windows_must_point_at_another_voice(continuous: np.ndarray) -> None:
    other = dataclasses.replace(OLD_RULE, change_other_voice=True)
    # the E windows are far from the turn, but nearest to A like the turn: no change
    session, _, _ = noisy_run(continuous, "AAAAEEEEAAAAAAAA", other)
    assert session.stats["speaker_changes"] == 0
    session, events, _ = noisy_run(continuous, "AAAA" + "B" * 12, other)
    assert [person_id(e) for e in finals(events)] == ["p_a", "p_b"]
    # with nobody enrolled, distance alone decides
    session, _, _ = noisy_run(continuous, "AAAA" + "B" * 12, other, people={})
    assert session.stats["speaker_changes"] == 1


class Listener:
    """A fake segmentation model over a :class:`Scripted` run: each frame of a "voices"
    job is labelled with the local speaker ``labels`` gives the letter of the piece that
    covers it (so the letters it maps to one label sound like one voice to it)."""

    def __init__(self, fake: Scripted, labels: dict[str, int],
                 from_piece: tuple[int, int] | None = None) -> None:
        """``from_piece`` ``(k, label)``: from the ``k``-th piece on, every frame is
        ``label`` instead (where the model hears the voice change)."""
        self.fake, self.labels, self.from_piece = fake, labels, from_piece
        self.jobs: list[EmbedJob] = []

    def label(self, at: int) -> int | None:
        pieces = sorted(self.fake.pieces.items())
        k = next((i for i, ((a, b), _) in enumerate(pieces) if a <= at < b), None)
        if k is None:
            return None
        if self.from_piece is not None and k >= self.from_piece[0]:
            return self.from_piece[1]
        return self.labels[pieces[k][1]]

    def __call__(self, job: EmbedJob) -> np.ndarray:
        assert job.kind == "voices" and not job.droppable
        assert len(job.pcm) == job.end - job.start <= 160_000  # one window, no context
        self.jobs.append(job)
        frames = (job.end - job.start) // 270
        out = np.full((frames, 7), -10.0, np.float32)
        for f in range(frames):
            label = self.label(job.start + f * 270 + 135)
            out[f, 0 if label is None else 1 + label] = 0.0
        return out


CHECKED = dataclasses.replace(SCRIPTED.segment, voice_check=True)
#: Parts of a held change rejoin by distances only within 1.0.
STRICT = dataclasses.replace(SCRIPTED.segment, rejoin_distance=1.0, voice_check=False)


def listened_run(x: np.ndarray, script: str, labels: dict[str, int] | None,
                 segment: SegmentConfig = CHECKED, max_distance: float = 1.0,
                 voices: bool = True, chunks: list[bytes] | None = None,
                 from_piece: tuple[int, int] | None = None
                 ) -> tuple[Session, list[dict[str, Any]], Listener]:
    """:func:`noisy_run` with the voice check; ``labels`` None: the model fails."""
    config = SCRIPTED.replace(segment=segment,
                              match=dataclasses.replace(SCRIPTED.match, max_distance=max_distance))
    session = make_session(config, search=FakeSearch(TWO_PEOPLE), voices=voices)
    fake = Noisy(script)
    listener = Listener(fake, labels or {}, from_piece)
    answer = listener if labels is not None else lambda job: None
    feed = chunks if chunks is not None else [x[i : i + 4800] for i in range(0, len(x), 4800)]
    events = strip(run(session, feed, fake, voices=answer))
    return session, events, listener


def test_one_voice_heard_across_a_cut_rejoins_a_farther_part(continuous: np.ndarray) -> None:
    # A long noisy stretch: the E part is 1.10 from the turn before it (A A A A E), beyond
    # a rejoin_distance of 1.0, so by distances it splits off as an unknown turn; the
    # model hears one voice across the cut, and within voice_rejoin_distance (1.2) the
    # parts rejoin.
    script = "AAAA" + "E" * 12
    session, events, _ = noisy_run(continuous, script, STRICT)
    assert session.stats["speaker_changes"] == 1
    assert [person_id(e) for e in finals(events)] == ["p_a", None]
    checked = dataclasses.replace(STRICT, voice_check=True)
    session, events, listener = listened_run(continuous, script, {"A": 0, "E": 0}, checked)
    assert session.stats["voice_checks"] == 1 == len(listener.jobs)
    assert session.stats["speaker_changes"] == 0 and session.stats["rejoined_changes"] == 1
    assert [person_id(e) for e in finals(events)] == ["p_a"]
    # the model ran on the segment's audio up to the piece that decided (at most 10 s)
    (job,) = listener.jobs
    assert job.end in piece_ends(listener.fake) and job.start < job.end - 2 * SR
    # beyond voice_rejoin_distance the model's word is not enough
    tight = dataclasses.replace(checked, voice_rejoin_distance=1.05)
    session, events, _ = listened_run(continuous, script, {"A": 0, "E": 0}, tight)
    assert [person_id(e) for e in finals(events)] == ["p_a", None]


class Leaning(Noisy):
    """Noisy, plus ``F``: 80 degrees off A towards B (1.29 from A, 0.17 from B)."""

    VECTORS = {**Noisy.VECTORS,
               "F": np.array([np.cos(np.radians(80)), np.sin(np.radians(80)), 0, 0], np.float32)}


def test_one_voice_rejoins_farther_only_when_the_same_person_is_nearest(
        continuous: np.ndarray) -> None:
    # The E and F parts are both 1.10 from the turn before them (A A A A and their own
    # first piece), beyond rejoin_distance 1.0, within voice_rejoin_distance 1.2, and at a
    # threshold of 0.15 every part is unknown alone. The model hears one voice across
    # both cuts: E rejoins (A is nearest to it as to the turn), F does not (B is nearest
    # to it: someone else took over, enrolled or not)
    checked = dataclasses.replace(STRICT, voice_check=True)
    config = SCRIPTED.replace(segment=checked,
                              match=dataclasses.replace(SCRIPTED.match, max_distance=0.15))
    got = {}
    for letter in "EF":
        session = make_session(config, search=FakeSearch(TWO_PEOPLE), voices=True)
        fake = Leaning("AAAA" + letter * 12)
        listener = Listener(fake, {"A": 0, letter: 0})
        events = strip(run(session, [continuous[i : i + 4800]
                                     for i in range(0, len(continuous), 4800)],
                           fake, voices=listener))
        assert session.stats["voice_checks"] == 1 == len(listener.jobs)
        assert all(person_id(e) is None for e in finals(events))
        got[letter] = (session.stats["rejoined_changes"], session.stats["speaker_changes"])
    assert got == {"E": (1, 0), "F": (0, 1)}


def test_two_voices_heard_across_a_cut_keep_the_split(continuous: np.ndarray) -> None:
    # By distances the E part (1.10 from the turn before it) rejoins within 1.1; when the
    # model hears another voice from the cut on (the sixth piece), the split stands.
    script = "AAAA" + "E" * 12
    session, _, _ = noisy_run(continuous, script)
    assert session.stats["rejoined_changes"] == 1
    session, events, listener = listened_run(continuous, script, {"A": 0, "E": 0},
                                             from_piece=(5, 1))
    assert listener.fake.pieces[sorted(listener.fake.pieces)[5]] == "E"
    assert finals(events)[0]["end"] == _s(sorted(listener.fake.pieces)[5][0])  # the cut
    assert session.stats["speaker_changes"] == 1 and session.stats["rejoined_changes"] == 0
    assert [person_id(e) for e in finals(events)] == ["p_a", None]
    assert finals(events)[0]["closed_by"] == "change"
    # a real change the model hears too splits as before
    session, events, _ = listened_run(continuous, "AAAA" + "B" * 12, {"A": 0, "B": 1})
    assert [person_id(e) for e in finals(events)] == ["p_a", "p_b"]


def test_without_the_model_or_its_answer_distances_decide(continuous: np.ndarray) -> None:
    script = "AAAA" + "E" * 12
    _, want, _ = noisy_run(continuous, script, STRICT)
    assert [person_id(e) for e in finals(want)] == ["p_a", None]
    checked = dataclasses.replace(STRICT, voice_check=True)
    for labels, voices in ((None, True), ({"A": 0, "E": 0}, False)):
        session, events, listener = listened_run(continuous, script, labels, checked,
                                                 voices=voices)
        assert events == want
        assert session.stats["failed_jobs"] == session.stats["voice_checks"] == int(voices)
        assert not listener.jobs
    # off by configuration: no job either
    session, events, listener = listened_run(continuous, script, {"A": 0, "E": 0}, STRICT)
    assert events == want and session.stats["voice_checks"] == 0


def test_a_change_held_at_the_segment_end_is_checked_too(continuous: np.ndarray) -> None:
    _, _, probe = noisy_run(continuous, "A")
    n = len(probe.pieces)
    long_hold = dataclasses.replace(STRICT, change_hold_s=30.0)
    script = "A" * (n - 4) + "EEEE"
    session, events, _ = noisy_run(continuous, script, long_hold)
    assert [person_id(e) for e in finals(events)] == ["p_a", None]
    checked = dataclasses.replace(long_hold, voice_check=True)
    session, events, listener = listened_run(continuous, script, {"A": 0, "E": 0}, checked)
    assert len(listener.jobs) == 1 and listener.jobs[0].end > piece_ends(listener.fake)[-1]
    assert [person_id(e) for e in finals(events)] == ["p_a"]
    assert [e["closed_by"] for e in finals(events)] == ["pause"]
    assert session.idle


def test_voice_checks_do_not_depend_on_chunking(continuous: np.ndarray) -> None:
    pcm = float_to_s16le(continuous)
    checked = dataclasses.replace(STRICT, voice_check=True)
    for script, change in (("AAAA" + "E" * 12, None), ("AAAA" + "E" * 12, (5, 1))):
        runs = [listened_run(continuous, script, {"A": 0, "E": 0}, checked, chunks=chunks,
                             from_piece=change)[1]
                for chunks in ([pcm], every(pcm, 320), random_chunks(pcm, 3, 5000))]
        assert all(r == runs[0] for r in runs[1:])


#: No change heard by windows: only the segmentation model splits turns.
SPLITTING = dataclasses.replace(SCRIPTED.segment, change_distance=None, rejoin_distance=1.1,
                                voice_split=True)


def test_a_turn_is_split_where_the_model_hears_another_voice(continuous: np.ndarray) -> None:
    script = "AAAABBBB"
    session, events, _ = noisy_run(continuous, script, dataclasses.replace(SPLITTING,
                                                                          voice_split=False))
    assert len(finals(events)) == 1  # one turn for two voices
    session, events, listener = listened_run(continuous, script, {"A": 0, "B": 1}, SPLITTING)
    assert [person_id(e) for e in finals(events)] == ["p_a", "p_b"]
    assert [e["closed_by"] for e in finals(events)] == ["change", "pause"]
    assert session.stats["speaker_changes"] == 1 and session.stats["voice_checks"] == 2
    # cut on the piece boundary where B begins; the second turn got its own checks
    starts = [e["t"] for e in events if e["type"] == "speech_start"]
    assert starts[1] == _s(min(a for (a, _), v in listener.fake.pieces.items() if v == "B"))
    assert [e["type"] for e in events if e["type"] != "speaker"] == [
        "speech_start", "speech_end", "speech_start", "speech_end"]
    assert session.idle
    # one voice all through: no split, one check
    session, events, _ = listened_run(continuous, "AAAAAAAA", {"A": 0}, SPLITTING)
    assert [person_id(e) for e in finals(events)] == ["p_a"]
    assert session.stats["voice_checks"] == 1 and session.stats["speaker_changes"] == 0


def test_a_split_by_the_model_still_rejoins_by_distances(continuous: np.ndarray) -> None:
    # E (unknown alone) is 1.29 from A: split within 1.1, rejoined within 1.3
    session, events, _ = listened_run(continuous, "AAAAEEEE", {"A": 0, "E": 1}, SPLITTING)
    assert [person_id(e) for e in finals(events)] == ["p_a", None]
    wide = dataclasses.replace(SPLITTING, rejoin_distance=1.3)
    session, events, _ = listened_run(continuous, "AAAAEEEE", {"A": 0, "E": 1}, wide)
    assert [person_id(e) for e in finals(events)] == ["p_a"]
    assert session.stats["rejoined_changes"] == 1


def test_three_voices_in_one_turn_split_twice(continuous: np.ndarray) -> None:
    session, events, _ = listened_run(continuous, "AAABBBCC", {"A": 0, "B": 1, "C": 2},
                                      SPLITTING)
    assert [person_id(e) for e in finals(events)] == ["p_a", "p_b", None]
    assert session.stats["speaker_changes"] == 2
    # too short a part is never split off (voice_split_min_s)
    long_parts = dataclasses.replace(SPLITTING, voice_split_min_s=2.5)
    session, events, _ = listened_run(continuous, "AAABBBCC", {"A": 0, "B": 1, "C": 2},
                                      long_parts)
    assert [person_id(e) for e in finals(events)] == ["p_a", "p_b"]


def test_voice_splits_do_not_depend_on_chunking(continuous: np.ndarray) -> None:
    pcm = float_to_s16le(continuous)
    runs = [listened_run(continuous, "AAABBBCC", {"A": 0, "B": 1, "C": 2}, SPLITTING,
                         chunks=chunks)[1]
            for chunks in ([pcm], every(pcm, 320), random_chunks(pcm, 5, 5000))]
    assert all(r == runs[0] for r in runs[1:]) and len(finals(runs[0])) == 3


def test_held_changes_do_not_depend_on_chunking(continuous: np.ndarray) -> None:
    pcm = float_to_s16le(continuous)
    config = SCRIPTED.replace(match=dataclasses.replace(SCRIPTED.match, max_distance=0.5))
    outs = []
    for chunks in ([pcm], every(pcm, 320), random_chunks(pcm, 3, 5000)):
        for script in ("AAAAEEEAAAAAAAAA", "AAAA" + "B" * 12):  # (scripts need jobs in order)
            session = make_session(config, search=FakeSearch(TWO_PEOPLE))
            outs.append((script, strip(run(session, chunks, Noisy(script), batch=3))))
    by_script: dict[str, list[list[dict[str, Any]]]] = {}
    for script, events in outs:
        by_script.setdefault(script, []).append(events)
    for runs in by_script.values():
        assert all(r == runs[0] for r in runs[1:])


@pytest.mark.parametrize("field, value", [
    ("change_confirm_windows", 0), ("change_confirm_windows", 1.5),
    ("change_other_voice", "yes"), ("change_hold_s", -1.0), ("rejoin_distance", 0.0),
    ("rejoin_distance", 2.5), ("rejoin_distance", True),
])
def test_the_change_rule_config_is_checked(field: str, value: Any) -> None:
    from streamer.config import ConfigError
    with pytest.raises(ConfigError, match=f"segment.{field}"):
        SegmentConfig(**{field: value})


def test_pre_roll_starts_the_segment_earlier_with_its_audio(speech_dir: Path) -> None:
    # vad.pre_roll_ms: the segment (and its first piece, whose job holds that audio)
    # starts that much earlier than the start window alone would start it, as
    # find_speech cuts the same recording; the first guess comes that much sooner too
    x = np.concatenate([np.zeros(2 * SR, np.float32), read(speech_dir, FILES[0])])
    starts, first_jobs = [], []
    for pre_roll_ms in (0, 300):
        vad = dataclasses.replace(BASE.vad, pre_roll_ms=pre_roll_ms)
        session = make_session(BASE.replace(vad=vad))
        jobs: list[EmbedJob] = []

        def embed(job: EmbedJob) -> np.ndarray:
            jobs.append(job)
            return FakeEmbedder().embed(job.pcm[len(job.pcm) - job.keep_samples:])

        events = run(session, [x], embed)
        start = next(e["t"] for e in events if e["type"] == "speech_start")
        assert round(start * SR) == find_speech(x, vad)[0][0]
        first = min(jobs, key=lambda j: j.start)
        assert first.start == round(start * SR) and len(first.pcm) == first.end - first.start
        starts.append(start)
        first_jobs.append(first)
    assert starts[1] == pytest.approx(starts[0] - 0.3, abs=1e-3)
    assert first_jobs[1].end == first_jobs[0].end - round(0.3 * SR)
