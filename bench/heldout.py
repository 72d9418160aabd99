"""Accuracy as a stranger measures it: one half of ``shared/speech``, per acoustic
condition, through the public protocol of a real server.

    python bench/heldout.py [--half test|tune|all] [--conditions clean,room,telephone]
                            [--small] [--out bench/out] [--config F] [--set section.key=value]
                            [--room-profile far|none] [--phone-profile phone|none]
                            [--renders N] [--meetings-only]

Speakers are split by :func:`streamer.evaluation.speaker_halves`; thresholds, windows and
limits are chosen on ``tune`` and reported on ``test`` (the default). A real server
(``streamer serve --port 0`` on a fresh data dir) is started and everything goes through
``/v1/api`` and ``/v1/ingest``, as a client would use it:

* **gallery**: every person of the half (LibriSpeech test-other, VCTK, AISHELL-1, Common
  Voice fa, Speech Commands) enrols over ``enroll`` from close-talk audio: their first
  utterances joined until ``ENROL_AUDIO_S`` seconds of *audio* (Speech Commands: the
  first 5 one-second clips). Refused people stay out of the gallery (their tests count
  as misses).
* per **condition** (``bench/conditions.py``: ``clean``, ``room`` = a far table
  microphone in a simulated room with noise at a low level, ``telephone``):

  - **enrolment**: each person's enrolment audio in that condition, sent as ``enroll``
    of a probe person (deleted again): refusals by code; and two-speaker mixes (the
    first half of one person's enrolment audio joined to the first half of another's of
    the same dataset): the share refused ``not_one_speaker`` ("caught").
  - **identify**: each test utterance (Speech Commands: the other 3 clips joined) in that
    condition, ``identify`` with ``top_k`` = everyone, for the condition's room
    (``CONDITION-items``, so with its rooms profile as below): top-1 (no answer or a refused
    person count as misses), true accepts (the match is the right person, at the room's
    threshold, the ``thr`` column: its profile's when it sets one), false accepts
    of never-enrolled voices (LibriSpeech train-clean voices of the same half), and
    leave-own-out false accepts (the nearest *other* person within the threshold); the
    distances for DET curves and a threshold sweep.
  - **meetings**: conversations stitched from test utterances of enrolled people and
    never-enrolled voices (turns of 2-8 s, pauses of 0.3-0.9 s), streamed through
    ``/v1/ingest`` as fast as the server takes them, scored with
    :func:`streamer.evaluation.score_meeting` on each clip's speech only (from its
    first to its last frame within 30 dB of its loudest, measured on the clean clip),
    0.25 s collar: named right / wrong / unknown / not covered, never-enrolled voices
    left unnamed, median onset-to-first-right-name latency. Beside them, what naming
    each turn whole gives: each reference turn cut from the same audio and sent to
    ``identify`` for the stream's room (its profile's VAD and threshold, as live). In
    the ``room`` condition every meeting has its own room, each talker their own place
    in it, and its stream's
    room (``room-*``) uses the ``--room-profile`` (``rooms`` in the config; default
    ``far``), as a deployment configures its table-microphone rooms; the ``telephone``
    condition's rooms (``telephone-*``) use ``--phone-profile`` (default ``phone``), as
    a deployment configures its dial-in rooms.

For comparing live settings on a half's few voices, ``--renders N`` hears every meeting
in N rooms (or on N lines) drawn apart (``NAME``, ``NAME~1``, ...; the first is the
meeting of a plain run) and ``--meetings-only`` leaves out identify and the enrolment
probes.

Prints tables and writes ``OUT/heldout-HALF.json`` (and ``OUT/heldout-HALF-det.png``
with matplotlib). ``--small`` is a quick run for CI.
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # numpy next to onnxruntime on 2 cores

import argparse
import asyncio
import dataclasses
import hashlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import conditions as acoustic  # noqa: E402  (bench/conditions.py, beside this script)
from realtime import Server, write_config  # noqa: E402

from streamer import wire  # noqa: E402
from streamer.config import load_config  # noqa: E402
from streamer.evaluation import (  # noqa: E402
    SAMPLE_RATE,
    Turn,
    Utterance,
    det_curve,
    half_of,
    load_manifest,
    read_audio,
    score_meeting,
)

LIBRI = "librispeech_testother_10spk"
SC = "speechcommands_v002test_80spk"
IMPOSTORS = "librispeech_trainclean100_251spk_1utt"
#: dataset -> meeting group (meetings mix speakers of one group)
DATASETS = {LIBRI: "read", "vctk_4spk": "read", "aishell1_2spk": "read",
            "commonvoice_fa": "crowd", SC: "words"}
ENROL_AUDIO_S = 8.0
SC_ENROL_CLIPS = 5
#: Longest test utterance sent to identify (the rest of a long LibriSpeech file is cut).
MAX_ITEM_S = 15.0
TURN_S = (2.0, 8.0)
PAUSE_S = (0.3, 0.9)
TURNS_PER_MEETING = 16
IMPOSTOR_TURN_SHARE = 0.2
CHUNK = 1600  # 100 ms of 16 kHz audio per ingest frame
SWEEP = [round(0.85 + 0.025 * k, 3) for k in range(15)]  # 0.85 .. 1.20
SPEECH_WITHIN_DB = 30.0


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def pct(x: float | None) -> str:
    return "   n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:5.1f}%"


def share(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def share_s(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def key_rng(*parts: str) -> np.random.Generator:
    """A generator seeded by a string key: the same item always gets the same draw."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def speech_span(x: np.ndarray) -> tuple[int, int]:
    """First and last sample of the 30 ms frames within SPEECH_WITHIN_DB of the loudest
    frame: where a clip's speech is, measured on the clean clip, not by the product's VAD."""
    n = 480
    frames = len(x) // n
    if frames == 0:
        return 0, len(x)
    energy = np.mean(x[: frames * n].reshape(frames, n).astype(np.float64) ** 2, axis=1) + 1e-12
    db = 10 * np.log10(energy)
    loud = np.flatnonzero(db >= db.max() - SPEECH_WITHIN_DB)
    return int(loud[0] * n), int((loud[-1] + 1) * n)


