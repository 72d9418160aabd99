"""Measure an embedding model on the real speech in ``../shared/speech``; print the card's figures.

For each set: all same-speaker and different-speaker pairs of whole files, their
``distance`` (L2 between unit vectors, 0..2), the equal error rate (EER) with its
threshold, and leave-one-out nearest-neighbour speaker identification. Then an open-set
check (never-enrolled LibriSpeech voices against the 10 enrolled test-other speakers)
and speed with one onnxruntime thread.

Usage (from the repository root)::

    OPENBLAS_NUM_THREADS=1 python models/measure.py [--model models/campplus.onnx]
        [--speech ../shared/speech]

Needs numpy, soundfile and onnxruntime (through ``streamer.embedder``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamer.embedder import Embedder  # noqa: E402

SETS = {
    "librispeech_testother_10spk": "librispeech_testother_10spk",
    "commonvoice_fa": "commonvoice_fa",
    "ami segments": "ami_pyannote_diarization/segments",
}


def read(path: Path) -> np.ndarray:
    pcm, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if rate != 16000:
        raise SystemExit(f"{path}: {rate} Hz, expected 16000")
    return pcm.mean(axis=1)


def load_set(folder: Path) -> tuple[list[str], list[np.ndarray]]:
    """Files under ``folder/SPEAKER/*.flac`` in sorted order, with their speaker labels."""
    speakers, clips = [], []
    for path in sorted(folder.glob("*/*.flac")):
        speakers.append(path.parent.name)
        clips.append(read(path))
    return speakers, clips


def pair_distances(emb: np.ndarray, speakers: list[str]) -> tuple[np.ndarray, np.ndarray]:
    labels = np.array(speakers)
    dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * emb @ emb.T))
    iu = np.triu_indices(len(labels), k=1)
    same = labels[iu[0]] == labels[iu[1]]
    d = dist[iu]
    return d[same], d[~same]


def eer(same: np.ndarray, diff: np.ndarray) -> tuple[float, float]:
    """Equal error rate and its threshold (accept when distance <= threshold)."""
    best = (2.0, 0.0, 1.0)
    for t in np.unique(np.concatenate([same, diff])):
        frr = float(np.mean(same > t))
        far = float(np.mean(diff <= t))
        gap = abs(frr - far)
        if gap < best[0]:
            best = (gap, t, (frr + far) / 2)
    return best[2], float(best[1])


def nn_accuracy(emb: np.ndarray, speakers: list[str]) -> float:
    labels = np.array(speakers)
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    return float(np.mean(labels[np.argmax(sims, axis=1)] == labels))


def pct(x: np.ndarray) -> str:
    p5, p50, p95 = np.percentile(x, [5, 50, 95])
    return f"min {x.min():.3f}  p5 {p5:.3f}  median {p50:.3f}  p95 {p95:.3f}  max {x.max():.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "campplus.onnx")
    parser.add_argument("--speech", type=Path, default=ROOT.parent / "shared" / "speech")
    args = parser.parse_args(argv)

    embedder = Embedder(args.model, threads=1)
    embedder.load()
    print(f"model {args.model.name}  id {embedder.model_id}  dim {embedder.dim}  "
          f"load {embedder.load_time_s:.2f} s (1 thread)")
    print()

    thresholds = {}
    for name, sub in SETS.items():
        speakers, clips = load_set(args.speech / sub)
        seconds = np.array([len(c) / 16000 for c in clips])
        emb = embedder.embed_batch(clips)
        same, diff = pair_distances(emb, speakers)
        rate, thr = eer(same, diff)
        thresholds[name] = thr
        print(f"== {name}: {len(clips)} files, {len(set(speakers))} speakers, "
              f"{seconds.min():.1f}-{seconds.max():.1f} s (median {np.median(seconds):.1f} s)")
        print(f"  same-speaker distance ({len(same)} pairs): {pct(same)}")
        print(f"  diff-speaker distance ({len(diff)} pairs): {pct(diff)}")
        print(f"  EER {100 * rate:.1f} % at distance {thr:.3f}")
        accuracy = 100 * nn_accuracy(emb, speakers)
        print(f"  nearest-neighbour speaker id (leave one out): {accuracy:.1f} %")
        print()

    # Open set: enrol each test-other speaker on its first two files (mean of unit vectors,
    # renormalised), try every never-enrolled train-clean voice against all of them.
    speakers, clips = load_set(args.speech / "librispeech_testother_10spk")
    emb = embedder.embed_batch(clips)
    labels = np.array(speakers)
    centroids = []
    for spk in sorted(set(speakers)):
        v = emb[np.flatnonzero(labels == spk)[:2]].mean(axis=0)
        centroids.append(v / np.linalg.norm(v))
    cent = np.stack(centroids)
    _, imp_clips = load_set(args.speech / "librispeech_trainclean100_251spk_1utt")
    imp = embedder.embed_batch(imp_clips)
    nearest = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * np.max(imp @ cent.T, axis=1)))
    thr = thresholds["librispeech_testother_10spk"]
    print(f"== open set: {len(imp_clips)} never-enrolled LibriSpeech voices vs 10 enrolled "
          f"(2 files each)")
    print(f"  distance to nearest enrolled centroid: {pct(nearest)}")
    for t in (thr, 1.0, 1.1, 1.2):
        print(f"  false accepts at distance <= {t:.3f}: {100 * np.mean(nearest <= t):.1f} %")
    print()

    print("== speed, 1 onnxruntime thread, one clip per run (median of 20 runs)")
    rng = np.random.default_rng(0)
    for secs in (1.0, 1.6, 3.0, 10.0):
        x = (0.1 * rng.standard_normal(int(secs * 16000))).astype(np.float32)
        embedder.embed(x)
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            embedder.embed(x)
            times.append(time.perf_counter() - t0)
        ms = 1000 * float(np.median(times))
        print(f"  {secs:4.1f} s of audio: {ms:6.1f} ms  ({ms / secs:5.1f} ms per second of audio, "
              f"real-time factor {ms / secs / 1000:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
