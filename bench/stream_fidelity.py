"""Stream fidelity: how far a live stream's pooled embedding of a turn is from one pass.

    python bench/stream_fidelity.py [--half tune|test] [--conditions clean,room,telephone]
                                    [--contexts 0.5,1.0,2.0] [--small] [--out bench/out]

A live stream (:mod:`streamer.session`) runs each piece of a turn through the model's
frames graph once: the first piece ends ``segment.first_provisional_s`` after the turn's
start, the next every ``segment.hop_s``, the last (the final's tail) at its end, and each
piece is seen with ``segment.context_s`` of audio before it. A turn's embedding is the
head of all its pieces' pooled frames. ``identify`` instead embeds a request in one pass.
The two differ: CAM++'s context-aware layers average over their whole input, so a frame
computed from a 1 s piece is not the frame of the whole turn. This study measures by
how much, and what it costs, per condition of ``bench/conditions.py``:

* people of one half of ``shared/speech`` (``bench/heldout.py``'s people, split by
  speaker) enrol close-talk: their voiceprint is the model's one-pass embedding of their
  enrolment speech (top-level VAD); in ``telephone`` the line voiceprint a phone room
  searches (:mod:`streamer.phone_line`);
* each test utterance is heard in the condition and its speech found with the VAD of
  the condition's room profile (``clean``: the top-level settings, ``room``: ``far``,
  ``telephone``: ``phone``), then embedded with the profile's channel (the model or its
  far / telephone-line variant) in one pass, and pooled piece by piece as above with
  each ``--contexts`` value (default: the profile's ``context_s``, 1.0 and 2.0 s).

Reported per row: the cosine between the pooled and the one-pass embedding (median, 5th
percentile), the median distance to the speaker's own voiceprint, closed-set top-1, true
accepts (the speaker nearest and within the profile's threshold), named wrong (another
person nearest and within it) and leave-own-out false accepts (another person within it
once the speaker's own voiceprint is left out). ``segment.final_whole_pass`` (on in the
far and phone profiles) makes every final the one-pass row; with ``segment.final_agree``
(on in both) it keeps its name only when the pieces (with the profile's ``context_s``)
put that person nearest too: the row "one pass, pieces agree" (accepts only; needs that
context among ``--contexts``). Prints a table and writes
``OUT/stream_fidelity-HALF.json``; ``--small`` (CI): a few people.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import heldout
import numpy as np

from streamer import phone_line
from streamer.config import Config, load_config
from streamer.embedder import Embedder
from streamer.identify import Decision, agree, decide
from streamer.pooling import Stats, total
from streamer.registry.replica import Candidate
from streamer.room_profiles import PRESETS, RoomProfile, profile_config
from streamer.segmenter import extract_speech
from streamer.stream_embedder import StreamEmbedder
from streamer.units import seconds_to_samples

#: The room profile each condition's rooms use in ``bench/heldout.py`` (None: top level).
PROFILE_OF = {"clean": None, "room": "far", "telephone": "phone"}
#: Utterances with less speech than this are left out (``match.min_request_speech_s``).
MIN_SPEECH_S = 1.0


def condition_config(base: Config, condition: str) -> Config:
    """The configuration a room of ``condition`` streams with (its profile applied)."""
    preset = PROFILE_OF[condition]
    if preset is None:
        return base
    return profile_config(base, RoomProfile(f"{condition}-*", PRESETS[preset], preset))


def piece_bounds(n: int, cfg: Config) -> list[tuple[int, int]]:
    """The pieces a live stream cuts ``n`` samples of one turn into: ``(start, end)``."""
    seg = cfg.segment
    first, hop = seconds_to_samples(seg.first_provisional_s), seconds_to_samples(seg.hop_s)
    cuts = [0, min(n, first)]
    while cuts[-1] < n:
        cuts.append(min(n, cuts[-1] + hop))
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


def pooled(embedder: StreamEmbedder, x: np.ndarray, bounds: list[tuple[int, int]],
           context: int) -> np.ndarray:
    """The head of ``x``'s pieces pooled, each seen with ``context`` samples before it."""
    parts: list[Stats] = [embedder.stats(x[max(0, a - context):b], b - a) for a, b in bounds]
    stats = total(parts)
    assert stats is not None
    return embedder.head(stats)


