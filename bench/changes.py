"""False speaker changes vs real interruptions: the change rule of the live Session.

    python bench/changes.py [--small] [--halves tune,test] [--variants old,new,...]
                            [--out bench/out] [--speech DIR] [--config F] [--set S.K=V]

The real CAM++ model (``models/campplus.onnx`` as configured), the real VAD and the pure
:class:`streamer.session.Session`, fed 100 ms chunks with every job answered at once
(``bench/accuracy.py``'s ``run_stream``). Every change rule ("variant") runs on the same
audio in the same run; the network's answers are cached by audio, so a variant costs
only the jobs its own segmentation asks for. Per half of ``shared/speech`` (speakers
split by :func:`streamer.evaluation.half_of`: rules are chosen on ``tune``, ``test`` is
reported):

* **singles** (false changes): single-speaker utterances of 2-8 s (Common Voice fa, VCTK,
  LibriSpeech test-other), each streamed alone between 0.5 s of silence, with every
  speaker of the half enrolled on ~8 s of *other* utterances of theirs. Reported: the
  share of utterances cut into more than one final (``cut``), the share with a final
  closed by a speaker change (``change``), and the share of the speech (first to last
  voiced frame, 0.25 s collar) whose final named the right person, a wrong one, nobody
  (unknown) or no final at all (unlabelled).
* **libri-gap0** (real interruptions): ``bench/accuracy.py``'s LibriSpeech conversations
  without a pause (24 turns of 2-6 s, seeds 1 and 2, a quarter never-enrolled voices),
  with that half's speakers enrolled: named right etc. exactly as accuracy.py's live
  table, plus the share of true speaker changes found (a final closed by ``change``
  ending within -0.5 .. +2.0 s of the true change) and the cuts that match none
  (``spurious``). ``--halves all`` gives accuracy.py's own figure (all 10 speakers).
* **stitched** (real interruptions, crowd-sourced): pairs of Common Voice test
  utterances of two different enrolled speakers of the half, VAD-trimmed and joined
  without a pause: named right, changes found, spurious cuts.

Variants: ``old`` is the rule before issue 11 part 4 (one confirming window, split at
once, no rejoin), ``new`` is the configured rule (``config.yaml``); the others are the
alternatives studied in ``docs/changes.md``. Prints a table and writes
``OUT/changes.json`` (``changes-small.json`` with ``--small``, which runs in under a
minute).
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # numpy next to onnxruntime on 2 cores

import argparse
import dataclasses
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import (  # noqa: E402  (bench/ is not a package)
    ENROL_S,
    LIBRI,
    Bench,
    Progress,
    Stream,
    apply_overrides,
    build_dataset,
    enrol_registry,
    libri_streams,
    live_totals,
    log,
    pct,
    r4,
    run_stream,
)

from streamer.config import REPO_ROOT, Config, SegmentConfig, load_config  # noqa: E402
from streamer.evaluation import (  # noqa: E402
    SAMPLE_RATE,
    Turn,
    Utterance,
    enrol_test_split,
    half_of,
    load_manifest,
    read_audio,
    score_meeting,
    stitch,
)
from streamer.pooling import Stats  # noqa: E402
from streamer.segmenter import find_speech  # noqa: E402

SINGLE_CORPORA = ("commonvoice_fa", "vctk_4spk", LIBRI)
CROWD = "commonvoice_fa"
SINGLE_MIN_S, SINGLE_MAX_S = 2.0, 8.0
PAD_S = 0.5
#: A true change counts as found when a ``change`` final ends this close to it (s).
FOUND_BEFORE_S, FOUND_AFTER_S = 0.5, 2.0

#: The rule before issue 11 part 4, whatever config.yaml says now.
OLD = {"change_confirm_windows": 1, "change_other_voice": False, "change_hold_s": None,
       "rejoin_distance": None, "voice_check": False, "voice_split": False}
#: Alternatives measured on the tune half (segment overrides on top of the config).
STUDY: dict[str, dict[str, Any]] = {
    "old": OLD,
    # the segmentation model's word on held changes (docs/changes.md, "The segmentation
    # model's word"): without it, with its rejoin limit at 1.2, and splitting turns
    "no-voice": {"voice_check": False},
    "voice-r1.2": {"voice_rejoin_distance": 1.2},
    "voice-split": {"voice_split": True},
    "cd1.1": {**OLD, "change_distance": 1.1},
    "cd1.2": {**OLD, "change_distance": 1.2},
    "confirm2": {**OLD, "change_confirm_windows": 2},
    "confirm3": {**OLD, "change_confirm_windows": 3},
    "other": {**OLD, "change_other_voice": True},
    "hold0": {**OLD, "change_hold_s": 0.0},
    "hold1": {**OLD, "change_hold_s": 1.0},
    "hold2": {**OLD, "change_hold_s": 2.0},
    "hold1+r1.1": {**OLD, "change_hold_s": 1.0, "rejoin_distance": 1.1},
    "hold1+r1.2": {**OLD, "change_hold_s": 1.0, "rejoin_distance": 1.2},
    "hold1+r1.3": {**OLD, "change_hold_s": 1.0, "rejoin_distance": 1.3},
    "hold2+r1.1": {**OLD, "change_hold_s": 2.0, "rejoin_distance": 1.1},
    "hold2+r1.2": {**OLD, "change_hold_s": 2.0, "rejoin_distance": 1.2},
    "cd1.05+hold1+r1.2": {**OLD, "change_distance": 1.05, "change_hold_s": 1.0,
                          "rejoin_distance": 1.2},
    "confirm2+hold1": {**OLD, "change_confirm_windows": 2, "change_hold_s": 1.0},
    "confirm2+hold1+r1.1": {**OLD, "change_confirm_windows": 2, "change_hold_s": 1.0,
                            "rejoin_distance": 1.1},
    "confirm2+other": {**OLD, "change_confirm_windows": 2, "change_other_voice": True},
    "other+hold1": {**OLD, "change_other_voice": True, "change_hold_s": 1.0},
}


class CachedStream:
    """The stream embedder with its answers cached by job audio (variants share jobs)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.head = inner.head
        self._cache: dict[tuple[bytes, int], Stats] = {}
        self.hits = self.misses = 0

    def stats(self, pcm: np.ndarray, keep: int) -> Stats:
        key = (hashlib.sha1(pcm.tobytes()).digest(), keep)
        if key in self._cache:
            self.hits += 1
        else:
            self.misses += 1
            self._cache[key] = self.inner.stats(pcm, keep)
        return self._cache[key]