# -- the half's people and items -------------------------------------------------------


@dataclass
class Person:
    name: str
    dataset: str
    enrol: np.ndarray
    #: test items (identify) and meeting turns: one audio each, clean
    items: list[np.ndarray] = field(default_factory=list)
    item_keys: list[str] = field(default_factory=list)


def load_people(speech: Path, half: str, small: bool) -> list[Person]:
    people: list[Person] = []
    for dataset in DATASETS:
        utts = [u for u in load_manifest(speech / dataset) if "," not in u.speaker]
        chosen = half_of(utts, half)
        by: dict[str, list[Utterance]] = {}
        for u in chosen:
            by.setdefault(u.speaker, []).append(u)
        speakers = list(by)[: 2 if small else None]
        for spk in speakers:
            us = by[spk]
            if dataset == SC:
                if len(us) < SC_ENROL_CLIPS + 3:
                    continue
                enrol = np.concatenate([read_audio(u.path) for u in us[:SC_ENROL_CLIPS]])
                tests = [np.concatenate([read_audio(u.path) for u in us[SC_ENROL_CLIPS:]])]
                keys = [str(us[SC_ENROL_CLIPS].path)]
            else:
                got, n = [], 0
                while n < len(us) and sum(len(g) for g in got) < ENROL_AUDIO_S * SAMPLE_RATE:
                    got.append(read_audio(us[n].path))
                    n += 1
                if n >= len(us):
                    continue
                enrol = np.concatenate(got)[: int(ENROL_AUDIO_S * SAMPLE_RATE)]
                rest = us[n:][: 3 if small else None]
                tests = [read_audio(u.path)[: int(MAX_ITEM_S * SAMPLE_RATE)] for u in rest]
                keys = [str(u.path) for u in rest]
            people.append(Person(f"{dataset.split('_')[0]}:{spk}", dataset, enrol, tests, keys))
    return people


def load_impostors(speech: Path, half: str, small: bool) -> list[tuple[str, np.ndarray]]:
    utts = half_of(load_manifest(speech / IMPOSTORS), half)[: 4 if small else None]
    return [(u.speaker, read_audio(u.path)[: int(MAX_ITEM_S * SAMPLE_RATE)]) for u in utts]


# -- meetings ---------------------------------------------------------------------------


@dataclass
class Meeting:
    name: str
    group: str
    clips: list[np.ndarray]
    speakers: list[str]
    starts: list[int]
    turns: list[Turn]


