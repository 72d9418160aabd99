"""Far-field speech detection: the product's webrtcvad against pyannote segmentation-3.0
(``models/segmentation.onnx``) as a second opinion, and their combinations.

    python bench/vad_compare.py [--small] [--items N] [--out bench/out]

Tune half only (speakers split by :func:`streamer.evaluation.speaker_halves`, through
``bench/heldout.py``'s loaders; the test half is never looked at). Two kinds of audio:

* **single clips**: close-talk utterances of the half (no Speech Commands), with
  ``CLIP_LEAD_S`` / ``CLIP_TRAIL_S`` of silence before and after (where the condition's
  noise is heard alone);
* **meetings**: ``bench/heldout.py``'s stitched meetings (turns of 2-8 s, pauses of
  0.3-0.9 s), with ``LEAD_S`` of noise alone before and after, as in ``bench/vad_level.py``.

Every recording starts with ``WARMUP_S`` more of the condition's noise that is not
scored: a room's stream runs continuously, so neither detector is scored on its first
seconds (the model on less than a full 10 s window calls room noise speech).

Conditions: ``clean`` (close talk) and the far table microphone of ``bench/conditions.py``
(:func:`conditions.simulate_room` -> :func:`conditions.far_meeting` ->
:func:`conditions.add_noise` of AMI room tone plus pink noise -> :func:`conditions.set_level`),
drawn in the order of ``Condition("room").apply_meeting``: ``room`` puts each meeting in
the room, places, SNR (5-20 dB) and level (-40..-25 dBFS) that ``bench/heldout.py`` draws
for it. The other ``room ...`` rows reuse each item's room and noise and fix the SNR and
level instead (only SNR and level change between those rows).

Ground truth: the clean-speech activity of each dry clip (:func:`truth_mask`:
:func:`conditions.active_mask` with a 20 dB floor, gaps under 0.25 s filled), placed
where the clip starts (the far signal's direct path is aligned with it). Scored on a
10 ms grid:

* **recall**: share of true speech detected;
* **false alarm**: share of non-speech detected, non-speech = everything further than
  ``COLLAR_S`` from true speech (the noise-only lead/trail, longer pauses, reverberation
  past the collar);
* **noise alone**: share of the noise-only lead and trail detected (before the first
  speech less ``COLLAR_S``, after the last speech plus ``TAIL_S``);
* **pauses kept** (meetings): share of the pauses between consecutive turns in which the
  detector has at least one non-speech cell, i.e. a segment boundary between the turns
  (a bridged pause merges two people's turns into one segment).

Detectors (webrtcvad decides 30 ms frames, the model 16.9 ms frames; all are put on the
10 ms grid):

* ``webrtcvad``: the product as configured (``config.yaml``'s ``vad``: webrtcvad
  aggressiveness 2 through :class:`streamer.segmenter.VoiceDetector`, then the product's
  :class:`streamer.segmenter.Segmenter` with its onset window, hang-over and padding;
  checked equal to :func:`streamer.segmenter.find_speech`); ``webrtcvad frames``: its raw
  frame decisions.
* ``pyannote step S, latency L``: the model run live as diart runs it: a 10 s window
  every ``S``; a frame is decided once the window ending ``L`` after it has run, by the
  Hamming-weighted mean of the windows seen by then (latency = step: the newest window's
  right edge alone; 10 s: every window covering the frame). Speech = P(anybody speaks) =
  ``1 - exp(logprobs[nobody])`` > ``THRESHOLD``. ``pyannote whole file``: one pass over
  the recording.
* ``... -> segmenter (latency L)``: 30 ms frame decisions fed to the product's own
  Segmenter instead of webrtcvad's: the model alone (frame speech when its mean
  probability over the 30 ms exceeds the threshold), ``OR`` (webrtcvad or the model),
  ``AND`` (both), ``OR p>0.8`` (webrtcvad, or the model when it is sure), with the model
  streamed at a 0.5 s step: this is how a second-opinion VAD would be wired into the server.

CPU: the model on one onnxruntime thread (intra/inter op 1): median time of one 10 s
window, the real-time factor of streaming at each step (window time / step) and of one
pass over a file; webrtcvad's real-time factor on the same audio for comparison.

Prints the tables and writes ``OUT/vad_compare-tune[-small].json``. ``--small``: a few
clips and one short meeting per group, two conditions (CI, under a minute).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import conditions as acoustic  # noqa: E402
import heldout  # noqa: E402

from streamer.config import VadConfig, load_config  # noqa: E402
from streamer.segmenter import VoiceDetector, find_speech, segments_of  # noqa: E402

SAMPLE_RATE = 16000
MODEL = ROOT / "models" / "segmentation.onnx"
CELL = 160  # 10 ms scoring grid
WINDOW = 10 * SAMPLE_RATE  # the model's chunk
FRAME_STEP, FRAME_DURATION = 270, 991  # samples (models/export_segmentation.py)
STEPS_S = (0.5, 1.0)
THRESHOLD = 0.5
COLLAR_S = 0.25
WARMUP_S = 10.0  # the stream runs this long (the condition's noise) before scoring starts
LEAD_S = 3.0  # meetings: scored noise alone before the first turn and after the last
TAIL_S = 1.0  # reverberation after the last speech, not "noise alone"
CLIP_LEAD_S, CLIP_TRAIL_S = 1.0, 2.0  # single clips: scored noise before and after
TRUTH_FLOOR_DB = 20.0  # true speech: 20 ms frames within this of the clip's loud frames
TRUTH_FILL_S = 0.25  # shorter gaps inside a clip's speech count as speech
BATCH = 8
ROOM = acoustic.CONDITIONS["room"]
#: name -> (SNR dB, level dBFS); None = the room condition's own draw (5-20 dB, -40..-25)
ROOM_VARIANTS: dict[str, tuple[float, float] | None] = {
    "room": None,
    "room 20 dB -25 dBFS": (20.0, -25.0),
    "room 10 dB -40 dBFS": (10.0, -40.0),
    "room 5 dB -40 dBFS": (5.0, -40.0),
}
SMALL_VARIANTS = ("room",)


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


# -- the model -----------------------------------------------------------------------------


class Segmentation:
    """``models/segmentation.onnx`` on one onnxruntime thread: P(anybody speaks) per frame."""

    def __init__(self, path: Path = MODEL) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.seconds = 0.0  # time spent in the model

    def speech_prob(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` [B, samples] float32 -> [B, frames] probability that anybody speaks."""
        t0 = time.perf_counter()
        logp = self.session.run(None, {"pcm": batch[:, None, :].astype(np.float32)})[0]
        self.seconds += time.perf_counter() - t0
        return 1.0 - np.exp(logp[..., 0])


