"""Enrolment study: how much speech makes a usable voiceprint, and does the one-speaker
check accept single speakers and catch mixes?

    python bench/enrolment.py [--half tune|test|all] [--small] [--out bench/out]
                              [--speech DIR] [--config PATH] [--dump]
                              [--set SECTION.KEY=VALUE]

Everything is measured on one half of ``shared/speech`` (``streamer.evaluation.half_of``,
split by speaker): limits are chosen on ``tune``, figures reported on ``test``.

1. **Enrolment length** (LibriSpeech test-other, Common Voice fa, VCTK, AISHELL-1,
   Speech Commands with its one-second words joined): each speaker is enrolled on the
   first 1, 1.5, 2, 3, 4, 5 and 7 s of the VAD speech of their first utterances (or all
   they have when that is less: Speech Commands' 5 enrolment words give ~3-4 s),
   everyone of the half enrolled together; every held-out utterance (Speech Commands:
   the other 3 words joined) is scored. Reported per length: closed-set top-1, the
   genuine distance (to the speaker's own voiceprint: median, p90) and the share of
   genuine distances within ``match.max_distance`` (the speaker would be named).
2. **One-speaker check** with the server's own code (``streamer.consistency.plan`` and
   ``assess``, and the second-voice check of ``streamer.second_voice`` with the
   segmentation model, under the loaded config's ``enroll`` section, as ``/v1/api
   enroll`` runs them; ``--set enroll.second_voice=false`` for the pieces alone):
   single-speaker enrolments (7-8 s windows of one speaker's utterances joined, pauses
   and all), two-speaker mixes (~4 s of A then ~4 s of B of the same corpus, either order) and three-voice conversations (~3 s each), in two
   conditions: ``clean``, ``far`` (room reverberation RT60 0.5 s, pink noise at
   10 dB SNR, level -35 dBFS; from ``bench/conditions.py`` when it offers ``far``,
   else the stand-in below) and ``telephone`` (``bench/conditions.py``'s phone line,
   16-bit samples as the server receives them; the server notices the line,
   ``streamer.band``, and compares the pieces with the telephone-line variant under
   ``enroll.consistency_telephone_max_distance``). Outcomes: enrolled (clean), enrolled with a piece dropped
   (warning), refused ``not_one_speaker``, refused ``too_little_speech``.

Prints the tables and writes ``OUT/enrolment.json``. ``--small`` (CI) uses a few
speakers of two corpora and runs in well under a minute. ``--dump`` also writes the
piece embeddings at several piece lengths (``OUT/enrolment_dump.pkl``) for exploring
other decision rules.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import dataclasses
import json
import math
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np

from streamer import band, consistency, second_voice
from streamer.config import Config, load_config, packaged_model_dir
from streamer.embedder import Embedder
from streamer.evaluation import (
    SAMPLE_RATE,
    Utterance,
    enrol_test_split,
    half_of,
    load_manifest,
    read_audio,
)
from streamer.segmentation_model import FILE_NAME as SEGMENTATION_FILE
from streamer.segmentation_model import SegmentationModel
from streamer.segmenter import find_speech
from streamer.stream_embedder import StreamEmbedder

from accuracy import apply_overrides  # noqa: E402  (bench/accuracy.py, beside this script)

LIBRI = "librispeech_testother_10spk"
CV = "commonvoice_fa"
VCTK = "vctk_4spk"
AISHELL = "aishell1_2spk"
SC = "speechcommands_v002test_80spk"
TRAINCLEAN = "librispeech_trainclean100_251spk_1utt"
AMI = "ami_pyannote_diarization"

#: Part 1: the datasets and the enrolment lengths (seconds of VAD speech).
LENGTH_SETS = (LIBRI, CV, VCTK, AISHELL, SC)
LENGTHS_S = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0)
#: Speech Commands: enrol on the first 5 words, test on the other 3 joined.
SC_ENROL_WORDS = 5
#: Held-out utterances scored per speaker (part 1).
MAX_TESTS = 12

#: Part 2: single-speaker and mix sources (AMI: the solo segments, real far-field).
CHECK_SETS = (LIBRI, CV, VCTK, AISHELL, SC, TRAINCLEAN, AMI)
#: Single-speaker enrolments: consecutive windows of these lengths (audio seconds).
SINGLE_WINDOWS_S = (8.0, 7.0)
MAX_SINGLES_PER_SPEAKER = 6
MIX_TURN_S = 4.0
THREE_TURN_S = 3.0
MAX_MIXES_PER_SET = 40
MAX_THREES_PER_SET = 15
#: Piece lengths embedded for ``--dump``.
DUMP_PIECES_S = (1.0, 1.25, 1.5, 2.0, 2.5)

#: Far-field stand-in (used when bench/conditions.py has no "far" condition).
FAR_RT60_S = 0.5
FAR_SNR_DB = 10.0
FAR_LEVEL_DBFS = -35.0


def log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


# -- conditions -----------------------------------------------------------------------------


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Pink (1/f power) noise of ``n`` samples, unit RMS."""
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.arange(n // 2 + 1, dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spectrum / np.sqrt(f), n)
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def far_standin(x: np.ndarray, seed: int) -> np.ndarray:
    """The recording's DC offset removed (it is no sound; as bench/conditions.as_spoken),
    reverberation (exponentially decaying noise RIR, RT60 0.5 s), pink noise at 10 dB
    SNR (against the reverberant speech's RMS), then the whole scaled to -35 dBFS RMS."""
    from scipy.signal import fftconvolve

    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean() if len(x) else x
    rng = np.random.default_rng(seed)
    n = int(FAR_RT60_S * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    rir = rng.standard_normal(n) * np.exp(-6.9078 * t / FAR_RT60_S)
    rir[0] = 1.0  # the direct path
    rir /= np.sqrt(np.sum(rir ** 2))
    y = fftconvolve(np.asarray(x, dtype=np.float64), rir)[: len(x)]
    rms = float(np.sqrt(np.mean(y ** 2))) + 1e-12
    y = y + pink_noise(len(y), rng) * rms * 10 ** (-FAR_SNR_DB / 20)
    y *= 10 ** (FAR_LEVEL_DBFS / 20) / (float(np.sqrt(np.mean(y ** 2))) + 1e-12)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def phone_line(x: np.ndarray, seed: int) -> np.ndarray:
    """``x`` through bench/conditions.py's telephone condition (300-3400 Hz, 8 kHz
    mu-law), in 16-bit samples as the server receives them."""
    bench_dir = str(REPO / "bench")
    if bench_dir not in sys.path:
        sys.path.insert(0, bench_dir)
    import conditions  # type: ignore[import-not-found]

    y = conditions.CONDITIONS["telephone"].apply(x, key=f"enrolment:{seed}").audio
    return conditions.as_received(y)


def far_condition() -> tuple[str, Callable[[np.ndarray, int], np.ndarray]]:
    """bench/conditions.py's far-field condition when it is there, else the stand-in."""
    try:
        bench_dir = str(REPO / "bench")
        if bench_dir not in sys.path:
            sys.path.insert(0, bench_dir)
        import conditions  # type: ignore[import-not-found]

        registry = getattr(conditions, "CONDITIONS", {})
        for name in ("far", "far_field", "far-field", "room_far"):
            if name in registry:
                cond = registry[name]
                fn = getattr(cond, "apply", cond)

                def apply(x: np.ndarray, seed: int, fn: Any = fn) -> np.ndarray:
                    try:
                        return np.asarray(fn(x, seed=seed), dtype=np.float32)
                    except TypeError:
                        return np.asarray(fn(x, np.random.default_rng(seed)), dtype=np.float32)

                return f"bench/conditions.py:{name}", apply
    except ImportError:
        pass
    return "stand-in (RT60 0.5 s, pink 10 dB, -35 dBFS)", far_standin


# -- model ------------------------------------------------------------------------------------


class Model:
    """CAM++ on one thread, the config's VAD, and a cache of decoded files."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.emb = Embedder(cfg.model_path, threads=1)
        self.emb.load()
        self._audio: dict[Path, np.ndarray] = {}
        self._variants: dict[str, StreamEmbedder] = {}
        self.embedded_s = 0.0
        self.segmenter = SegmentationModel(packaged_model_dir() / SEGMENTATION_FILE)
        if cfg.enroll.listens_for_second_voice:
            self.segmenter.load()

    def audio(self, path: Path) -> np.ndarray:
        if path not in self._audio:
            self._audio[path] = read_audio(path)
        return self._audio[path]

    def speech(self, x: np.ndarray) -> tuple[list[tuple[int, int]], np.ndarray]:
        spans = find_speech(x, self.cfg.vad)
        if not spans:
            return spans, np.zeros(0, np.float32)
        return spans, np.concatenate([x[a:b] for a, b in spans]).astype(np.float32)

    def embed(self, x: np.ndarray, channel: str = "wideband") -> np.ndarray:
        """The model's embedding of ``x``, or its ``channel`` variant's (as the server's
        worker embeds enrolment pieces of that line)."""
        self.embedded_s += len(x) / SAMPLE_RATE
        if len(x) < self.emb.min_samples:
            x = np.pad(x, (0, self.emb.min_samples - len(x)))
        if channel == "wideband":
            return np.asarray(self.emb.embed(x), dtype=np.float64)
        if channel not in self._variants:
            variant = StreamEmbedder(self.emb, channel)
            variant.load()
            self._variants[channel] = variant
        return np.asarray(self._variants[channel].embed(x), dtype=np.float64)


def speakers_of(utts: Sequence[Utterance]) -> dict[str, list[Utterance]]:
    out: dict[str, list[Utterance]] = {}
    for u in utts:
        if "," in u.speaker:
            continue
        out.setdefault(u.speaker, []).append(u)
    return out


def load_set(speech_dir: Path, name: str, half: str) -> list[Utterance]:
    utts = load_manifest(speech_dir / name)
    if name == AMI:
        utts = [u for u in utts if "/segments/" in u.path.as_posix() or
                u.path.relative_to(speech_dir / name).as_posix().startswith("segments/")]
    return half_of(utts, half)


# -- part 1: enrolment length -------------------------------------------------------------------


def pctl(x: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(x, dtype=np.float64), q)) if len(x) else math.nan


def length_study(m: Model, speech_dir: Path, half: str, sets: Sequence[str],
                 max_speakers: int | None) -> dict[str, Any]:
    """Closed-set top-1 and genuine distances against the enrolment speech length."""
    people: list[tuple[str, str, np.ndarray]] = []   # (dataset, speaker, enrolment speech)
    tests: list[tuple[int, np.ndarray]] = []         # (person index, test embedding)
    for name in sets:
        utts = load_set(speech_dir, name, half)
        if name == SC:
            by = speakers_of(utts)
            enrol = {s: u[:SC_ENROL_WORDS] for s, u in by.items() if len(u) > SC_ENROL_WORDS}
            test = {s: [by[s][SC_ENROL_WORDS:]] for s in enrol}
        else:
            enrol_u, test_u = enrol_test_split(utts, 8.0 + 2.0)
            enrol = enrol_u
            test = {s: [[u] for u in t[:MAX_TESTS]] for s, t in test_u.items()}
        for spk in list(enrol)[:max_speakers]:
            speech = np.concatenate([m.speech(m.audio(u.path))[1] for u in enrol[spk]])
            k = len(people)
            people.append((name, spk, speech))
            for group in test[spk]:
                x = np.concatenate([m.speech(m.audio(u.path))[1] for u in group])
                if len(x) < 0.5 * SAMPLE_RATE:
                    continue
                tests.append((k, m.embed(x)))
    labels = np.array([k for k, _ in tests])
    vecs = np.stack([v for _, v in tests])
    threshold = m.cfg.match.max_distance
    rows = []
    for length in LENGTHS_S:
        n = int(length * SAMPLE_RATE)
        cents = np.stack([m.embed(sp[:n]) for _, _, sp in people])
        short = sum(1 for _, _, sp in people if len(sp) < n)
        d = np.sqrt(np.clip(2 - 2 * vecs @ cents.T, 0, None))
        own = d[np.arange(len(labels)), labels]
        right = np.argmin(d, axis=1) == labels
        per_set = {}
        for name in sets:
            mask = np.array([people[k][0] == name for k in labels])
            if mask.any():
                per_set[name] = float(np.mean(right[mask]))
        rows.append({
            "speech_s": length, "people": len(people), "people_with_less": short,
            "tests": len(labels), "top1": float(np.mean(right)),
            "genuine_p50": pctl(own, 50), "genuine_p90": pctl(own, 90),
            "named_at_threshold": float(np.mean(own <= threshold)),
            "top1_per_set": per_set,
        })
    return {"threshold": threshold, "rows": rows,
            "people_per_set": {s: sum(1 for p in people if p[0] == s) for s in sets}}


# -- part 2: the one-speaker check -------------------------------------------------------------


@dataclasses.dataclass
class Case:
    kind: str            # "single", "mix2", "mix3"
    dataset: str
    speakers: tuple[str, ...]
    audio: np.ndarray


def speaker_streams(m: Model, utts: Sequence[Utterance]) -> dict[str, np.ndarray]:
    """Each speaker's utterances joined in manifest order (raw audio, pauses kept)."""
    return {s: np.concatenate([m.audio(u.path) for u in us]) for s, us in speakers_of(utts).items()}


def build_cases(m: Model, speech_dir: Path, half: str, sets: Sequence[str],
                max_speakers: int | None, small: bool) -> list[Case]:
    rng = np.random.default_rng(11)
    cases: list[Case] = []
    for name in sets:
        streams = speaker_streams(m, load_set(speech_dir, name, half))
        spk = list(streams)[:max_speakers]
        for s in spk:
            x = streams[s]
            pos, k = 0, 0
            while k < (2 if small else MAX_SINGLES_PER_SPEAKER):
                w = int(SINGLE_WINDOWS_S[k % len(SINGLE_WINDOWS_S)] * SAMPLE_RATE)
                if pos + w > len(x):
                    break
                cases.append(Case("single", name, (s,), x[pos:pos + w]))
                pos, k = pos + w, k + 1
            if k == 0 and len(x) >= 6.5 * SAMPLE_RATE:  # a short speaker: all they have
                cases.append(Case("single", name, (s,), x[: 8 * SAMPLE_RATE]))
        if len(spk) < 2:
            continue
        pairs = [(a, b) for a in spk for b in spk if a != b]
        rng.shuffle(pairs)
        turn = int(MIX_TURN_S * SAMPLE_RATE)
        for i, (a, b) in enumerate(pairs[: 6 if small else MAX_MIXES_PER_SET]):
            xa, xb = streams[a], streams[b]
            oa = int(rng.integers(0, max(1, len(xa) - turn)))
            ob = int(rng.integers(0, max(1, len(xb) - turn)))
            cases.append(Case("mix2", name, (a, b),
                              np.concatenate([xa[oa:oa + turn], xb[ob:ob + turn]])))
        if len(spk) < 3:
            continue
        turn3 = int(THREE_TURN_S * SAMPLE_RATE)
        for _ in range(3 if small else MAX_THREES_PER_SET):
            trio = tuple(str(s) for s in rng.choice(spk, 3, replace=False))
            parts = []
            for s in trio:
                o = int(rng.integers(0, max(1, len(streams[s]) - turn3)))
                parts.append(streams[s][o:o + turn3])
            cases.append(Case("mix3", name, trio, np.concatenate(parts)))
    return cases


def decide(m: Model, x: np.ndarray) -> dict[str, Any]:
    """What ``/v1/api enroll`` decides for audio ``x`` (the server's own functions)."""
    cfg = m.cfg.enroll
    spans, speech = m.speech(x)
    speech_s = len(speech) / SAMPLE_RATE
    out: dict[str, Any] = {"speech_s": speech_s}
    if speech_s < cfg.min_speech_s:
        out["outcome"] = "too_little_speech"
        return out
    channel = band.line_of(speech, cfg.telephone_below_db)
    out["channel"] = channel
    cfg = cfg.limits_for(channel)
    pieces = consistency.plan(spans, cfg)
    second = second_voice_of(m, x, spans, channel)
    out["second_voice"] = second.distance
    if cfg.consistency == "off" or (len(pieces) < 2 and second.one_speaker):
        out["outcome"] = "enrolled"
        return out
    if len(pieces) >= 2:
        vectors = np.stack([m.embed(speech[p.speech_start:p.speech_end], channel)
                            for p in pieces])
        result = consistency.assess(vectors, pieces, cfg)
        out["pieces"] = len(pieces)
        out["max_distance"] = result.max_distance
        out["max_pairwise"] = result.max_pairwise
    else:
        result = consistency.not_checked(cfg.consistency_max_distance, len(pieces), "short")
    if not result.one_speaker or not second.one_speaker:
        out["outcome"] = "not_one_speaker" if cfg.consistency == "refuse" else "warned"
    elif result.dropped:
        out["outcome"] = "dropped"
    else:
        out["outcome"] = "enrolled"
    return out


def second_voice_of(m: Model, x: np.ndarray, spans: list[tuple[int, int]],
                    channel: str) -> second_voice.SecondVoiceResult:
    """The server's second-voice check (``Api._second_voice``) on audio ``x``."""
    cfg = m.cfg.enroll
    if not cfg.listens_for_second_voice:
        return second_voice.not_checked(cfg, "switched off")
    pairs = []
    for window in second_voice.windows(len(x)):
        part = x[window[0]:window[1]].astype(np.float32)
        voices = second_voice.local_voices(m.segmenter.logprobs(part), window, spans)
        pair = second_voice.main_pair(voices, cfg)
        if pair is not None:
            pairs.append((*pair, *(m.embed(part[v.mask], channel) for v in pair)))
    return second_voice.assess(pairs, cfg)


def dump_case(m: Model, x: np.ndarray) -> dict[str, Any]:
    spans, speech = m.speech(x)
    rec: dict[str, Any] = {"speech_s": len(speech) / SAMPLE_RATE, "pieces": {}}
    for ps in DUMP_PIECES_S:
        pieces = consistency.split_pieces(spans, round(ps * SAMPLE_RATE))
        if len(pieces) >= 2:
            rec["pieces"][ps] = np.stack(
                [m.embed(speech[p.speech_start:p.speech_end]) for p in pieces]).astype(np.float32)
    return rec


OUTCOMES = ("enrolled", "dropped", "warned", "not_one_speaker", "too_little_speech")


def check_study(m: Model, cases: Sequence[Case], conditions: dict[str, Callable[..., np.ndarray]],
                dump: dict[str, Any] | None) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for ci, (cond, fn) in enumerate(conditions.items()):
        for i, c in enumerate(cases):
            x = c.audio if fn is None else fn(c.audio, 1000 * ci + i)
            r = decide(m, x)
            results.append({"condition": cond, "kind": c.kind, "dataset": c.dataset,
                            "speakers": list(c.speakers), **r})
            if dump is not None:
                dump.setdefault("cases", []).append(
                    {"condition": cond, "kind": c.kind, "dataset": c.dataset,
                     "speakers": c.speakers, **dump_case(m, x)})
            if (i + 1) % 50 == 0:
                log(f"  {cond}: {i + 1}/{len(cases)} ({time.perf_counter() - t0:.0f} s)")
    return {"cases": results}


def tally(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Outcome counts per condition x kind (and per dataset)."""
    table: dict[str, Any] = {}
    for r in results:
        for key in ((r["condition"], r["kind"], "all"), (r["condition"], r["kind"], r["dataset"])):
            row = table.setdefault("|".join(key), {o: 0 for o in OUTCOMES} | {"n": 0})
            row[r["outcome"]] += 1
            row["n"] += 1
    return table


# -- report ------------------------------------------------------------------------------------


def pct(x: float) -> str:
    return "   n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:5.1f}%"


def print_length(r: dict[str, Any], half: str) -> None:
    print(f"\n== Enrolment length ({half} half; everyone enrolled together; "
          f"threshold {r['threshold']}) ==")
    print("people per set: " + ", ".join(f"{k} {v}" for k, v in r["people_per_set"].items()))
    sets = list(r["people_per_set"])
    short = {LIBRI: "libri", CV: "cv_fa", VCTK: "vctk", AISHELL: "aishell", SC: "sc"}
    print(f"{'speech':>6} {'tests':>5} {'<L':>3} {'top-1':>6} {'gen p50':>7} {'gen p90':>7} "
          f"{'named':>6}  " + " ".join(f"{short.get(s, s)[:7]:>7}" for s in sets))
    for row in r["rows"]:
        print(f"{row['speech_s']:>5.1f}s {row['tests']:>5} {row['people_with_less']:>3} "
              f"{pct(row['top1'])} {row['genuine_p50']:>7.3f} {row['genuine_p90']:>7.3f} "
              f"{pct(row['named_at_threshold'])}  "
              + " ".join(f"{pct(row['top1_per_set'].get(s, math.nan)):>7}" for s in sets))


def print_check(table: dict[str, Any], cfg: Config, half: str, far_name: str) -> None:
    e = cfg.enroll
    second = (f"{e.second_voice_min_s} s, {e.second_voice_distance}" if e.second_voice
              else "off")
    print(f"\n== One-speaker check ({half} half; min_speech_s {e.min_speech_s}, consistency "
          f"{e.consistency}, piece {e.consistency_piece_s} s, limit "
          f"{e.consistency_max_distance} (phone line {e.consistency_telephone_max_distance}), "
          f"split {e.consistency_split_distance}, min pieces {e.consistency_min_pieces}; "
          f"second voice {second}; "
          f"far = {far_name}) ==")
    print(f"{'condition':<9} {'kind':<6} {'dataset':<38} {'n':>4} {'enrolled':>8} {'dropped':>7} "
          f"{'refused':>7} {'short':>6}")
    order = {"clean": 0, "far": 1, "telephone": 2}
    for key in sorted(table, key=lambda k: (order.get(k.split("|")[0], 3), k.split("|")[1],
                                            k.split("|")[2] != "all", k)):
        cond, kind, ds = key.split("|")
        row = table[key]
        n = row["n"]
        ok = (row["enrolled"] + row["dropped"] + row["warned"]) / n
        print(f"{cond:<9} {kind:<6} {ds:<38} {n:>4} {pct(ok):>8} {pct(row['dropped'] / n):>7} "
              f"{pct(row['not_one_speaker'] / n):>7} {pct(row['too_little_speech'] / n):>6}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--half", choices=("tune", "test", "all"), default="tune")
    ap.add_argument("--small", action="store_true", help="CI: a few speakers, < 1 min")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    ap.add_argument("--speech", type=Path, default=REPO.parent / "shared" / "speech")
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--dump", action="store_true", help="also write piece embeddings")
    ap.add_argument("--skip-length", action="store_true")
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a config value (YAML), e.g. enroll.second_voice=false")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    cfg = apply_overrides(load_config(args.config), args.set)
    m = Model(cfg)
    report: dict[str, Any] = {"half": args.half, "mode": "small" if args.small else "full",
                              "enroll": dataclasses.asdict(cfg.enroll)}
    if not args.skip_length:
        sets = (LIBRI, SC) if args.small else LENGTH_SETS
        log("part 1: enrolment length")
        report["length"] = length_study(m, args.speech, args.half, sets, 3 if args.small else None)
        print_length(report["length"], args.half)
    if not args.skip_check:
        far_name, far = far_condition()
        sets = (LIBRI, SC) if args.small else CHECK_SETS
        log("part 2: one-speaker check")
        cases = build_cases(m, args.speech, args.half, sets, 4 if args.small else None, args.small)
        dump: dict[str, Any] | None = {} if args.dump else None
        res = check_study(m, cases, {"clean": None, "far": far,  # type: ignore[dict-item]
                                     "telephone": phone_line}, dump)
        table = tally(res["cases"])
        report["check"] = {"far": far_name, "table": table, "cases": res["cases"]}
        print_check(table, cfg, args.half, far_name)
        if dump is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            with (args.out / "enrolment_dump.pkl").open("wb") as f:
                pickle.dump(dump, f)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["embedded_audio_s"] = round(m.embedded_s, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "enrolment_small.json" if args.small else f"enrolment_{args.half}.json"
    (args.out / name).write_text(json.dumps(report, indent=1, default=float))
    print(f"\n{report['seconds']:.0f} s; {m.embedded_s:.0f} s of audio embedded; "
          f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