def build_meetings(people: list[Person], impostors: list[tuple[str, np.ndarray]],
                   small: bool) -> list[Meeting]:
    """Per group, meetings of 3-4 enrolled people plus never-enrolled voices, until every
    enrolled person's items have been used about once."""
    meetings: list[Meeting] = []
    groups: dict[str, list[Person]] = {}
    for p in people:
        groups.setdefault(DATASETS[p.dataset], []).append(p)
    imp_k = 0
    for group, members in groups.items():
        if len(members) < 2:
            continue
        total_items = sum(len(p.items) for p in members)
        count = 1 if small else max(1, min(6, round(total_items / (TURNS_PER_MEETING * 0.8))))
        for m in range(count):
            rng = key_rng("meeting", group, str(m))
            cast = [members[int(i)] for i in rng.permutation(len(members))[: min(4, len(members))]]
            n_turns = 6 if small else TURNS_PER_MEETING
            clips, speakers, last = [], [], None
            for t in range(n_turns):
                if impostors and rng.random() < IMPOSTOR_TURN_SHARE:
                    spk, x = impostors[imp_k % len(impostors)]
                    imp_k += 1
                    speakers.append("never:" + spk)
                    last = None
                else:
                    options = [p for p in cast if p.name != last] or cast
                    p = options[int(rng.integers(len(options)))]
                    x = p.items[int(rng.integers(len(p.items)))]
                    speakers.append(p.name)
                    last = p.name
                cap = rng.uniform(*TURN_S)
                a, _ = speech_span(x)
                x = x[max(0, a - SAMPLE_RATE // 5): max(0, a - SAMPLE_RATE // 5) + int(cap * SAMPLE_RATE)]
                clips.append(x)
            starts, turns, pos = [], [], 0
            for x, spk in zip(clips, speakers):
                starts.append(pos)
                a, b = speech_span(x)
                turns.append(Turn((pos + a) / SAMPLE_RATE, (pos + b) / SAMPLE_RATE, spk))
                pos += len(x) + int(rng.uniform(*PAUSE_S) * SAMPLE_RATE)
            meetings.append(Meeting(f"{group}{m}", group, clips, speakers, starts, turns))
    return meetings


def rendered_again(meetings: list[Meeting], renders: int) -> list[Meeting]:
    """Each meeting as ``renders`` meetings with the same turns, each heard in a room
    (or on a line) of its own: ``NAME``, ``NAME~1``, ... (the name keys the draws of
    :func:`meeting_audio`, so the first is the meeting as one render gives it). More
    acoustic draws for comparing settings on a half's few voices; the clean condition
    hears every copy the same."""
    return [m if r == 0 else dataclasses.replace(m, name=f"{m.name}~{r}")
            for r in range(renders) for m in meetings]


def meeting_audio(m: Meeting, condition: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The meeting as the condition's microphone hears it: one room per meeting, one
    place in it per talker (never-enrolled voices included)."""
    talkers = {s: k for k, s in enumerate(dict.fromkeys(m.speakers))}
    rendered = acoustic.CONDITIONS[condition].apply_meeting(
        m.clips, m.starts, [talkers[s] for s in m.speakers], key="meeting:" + m.name)
    return rendered.audio, rendered.params


def item_audio(x: np.ndarray, condition: str, key: str) -> np.ndarray:
    if condition == "clean":
        return x
    return acoustic.CONDITIONS[condition].apply(x, key=key).audio


# -- the protocol ------------------------------------------------------------------------


class Api:
    """One ``/v1/api`` connection; ``call`` sends a request and returns its reply."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: Any = None
        self._n = 0

    async def __aenter__(self) -> Api:
        from websockets.asyncio.client import connect

        self.ws = await connect(self.url + "/v1/api", max_size=None, open_timeout=60)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def call(self, message: dict[str, Any], audio: np.ndarray | None = None) -> dict[str, Any]:
        self._n += 1
        msg = {"id": f"r{self._n}", **message}
        if audio is not None:
            msg.update(pcm=to_s16(audio), sample_rate=SAMPLE_RATE, format="s16le")
        await self.ws.send(wire.encode(msg, wire.Encoding.MSGPACK))
        reply, _ = wire.decode(await asyncio.wait_for(self.ws.recv(), 300))
        return reply


def to_s16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


async def stream(url: str, audio: np.ndarray, room: str
                 ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Stream ``audio`` through ``/v1/ingest`` as fast as the server reads; the events
    and ``bye.stats``. (The bench's server queues without bound, so nothing is dropped
    and the events are the ones real-time pacing gives: they depend only on the audio.)"""
    from websockets.asyncio.client import connect

    events: list[dict[str, Any]] = []
    stats: dict[str, Any] = {}
    async with connect(url + "/v1/ingest", max_size=None, open_timeout=60) as ws:
        await ws.send(wire.encode({"type": "hello", "room": room, "mic": "table",
                                   "sample_rate": SAMPLE_RATE, "format": "s16le"},
                                  wire.Encoding.MSGPACK))

        async def send() -> None:
            pcm = to_s16(audio)
            step = CHUNK * 2
            for seq, k in enumerate(range(0, len(pcm), step)):
                await ws.send(wire.encode({"type": "audio", "seq": seq, "pcm": pcm[k:k + step]},
                                          wire.Encoding.MSGPACK))
            await ws.send(wire.encode({"type": "end"}, wire.Encoding.MSGPACK))

        sender = asyncio.create_task(send())
        async for raw in ws:
            message, _ = wire.decode(raw)
            if message["type"] == "error":
                raise RuntimeError(f"ingest error: {message}")
            if message["type"] == "bye":
                stats = message.get("stats", {})
                break
            events.append(message)
        await sender
    return events, stats


# -- one condition -----------------------------------------------------------------------


async def enrol_gallery(api: Api, people: list[Person]) -> tuple[dict[str, str], list[dict[str, Any]]]:
    ids, refused = {}, []
    for p in people:
        reply = await api.call({"type": "enroll", "name": p.name}, p.enrol)
        if reply["type"] == "enrolled":
            ids[p.name] = reply["person"]["id"]
        else:
            refused.append({"person": p.name, "code": reply.get("code"),
                            "message": reply.get("message")})
    return ids, refused


async def enrol_probes(api: Api, people: list[Person], condition: str) -> dict[str, Any]:
    """Enrolment refusals of single speakers and catches of two-speaker mixes."""
    singles: dict[str, int] = {}
    refused_list = []
    for p in people:
        x = item_audio(p.enrol, condition, "enrol:" + p.name)
        reply = await api.call({"type": "enroll", "name": "probe " + p.name}, x)
        if reply["type"] == "enrolled":
            await api.call({"type": "delete_person", "person": reply["person"]["id"]})
            singles["enrolled"] = singles.get("enrolled", 0) + 1
        else:
            singles[reply.get("code", "?")] = singles.get(reply.get("code", "?"), 0) + 1
            refused_list.append(f"{p.name}: {reply.get('message')}")
    mixes = {"caught": 0, "tried": 0}
    by_ds: dict[str, list[Person]] = {}
    for p in people:
        by_ds.setdefault(p.dataset, []).append(p)
    for members in by_ds.values():
        for a, b in zip(members, members[1:] + members[:1]):
            if a is b:
                continue
            half_a, half_b = a.enrol[: len(a.enrol) // 2], b.enrol[: len(b.enrol) // 2]
            x = item_audio(np.concatenate([half_a, half_b]), condition, f"mix:{a.name}:{b.name}")
            reply = await api.call({"type": "enroll", "name": "mix"}, x)
            mixes["tried"] += 1
            if reply["type"] == "enrolled":
                await api.call({"type": "delete_person", "person": reply["person"]["id"]})
            elif reply.get("code") == "not_one_speaker":
                mixes["caught"] += 1
    n = len(people)
    return {"singles": n, "outcomes": singles,
            "refused_share": share(n - singles.get("enrolled", 0), n),
            "refused": refused_list, "mixes_tried": mixes["tried"],
            "mixes_caught_share": share(mixes["caught"], mixes["tried"])}


async def identify_all(api: Api, people: list[Person], impostors: list[tuple[str, np.ndarray]],
                       ids: dict[str, str], condition: str, threshold: float) -> dict[str, Any]:
    name_of = {v: k for k, v in ids.items()}
    top_k = max(1, min(wire.MAX_TOP_K, len(ids)))
    rows: list[dict[str, Any]] = []
    # asked for the condition's room, as its meetings are streamed (its rooms profile)
    ask = {"type": "identify", "top_k": top_k, "room": f"{condition}-items"}
    # the threshold the replies were decided with (the room profile's when it sets one)
    room_threshold = threshold
    for p in people:
        for x, key in zip(p.items, p.item_keys):
            reply = await api.call(ask, item_audio(x, condition, "item:" + key))
            rows.append(_row(p.name, p.dataset, reply, name_of))
            room_threshold = reply.get("threshold", room_threshold)
    imp_rows = []
    for spk, x in impostors:
        reply = await api.call(ask, item_audio(x, condition, "imp:" + spk))
        imp_rows.append(_row(None, IMPOSTORS, reply, name_of))
    return {**summarise_identify(rows, imp_rows, room_threshold), "threshold": room_threshold}


def _row(truth: str | None, dataset: str, reply: dict[str, Any], name_of: dict[str, str]) -> dict[str, Any]:
    if reply["type"] != "identified":
        return {"truth": truth, "dataset": dataset, "answered": False, "code": reply.get("code")}
    results = [(name_of.get(r["id"], r["name"]), float(r["distance"])) for r in reply["results"]]
    own = next((d for n, d in results if n == truth), None)
    other = next((d for n, d in results if n != truth), None)
    match = reply.get("match")
    return {"truth": truth, "dataset": dataset, "answered": True,
            "results": [[n, round(d, 4)] for n, d in results],
            "top1": results[0][0] if results else None,
            "match": None if match is None else name_of.get(match["id"], match["name"]),
            "own_distance": own, "nearest_other_distance": other}


def summarise_identify(rows: list[dict[str, Any]], imp_rows: list[dict[str, Any]],
                       threshold: float) -> dict[str, Any]:
    def block(rs: list[dict[str, Any]]) -> dict[str, Any]:
        n = len(rs)
        answered = [r for r in rs if r["answered"]]
        return {"items": n, "no_answer": share(n - len(answered), n),
                "top1": share(sum(1 for r in answered if r["top1"] == r["truth"]), n),
                "true_accepts": share(sum(1 for r in answered if r["match"] == r["truth"]), n)}

    out: dict[str, Any] = {"all": block(rows)}
    for ds in DATASETS:
        sub = [r for r in rows if r["dataset"] == ds]
        if sub:
            out[ds] = block(sub)
    genuine = [r["own_distance"] for r in rows if r["answered"] and r["own_distance"] is not None]
    loo = [r["nearest_other_distance"] for r in rows
           if r["answered"] and r["nearest_other_distance"] is not None]
    imp_ans = [r for r in imp_rows if r["answered"]]
    never = [r["nearest_other_distance"] for r in imp_ans if r["nearest_other_distance"] is not None]
    out["never_enrolled"] = {
        "items": len(imp_rows), "no_answer": share(len(imp_rows) - len(imp_ans), len(imp_rows)),
        "false_accepts": share(sum(1 for r in imp_ans if r["match"] is not None), len(imp_rows))}
    out["leave_own_out_false_accepts"] = share(sum(1 for d in loo if d <= threshold), len(loo))
    # Unanswered genuine items can never be accepted: they count as rejections at every
    # threshold (so the sweep's true-accept rate is over all items).
    n_items = len(rows)
    out["sweep"] = [{
        "threshold": t,
        "true_accepts": share(sum(1 for d in genuine if d <= t), n_items),
        "far_never_enrolled": share(sum(1 for d in never if d <= t), len(imp_rows)),
        "far_leave_own_out": share(sum(1 for d in loo if d <= t), len(loo)),
    } for t in SWEEP]
    out["rows"] = {"genuine": rows, "never_enrolled": imp_rows}
    out["distances"] = {"genuine": genuine, "leave_own_out": loo, "never_enrolled": never,
                        "unanswered_genuine": n_items - len(genuine)}
    return out


async def whole_turns(url: str, m: Meeting, audio: np.ndarray, room: str
                      ) -> dict[str, float]:
    """Naming each turn whole, beside live naming: each reference turn of the meeting,
    cut from the audio the stream heard (its speech span, as scored), sent whole to
    ``identify`` for the stream's ``room`` (so with its profile's VAD and threshold, as
    the stream was decided) and named as the reply says. Seconds
    per outcome: right / wrong / unknown / no answer (too little speech detected) for
    enrolled people, and never-enrolled voices left unnamed; ``no_answer_codes`` counts
    the error codes of the turns with no answer."""
    out = dict.fromkeys(("enrolled_s", "right_s", "wrong_s", "unknown_s", "no_answer_s",
                         "nonenrolled_s", "nonenrolled_unnamed_s"), 0.0)
    async with Api(url) as api:
        for t in m.turns:
            x = audio[int(t.start * SAMPLE_RATE): int(t.end * SAMPLE_RATE)]
            reply = await api.call({"type": "identify", "top_k": 1, "room": room}, x)
            named = (reply.get("match") or {}).get("name")
            d = t.end - t.start
            if t.speaker.startswith("never:"):
                out["nonenrolled_s"] += d
                out["nonenrolled_unnamed_s"] += d * (named is None)
                continue
            out["enrolled_s"] += d
            if reply["type"] != "identified":
                codes = out.setdefault("no_answer_codes", {})  # type: ignore[arg-type]
                codes[reply.get("code", "?")] = codes.get(reply.get("code", "?"), 0) + 1
            key = ("no_answer_s" if reply["type"] != "identified" else "unknown_s"
                   if named is None else "right_s" if named == t.speaker else "wrong_s")
            out[key] += d
    return out


async def meetings_all(url: str, meetings: list[Meeting], ids: dict[str, str],
                       condition: str) -> dict[str, Any]:
    per: dict[str, Any] = {}
    sem = asyncio.Semaphore(2)

    async def one(m: Meeting) -> None:
        audio, params = await asyncio.to_thread(meeting_audio, m, condition)
        async with sem:
            events, stats = await stream(url, audio, f"{condition}-{m.name}")
        speaker = [e for e in events if e["type"] == "speaker"]
        finals = [e for e in speaker if e["final"]]
        prov = [e for e in speaker if not e["final"]]
        name_of = {n: n for n in ids}
        score = score_meeting(m.turns, finals, prov, name_of).as_dict()
        score["group"] = m.group
        score["condition_params"] = params
        score["finals"] = len(finals)
        score["changes"] = sum(1 for e in finals if e.get("closed_by") == "change")
        score["dropped_jobs"] = sum(stats.get(k, 0) for k in ("dropped_jobs", "failed_jobs",
                                                              "abandoned_jobs"))
        # every final and reference turn, for analysing where the time went
        score["final_events"] = [
            [e["start"], e["end"], (e.get("person") or {}).get("name"),
             (e.get("candidates") or [{}])[0].get("distance"), e.get("closed_by")]
            for e in finals]
        score["reference_turns"] = [[t.start, t.end, t.speaker] for t in m.turns]
        score["threshold"] = next(e for e in events if e["type"] == "ready")["threshold"]
        heard[m.name] = audio
        per[m.name] = score

    heard: dict[str, np.ndarray] = {}
    await asyncio.gather(*(one(m) for m in meetings))
    for m in meetings:  # one at a time, after the streams
        per[m.name]["whole_turns"] = await whole_turns(url, m, heard.pop(m.name),
                                                       f"{condition}-{m.name}")
    totals = {g: meeting_totals([v for v in per.values() if v["group"] == g])
              for g in sorted({v["group"] for v in per.values()})}
    totals["all"] = meeting_totals(list(per.values()))
    return {"meetings": per, "totals": totals}


def meeting_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    en = sum(v["enrolled_s"] for v in rows)
    non = sum(v["nonenrolled_s"] for v in rows)

    def w(key: str, weight: str) -> float | None:
        tot = sum(v[weight] for v in rows if v[key] is not None)
        return round(sum(v[key] * v[weight] for v in rows if v[key] is not None) / tot, 4) if tot else None

    lat = [x for v in rows for x in v["latencies_s"]]
    seconds = {k: sum(v["whole_turns"][k] for v in rows)
               for k in ("enrolled_s", "right_s", "wrong_s", "unknown_s", "no_answer_s",
                         "nonenrolled_s", "nonenrolled_unnamed_s")}
    whole_turns = {k.removesuffix("_s"): share_s(seconds[k], seconds["enrolled_s"])
                   for k in ("right_s", "wrong_s", "unknown_s", "no_answer_s")}
    whole_turns["nonenrolled_unnamed"] = share_s(seconds["nonenrolled_unnamed_s"],
                                                 seconds["nonenrolled_s"])
    return {"whole_turns": whole_turns,
            "meetings": len(rows), "enrolled_s": round(en, 1), "nonenrolled_s": round(non, 1),
            "named_right": w("named_right", "enrolled_s"), "named_wrong": w("named_wrong", "enrolled_s"),
            "unknown": w("unknown", "enrolled_s"), "unlabelled": w("unlabelled", "enrolled_s"),
            "nonenrolled_unnamed": w("nonenrolled_unknown", "nonenrolled_s"),
            "latency_median_s": round(float(np.median(lat)), 3) if lat else None,
            "finals": sum(v["finals"] for v in rows), "changes": sum(v["changes"] for v in rows),
            "dropped_jobs": sum(v["dropped_jobs"] for v in rows),
            "turns": sum(v["turns"] for v in rows)}


# -- main -------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, config_path: Path, threshold: float) -> dict[str, Any]:
    people = load_people(args.speech, args.half, args.small)
    impostors = load_impostors(args.speech, args.half, args.small)
    meetings = rendered_again(build_meetings(people, impostors, args.small), args.renders)
    log(f"half {args.half}: {len(people)} people, {sum(len(p.items) for p in people)} test items, "
        f"{len(impostors)} never-enrolled voices, {len(meetings)} meetings")
    out: dict[str, Any] = {"people": len(people), "impostors": len(impostors),
                           "meetings": len(meetings), "conditions": {}}
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(config_path, Path(tmp) / "data", Path(tmp) / "server.log")
        try:
            async with Api(server.url) as api:
                t0 = time.perf_counter()
                ids, refused = await enrol_gallery(api, people)
                out["gallery"] = {"enrolled": len(ids), "refused": refused}
                log(f"gallery: {len(ids)} enrolled, {len(refused)} refused "
                    f"({time.perf_counter() - t0:.0f} s)")
                for cond in args.conditions:
                    t0 = time.perf_counter()
                    res: dict[str, Any] = {}
                    if not args.meetings_only:
                        res["identify"] = await identify_all(api, people, impostors, ids, cond,
                                                             threshold)
                        log(f"  {cond}: identify done ({time.perf_counter() - t0:.0f} s)")
                    res["live"] = await meetings_all(server.url, meetings, ids, cond)
                    log(f"  {cond}: meetings done ({time.perf_counter() - t0:.0f} s)")
                    if not args.meetings_only:
                        res["enrol"] = await enrol_probes(api, people, cond)
                        log(f"  {cond}: enrolment probes done ({time.perf_counter() - t0:.0f} s)")
                    out["conditions"][cond] = res
            problems = server.new_log_lines()
            if problems:
                out["server_log"] = problems[-20:]
        except Exception:
            log("server log:\n" + "\n".join(server.new_log_lines()[-30:]))
            raise
        finally:
            server.stop()
    return out


def print_report(r: dict[str, Any], threshold: float) -> None:
    print(f"\n== held-out accuracy, half '{r['half']}' ({r['people']} people, "
          f"{r['impostors']} never-enrolled voices, {r['meetings']} meetings; threshold {threshold})")
    print(f"gallery: {r['gallery']['enrolled']} enrolled from close-talk audio, "
          f"{len(r['gallery']['refused'])} refused")
    for row in r["gallery"]["refused"]:
        print(f"   refused {row['person']}: {row['code']} {row['message']}")
    hdr = (f"{'condition':10} {'enrol ref':>9} {'mix caught':>10} {'top1':>6} {'words':>6} "
           f"{'TA':>6} {'FA new':>6} {'FA loo':>6} {'no ans':>6} {'thr':>5} | {'right':>6} {'wrong':>6} "
           f"{'unkn':>6} {'uncov':>6} {'new ok':>6} {'lat':>5}")
    print(hdr)
    for cond, c in r["conditions"].items():
        i, e, m = c.get("identify"), c.get("enrol"), c["live"]["totals"]["all"]
        lat = m["latency_median_s"]
        enrolled = ("" if e is None else
                    f"{pct(e['refused_share']):>9} {pct(e['mixes_caught_share']):>10} ")
        identified = ("" if i is None else
                      f"{pct(i['all']['top1'])} {pct(i.get(SC, {}).get('top1'))} "
                      f"{pct(i['all']['true_accepts'])} "
                      f"{pct(i['never_enrolled']['false_accepts'])} "
                      f"{pct(i['leave_own_out_false_accepts'])} {pct(i['all']['no_answer'])} "
                      f"{i.get('threshold', threshold):5.2f}")
        print(f"{cond:10} {enrolled:>21}{identified:>47} | "
              f"{pct(m['named_right'])} {pct(m['named_wrong'])} "
              f"{pct(m['unknown'])} {pct(m['unlabelled'])} {pct(m['nonenrolled_unnamed'])} "
              f"{'  n/a' if lat is None else f'{lat:4.2f}s'}")
    for cond, c in r["conditions"].items():
        print(f"-- {cond}: per dataset top-1 / true accepts; meetings per group; refusals")
        for ds, v in c.get("identify", {}).items():
            if ds in DATASETS:
                print(f"   {ds:32} {v['items']:4} items  top1 {pct(v['top1'])}  TA {pct(v['true_accepts'])}"
                      f"  no answer {pct(v['no_answer'])}")
        for g, v in c["live"]["totals"].items():
            print(f"   meetings {g:8} {v['meetings']:2}  enrolled {v['enrolled_s']:6.1f} s  right "
                  f"{pct(v['named_right'])} wrong {pct(v['named_wrong'])} unknown {pct(v['unknown'])}"
                  f" uncovered {pct(v['unlabelled'])}  never-enrolled unnamed "
                  f"{pct(v['nonenrolled_unnamed'])}  finals {v['finals']} (change {v['changes']}) "
                  f"for {v['turns']} turns, dropped jobs {v['dropped_jobs']}")
            w = v["whole_turns"]
            print(f"   {'':17} each turn sent whole to identify: "
                  f"right {pct(w['right'])} wrong {pct(w['wrong'])} unknown {pct(w['unknown'])}"
                  f" no answer {pct(w['no_answer'])}  never-enrolled unnamed "
                  f"{pct(w['nonenrolled_unnamed'])}")
        for line in c.get("enrol", {}).get("refused", []):
            print(f"   enrolment refused: {line}")
        if "identify" not in c:
            continue
        print("   threshold sweep: thr  TA  FA(new)  FA(loo)")
        for s in c["identify"]["sweep"]:
            print(f"     {s['threshold']:.3f} {pct(s['true_accepts'])} {pct(s['far_never_enrolled'])} "
                  f"{pct(s['far_leave_own_out'])}")


def write_det(out: Path, r: dict[str, Any]) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 5))
    for cond, c in r["conditions"].items():
        if "identify" not in c:
            continue
        d = c["identify"]["distances"]
        genuine = d["genuine"] + [math.inf] * d["unanswered_genuine"]
        impostor = d["leave_own_out"] + d["never_enrolled"]
        if not genuine or not impostor:
            continue
        _, far, frr = det_curve(genuine, impostor)
        ax.plot(np.maximum(far, 1e-4) * 100, np.maximum(frr, 1e-4) * 100, label=cond)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false accepts, open-set 1:N (%)")
    ax.set_ylabel("false rejects (%)")
    ax.set_title(f"DET, half '{r['half']}', per condition")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    path = out / f"heldout-{r['half']}-det.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--half", choices=("test", "tune", "all"), default="test")
    ap.add_argument("--conditions", default="clean,room,telephone",
                    help="comma-separated, from: " + ", ".join(acoustic.CONDITIONS))
    ap.add_argument("--small", action="store_true", help="a few people and one meeting (CI)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--speech", type=Path, default=ROOT.parent / "shared" / "speech")
    ap.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--renders", type=int, default=1, metavar="N",
                    help="hear each meeting in N rooms (or lines) drawn apart (default 1)")
    ap.add_argument("--meetings-only", action="store_true",
                    help="only the live meetings (no identify, no enrolment probes): for "
                         "comparing live settings")
    ap.add_argument("--room-profile", default="far", metavar="NAME",
                    help="the rooms profile of the room condition's meetings (rooms room-*), "
                         "as a deployment names its table-microphone rooms; 'none': the "
                         "top-level config (default: far)")
    ap.add_argument("--phone-profile", default="phone", metavar="NAME",
                    help="the rooms profile of the telephone condition (rooms telephone-*), "
                         "as a deployment names its dial-in rooms; 'none': the top-level "
                         "config (default: phone)")
    args = ap.parse_args(argv)
    args.conditions = [c for c in args.conditions.split(",") if c]
    if args.renders < 1:
        ap.error("--renders must be 1 or more")
    unknown = [c for c in args.conditions if c not in acoustic.CONDITIONS]
    if unknown:
        ap.error(f"unknown condition(s) {unknown}; known: {list(acoustic.CONDITIONS)}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        # the bench streams as fast as the server takes audio: no ingest pacing, no
        # provisional work dropped for load, and a stream's end waits for all its jobs (the
        # model runs behind the audio; 10 s could close segments unanalysed), so the events
        # are those of real-time pacing
        config_path = write_config(
            args.config, ["server.max_ingest_speed=null", "worker.max_queued_jobs=1000000",
                          "server.shutdown_timeout_s=3600",
                          *([] if args.room_profile == "none"
                            else [f"rooms.room-*={args.room_profile}"]),
                          *([] if args.phone_profile == "none"
                            else [f"rooms.telephone-*={args.phone_profile}"]),
                          *args.set], Path(tmp))
        cfg = load_config(config_path)
        threshold = cfg.match.max_distance
        result = asyncio.run(run(args, config_path, threshold))
    result.update(half=args.half, threshold=threshold, small=args.small, renders=args.renders,
                  meetings_only=args.meetings_only,
                  seconds=round(time.perf_counter() - t0, 1), overrides=args.set,
                  room_profile=args.room_profile, phone_profile=args.phone_profile)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"heldout-{args.half}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print_report(result, threshold)
    det = write_det(args.out, result)
    print(f"\nwrote {path} in {result['seconds']:.0f} s" + (f"; {det}" if det else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
