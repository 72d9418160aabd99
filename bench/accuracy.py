"""Accuracy benchmark: the real CAM++ model and the real VAD on ``shared/speech``.

    python bench/accuracy.py [--small] [--out bench/out] [--speech DIR]
    python bench/accuracy.py --heldout [--half test|tune] [--conditions clean,room,telephone]

``--heldout`` runs ``bench/heldout.py`` instead (its options follow): one half of
``shared/speech`` split by speaker, per acoustic condition (``bench/conditions.py``:
close-talk, a far table microphone in a simulated room, telephone band), through the
public protocol of a real server, with stitched meetings of crowd-sourced clips. The
README reports that run on the test half; thresholds are chosen on the tuning half.
Without it, this script measures all of ``shared/speech`` (the tuning data of the
earlier issues) in-process:

Measures (``distance`` = Euclidean between unit embeddings, lower = more alike):

* closed-set 1:N top-1 per dataset and pooled (everyone enrolled together);
* EER and its threshold per dataset and pooled (genuine = test vs own centroid,
  impostor = test vs every other person's centroid);
* open set: never-enrolled LibriSpeech voices against the enrolled people (FAR at
  ``match.max_distance``, FRR of enrolled people), plus a leave-own-voiceprint-out
  check on every dataset (each test item against everyone *but* its own person);
* a FAR/FRR table over thresholds, on whole test items and on short crops;
* live meetings through :class:`streamer.session.Session` (no server), scored with
  :func:`streamer.evaluation.score_meeting`; plus a ``segment.change_distance`` study.

Prints a table and writes ``OUT/accuracy.json``, plus ``OUT/det.png`` (DET curves: pooled
open-set 1:N and 1:1, and 1:1 per dataset) and ``OUT/scores.png`` (genuine vs impostor
distance histograms, pooled and per dataset) when matplotlib is installed (``pip
install -e '.[tools]'``). ``--small`` is a quick run for CI.
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # numpy next to onnxruntime on 2 cores

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from streamer.config import REPO_ROOT, Config, load_config, packaged_model_dir
from streamer.embedder import Embedder
from streamer.evaluation import (
    SAMPLE_RATE,
    Turn,
    Utterance,
    eer,
    enrol_test_split,
    far_frr,
    load_manifest,
    read_audio,
    read_rttm,
    score_meeting,
    solo_spans,
    stitch,
)
from streamer.registry import SqliteRegistry as Registry
from streamer.segmentation_model import FILE_NAME as SEGMENTATION_FILE
from streamer.segmentation_model import SegmentationModel
from streamer.segmenter import extract_speech, find_speech
from streamer.stream_embedder import StreamEmbedder

ENROL_S = 8.0
#: Speech Commands enrolment: 5 one-second clips (about 4 s of speech, the product's
#: enroll.min_speech_s); the other 3 clips of each speaker are joined into one ~3 s test item.
SC_ENROL_S = 5.0
#: Below this much VAD speech a test item falls back to its raw audio.
MIN_SPEECH_S = 0.5
AMI = "ami_pyannote_diarization"
IMPOSTORS = "librispeech_trainclean100_251spk_1utt"
LIBRI = "librispeech_testother_10spk"
SC = "speechcommands_v002test_80spk"
#: Recordings streamed with enrolment from *other* recordings.
CROSS_MEETINGS = ["ami_dev00", "ami_dev01", "ami_trn00", "ami_trn01", "ami_trn02", "ami_trn03"]
#: Recordings streamed with enrolment from their own solo segments.
SAME_MEETINGS = ["ami_seriously_mixture", "pyannote_sample"]
SWEEP = [round(0.80 + 0.05 * k, 2) for k in range(9)]  # 0.80 .. 1.20
CROPS_S = (3.0, 1.5)


class Progress:
    """A one-line text progress indicator on stderr."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self._t0 = time.perf_counter()
        self._draw()

    def step(self, n: int = 1) -> None:
        self.done += n
        self._draw()

    def _draw(self) -> None:
        sys.stderr.write(f"\r  {self.label}: {self.done}/{self.total} "
                         f"({time.perf_counter() - self._t0:.0f} s)   ")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def r4(x: float | None) -> float | None:
    """Round for JSON; NaN -> None."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(float(x), 4)


def apply_overrides(cfg: Config, items: Sequence[str]) -> Config:
    """``cfg`` with ``--set SECTION.KEY=VALUE`` overrides (YAML values) applied."""
    for item in items:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        cfg = cfg.replace(**{section: dataclasses.replace(
            getattr(cfg, section), **{name: yaml.safe_load(value)})})
    return cfg


def pct(x: float | None) -> str:
    return "   n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:5.1f}%"


# -- audio and embeddings -----------------------------------------------------------------


class Bench:
    """The model, the VAD config and small caches shared by all parts."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.emb = Embedder(cfg.model_path, threads=1)
        self.emb.load()
        # live streams embed with the configured line's variant (``match.channel``, e.g.
        # ``--set match.channel=far``) at its live precision, as a server's room does
        channel = cfg.match.channel
        self.stream = StreamEmbedder(self.emb, None if channel == "wideband" else channel,
                                     precision=cfg.model.precision(channel))
        self.stream.load()
        #: the speaker-segmentation model when live streams ask it (segment.voice_check
        #: or voice_split), as a server loads it
        self.segmenter: SegmentationModel | None = None
        if cfg.checks_voices_live():
            self.segmenter = SegmentationModel(packaged_model_dir() / SEGMENTATION_FILE)
            self.segmenter.load()
        self._speech: dict[Path, np.ndarray] = {}
        self.fallbacks = 0

    def speech(self, path: Path) -> np.ndarray:
        """VAD speech of one file (cached)."""
        if path not in self._speech:
            self._speech[path] = extract_speech(read_audio(path), self.cfg.vad)
        return self._speech[path]

    def item(self, paths: Sequence[Path], cap_s: float | None = None) -> np.ndarray:
        """Joined VAD speech of ``paths`` (raw audio if under MIN_SPEECH_S), cut to cap_s."""
        x = np.concatenate([self.speech(p) for p in paths])
        if len(x) < MIN_SPEECH_S * SAMPLE_RATE:
            self.fallbacks += 1
            x = np.concatenate([read_audio(p) for p in paths])
        if cap_s is not None:
            x = x[: int(cap_s * SAMPLE_RATE)]
        return x

    def embed(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.emb.embed(x), dtype=np.float64)