class CachedBench:
    """What ``run_stream`` needs of a Bench: ``stream.head``, ``stream.stats`` and
    ``segmenter``."""

    def __init__(self, b: Bench) -> None:
        self.stream = CachedStream(b.stream)
        self.segmenter = b.segmenter


def variant_config(cfg: Config, overrides: dict[str, Any]) -> Config:
    return cfg.replace(segment=dataclasses.replace(cfg.segment, **overrides))


def padded(x: np.ndarray) -> np.ndarray:
    pad = np.zeros(int(PAD_S * SAMPLE_RATE), np.float32)
    return np.concatenate([pad, x.astype(np.float32), pad])


# -- data -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Half:
    name: str
    people: dict[str, tuple[np.ndarray, float]]
    singles: list[tuple[str, str, np.ndarray, Turn]]  # corpus, speaker, audio, reference
    pairs: list[tuple[str, np.ndarray, list[Turn]]]
    libri: list[Stream]


def build_half(b: Bench, speech: Path, half: str, small: bool) -> Half:
    people: dict[str, tuple[np.ndarray, float]] = {}
    singles: list[tuple[str, str, np.ndarray, Turn]] = []
    crowd_tests: dict[str, list[Utterance]] = {}
    for corpus in SINGLE_CORPORA:
        utts = half_of(load_manifest(speech / corpus), half)
        enrol, test = enrol_test_split(utts, ENROL_S)
        per_speaker = 1 if small else None
        for spk in enrol:
            x = b.item([u.path for u in enrol[spk]], cap_s=ENROL_S)
            people[spk] = (b.embed(x), len(x) / SAMPLE_RATE)
            chosen = [u for u in test[spk] if SINGLE_MIN_S <= u.seconds <= SINGLE_MAX_S]
            for u in chosen[:per_speaker]:
                x = read_audio(u.path)
                spans = find_speech(x, b.cfg.vad)
                if not spans:
                    continue
                ref = Turn(PAD_S + spans[0][0] / SAMPLE_RATE, PAD_S + spans[-1][1] / SAMPLE_RATE, spk)
                singles.append((corpus, spk, padded(x), ref))
            if corpus == CROWD:
                crowd_tests[spk] = chosen
    if small:  # a few of each corpus
        singles = [x for corpus in SINGLE_CORPORA
                   for x in [y for y in singles if y[0] == corpus][:6]]

    def trim(x: np.ndarray) -> np.ndarray:
        spans = find_speech(x, b.cfg.vad)
        return x[spans[0][0]:spans[-1][1]] if spans else x

    # stitched crowd-sourced pairs: speaker k's utterance, then speaker k+1's, no pause
    pairs: list[tuple[str, np.ndarray, list[Turn]]] = []
    speakers = [s for s in crowd_tests if crowd_tests[s]]
    rounds = 1 if small else 3
    for r in range(rounds):
        for k, a in enumerate(speakers):
            c = speakers[(k + 1 + r) % len(speakers)]
            if c == a or len(crowd_tests[a]) <= r or len(crowd_tests[c]) <= r:
                continue
            audio, turns = stitch([crowd_tests[a][r], crowd_tests[c][-1 - r]], 0.0, trim=trim)
            shifted = [Turn(t.start + PAD_S, t.end + PAD_S, t.speaker) for t in turns]
            pairs.append((f"{a}+{c}#{r}", padded(audio), shifted))
    if small:
        pairs = pairs[:3]

    libri_utts = load_manifest(speech / LIBRI)
    run = build_dataset(b, f"{LIBRI}-{half}", half_of(libri_utts, half), ENROL_S)
    libri = libri_streams(b, speech, run, n_turns=8 if small else 24,
                          seeds=(1,) if small else (1, 2), gaps=(0.0,))
    return Half(half, people, singles, pairs, libri)