def frames_to_cells(prob: np.ndarray, start: int, n_cells: int) -> tuple[int, np.ndarray]:
    """Frame probabilities of a window starting at sample ``start`` -> (first cell, the
    probability on each 10 ms cell whose centre lies in the window), linear in time."""
    n = FRAME_DURATION + FRAME_STEP * (len(prob) - 1)
    first = -(-start // CELL)
    last = min(n_cells, (start + n) // CELL)
    centres = np.arange(first, last) * CELL + CELL // 2
    frame_centres = start + FRAME_STEP * np.arange(len(prob)) + FRAME_DURATION // 2
    return first, np.interp(centres, frame_centres, prob)


#: (step s, latency s) of the streaming modes: a frame is decided once the window ending
#: ``latency`` after it has been run (Hamming-weighted mean of the windows seen by then).
STREAM_MODES = ((0.5, 0.5), (1.0, 1.0), (0.5, 2.0), (0.5, 10.0))


def mode_name(step_s: float, latency_s: float) -> str:
    return f"pyannote step {step_s:g} s, latency {latency_s:g} s"


def run_model(model: Segmentation, x: np.ndarray, scored_from: int) -> dict[str, np.ndarray]:
    """P(speech) per 10 ms cell for each streaming mode (:data:`STREAM_MODES`) and for
    one pass over the whole recording after the warm-up (``x[scored_from:]``).

    Streaming: a 10 s window ending every ``step`` (the audio so far when less than 10 s
    has been heard); windows ending at or before ``scored_from`` only decide cells that
    are not scored, and are skipped. Window ``e`` contributes to its cells newer than
    ``e - latency``, so with latency = step each cell is decided by one window (its right
    edge), and with latency 10 s by every window covering it (diart's aggregation)."""
    n_cells = len(x) // CELL
    base = int(min(s for s, _ in STREAM_MODES) * SAMPLE_RATE)
    ends = sorted(set(range(scored_from + base, len(x), base)) | {len(x)})
    windows: dict[int, tuple[int, np.ndarray]] = {}  # end -> (first cell, P on its cells)
    full = [e for e in ends if e >= WINDOW]
    for k in range(0, len(full), BATCH):
        group = full[k : k + BATCH]
        p = model.speech_prob(np.stack([x[e - WINDOW : e] for e in group]))
        for e, row in zip(group, p):
            windows[e] = frames_to_cells(row, e - WINDOW, n_cells)
    for e in ends:
        if FRAME_DURATION <= e < WINDOW:
            windows[e] = frames_to_cells(model.speech_prob(x[None, :e])[0], 0, n_cells)
    out = {}
    centres = np.arange(n_cells) * CELL + CELL // 2
    for step_s, latency_s in STREAM_MODES:
        step, latency = int(step_s * SAMPLE_RATE), int(latency_s * SAMPLE_RATE)
        mine = set(range(scored_from + step, len(x), step)) | {len(x)}
        num, den = np.zeros(n_cells), np.zeros(n_cells)
        for e in mine:
            if e not in windows:
                continue
            first, cells = windows[e]
            w = np.hamming(len(cells) + 2)[1:-1]
            w = w * (centres[first : first + len(cells)] > e - latency)
            num[first : first + len(cells)] += w * cells
            den[first : first + len(cells)] += w
        out[mode_name(step_s, latency_s)] = np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)
    whole = np.zeros(n_cells)
    first, cells = frames_to_cells(
        model.speech_prob(x[None, scored_from:])[0], scored_from, n_cells
    )
    whole[first : first + len(cells)] = cells
    out["pyannote whole file"] = whole
    return out


# -- webrtcvad and the product's segmenter -----------------------------------------------


def webrtc_frames(x: np.ndarray, vad: VadConfig) -> np.ndarray:
    """The product's detector (``VoiceDetector.from_config``): one decision per frame."""
    det = VoiceDetector.from_config(vad)
    n = det.frame_samples
    x = np.asarray(x, dtype=np.float32)
    return np.array([det.is_speech(x[i * n : (i + 1) * n]) for i in range(len(x) // n)], dtype=bool)


def spans_to_cells(spans: list[tuple[int, int]], n_cells: int) -> np.ndarray:
    out = np.zeros(n_cells, dtype=bool)
    for a, b in spans:  # cells whose centre is inside the span
        out[
            max(0, (a - CELL // 2 + CELL - 1) // CELL) : min(
                n_cells, (b - CELL // 2 + CELL - 1) // CELL
            )
        ] = True
    return out


def frames_to_cell_mask(frames: np.ndarray, frame_samples: int, n_cells: int) -> np.ndarray:
    per = frame_samples // CELL
    return np.pad(np.repeat(frames, per), (0, max(0, n_cells - per * len(frames))))[:n_cells]


def detect_all(
    x: np.ndarray, scored_from: int, vad: VadConfig, model: Segmentation, timing: dict[str, float]
) -> dict[str, np.ndarray]:
    """Every detector's speech mask on the 10 ms grid."""
    n_cells = len(x) // CELL
    t0 = time.perf_counter()
    web = webrtc_frames(x, vad)
    product = segments_of(web, vad, len(x))
    timing["webrtcvad"] += time.perf_counter() - t0
    if timing.setdefault("checked", 0) < 3:  # the same segments as the product's own call
        timing["checked"] += 1
        if product != find_speech(x, vad):
            raise AssertionError("segments_of(webrtc_frames(x)) differs from find_speech(x)")
    frame_samples = SAMPLE_RATE * vad.frame_ms // 1000
    per = frame_samples // CELL
    out = {
        "webrtcvad": spans_to_cells(product, n_cells),
        "webrtcvad frames": frames_to_cell_mask(web, frame_samples, n_cells),
    }
    probs = run_model(model, x, scored_from)
    for name, p in probs.items():
        out[name] = p > THRESHOLD
    rules: dict[str, np.ndarray] = {}
    for latency_s in COMBINE_LATENCIES_S:
        p = probs[mode_name(0.5, latency_s)]
        p_frames = p[: per * len(web)].reshape(len(web), per).mean(axis=1)
        tag = f" (latency {latency_s:g} s)"
        rules |= {
            "pyannote -> segmenter" + tag: p_frames > THRESHOLD,
            "OR -> segmenter" + tag: web | (p_frames > THRESHOLD),
            "AND -> segmenter" + tag: web & (p_frames > THRESHOLD),
            "OR p>0.8 -> segmenter" + tag: web | (p_frames > 0.8),
        }
    for name, decisions in rules.items():
        out[name] = spans_to_cells(segments_of(decisions, vad, len(x)), n_cells)
    return out


COMBINE_LATENCIES_S = (0.5, 2.0)
DETECTORS = (
    "webrtcvad",
    "webrtcvad frames",
    *(mode_name(*m) for m in STREAM_MODES),
    "pyannote whole file",
    *(
        f"{r} -> segmenter (latency {lat:g} s)"
        for lat in COMBINE_LATENCIES_S
        for r in ("pyannote", "OR", "AND", "OR p>0.8")
    ),
)


# -- audio and its truth -------------------------------------------------------------------


@dataclass
class Item:
    """One recording before the microphone: dry clips on a timeline, their true speech."""

    key: str
    clips: list[np.ndarray]
    starts: list[int]
    talkers: list[int]
    n: int
    scored_from: int  # the end of the warm-up
    speech: np.ndarray = field(init=False)  # per sample, clean activity
    clip_spans: list[tuple[int, int]] = field(init=False)  # first..last true speech sample

    def __post_init__(self) -> None:
        self.speech = np.zeros(self.n, dtype=bool)
        self.clip_spans = []
        for clip, start in zip(self.clips, self.starts):
            m = truth_mask(clip)
            self.speech[start : start + len(clip)] |= m[: self.n - start]
            idx = np.flatnonzero(m)
            self.clip_spans.append((start + int(idx[0]), start + int(idx[-1]) + 1))

    def dry(self) -> np.ndarray:
        y = np.zeros(self.n)
        for clip, start in zip(self.clips, self.starts):
            y[start : start + len(clip)] += clip[: self.n - start]
        return y


def truth_mask(clip: np.ndarray) -> np.ndarray:
    """Per-sample clean activity of a dry clip: :func:`conditions.active_mask` with a
    ``TRUTH_FLOOR_DB`` floor (30 dB, its default, also takes in the recording's own
    background of noisier LibriSpeech files, about -38 dBFS under -17 dBFS speech), gaps
    shorter than ``TRUTH_FILL_S`` filled."""
    m = acoustic.active_mask(clip, floor_db=TRUTH_FLOOR_DB).copy()
    on = np.flatnonzero(m)
    if len(on):
        gaps = np.flatnonzero(np.diff(on) > 1)
        for g in gaps:
            a, b = on[g] + 1, on[g + 1]
            if b - a < TRUTH_FILL_S * SAMPLE_RATE:
                m[a:b] = True
    return m


def render(item: Item, tone: np.ndarray) -> dict[str, np.ndarray]:
    """The item at the close-talk mic and at the room's far mic, per variant.

    The draws follow ``Condition("room").apply_meeting`` (the talkers' levels, room, then
    room tone and pink noise, then SNR, then level) for the same key, so each meeting is in
    the same room, with the same talker places, SNR and level as in ``bench/heldout.py``
    (the timeline is longer: the warm-up)."""
    out = {"clean": item.dry().astype(np.float32)}
    rng = acoustic.item_rng(item.key, ROOM.name)
    room = acoustic.simulate_room(rng, max(item.talkers) + 1, ROOM.rt60_s, ROOM.distance_m)
    clips = acoustic.as_spoken(item.clips, item.talkers, item.key, ROOM.name)
    wet = acoustic.far_meeting(clips, item.starts, item.talkers, room, item.n)
    mix = acoustic.noise("room", item.n, rng, tone) + acoustic.noise("pink", item.n, rng)
    drawn = (
        round(float(rng.uniform(*ROOM.snr_db)), 2),
        round(float(rng.uniform(*ROOM.level_dbfs)), 2),
    )
    for name, fixed in ROOM_VARIANTS.items():
        snr, level = fixed or drawn
        y = acoustic.add_noise(wet, mix, snr, item.speech)
        try:
            y = acoustic.set_level(y, level, item.speech)
        except acoustic.WouldClipError as e:  # as Condition.apply_meeting: the clip-free maximum
            y = acoustic.set_level(y, level - 20 * math.log10(e.peak / 0.999), item.speech)
        out[name] = y.astype(np.float32)
    return out


def clip_items(people: list[heldout.Person], count: int) -> list[Item]:
    clips = [
        (k, x) for p in people if p.dataset != heldout.SC for k, x in zip(p.item_keys, p.items)
    ]
    clips = clips[:: max(1, len(clips) // count)][:count]
    warm, lead, trail = (int(s * SAMPLE_RATE) for s in (WARMUP_S, CLIP_LEAD_S, CLIP_TRAIL_S))
    return [
        Item("vad_compare:" + k, [x], [warm + lead], [0], warm + lead + len(x) + trail, warm)
        for k, x in clips
    ]


def meeting_items(meetings: list[heldout.Meeting]) -> list[Item]:
    warm, lead = int(WARMUP_S * SAMPLE_RATE), int(LEAD_S * SAMPLE_RATE)
    items = []
    for m in meetings:
        talkers = {s: k for k, s in enumerate(dict.fromkeys(m.speakers))}
        starts = [s + warm + lead for s in m.starts]
        n = max(s + len(c) for s, c in zip(starts, m.clips)) + lead
        items.append(
            Item("meeting:" + m.name, m.clips, starts, [talkers[s] for s in m.speakers], n, warm)
        )
    return items


# -- scoring -------------------------------------------------------------------------------


def truth_cells(item: Item) -> dict[str, Any]:
    n_cells = item.n // CELL
    speech = item.speech[CELL // 2 :: CELL][:n_cells]
    collar = int(COLLAR_S * SAMPLE_RATE / CELL)
    near = np.convolve(speech.astype(float), np.ones(2 * collar + 1), mode="same") > 0
    near[: item.scored_from // CELL] = True  # the warm-up is not scored
    first = min(a for a, _ in item.clip_spans) // CELL
    last = max(b for _, b in item.clip_spans) // CELL
    alone = np.zeros(n_cells, dtype=bool)
    alone[item.scored_from // CELL : max(0, first - collar)] = True
    alone[min(n_cells, last + int(TAIL_S * SAMPLE_RATE / CELL)) :] = True
    pauses = []
    for (_, end), (start, _) in zip(item.clip_spans, item.clip_spans[1:]):
        if start > end:
            pauses.append((end // CELL + 1, start // CELL))
    return {"speech": speech, "nonspeech": ~near, "alone": alone, "pauses": pauses}


def score(mask: np.ndarray, truth: dict[str, Any]) -> dict[str, int]:
    kept = sum(1 for a, b in truth["pauses"] if b > a and not mask[a:b].all())
    return {
        "speech": int(truth["speech"].sum()),
        "speech_hit": int((mask & truth["speech"]).sum()),
        "nonspeech": int(truth["nonspeech"].sum()),
        "nonspeech_hit": int((mask & truth["nonspeech"]).sum()),
        "alone": int(truth["alone"].sum()),
        "alone_hit": int((mask & truth["alone"]).sum()),
        "pauses_n": sum(1 for a, b in truth["pauses"] if b > a),
        "pauses_kept_n": kept,
    }


def ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def summarise(v: dict[str, int]) -> dict[str, float | None]:
    return {
        "recall": ratio(v["speech_hit"], v["speech"]),
        "false_alarm": ratio(v["nonspeech_hit"], v["nonspeech"]),
        "noise_alone": ratio(v["alone_hit"], v["alone"]),
        "pauses_kept": ratio(v["pauses_kept_n"], v["pauses_n"]),
    }


# -- CPU -----------------------------------------------------------------------------------


def measure_cpu(
    model: Segmentation, x: np.ndarray, vad: VadConfig, repeats: int
) -> dict[str, float]:
    """Median times on one thread: one 10 s window, one whole pass over ``x``, webrtcvad."""
    window = np.ascontiguousarray(x[:WINDOW])[None]

    def median(fn: Callable[[], Any], k: int) -> float:
        fn()
        ts = []
        for _ in range(k):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts))

    t_window = median(lambda: model.speech_prob(window), repeats)
    t_whole = median(lambda: model.speech_prob(x[None]), max(1, repeats // 4))
    t_web = median(lambda: find_speech(x, vad), max(1, repeats // 4))
    seconds = len(x) / SAMPLE_RATE
    out = {
        "window_s": 10.0,
        "window_ms": round(1000 * t_window, 2),
        "file_s": round(seconds, 1),
        "whole_file_rtf": round(t_whole / seconds, 4),
        "webrtcvad_rtf": round(t_web / seconds, 4),
    }
    for step_s in STEPS_S:
        out[f"stream_{step_s:g}s_rtf"] = round(t_window / step_s, 4)
    return out


# -- main ----------------------------------------------------------------------------------


def pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{100 * x:5.1f}"


def print_table(title: str, rows: list[dict[str, Any]], with_pauses: bool) -> None:
    print(
        f"\n{title}: recall of true speech / false alarm on non-speech (>{COLLAR_S:g} s from speech)"
        f" / noise alone{' / pauses kept' if with_pauses else ''}, %"
    )
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    width = 21 if with_pauses else 16
    print(f"{'detector':<24}" + "".join(f" | {c:>{width}}" for c in conds))
    for det in DETECTORS:
        cells = []
        for c in conds:
            r = next(r for r in rows if r["condition"] == c and r["detector"] == det)
            figs = [r["recall"], r["false_alarm"], r["noise_alone"]] + (
                [r["pauses_kept"]] if with_pauses else []
            )
            cells.append("/".join(pct(f).strip() for f in figs))
        print(f"{det:<24}" + "".join(f" | {c:>{width}}" for c in cells))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--small", action="store_true", help="a few clips, small meetings, 2 conditions (CI)"
    )
    ap.add_argument("--items", type=int, default=30, help="single clips (default 30; --small 3)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--speech", type=Path, default=ROOT.parent / "shared" / "speech")
    ap.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    vad = load_config(args.config).vad
    model = Segmentation()
    people = heldout.load_people(args.speech, "tune", args.small)
    impostors = heldout.load_impostors(args.speech, "tune", args.small)
    meetings = heldout.build_meetings(people, impostors, args.small)
    if args.small:
        meetings = meetings[:1]
    sets = {
        "single clips": clip_items(people, 3 if args.small else args.items),
        "meetings": meeting_items(meetings),
    }
    variants = ["clean", *(SMALL_VARIANTS if args.small else ROOM_VARIANTS)]
    tone = acoustic.room_tone(args.speech)
    timing = {"webrtcvad": 0.0}
    audio_s: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    for set_name, items in sets.items():
        sums = {(c, d): {} for c in variants for d in DETECTORS}
        for k, item in enumerate(items):
            try:
                rendered = render(item, tone)
            except RuntimeError as e:  # talkers that do not fit the drawn room
                log(f"{item.key}: skipped ({e})")
                continue
            truth = truth_cells(item)
            for c in variants:
                audio_s[c] = audio_s.get(c, 0.0) + item.n / SAMPLE_RATE
                for d, mask in detect_all(
                    rendered[c], item.scored_from, vad, model, timing
                ).items():
                    for key, v in score(mask, truth).items():
                        sums[(c, d)][key] = sums[(c, d)].get(key, 0) + v
            log(f"{set_name} {k + 1}/{len(items)} ({time.perf_counter() - t_start:.0f} s)")
        for (c, d), v in sums.items():
            rows.append({"set": set_name, "condition": c, "detector": d, **summarise(v), **v})
        print_table(
            f"{set_name} ({len(items)}, tune half)",
            [r for r in rows if r["set"] == set_name],
            with_pauses=set_name == "meetings",
        )
    probe = rendered["room"] if not args.small else rendered["room"][: 30 * SAMPLE_RATE]
    cpu = measure_cpu(model, probe, vad, 5 if args.small else 20)
    print(
        f"\nCPU, one onnxruntime thread: a 10 s window {cpu['window_ms']:.1f} ms (median); real-time factor "
        + ", ".join(f"stream every {s:g} s {cpu[f'stream_{s:g}s_rtf']:.4f}" for s in STEPS_S)
        + f", whole file ({cpu['file_s']:.0f} s) {cpu['whole_file_rtf']:.4f}; webrtcvad + segmenter "
        f"{cpu['webrtcvad_rtf']:.4f}"
    )
    total = sum(audio_s.values())
    print(
        f"this run: {total:.0f} s of audio, model {model.seconds:.0f} s "
        f"(all modes together: RTF {model.seconds / total:.3f}), webrtcvad {timing['webrtcvad']:.0f} s"
    )
    result = {
        "half": "tune",
        "small": args.small,
        "threshold": THRESHOLD,
        "collar_s": COLLAR_S,
        "steps_s": list(STEPS_S),
        "sets": {s: len(v) for s, v in sets.items()},
        "room_variants": {k: v for k, v in ROOM_VARIANTS.items() if k in variants},
        "rows": rows,
        "cpu": cpu,
        "audio_s": audio_s,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"vad_compare-tune{'-small' if args.small else ''}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