def agreed(one: np.ndarray, two: np.ndarray, threshold: float) -> int | None:
    """Whom :func:`streamer.identify.agree` names (the server's own rule) from the one
    pass's (``one``) and the pieces' (``two``) distances to every voiceprint, each decided
    at ``threshold`` (no gallery margin: the halves are small); None for nobody."""

    def decided(d: np.ndarray) -> Decision:
        return decide([Candidate(str(i), str(i), float(d[i])) for i in np.argsort(d)],
                      threshold)

    named = agree(decided(one), decided(two)).person
    return None if named is None else int(named.id)


def study(half: str, conditions: list[str], contexts: list[float] | None, small: bool,
          speech_dir: Path) -> dict[str, Any]:
    base = load_config(REPO / "config.yaml")
    model = Embedder(REPO / "models" / "campplus.onnx")
    model.load()
    people = heldout.load_people(speech_dir, half, small)
    wideband = StreamEmbedder(model)
    wideband.load()
    out: dict[str, Any] = {}
    for condition in conditions:
        cfg = condition_config(base, condition)
        channel = cfg.match.channel
        embedder = wideband
        if channel != "wideband":
            embedder = StreamEmbedder(model, channel)
            embedder.load()
        prints = []
        for p in people:
            enrol = extract_speech(p.enrol, base.vad)
            if channel == "telephone":
                prints.append(phone_line.line_voiceprint(
                    [embedder.embed(c) for c in phone_line.line_copies(enrol)]))
            else:
                prints.append(model.embed(enrol))
        voiceprints = np.stack(prints)
        ctx = contexts or sorted({cfg.segment.context_s, 1.0, 2.0})
        methods = ["one pass"] + [f"pieces, context {c:g} s" for c in ctx]
        own: dict[str, list[float]] = {m: [] for m in methods}
        other: dict[str, list[float]] = {m: [] for m in methods}
        cosine: dict[str, list[float]] = {m: [] for m in methods[1:]}
        # segment.final_agree: the one pass and the profile's pieces (its own context)
        agreeing = f"pieces, context {cfg.segment.context_s:g} s"
        agree_rows: list[tuple[bool, bool, bool]] = []  # named right, wrong; stranger named
        for k, p in enumerate(people):
            for x, key in zip(p.items, p.item_keys):
                s = extract_speech(heldout.item_audio(x, condition, key), cfg.vad)
                if len(s) < seconds_to_samples(MIN_SPEECH_S):
                    continue
                whole = embedder.embed(s)
                vectors = {"one pass": whole}
                bounds = piece_bounds(len(s), cfg)
                for c, m in zip(ctx, methods[1:]):
                    vectors[m] = pooled(embedder, s, bounds, seconds_to_samples(c))
                    cosine[m].append(float(vectors[m] @ whole))
                dists = {m: np.linalg.norm(voiceprints - v, axis=1) for m, v in vectors.items()}
                for m, d in dists.items():
                    own[m].append(float(d[k]))
                    other[m].append(float(np.min(np.delete(d, k))))
                if agreeing in dists:
                    one, two = dists["one pass"], dists[agreeing]
                    left = np.delete(one, k), np.delete(two, k)
                    named = agreed(one, two, cfg.match.max_distance)
                    agree_rows.append((named == k, named not in (None, k),
                                       agreed(*left, cfg.match.max_distance) is not None))
        threshold = cfg.match.max_distance
        rows = {}
        for m in methods:
            o, n = np.array(own[m]), np.array(other[m])
            rows[m] = {
                "items": len(o),
                "own_distance_p50": round(float(np.median(o)), 4) if len(o) else None,
                "top1": round(float(np.mean(o < n)), 4) if len(o) else None,
                "true_accepts": round(float(np.mean((o <= threshold) & (o < n))), 4)
                if len(o) else None,
                "named_wrong": round(float(np.mean((n <= threshold) & (n < o))), 4)
                if len(o) else None,
                "leave_own_out_false_accepts": round(float(np.mean(n <= threshold)), 4)
                if len(o) else None,
            }
            if m in cosine and cosine[m]:
                rows[m]["cosine_p50"] = round(float(np.median(cosine[m])), 4)
                rows[m]["cosine_p5"] = round(float(np.percentile(cosine[m], 5)), 4)
        if agree_rows:
            right, wrong, stranger = np.array(agree_rows).T
            rows["one pass, pieces agree"] = {
                "items": len(agree_rows), "true_accepts": round(float(np.mean(right)), 4),
                "named_wrong": round(float(np.mean(wrong)), 4),
                "leave_own_out_false_accepts": round(float(np.mean(stranger)), 4)}
        out[condition] = {"profile": PROFILE_OF[condition], "channel": channel,
                          "threshold": threshold, "rows": rows}
    return out