# -- scoring --------------------------------------------------------------------------------


def change_hits(turns: Sequence[Turn], finals: Sequence[dict[str, Any]]) -> tuple[int, int, int]:
    """(true changes, found, spurious cuts) for one stream."""
    truth = [c.start for a, c in zip(turns, turns[1:]) if a.speaker != c.speaker]
    cuts = [float(e["end"]) for e in finals if e.get("closed_by") == "change"]
    found = sum(1 for t in truth if any(t - FOUND_BEFORE_S <= c <= t + FOUND_AFTER_S for c in cuts))
    spurious = sum(1 for c in cuts
                   if not any(t - FOUND_BEFORE_S <= c <= t + FOUND_AFTER_S for t in truth))
    return len(truth), found, spurious


def score_streams(cb: CachedBench, cfg: Config, search: Any,
                  items: Sequence[tuple[str, np.ndarray, list[Turn]]],
                  name_of: dict[str, str]) -> dict[str, Any]:
    """Stream each item; totals of time shares, finals, changes found."""
    n = cut = changed = true_c = found = spurious = 0
    en = right = wrong = unknown = unlabelled = 0.0
    for _, audio, turns in items:
        events, _stats = run_stream(cb, cfg, search, audio)  # type: ignore[arg-type]
        finals = [e for e in events if e["type"] == "speaker" and e["final"]]
        provisionals = [e for e in events if e["type"] == "speaker" and not e["final"]]
        sc = score_meeting(turns, finals, provisionals, name_of)
        n += 1
        cut += len(finals) > 1
        changed += any(e.get("closed_by") == "change" for e in finals)
        t, f, s = change_hits(turns, finals)
        true_c, found, spurious = true_c + t, found + f, spurious + s
        if sc.enrolled_s:
            en += sc.enrolled_s
            right += sc.named_right * sc.enrolled_s
            wrong += sc.named_wrong * sc.enrolled_s
            unknown += sc.unknown * sc.enrolled_s
            unlabelled += sc.unlabelled * sc.enrolled_s

    def share(a: float, b: float) -> float | None:
        return r4(a / b) if b else None

    return {"items": n, "cut": share(cut, n), "change": share(changed, n),
            "enrolled_s": round(en, 2), "named_right": share(right, en),
            "named_wrong": share(wrong, en), "unknown": share(unknown, en),
            "unlabelled": share(unlabelled, en), "true_changes": true_c,
            "changes_found": share(found, true_c), "spurious_cuts": spurious}


