"""Telephone-band study: can anything short of a new model name people heard on a phone line?

    python bench/narrowband.py [--half test|tune] [--small] [--out bench/out] [--speech DIR]

People enrol wideband (close talk, ``bench/heldout.py``'s people of one half of
``shared/speech``, split by speaker); their held-out utterances and 50 never-enrolled
LibriSpeech voices arrive through the ``telephone`` condition of ``bench/conditions.py``
(300-3400 Hz, 8 kHz mu-law, pink noise at 20 dB), as 16-bit samples. Every recording's speech is found
with the product's VAD (``streamer.segmenter.find_speech``, default config) and embedded
with the product's model (``streamer.embedder.Embedder``). Compared, for the same
telephone-band probes:

- ``wideband voiceprint``: the product today (voiceprint from the wideband enrolment).
- ``channel shift``: the probe moved by the mean wideband-minus-telephone embedding
  difference (fitted on the **other** half's people: their enrolments and utterances
  heard both ways), re-normalised. Two vectors; no change to the registry.
- ``channel shift + scale``: per-dimension mean and spread of each channel (fitted the
  same way).
- ``narrowband voiceprint``: a second voiceprint per person made from the enrolment
  audio passed through the same telephone channel (what storing a voiceprint per channel
  would give).
- ``telephone variant``: what the server does for a room with ``match.channel:
  telephone`` (the ``phone`` profile): wideband voiceprints, the probe embedded by the
  model's telephone-line variant (``models/campplus_telephone_*.onnx``, trained by
  ``models/train_telephone.py`` on tune-half speakers only; on ``--half tune`` its
  figures are on its own training voices).
- ``variant, line-copy voiceprint``: probes as the row above; each person's voiceprint
  is the server's line voiceprint (``enroll.line_voiceprints``,
  :mod:`streamer.line_voiceprints`): the enrolment speech through
  :func:`streamer.phone_line.line_copies`' random phone lines (drawn as the variant's
  training lines were, not the benchmark's channel, which a server cannot know), each
  copy embedded by the variant, the mean re-normalised.
- ``variant, wideband + line-copy voiceprint``: the two voiceprints above added and
  re-normalised (one vector per person, as a per-channel index would hold).
- ``variant, mean of both distances``: the probe's mean distance to the wideband and to
  the line-copy voiceprint (two searches).

Reported: closed-set top-1, true accepts / false accepts (leave-own-out: nearest other
enrolled person; never-enrolled voices) at 1.0 and 1.1, the largest threshold (0.01
grid) that keeps false accepts (both kinds pooled) at or under 1 % and the true accepts
there, and the EER (``streamer.evaluation``).
Prints a table and writes ``OUT/narrowband-HALF.json``. ``--small`` (CI): a few people.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import heldout
import numpy as np

from streamer import phone_line
from streamer.config import load_config
from streamer.embedder import Embedder
from streamer.evaluation import eer, largest_threshold_at_far
from streamer.phone_line import line_voiceprint
from streamer.segmenter import find_speech
from streamer.stream_embedder import StreamEmbedder

MIN_SPEECH_S = 1.0
THRESHOLDS = (1.0, 1.1)
TARGET_FAR = 0.01


class Embeddings:
    """Wideband and telephone-band embeddings of one half's people and impostors."""

    def __init__(self, people: list[dict[str, Any]], impostors_tel: list[np.ndarray],
                 impostors_variant: list[np.ndarray]) -> None:
        self.people = people
        self.impostors_tel = impostors_tel
        self.impostors_variant = impostors_variant

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(wideband, telephone) embeddings of the same recordings, row for row."""
        wide, tel = [], []
        for p in self.people:
            for w, t in [(p["enrol_wide"], p["enrol_tel"]), *zip(p["tests_wide"], p["tests_tel"])]:
                if w is not None and t is not None:
                    wide.append(w)
                    tel.append(t)
        return np.stack(wide), np.stack(tel)


def embed_half(speech: Path, half: str, small: bool, emb: Embedder,
               variant: StreamEmbedder) -> Embeddings:
    """Embed one half's enrolments and utterances wideband and through the telephone
    (with the model, and the telephone ones also with its telephone-line ``variant``)."""
    cfg = load_config(None)

    def embed(x: np.ndarray, model: Embedder | StreamEmbedder = emb) -> np.ndarray | None:
        spans = find_speech(x, cfg.vad)
        if not spans:
            return None
        s = np.concatenate([x[a:b] for a, b in spans])
        return model.embed(s) if len(s) >= MIN_SPEECH_S * 16000 else None

    def tel(x: np.ndarray, key: str) -> np.ndarray:
        # 16-bit samples, as a server receives them (the quantisation noise above the
        # line's band changes what the model hears there)
        return heldout.acoustic.as_received(heldout.item_audio(x, "telephone", key))

    def line_copies(p: heldout.Person) -> np.ndarray | None:
        # as the server makes it: the copies of the enrolment's speech, the variant
        spans = find_speech(p.enrol, cfg.vad)
        if not spans:
            return None
        speech = np.concatenate([p.enrol[a:b] for a, b in spans])
        return line_voiceprint([variant.embed(c) for c in phone_line.line_copies(speech)])

    people = []
    for p in heldout.load_people(speech, half, small):
        people.append({
            "name": p.name,
            "enrol_wide": embed(p.enrol),
            "enrol_tel": embed(tel(p.enrol, "narrowband-enrol:" + p.name)),
            "enrol_copies": line_copies(p),
            "tests_wide": [embed(x) for x in p.items],
            "tests_tel": [embed(tel(x, k)) for x, k in zip(p.items, p.item_keys, strict=True)],
            "tests_variant": [embed(tel(x, k), variant)
                              for x, k in zip(p.items, p.item_keys, strict=True)],
        })
    heard = [tel(x, "imp:" + k) for k, x in heldout.load_impostors(speech, half, small)]
    return Embeddings(people, [v for v in map(embed, heard) if v is not None],
                      [v for x in heard for v in [embed(x, variant)] if v is not None])


def unit(v: np.ndarray) -> np.ndarray:
    out: np.ndarray = v / np.linalg.norm(v, axis=-1, keepdims=True)
    return out


def channel_shift(other: Embeddings) -> Callable[[np.ndarray], np.ndarray]:
    wide, tel = other.pairs()
    shift = wide.mean(axis=0) - tel.mean(axis=0)
    return lambda t: unit(t + shift)


def channel_standardise(other: Embeddings) -> Callable[[np.ndarray], np.ndarray]:
    wide, tel = other.pairs()
    mw, sw, mt, st = wide.mean(0), wide.std(0), tel.mean(0), tel.std(0)
    return lambda t: unit((t - mt) / st * sw + mw)


def score(voiceprints: np.ndarray | Callable[[np.ndarray], np.ndarray],
          probes: Sequence[tuple[int, np.ndarray]],
          impostors: Sequence[np.ndarray]) -> dict[str, Any]:
    """Closed and open set figures of ``probes`` (person index, embedding) against
    ``voiceprints`` (rows, or a function giving a probe's distance to each person), with
    never-enrolled ``impostors``."""
    if isinstance(voiceprints, np.ndarray):
        rows = voiceprints

        def distances(q: np.ndarray) -> np.ndarray:
            out: np.ndarray = np.linalg.norm(rows - q, axis=1)
            return out
    else:
        distances = voiceprints
    genuine, own_out, top = [], [], 0
    for i, q in probes:
        d = distances(q)
        genuine.append(float(d[i]))
        own_out.append(float(np.delete(d, i).min()))
        top += int(np.argmin(d) == i)
    never = [float(distances(q).min()) for q in impostors]
    g, lo, nv = np.array(genuine), np.array(own_out), np.array(never)
    pooled = np.concatenate([lo, nv])
    th = largest_threshold_at_far(pooled, TARGET_FAR) or 0.0
    equal_error, _ = eer(g, pooled)
    return {
        "probes": len(g), "top1": top / len(g), "genuine_p50": float(np.median(g)),
        "at": {str(t): {"true_accepts": float(np.mean(g <= t)),
                        "false_accepts_leave_own_out": float(np.mean(lo <= t)),
                        "false_accepts_never_enrolled": float(np.mean(nv <= t))}
               for t in THRESHOLDS},
        "threshold_at_1pct": th, "true_accepts_at_1pct": float(np.mean(g <= th)),
        "eer": equal_error,
    }


def study(half: Embeddings, other: Embeddings) -> dict[str, dict[str, Any]]:
    people = [p for p in half.people if all(p[k] is not None for k in (
        "enrol_wide", "enrol_tel", "enrol_copies"))]
    wide = np.stack([p["enrol_wide"] for p in people])
    narrow = np.stack([p["enrol_tel"] for p in people])
    copies = np.stack([p["enrol_copies"] for p in people])
    probes = [(i, t) for i, p in enumerate(people) for t in p["tests_tel"] if t is not None]
    heard = [(i, t) for i, p in enumerate(people) for t in p["tests_variant"] if t is not None]
    shift, standardise = channel_shift(other), channel_standardise(other)
    return {
        "wideband voiceprint": score(wide, probes, half.impostors_tel),
        "channel shift": score(wide, [(i, shift(t)) for i, t in probes],
                               [shift(t) for t in half.impostors_tel]),
        "channel shift + scale": score(wide, [(i, standardise(t)) for i, t in probes],
                                       [standardise(t) for t in half.impostors_tel]),
        "narrowband voiceprint": score(narrow, probes, half.impostors_tel),
        "telephone variant": score(wide, heard, half.impostors_variant),
        "variant, line-copy voiceprint": score(copies, heard, half.impostors_variant),
        "variant, wideband + line-copy voiceprint": score(unit(wide + copies), heard,
                                                          half.impostors_variant),
        "variant, mean of both distances": score(
            lambda q: (np.linalg.norm(wide - q, axis=1) + np.linalg.norm(copies - q, axis=1)) / 2,
            heard, half.impostors_variant),
    }


def print_table(rows: dict[str, dict[str, Any]], half: str) -> None:
    print(f"\n== telephone-band probes, half '{half}' "
          f"({next(iter(rows.values()))['probes']} probes)")
    print("| voiceprint | top-1 | genuine p50 | TA / FA own-out / FA never @1.0 | same @1.1 "
          "| threshold at 1 % FA | TA there | EER |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        cells = [" / ".join(f"{100 * r['at'][str(t)][k]:.1f} %" for k in (
            "true_accepts", "false_accepts_leave_own_out", "false_accepts_never_enrolled"))
            for t in THRESHOLDS]
        print(f"| {name} | {100 * r['top1']:.1f} % | {r['genuine_p50']:.3f} | {cells[0]} | "
              f"{cells[1]} | {r['threshold_at_1pct']:.3f} | "
              f"{100 * r['true_accepts_at_1pct']:.1f} % | {100 * r['eer']:.1f} % |")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--half", choices=("test", "tune"), default="test")
    ap.add_argument("--small", action="store_true", help="CI: a few people, well under a minute")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    ap.add_argument("--speech", type=Path, default=REPO.parent / "shared" / "speech")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    emb = Embedder(REPO / "models" / "campplus.onnx")
    emb.load()
    variant = StreamEmbedder(emb, "telephone")
    variant.load()
    other_name = "tune" if args.half == "test" else "test"
    half = embed_half(args.speech, args.half, args.small, emb, variant)
    other = embed_half(args.speech, other_name, args.small, emb, variant)
    rows = study(half, other)
    print_table(rows, args.half)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"narrowband-{args.half}{'-small' if args.small else ''}.json"
    path.write_text(json.dumps({"half": args.half, "channel_fitted_on": other_name,
                                "small": args.small, "rows": rows,
                                "seconds": round(time.monotonic() - t0, 1)}, indent=1))
    print(f"\nwrote {path} ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