def print_table(result: dict[str, Any], half: str) -> None:
    print(f"\n== stream fidelity, half '{half}': pooled pieces against one pass")
    print(f"{'condition':10} {'embedding':24} {'items':>5} {'cos p50':>7} {'cos p5':>7} "
          f"{'own p50':>7} {'top1':>6} {'TA':>6} {'wrong':>6} {'FA loo':>6}  threshold")
    for condition, c in result.items():
        for m, r in c["rows"].items():
            if "top1" not in r:  # the agreement rule: accepts only
                print(f"{condition:10} {m:24} {r['items']:5} {'':7} {'':7} {'':7} {'':6} "
                      f"{heldout.pct(r['true_accepts'])} {heldout.pct(r['named_wrong'])} "
                      f"{heldout.pct(r['leave_own_out_false_accepts'])}  {c['threshold']}")
                continue
            print(f"{condition:10} {m:24} {r['items']:5} {r.get('cosine_p50', 1.0):7.3f} "
                  f"{r.get('cosine_p5', 1.0):7.3f} {r['own_distance_p50'] or 0:7.3f} "
                  f"{heldout.pct(r['top1'])} {heldout.pct(r['true_accepts'])} "
                  f"{heldout.pct(r['named_wrong'])} "
                  f"{heldout.pct(r['leave_own_out_false_accepts'])}  {c['threshold']}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--half", choices=("test", "tune"), default="tune")
    ap.add_argument("--conditions", default="clean,room,telephone",
                    help="comma-separated, from: " + ", ".join(PROFILE_OF))
    ap.add_argument("--contexts", default=None, metavar="S,S,...",
                    help="seconds of context before each piece (default: the profile's "
                         "context_s, 1.0 and 2.0)")
    ap.add_argument("--small", action="store_true", help="CI: a few people")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    ap.add_argument("--speech", type=Path, default=REPO.parent / "shared" / "speech")
    args = ap.parse_args(argv)
    conditions = [c for c in args.conditions.split(",") if c]
    unknown = [c for c in conditions if c not in PROFILE_OF]
    if unknown:
        ap.error(f"unknown condition(s) {unknown}; known: {list(PROFILE_OF)}")
    contexts = None if args.contexts is None else [float(c) for c in args.contexts.split(",")]
    if contexts is not None and any(c < 0 for c in contexts):
        ap.error("--contexts must be seconds >= 0")
    t0 = time.monotonic()
    result = study(args.half, conditions, contexts, args.small, args.speech)
    print_table(result, args.half)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"stream_fidelity-{args.half}{'-small' if args.small else ''}.json"
    path.write_text(json.dumps({"half": args.half, "small": args.small, "conditions": result,
                                "seconds": round(time.monotonic() - t0, 1)}, indent=1) + "\n")
    print(f"\nwrote {path} ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