def libri_score(b: Bench, cb: CachedBench, cfg: Config, streams: Sequence[Stream]) -> dict[str, Any]:
    """accuracy.py's live figures for the libri-gap0 streams, plus changes found."""
    per: dict[str, Any] = {}
    true_c = found = spurious = 0
    for s in streams:
        with tempfile.TemporaryDirectory() as tmp:
            reg = enrol_registry(b, s.people, Path(tmp))
            events, stats = run_stream(cb, cfg, reg.search, s.audio)  # type: ignore[arg-type]
            reg.close()
        finals = [e for e in events if e["type"] == "speaker" and e["final"]]
        provisionals = [e for e in events if e["type"] == "speaker" and not e["final"]]
        d = score_meeting(s.turns, finals, provisionals, {n: n for n in s.people}).as_dict()
        per[s.name] = {"kind": s.kind, **d, "speaker_changes": stats["speaker_changes"]}
        t, f, sp = change_hits(s.turns, finals)
        true_c, found, spurious = true_c + t, found + f, spurious + sp
    tot = live_totals(per, ["libri-gap0"])
    return {"named_right": tot["named_right"], "named_wrong": tot["named_wrong"],
            "unknown": tot["unknown"], "unlabelled": tot["unlabelled"],
            "nonenrolled_unknown": tot["nonenrolled_unknown"],
            "enrolled_s": tot["enrolled_s"], "latency_median_s": tot["latency_median_s"],
            "true_changes": true_c, "changes_found": r4(found / true_c) if true_c else None,
            "spurious_cuts": spurious}


