"""Speech detection at low levels and far away: the server's VAD with and without level
normalisation (``vad.normalise``), per acoustic condition.

    python bench/vad_level.py [--half tune|test|all] [--small] [--out bench/out]

For every stitched meeting of the half (the same meetings as ``bench/heldout.py``, with
``LEAD_S`` of the condition's noise alone before the first and after the last turn), the
server's detector and segmenter (:func:`streamer.segmenter.find_speech`, exactly what a
live stream and an enrolment use) are run on the audio each condition's microphone hears:

* **speech covered**: the share of reference speech (each clip's span within 30 dB of its
  loudest frame, measured on the clean clip) inside a detected segment;
* **noise called speech**: the share of the noise-only lead (up to ``PAD_S`` before the
  first turn: onsets are padded) and trail (from ``TAIL_S`` after the last turn, past its
  reverberation) inside a detected segment.

A second table puts close-talk utterances of the half (with ``PAD_S`` of silence around
them) at fixed levels (``LEVELS_DBFS``) and fixed SNRs of room tone plus pink noise
(``SNRS_DB``): the share of each utterance's speech span detected.

Prints one row per condition and setting and writes ``OUT/vad_level-HALF.json``.
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import conditions as acoustic  # noqa: E402
import heldout  # noqa: E402

from streamer.config import load_config  # noqa: E402
from streamer.segmenter import find_speech  # noqa: E402

SAMPLE_RATE = 16000
LEAD_S = 3.0  # noise alone before the first turn and after the last
TAIL_S = 1.0  # reverberation tail after the last turn, not scored
LEVELS_DBFS = (-25.0, -35.0, -40.0, -45.0)
SNRS_DB = (None, 20.0, 10.0)
LEVEL_ITEMS = 40  # utterances per level and SNR (--small: 4)
PAD_S = 0.5  # before the first turn, not scored (the segmenter pads onsets by vad.start_window_ms)


def score(audio: np.ndarray, turns: list[heldout.Turn], noise_spans: list[tuple[int, int]],
          vad_cfg: Any) -> dict[str, int]:
    """Samples of reference speech and of noise alone, and how many of each were detected."""
    detected = np.zeros(len(audio), dtype=bool)
    for a, b in find_speech(audio, vad_cfg):
        detected[a:b] = True
    speech = np.zeros(len(audio), dtype=bool)
    for t in turns:
        speech[int(t.start * SAMPLE_RATE): int(t.end * SAMPLE_RATE)] = True
    noise = np.zeros(len(audio), dtype=bool)
    for a, b in noise_spans:
        noise[a:b] = True
    return {"speech": int(speech.sum()), "speech_hit": int((speech & detected).sum()),
            "noise": int(noise.sum()), "noise_hit": int((noise & detected).sum())}


def level_table(people: list[heldout.Person], settings: dict[str, Any],
                small: bool) -> list[dict[str, Any]]:
    """Close-talk utterances at each level and SNR: speech-span share detected per setting."""
    clips = [x for p in people if p.dataset != heldout.SC for x in p.items]
    clips = clips[:: max(1, len(clips) // (4 if small else LEVEL_ITEMS))][: 4 if small else LEVEL_ITEMS]
    tone = acoustic.room_tone()
    pad = np.zeros(int(PAD_S * SAMPLE_RATE))
    rows = []
    for level in LEVELS_DBFS:
        for snr in SNRS_DB:
            sums = {s: [0, 0] for s in settings}
            for k, x in enumerate(clips):
                x = np.concatenate([pad, x, pad])
                mask = acoustic.active_mask(x)
                rng = acoustic.item_rng(f"level:{k}", f"{level}:{snr}")
                y = x
                if snr is not None:
                    noise = acoustic.noise("pink", len(x), rng) + acoustic.noise("room", len(x), rng, tone)
                    y = acoustic.add_noise(y, noise, snr, mask)
                gain = 10 ** ((level - acoustic.measure_dbfs(y, mask)) / 20)
                y = np.clip(y * gain, -1.0, 1.0).astype(np.float32)  # rare peaks clip
                a, b = np.flatnonzero(mask)[[0, -1]]
                for s, cfg in settings.items():
                    got = sum(max(0, min(e, b) - max(st, a)) for st, e in find_speech(y, cfg))
                    sums[s][0] += b - a
                    sums[s][1] += got
            for s, (total, got) in sums.items():
                rows.append({"level_dbfs": level, "snr_db": snr, "setting": s,
                             "speech_covered": got / total if total else None})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--half", choices=("tune", "test", "all"), default="tune")
    ap.add_argument("--conditions", default="clean,room,telephone")
    ap.add_argument("--small", action="store_true", help="a few meetings (CI)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--speech", type=Path, default=ROOT.parent / "shared" / "speech")
    ap.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    vad = load_config(args.config).vad
    settings = {"normalise off": dataclasses.replace(vad, normalise=False),
                "normalise on": dataclasses.replace(vad, normalise=True)}
    people = heldout.load_people(args.speech, args.half, args.small)
    impostors = heldout.load_impostors(args.speech, args.half, args.small)
    meetings = heldout.build_meetings(people, impostors, args.small)
    lead = int(LEAD_S * SAMPLE_RATE)
    totals: dict[str, dict[str, dict[str, int]]] = {}
    for name in [c for c in args.conditions.split(",") if c]:
        cond = acoustic.CONDITIONS[name]
        sums = {s: {"speech": 0, "speech_hit": 0, "noise": 0, "noise_hit": 0} for s in settings}
        for m in meetings:
            talkers = {s: k for k, s in enumerate(dict.fromkeys(m.speakers))}
            starts = [s + lead for s in m.starts]
            n = max(s + len(c) for s, c in zip(starts, m.clips)) + lead
            try:  # the same room as bench/heldout.py's meeting (same key)
                audio = cond.apply_meeting(m.clips, starts, [talkers[s] for s in m.speakers],
                                           key="meeting:" + m.name, n_samples=n).audio
            except RuntimeError as e:  # talkers that do not fit the drawn room
                print(f"{name} {m.name}: skipped ({e})", file=sys.stderr)
                continue
            turns = [heldout.Turn(t.start + LEAD_S, t.end + LEAD_S, t.speaker) for t in m.turns]
            last = int(turns[-1].end * SAMPLE_RATE)
            noise_spans = [(0, int((turns[0].start - PAD_S) * SAMPLE_RATE)),
                           (last + int(TAIL_S * SAMPLE_RATE), n)]
            for s, cfg in settings.items():
                for k, v in score(audio, turns, noise_spans, cfg).items():
                    sums[s][k] += v
        totals[name] = sums
    rows = []
    print(f"{'condition':<11} {'setting':<14} {'speech covered':>15} {'noise called speech':>20}")
    for name, sums in totals.items():
        for s, v in sums.items():
            covered = v["speech_hit"] / v["speech"] if v["speech"] else None
            false = v["noise_hit"] / v["noise"] if v["noise"] else None
            rows.append({"condition": name, "setting": s, "speech_covered": covered,
                         "noise_called_speech": false, **v})
            print(f"{name:<11} {s:<14} {heldout.pct(covered):>15} {heldout.pct(false):>20}")
    levels = level_table(people, settings, args.small)
    print(f"\n{'level dBFS':>10} {'SNR dB':>7} " + " ".join(f"{s:>14}" for s in settings))
    for k in range(0, len(levels), len(settings)):
        group = levels[k:k + len(settings)]
        snr = "none" if group[0]["snr_db"] is None else f"{group[0]['snr_db']:.0f}"
        print(f"{group[0]['level_dbfs']:>10.0f} {snr:>7} "
              + " ".join(f"{heldout.pct(g['speech_covered']):>14}" for g in group))
    result = {"half": args.half, "small": args.small, "meetings": len(meetings), "rows": rows,
              "levels": levels,
              "vad": dataclasses.asdict(vad), "seconds": round(time.perf_counter() - t0, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"vad_level-{args.half}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{len(meetings)} meetings; wrote {path} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
