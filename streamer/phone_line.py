"""Copies of enrolment speech as phone lines would deliver it (pure; numpy only).

A room whose audio arrives through a phone line (``match.channel: telephone``) embeds its
speech with the model's telephone-line variant. Compared with a person's wideband
voiceprint, such a probe is a phone-line voice against a desk voice; compared with a
voiceprint made of the same person's enrolment speech passed through phone lines and
embedded by the same variant, it is like against like (``bench/narrowband.py``, test
half: true accepts at 1 % false accepts 80 -> 91 %, EER 7.5 -> 4.3 %). The server cannot
know which line a caller will use, so each copy goes through a different random line,
drawn as the variant's training lines were drawn (``models/train_telephone.py``): a
band-pass of random edges (200-400 Hz to 3000-3600 Hz) and slope, a random level, pink
noise 10-30 dB under the speech, 8 kHz sampling, mostly 8-bit mu-law, 16-bit samples.

Call :func:`line_copies` on the speech of an enrolment (the same speech its voiceprint is
made of; it never raises for finite audio), embed each copy with the variant and make
the line voiceprint with :func:`line_voiceprint`. The draw is seeded by the audio itself, so
the same enrolment always gives the same copies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

__all__ = ["LINE_COPIES", "line_copies", "line_voiceprint", "phone_line"]

SAMPLE_RATE = 16000
#: Copies per enrolment (each through its own random line).
LINE_COPIES = 3


def _band(n: int, low_hz: float, high_hz: float, order: int) -> np.ndarray:
    """Gain per rfft bin of an ``order``-th order Butterworth band-pass applied forwards
    and backwards (zero phase: the squared magnitude)."""
    f = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 1e-3)
    high = 1.0 / (1.0 + (f / high_hz) ** (2 * order))
    low = 1.0 / (1.0 + (low_hz / f) ** (2 * order))
    gain: np.ndarray = high * low
    return gain


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    spectrum = (rng.standard_normal(len(f)) + 1j * rng.standard_normal(len(f))) / np.sqrt(f)
    out: np.ndarray = np.fft.irfft(spectrum, n)
    return out


def _mu_law(y: np.ndarray) -> np.ndarray:
    """``y`` (within full scale) coded to 8-bit mu-law (mu = 255) and decoded again."""
    code = np.round((np.sign(y) * np.log1p(255 * np.abs(y)) / np.log1p(255) + 1) * 127.5)
    c = code / 127.5 - 1
    out: np.ndarray = np.sign(c) * np.expm1(np.abs(c) * np.log1p(255)) / 255
    return out


def phone_line(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``x`` (16 kHz float PCM) through one random phone line drawn from ``rng``: float32
    16-bit samples of the same length."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 2:
        return np.zeros(n, np.float32)
    low, high = rng.uniform(200, 400), rng.uniform(3000, 3600)
    order = int(rng.choice([4, 6, 8]))
    y = np.fft.irfft(np.fft.rfft(x) * _band(n, low, high, order), n)
    y = y * 10 ** (rng.uniform(-32, -20) / 20) / (np.sqrt(np.mean(y ** 2)) + 1e-9)
    noise = _pink(n, rng)
    snr_db = rng.uniform(10, 30)
    y = y + noise * np.sqrt(np.mean(y ** 2) / (np.mean(noise ** 2) + 1e-30) / 10 ** (snr_db / 10))
    # 8 kHz sampling: nothing of the line is above 3.6 kHz, so taking every other sample
    # of the band-limited signal and holding it is the line's sampling (the band-pass
    # already removed what would alias); mu-law codes those 8 kHz samples
    narrow = y[::2]
    if rng.random() < 0.7:
        narrow = _mu_law(np.clip(narrow, -1.0, 1.0))
    wide = np.zeros(n)
    wide[::2] = narrow * 2.0  # back to 16 kHz: zeros between, then the line's band again
    y = np.fft.irfft(np.fft.rfft(wide) * (np.fft.rfftfreq(n, 1 / SAMPLE_RATE) < 4000), n)
    if rng.random() < 0.5:  # a bridge's own noise floor or dither, above the band too
        y = y + rng.standard_normal(n) * 10 ** (rng.uniform(-90, -70) / 20)
    return (np.round(np.clip(y, -1, 1) * 32767) / 32768).astype(np.float32)


def line_copies(speech: np.ndarray, copies: int = LINE_COPIES) -> list[np.ndarray]:
    """``copies`` versions of ``speech`` through as many random phone lines, seeded by the
    audio's content (the same speech always gives the same copies)."""
    samples = np.ascontiguousarray(np.asarray(speech, dtype=np.float32))
    seed = int.from_bytes(hashlib.sha256(samples.tobytes()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    return [phone_line(samples, rng) for _ in range(copies)]


def line_voiceprint(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """The line voiceprint from the variant's embeddings of the line copies: their mean,
    re-normalised. Raises :class:`ValueError` for no vectors or vectors that cancel out."""
    if not len(vectors):
        raise ValueError("a line voiceprint needs at least one embedded copy")
    mean = np.mean(np.asarray(vectors, dtype=np.float64), axis=0)
    norm = float(np.linalg.norm(mean))
    if not np.isfinite(norm) or norm < 1e-9:
        raise ValueError("the copies' embeddings cancel out")
    return (mean / norm).astype(np.float32)