def run_half(b: Bench, cb: CachedBench, cfg: Config, h: Half, variants: dict[str, dict[str, Any]]
             ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    name_of = {p: p for p in h.people}
    singles = [(f"{c}:{s}", x, [t]) for c, s, x, t in h.singles]
    prog = Progress(f"{h.name}: variants", len(variants))
    with tempfile.TemporaryDirectory() as tmp:
        reg = enrol_registry(b, h.people, Path(tmp))
        for name, over in variants.items():
            vc = variant_config(cfg, over)
            row = {"singles": score_streams(cb, vc, reg.search, singles, name_of),
                   "singles_by_corpus": {
                       corpus: score_streams(cb, vc, reg.search,
                                             [s for s in singles if s[0].startswith(corpus + ":")],
                                             name_of)
                       for corpus in SINGLE_CORPORA} if name in ("old", "new") else {},
                   "stitched": score_streams(cb, vc, reg.search, h.pairs, name_of),
                   "libri_gap0": libri_score(b, cb, vc, h.libri)}
            out[name] = row
            prog.step()
        reg.close()
    prog.close()
    return out


# -- report ---------------------------------------------------------------------------------


def print_report(r: dict[str, Any]) -> None:
    print("\n== speaker changes: false cuts of one voice vs real interruptions "
          "(shares; right/unkn/wrong of enrolled speech time)")
    head = (f"{'half':5} {'variant':22} | {'singles':>5} {'cut':>6} {'change':>6} {'right':>6} "
            f"{'unkn':>6} {'wrong':>6} | {'libri0':>6} {'right':>6} {'wrong':>6} {'found':>6} "
            f"{'spur':>4} | {'pairs':>5} {'right':>6} {'found':>6} {'spur':>4}")
    print(head)
    print("-" * len(head))
    for half, rows in r["halves"].items():
        for name, v in rows.items():
            s, lg, st = v["singles"], v["libri_gap0"], v["stitched"]
            print(f"{half:5} {name:22} | {s['items']:5} {pct(s['cut'])} {pct(s['change'])} "
                  f"{pct(s['named_right'])} {pct(s['unknown'])} {pct(s['named_wrong'])} | "
                  f"{lg['true_changes']:6} {pct(lg['named_right'])} {pct(lg['named_wrong'])} "
                  f"{pct(lg['changes_found'])} {lg['spurious_cuts']:4} | {st['items']:5} "
                  f"{pct(st['named_right'])} {pct(st['changes_found'])} {st['spurious_cuts']:4}")
    for half, rows in r["halves"].items():
        for name in ("old", "new"):
            for corpus, s in rows.get(name, {}).get("singles_by_corpus", {}).items():
                print(f"  {half:5} {name:4} singles {corpus:28} n={s['items']:3} cut {pct(s['cut'])} "
                      f"change {pct(s['change'])} right {pct(s['named_right'])} "
                      f"unknown {pct(s['unknown'])} wrong {pct(s['named_wrong'])}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="quick run (< 1 min): old vs new")
    ap.add_argument("--halves", default="tune,test", help="tune, test and/or all (comma-separated)")
    ap.add_argument("--variants", default=None,
                    help=f"comma-separated, of new and {', '.join(STUDY)} (default: all; "
                         "--small: old,new)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "out")
    ap.add_argument("--speech", type=Path, default=REPO_ROOT.parent / "shared" / "speech")
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    cfg = apply_overrides(load_config(args.config), args.set)
    new = {f.name: getattr(cfg.segment, f.name) for f in dataclasses.fields(SegmentConfig)
           if f.name in OLD or f.name == "change_distance"}
    table = {"old": OLD, "new": {}, **{k: v for k, v in STUDY.items() if k != "old"}}
    names = (args.variants.split(",") if args.variants
             else ["old", "new"] if args.small else list(table))
    unknown = [n for n in names if n not in table]
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {', '.join(table)}")
    variants = {n: table[n] for n in names}
    b = Bench(cfg)
    cb = CachedBench(b)
    log(f"model {cfg.model_path}; new rule: {new}")
    result: dict[str, Any] = {"halves": {}}
    for half in args.halves.split(","):
        log(f"half {half}: enrolling, building streams")
        h = build_half(b, args.speech, half, args.small)
        result["halves"][half] = run_half(b, cb, cfg, h, variants)
    elapsed = time.perf_counter() - t0
    result["meta"] = {
        "small": args.small, "model_id": b.emb.model_id, "seconds": round(elapsed, 1),
        "variants": {n: {**{k: getattr(cfg.segment, k) for k in new}, **v} for n, v in variants.items()},
        "match_max_distance": cfg.match.max_distance, "enrol_speech_cap_s": ENROL_S,
        "singles_s": [SINGLE_MIN_S, SINGLE_MAX_S], "found_window_s": [-FOUND_BEFORE_S, FOUND_AFTER_S],
        "cache": {"hits": cb.stream.hits, "misses": cb.stream.misses},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("changes-small.json" if args.small else "changes.json")
    path.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print_report(result)
    print(f"\nwrote {path} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