def distances(tests: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``[n_tests, n_people]`` Euclidean distances between unit vectors."""
    d2 = 2.0 - 2.0 * tests @ centroids.T
    return np.asarray(np.sqrt(np.clip(d2, 0.0, None)))


# -- closed set ---------------------------------------------------------------------------


@dataclasses.dataclass
class DatasetRun:
    """Embeddings of one dataset: enrolled people and test items (with crops)."""

    name: str
    people: list[str]
    centroids: np.ndarray
    enrol_speech_s: list[float]
    test_labels: list[int]
    tests: np.ndarray
    test_speech_s: list[float]
    crops: dict[float, tuple[list[int], np.ndarray]]


def build_dataset(b: Bench, name: str, utts: list[Utterance], enrol_s: float,
                  join_tests: bool = False, max_speakers: int | None = None,
                  max_tests: int | None = None) -> DatasetRun:
    """Enrol each speaker on <= ENROL_S of speech; embed every test item and its crops."""
    enrol, test = enrol_test_split(utts, enrol_s)
    people = list(enrol)[:max_speakers]
    items: list[tuple[int, list[Path]]] = []
    for k, p in enumerate(people):
        paths = [u.path for u in test[p]]
        if join_tests:  # Speech Commands: 3-clip leave-one-out joins plus all held-out clips
            groups = [paths[:i] + paths[i + 1:] for i in range(len(paths))] if len(paths) > 3 else []
            groups.append(paths)
            items += [(k, g) for g in groups]
        else:
            items += [(k, [q]) for q in paths[:max_tests]]
    prog = Progress(name, len(people) + len(items))
    cents, enrol_s_list = [], []
    for p in people:
        x = b.item([u.path for u in enrol[p]], cap_s=ENROL_S)
        enrol_s_list.append(len(x) / SAMPLE_RATE)
        cents.append(b.embed(x))
        prog.step()
    labels, vecs, secs = [], [], []
    crops: dict[float, tuple[list[int], list[np.ndarray]]] = {c: ([], []) for c in CROPS_S}
    for k, paths in items:
        x = b.item(paths)
        labels.append(k)
        secs.append(len(x) / SAMPLE_RATE)
        vecs.append(b.embed(x))
        for c in CROPS_S:
            n = int(c * SAMPLE_RATE)
            if len(x) >= n:  # the middle of the item: no onset effects
                a = (len(x) - n) // 2
                crops[c][0].append(k)
                crops[c][1].append(b.embed(x[a:a + n]))
        prog.step()
    prog.close()
    return DatasetRun(
        name, people, np.array(cents), enrol_s_list, labels, np.array(vecs), secs,
        {c: (lab, np.array(v) if v else np.zeros((0, b.emb.dim), np.float32))
         for c, (lab, v) in crops.items()},
    )


def closed_set(centroids: np.ndarray, labels: Sequence[int] | np.ndarray, tests: np.ndarray) -> dict[str, Any]:
    """Top-1, EER, genuine/impostor distances, and each item's nearest *other* person."""
    lab = np.asarray(labels)
    d = distances(tests, centroids)
    own = d[np.arange(len(lab)), lab]
    others = d.copy()
    others[np.arange(len(lab)), lab] = np.inf
    genuine = own
    impostor = d[np.ones_like(d, dtype=bool) & (np.arange(d.shape[1])[None, :] != lab[:, None])]
    e, thr = eer(genuine, impostor) if len(impostor) else (math.nan, math.nan)
    return {
        "top1": float(np.mean(np.argmin(d, axis=1) == lab)),
        "eer": e, "eer_threshold": thr,
        "genuine": genuine, "impostor": impostor,
        "nearest_other": others.min(axis=1) if d.shape[1] > 1 else np.full(len(lab), np.inf),
        "n_tests": len(lab),
    }


def summarise(res: dict[str, Any], n_people: int, **extra: Any) -> dict[str, Any]:
    g, i = res["genuine"], res["impostor"]
    return {
        "people": n_people, "test_items": res["n_tests"], "top1": r4(res["top1"]),
        "eer": r4(res["eer"]), "eer_threshold": r4(res["eer_threshold"]),
        "genuine_median": r4(float(np.median(g))) if len(g) else None,
        "genuine_p95": r4(float(np.percentile(g, 95))) if len(g) else None,
        "impostor_median": r4(float(np.median(i))) if len(i) else None,
        "impostor_p5": r4(float(np.percentile(i, 5))) if len(i) else None,
        **extra,
    }


# -- live streaming -----------------------------------------------------------------------


def run_stream(b: Bench, cfg: Config, search: Callable[..., Any], audio: np.ndarray,
               chunk: int = 1600) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Feed ``audio`` to a Session in 100 ms chunks, answering every job at once (the
    "voices" jobs with ``b.segmenter``, as a server does when it has the model)."""
    from streamer.session import Session

    segmenter = b.segmenter
    sess = Session(cfg, search, b.stream.head, room="bench", mic="m", stream="s",
                   voices=segmenter is not None)
    events: list[dict[str, Any]] = []

    def answer() -> None:
        while True:
            jobs = sess.take_jobs()
            if not jobs:
                break
            for j in jobs:
                if j.kind == "voices":
                    assert segmenter is not None
                    sess.voices_done(j.id, segmenter.logprobs(j.pcm))
                else:
                    sess.job_done(j.id, b.stream.stats(j.pcm, j.keep_samples))

    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    for i in range(0, len(pcm), chunk):
        sess.feed_pcm(pcm[i:i + chunk].tobytes())
        answer()
        events += sess.take_events()
    sess.finish()
    answer()
    events += sess.take_events()
    return events, dict(sess.stats)


@dataclasses.dataclass
class Stream:
    """One live test: audio, reference turns, who to enrol (name -> (vector, speech_s))."""

    name: str
    kind: str
    audio: np.ndarray
    turns: list[Turn]
    people: dict[str, tuple[np.ndarray, float]]
    notes: list[str]


def enrol_registry(b: Bench, people: dict[str, tuple[np.ndarray, float]], folder: Path) -> Registry:
    reg = Registry(folder, b.emb.model_id, b.emb.dim)
    reg.open()
    for name, (vec, secs) in people.items():
        reg.add_person(name, None, vec, max(secs, 0.01))
    return reg


def ami_streams(b: Bench, speech_dir: Path, meetings: Sequence[str],
                same: Sequence[str]) -> list[Stream]:
    """AMI / pyannote recordings with their enrolments (cross- or same-recording)."""
    root = speech_dir / AMI
    rttms = {p.stem: read_rttm(p) for p in sorted((root / "rttm").glob("*.rttm"))}
    audio = {name: read_audio(root / "recordings" / f"{name}.flac") for name in rttms}
    solos = {name: solo_spans(t, min_s=1.0) for name, t in rttms.items()}
    streams = []
    for name in list(meetings) + list(same):
        cross = name not in same
        people: dict[str, tuple[np.ndarray, float]] = {}
        notes = [] if cross else ["same-recording enrolment"]
        for spk in sorted({t.speaker for t in rttms[name]}):
            pieces, sources = [], []
            others = [r for r in sorted(rttms) if r != name] if cross else [name]
            for rec in others:
                files = sorted((root / "segments" / spk).glob(f"{rec}_*.flac"))
                if files:
                    pieces += [b.speech(f) for f in files]
                    sources.append(f"{rec}:segments")
                elif cross and spk in solos[rec]:  # no cut segments there: cut solo RTTM spans
                    for a, e in solos[rec][spk]:
                        x = audio[rec][int(a * SAMPLE_RATE):int(e * SAMPLE_RATE)]
                        pieces.append(extract_speech(x, b.cfg.vad))
                    sources.append(f"{rec}:rttm-solo")
            x = np.concatenate(pieces)[: int(ENROL_S * SAMPLE_RATE)] if pieces else np.zeros(0)
            secs = len(x) / SAMPLE_RATE
            if secs < 1.0:
                notes.append(f"{spk} not enrolled (only {secs:.1f} s of solo speech elsewhere)")
                continue
            if secs < 4.0:
                notes.append(f"{spk} enrolled on only {secs:.1f} s ({', '.join(sources)})")
            people[spk] = (b.embed(x.astype(np.float32)), secs)
        streams.append(Stream(name, "ami-cross" if cross else "ami-same", audio[name],
                              rttms[name], people, notes))
    return streams


def libri_streams(b: Bench, speech_dir: Path, enrolled: DatasetRun, n_turns: int,
                  seeds: Sequence[int], gaps: Sequence[float]) -> list[Stream]:
    """Stitched LibriSpeech conversations: enrolled speakers' *test* utterances, plus
    never-enrolled impostor voices, with turns of 2-6 s."""
    utts = load_manifest(speech_dir / LIBRI)
    _, test = enrol_test_split(utts, ENROL_S)
    impostors = load_manifest(speech_dir / IMPOSTORS)
    people = {f"libri{p}": (enrolled.centroids[k], enrolled.enrol_speech_s[k])
              for k, p in enumerate(enrolled.people)}

    def trim(x: np.ndarray) -> np.ndarray:
        spans = find_speech(x, b.cfg.vad)
        return x[spans[0][0]:spans[-1][1]] if spans else x

    streams = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        used = {p: 0 for p in enrolled.people}
        imp_iter = iter(rng.permutation(len(impostors)))
        chosen: list[Utterance] = []
        last = None
        for _ in range(n_turns):
            if rng.random() < 0.25:  # a never-enrolled voice
                u = impostors[int(next(imp_iter))]
                chosen.append(Utterance(u.path, "imp" + u.speaker, u.seconds))
                last = None
                continue
            choices = [p for p in enrolled.people if p != last and used[p] < len(test[p])]
            p = choices[int(rng.integers(len(choices)))]
            chosen.append(Utterance(test[p][used[p]].path, f"libri{p}", 0.0))
            used[p] += 1
            last = p
        lengths = [float(x) for x in rng.uniform(2.0, 6.0, size=len(chosen))]
        for gap in gaps:
            audio, turns = stitch(chosen, gap, max_turn_s=lengths, trim=trim)
            streams.append(Stream(f"libri_seed{seed}_gap{gap:g}", f"libri-gap{gap:g}", audio,
                                  turns, people, ["enrolled from first utterances; "
                                                  "~25% of turns never-enrolled voices"]))
    return streams


def live(b: Bench, streams: Sequence[Stream], cfg: Config, distractors: dict[str, tuple[np.ndarray, float]],
         label: str) -> dict[str, Any]:
    """Stream every recording through a Session with ``cfg``; score each."""
    out: dict[str, Any] = {}
    prog = Progress(label, len(streams))
    for s in streams:
        with tempfile.TemporaryDirectory() as tmp:
            reg = enrol_registry(b, {**distractors, **s.people}, Path(tmp))
            t0 = time.perf_counter()
            events, stats = run_stream(b, cfg, reg.search, s.audio)
            elapsed = time.perf_counter() - t0
            reg.close()
        speaker = [e for e in events if e["type"] == "speaker"]
        finals = [e for e in speaker if e["final"]]
        provisionals = [e for e in speaker if not e["final"]]
        name_of = {n: n for n in s.people}
        score = score_meeting(s.turns, finals, provisionals, name_of)
        d = score.as_dict()
        d["latencies_s"] = [round(v, 3) for v in d["latencies_s"]]
        out[s.name] = {
            "kind": s.kind, "seconds": round(len(s.audio) / SAMPLE_RATE, 2),
            "enrolled": sorted(s.people), "enrol_speech_s": {k: round(v[1], 2) for k, v in s.people.items()},
            "reference_speakers": sorted({t.speaker for t in s.turns}),
            "notes": s.notes, **d,
            "true_changes": sum(1 for a, c in zip(s.turns, s.turns[1:]) if a.speaker != c.speaker),
            "finals": len(finals), "speaker_changes": stats["speaker_changes"],
            "segments": stats["segments"], "processing_s": round(elapsed, 2),
        }
        prog.step()
    prog.close()
    return out


def live_totals(per: dict[str, Any], kinds: Sequence[str]) -> dict[str, Any]:
    """Time-weighted shares over streams of the given kinds."""
    rows = [v for v in per.values() if v["kind"] in kinds]
    en = sum(v["enrolled_s"] for v in rows)
    non = sum(v["nonenrolled_s"] for v in rows)

    def wmean(key: str, weight: str) -> float | None:
        w = sum(v[weight] for v in rows if v[key] is not None)
        return r4(sum(v[key] * v[weight] for v in rows if v[key] is not None) / w) if w else None

    turns = sum(v["turns"] for v in rows)
    named = sum(round((v["turns_named"] or 0) * v["turns"]) for v in rows)
    return {
        "streams": len(rows), "enrolled_s": round(en, 2), "nonenrolled_s": round(non, 2),
        "named_right": wmean("named_right", "enrolled_s"),
        "named_wrong": wmean("named_wrong", "enrolled_s"),
        "unknown": wmean("unknown", "enrolled_s"),
        "unlabelled": wmean("unlabelled", "enrolled_s"),
        "nonenrolled_unknown": wmean("nonenrolled_unknown", "nonenrolled_s"),
        "turns": turns, "turns_named": r4(named / turns) if turns else None,
        "latency_median_s": r4(float(np.median(lat))) if (lat := [
            x for v in rows for x in v["latencies_s"]]) else None,
    }


# -- change-distance study ----------------------------------------------------------------


def window_study(b: Bench, groups: dict[str, dict[str, list[np.ndarray]]], cfg: Config) -> dict[str, Any]:
    """Distances of a 1.5 s window to the running turn mean (as the Session computes it).

    ``groups``: corpus -> speaker -> continuous speech pieces. Same: the next window of
    the same piece vs the mean of the full windows before it (>= 2). Different: a window
    of another speaker of that corpus vs the same mean.
    """
    win = int(cfg.segment.window_s * SAMPLE_RATE)
    hop = int(cfg.segment.hop_s * SAMPLE_RATE)
    out: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    for corpus, speakers in groups.items():
        windows: dict[str, list[list[np.ndarray]]] = {}
        for spk, pieces in speakers.items():
            for x in pieces:
                starts = range(0, len(x) - win + 1, hop)
                if len(starts) >= 3:
                    windows.setdefault(spk, []).append([b.embed(x[a:a + win]) for a in starts])
        same, diff = [], []
        names = sorted(windows)
        for spk in names:
            pool = [w for o in names if o != spk for seq in windows[o] for w in seq]
            if not pool:
                continue
            for seq in windows[spk]:
                for k in range(2, len(seq)):
                    ref = np.sum(seq[:k], axis=0)
                    ref /= np.linalg.norm(ref)
                    same.append(float(np.linalg.norm(seq[k] - ref)))
                    other = pool[int(rng.integers(len(pool)))]
                    diff.append(float(np.linalg.norm(other - ref)))
        s, d = np.array(same), np.array(diff)
        if not len(s) or not len(d):
            continue
        out[corpus] = {
            "same_n": len(s), "diff_n": len(d),
            "same_pct": {q: r4(float(np.percentile(s, q))) for q in (50, 90, 95, 99)},
            "diff_pct": {q: r4(float(np.percentile(d, q))) for q in (1, 5, 10, 50)},
            "by_threshold": {f"{t:.2f}": {"same_above": r4(float(np.mean(s > t))),
                                          "diff_at_or_below": r4(float(np.mean(d <= t)))}
                             for t in (0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3)},
            "eer": r4(eer(s, d)[0]), "eer_threshold": r4(eer(s, d)[1]),
        }
    return out


# -- plots ----------------------------------------------------------------------------------


def write_plots(out: Path, per_dataset: dict[str, dict[str, Any]], pooled: dict[str, Any],
                near_imp: np.ndarray, max_d: float) -> list[Path]:
    """``det.png`` and ``scores.png`` in ``out``; none (with a note) without matplotlib."""
    from streamer.calibrate import PlotUnavailable, save_det_png, save_histograms_png

    loo = pooled["nearest_other"][np.isfinite(pooled["nearest_other"])]
    open_set = np.concatenate([near_imp, loo])
    marks = {"match.max_distance": max_d, "pooled 1:1 EER": round(pooled["eer_threshold"], 3)}
    curves = {"pooled 1:N open set": (pooled["genuine"], open_set),
              "pooled 1:1": (pooled["genuine"], pooled["impostor"])}
    curves.update({f"{n} 1:1": (r["genuine"], r["impostor"])
                   for n, r in per_dataset.items() if len(r["impostor"])})
    panels = {"pooled, impostor = nearest other (never-enrolled + leave-own-out)":
              (pooled["genuine"], open_set),
              "pooled 1:1 pairs": (pooled["genuine"], pooled["impostor"])}
    panels.update({f"{n} 1:1": (r["genuine"], r["impostor"])
                   for n, r in per_dataset.items() if len(r["impostor"])})
    try:
        return [save_det_png(out / "det.png", curves, marks),
                save_histograms_png(out / "scores.png", panels, marks)]
    except PlotUnavailable as err:
        log(f"no plots: {err}")
        return []


# -- main ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--heldout" in argv:
        import heldout  # bench/heldout.py, beside this script

        argv.remove("--heldout")
        return int(heldout.main(argv))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="tiny subset for CI (< 1 min)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "out")
    ap.add_argument("--speech", type=Path, default=REPO_ROOT.parent / "shared" / "speech")
    ap.add_argument("--config", type=Path, default=REPO_ROOT / "config.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a config value (YAML syntax), e.g. segment.hop_s=0.5")
    ap.add_argument("--live-only", action="store_true", help="only the live-stream figures")
    ap.add_argument("--sweeps", action="store_true",
                    help="also sweep change_distance and max_distance live (slow)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    cfg = apply_overrides(load_config(args.config), args.set)
    max_d = cfg.match.max_distance
    log(f"model {cfg.model_path}; match.max_distance {max_d}; "
        f"segment.change_distance {cfg.segment.change_distance}")
    b = Bench(cfg)
    S = args.speech

    # ---- closed set -----------------------------------------------------------------
    specs: list[tuple[str, Path, float, bool, str | None, int | None, int | None]]
    if args.small:
        specs = [(LIBRI, S / LIBRI, ENROL_S, False, None, 3, 2),
                 ("vctk_4spk", S / "vctk_4spk", ENROL_S, False, None, 2, 2)]
    elif args.live_only:
        specs = [(LIBRI, S / LIBRI, ENROL_S, False, None, None, None)]
    else:
        specs = [(LIBRI, S / LIBRI, ENROL_S, False, None, None, None),
                 ("vctk_4spk", S / "vctk_4spk", ENROL_S, False, None, None, None),
                 ("aishell1_2spk", S / "aishell1_2spk", ENROL_S, False, None, None, None),
                 ("commonvoice_fa", S / "commonvoice_fa", ENROL_S, False, None, None, None),
                 (SC, S / SC, SC_ENROL_S, True, None, None, None),
                 ("ami_segments", S / AMI, ENROL_S, False, "segments/", None, None)]
    runs: list[DatasetRun] = []
    log("closed set: embedding enrolments and test items")
    for name, folder, enrol_s, join, prefix, max_spk, max_tests in specs:
        utts = load_manifest(folder)
        if prefix:
            utts = [u for u in utts if u.path.relative_to(folder).as_posix().startswith(prefix)]
        runs.append(build_dataset(b, name, utts, enrol_s, join, max_spk, max_tests))

    closed: dict[str, Any] = {}
    per_dataset: dict[str, dict[str, Any]] = {}
    for r in runs:
        res = per_dataset[r.name] = closed_set(r.centroids, r.test_labels, r.tests)
        closed[r.name] = summarise(
            res, len(r.people),
            enrol_speech_s_mean=r4(float(np.mean(r.enrol_speech_s))),
            enrol_speech_s_min=r4(float(np.min(r.enrol_speech_s))),
            test_speech_s_median=r4(float(np.median(r.test_speech_s))))
    # pooled: everyone enrolled together
    offsets = np.cumsum([0] + [len(r.people) for r in runs])
    P_cent = np.concatenate([r.centroids for r in runs])
    P_lab = np.concatenate([np.asarray(r.test_labels) + o for r, o in zip(runs, offsets)])
    P_test = np.concatenate([r.tests for r in runs])
    pooled_res = closed_set(P_cent, P_lab, P_test)
    closed["pooled"] = summarise(pooled_res, len(P_cent))
    P_crops = {}
    for c in CROPS_S:
        lab = np.concatenate([np.asarray(r.crops[c][0], dtype=int) + o for r, o in zip(runs, offsets)])
        vec = np.concatenate([r.crops[c][1] for r in runs if len(r.crops[c][1])])
        P_crops[c] = closed_set(P_cent, lab, vec)
        closed[f"pooled_crop{c:g}s"] = summarise(P_crops[c], len(P_cent))

    # ---- open set ----------------------------------------------------------------------
    imp_utts = load_manifest(S / IMPOSTORS)[: 10 if args.small or args.live_only else None]
    prog = Progress("impostors", len(imp_utts))
    imp_full: list[np.ndarray] = []
    imp_crop: dict[float, list[np.ndarray]] = {c: [] for c in CROPS_S}
    for u in imp_utts:
        x = b.item([u.path])
        imp_full.append(b.embed(x))
        for c in CROPS_S:
            n = int(c * SAMPLE_RATE)
            if len(x) >= n:
                a = (len(x) - n) // 2
                imp_crop[c].append(b.embed(x[a:a + n]))
        prog.step()
    prog.close()
    imp_full_a = np.array(imp_full)
    libri = runs[0]
    libri_res = closed_set(libri.centroids, libri.test_labels, libri.tests)
    near_imp_libri = distances(imp_full_a, libri.centroids).min(axis=1)
    near_imp_pooled = distances(imp_full_a, P_cent).min(axis=1)
    near_imp_crop = {c: distances(np.array(v), P_cent).min(axis=1) for c, v in imp_crop.items()}

    def open_row(genuine: np.ndarray, nearest_imp: np.ndarray, loo: np.ndarray, t: float) -> dict[str, Any]:
        far, frr = far_frr(genuine, nearest_imp, t)
        loo_far = far_frr([], loo[np.isfinite(loo)], t)[0]
        return {"threshold": t, "far_impostors": r4(far), "frr": r4(frr), "far_leave_own_out": r4(loo_far)}

    open_set = {
        "threshold": max_d,
        "librispeech10_vs_impostors": {
            "enrolled": len(libri.people), "impostors": len(imp_full),
            **open_row(libri_res["genuine"], near_imp_libri, libri_res["nearest_other"], max_d),
            "impostor_nearest_min": r4(float(near_imp_libri.min())),
        },
        "pooled_vs_impostors": {
            "enrolled": len(P_cent), "impostors": len(imp_full),
            **open_row(pooled_res["genuine"], near_imp_pooled, pooled_res["nearest_other"], max_d),
            "impostor_nearest_min": r4(float(near_imp_pooled.min())),
        },
        "note": ("far_impostors: share of never-enrolled LibriSpeech voices whose nearest enrolled "
                 "person is within the threshold; frr: enrolled test items farther than the "
                 "threshold from their own voiceprint; far_leave_own_out: every test item "
                 "against everyone except its own person (all corpora, unseen voices)."),
    }

    sweep = {}
    conditions = [("full", pooled_res, near_imp_pooled)] + \
                 [(f"crop{c:g}s", P_crops[c], near_imp_crop[c]) for c in CROPS_S]
    for cname, res, nimp in conditions:
        sweep[cname] = [open_row(res["genuine"], nimp, res["nearest_other"], t) for t in SWEEP]

    fine = [round(0.5 + 0.01 * k, 2) for k in range(91)]
    recommendation: dict[str, Any] = {}
    for cname, res, nimp in conditions:
        rec = {}
        for target in (0.01, 0.05):
            ok = [t for t in fine if far_frr([], nimp, t)[0] <= target
                  and far_frr([], res["nearest_other"][np.isfinite(res["nearest_other"])], t)[0] <= target]
            if ok:
                t = max(ok)
                rec[f"far<={target:g}"] = open_row(res["genuine"], nimp, res["nearest_other"], t)
        recommendation[cname] = rec

    # ---- live --------------------------------------------------------------------------
    log("live streams")
    if args.small:
        streams = ami_streams(b, S, [], ["pyannote_sample"])
    else:
        streams = ami_streams(b, S, CROSS_MEETINGS, SAME_MEETINGS)
        streams += libri_streams(b, S, libri, n_turns=24, seeds=(1, 2), gaps=(0.5, 0.0))
    distractors = {} if args.small else {
        f"libri{p}": (libri.centroids[k], libri.enrol_speech_s[k]) for k, p in enumerate(libri.people)}
    live_main = live(b, streams, cfg, distractors, "live (configured)")
    kinds = sorted({s.kind for s in streams})
    live_out: dict[str, Any] = {
        "config": {"max_distance": max_d, "change_distance": cfg.segment.change_distance},
        "streams": live_main,
        "totals": {k: live_totals(live_main, [k]) for k in kinds},
        "note": ("every registry also holds the 10 LibriSpeech test-other people as "
                 "distractors (full run); AMI cross = enrolled from other recordings"),
    }

    # ---- change distance ---------------------------------------------------------------
    change: dict[str, Any] = {"sweep": {}, "windows": {}}
    if args.sweeps and not args.small:
        for cd in (0.9, 1.0, 1.2, 1.3, None):
            c2 = cfg.replace(segment=dataclasses.replace(cfg.segment, change_distance=cd))
            per = live(b, streams, c2, distractors, f"live change_distance={cd}")
            change["sweep"][str(cd)] = {
                "totals": {k: live_totals(per, [k]) for k in kinds},
                "speaker_changes": {n: v["speaker_changes"] for n, v in per.items()},
            }
        change["sweep"][str(cfg.segment.change_distance)] = {
            "totals": live_out["totals"],
            "speaker_changes": {n: v["speaker_changes"] for n, v in live_main.items()}}
        groups: dict[str, dict[str, list[np.ndarray]]] = {"librispeech": {}, "ami_segments": {}}
        utts = load_manifest(S / LIBRI)
        for u in utts:
            groups["librispeech"].setdefault(u.speaker, []).append(b.speech(u.path)[: 12 * SAMPLE_RATE])
        for u in load_manifest(S / AMI):
            if u.path.parent.parent.name == "segments":
                groups["ami_segments"].setdefault(u.speaker, []).append(b.speech(u.path))
        log("window-vs-turn distances")
        change["windows"] = window_study(b, groups, cfg)
        # also a max_distance sweep live (keeps change_distance as configured)
        change["max_distance_live"] = {}
        for md in (0.9, 1.1):
            c3 = cfg.replace(match=dataclasses.replace(cfg.match, max_distance=md))
            per = live(b, streams, c3, distractors, f"live max_distance={md}")
            change["max_distance_live"][str(md)] = {k: live_totals(per, [k]) for k in kinds}

    args.out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(args.out, per_dataset, pooled_res, near_imp_pooled, max_d)
    elapsed = time.perf_counter() - t_start
    result = {
        "meta": {"small": args.small, "model_id": b.emb.model_id, "seconds": round(elapsed, 1),
                 "distance_unit": "Euclidean distance between unit embeddings (0..2)",
                 "enrol_speech_cap_s": ENROL_S, "vad_fallbacks": b.fallbacks,
                 "match_max_distance": max_d,
                 "segment_change_distance": cfg.segment.change_distance},
        "closed_set": closed,
        "open_set": open_set,
        "threshold_sweep": sweep,
        "recommendation": recommendation,
        "live": live_out,
        "change_distance": change,
        "plots": [p.name for p in plots],
    }
    (args.out / "accuracy.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    print_report(result)
    print(f"\nwrote {args.out / 'accuracy.json'} in {elapsed:.0f} s")
    for p in plots:
        print(f"wrote {p}")
    return 0


def print_report(r: dict[str, Any]) -> None:
    print(f"\n== closed set 1:N (enrol <= {ENROL_S:g} s speech; distance = L2 of unit vectors)")
    print(f"{'dataset':34} {'people':>6} {'tests':>5} {'top1':>7} {'EER':>7} {'thr':>6} "
          f"{'gen.med':>7} {'imp.p5':>7}")
    for name, v in r["closed_set"].items():
        print(f"{name:34} {v['people']:6} {v['test_items']:5} {pct(v['top1'])} {pct(v['eer'])} "
              f"{v['eer_threshold'] if v['eer_threshold'] is not None else float('nan'):6.3f} "
              f"{v['genuine_median'] or float('nan'):7.3f} {v['impostor_p5'] or float('nan'):7.3f}")
    o = r["open_set"]
    print(f"\n== open set at match.max_distance = {o['threshold']}")
    for k in ("librispeech10_vs_impostors", "pooled_vs_impostors"):
        v = o[k]
        print(f"{k:30} enrolled {v['enrolled']:3} impostors {v['impostors']:3}  "
              f"FAR {pct(v['far_impostors'])}  FRR {pct(v['frr'])}  "
              f"FAR(leave-own-out) {pct(v['far_leave_own_out'])}  nearest impostor {v['impostor_nearest_min']}")
    print("\n== FAR / FRR vs threshold (pooled enrolment; FAR imp = never-enrolled voices, "
          "FAR loo = test items vs everyone but their own person)")
    for cname, rows in r["threshold_sweep"].items():
        print(f"-- {cname}")
        print(f"{'thr':>5} {'FAR imp':>8} {'FAR loo':>8} {'FRR':>8}")
        for row in rows:
            print(f"{row['threshold']:5.2f} {pct(row['far_impostors']):>8} "
                  f"{pct(row['far_leave_own_out']):>8} {pct(row['frr']):>8}")
    print("\n== largest threshold meeting the FAR target (both FAR kinds)")
    for cname, rec in r["recommendation"].items():
        for target, row in rec.items():
            print(f"{cname:9} {target:9} thr {row['threshold']:.2f}  FAR imp {pct(row['far_impostors'])}"
                  f"  FAR loo {pct(row['far_leave_own_out'])}  FRR {pct(row['frr'])}")
    lv = r["live"]
    print(f"\n== live streams (Session, 100 ms chunks; max_distance {lv['config']['max_distance']}, "
          f"change_distance {lv['config']['change_distance']})")
    print(f"{'stream':24} {'enr.s':>6} {'right':>7} {'wrong':>7} {'unkn':>7} {'unlab':>7} "
          f"{'non.s':>6} {'nonOK':>7} {'turns':>5} {'named':>7} {'lat.med':>7} {'chg':>7}")
    for name, v in lv["streams"].items():
        lat = v["latency_median_s"]
        print(f"{name:24} {v['enrolled_s']:6.1f} {pct(v['named_right'])} {pct(v['named_wrong'])} "
              f"{pct(v['unknown'])} {pct(v['unlabelled'])} {v['nonenrolled_s']:6.1f} "
              f"{pct(v['nonenrolled_unknown'])} {v['turns']:5} {pct(v['turns_named'])} "
              f"{'   n/a' if lat is None else f'{lat:6.2f}s'} {v['speaker_changes']:3}/{v['true_changes']:<3}")
        for note in v["notes"]:
            print(f"{'':26}{note}")
    print("-- totals (time-weighted)")
    for kind, v in lv["totals"].items():
        print(f"{kind:24} {v['enrolled_s']:6.1f} {pct(v['named_right'])} {pct(v['named_wrong'])} "
              f"{pct(v['unknown'])} {pct(v['unlabelled'])} {v['nonenrolled_s']:6.1f} "
              f"{pct(v['nonenrolled_unknown'])} {v['turns']:5} {pct(v['turns_named'])} "
              f"{v['latency_median_s'] or float('nan'):6.2f}s")
    ch = r["change_distance"]
    if ch.get("sweep"):
        print("\n== segment.change_distance sweep (live; named right / non-enrolled OK / changes made)")
        for cd, v in ch["sweep"].items():
            tot = "  ".join(f"{k}: {pct(t['named_right'])}/{pct(t['nonenrolled_unknown'])}"
                            for k, t in v["totals"].items())
            print(f"{cd:>5}  {tot}  changes {sum(v['speaker_changes'].values())}")
    for corpus, v in ch.get("windows", {}).items():
        print(f"\n-- 1.5 s window vs running turn mean, {corpus}: same n={v['same_n']} "
              f"pct {v['same_pct']}; different pct {v['diff_pct']}; EER {pct(v['eer'])} at "
              f"{v['eer_threshold']}")
        for t, row in v["by_threshold"].items():
            print(f"   {t}: same-speaker windows above {pct(row['same_above'])}, "
                  f"other-speaker windows at/below {pct(row['diff_at_or_below'])}")
    for md, v in ch.get("max_distance_live", {}).items():
        tot = "  ".join(f"{k}: {pct(t['named_right'])}/{pct(t['nonenrolled_unknown'])}"
                        for k, t in v.items())
        print(f"live max_distance={md}: {tot}")


if __name__ == "__main__":
    sys.exit(main())
