"""Unit conversions: the only place where seconds, samples, ``distance`` and ``l2sq`` meet.

``distance`` is the protocol's unit: the Euclidean (L2) distance between unit-length
embeddings, 0 (identical) .. 2 (opposite), sqrt(2) for unrelated vectors. USearch's
``l2sq`` metric returns its square. Cosine similarity ``cos`` relates as
``distance = sqrt(2 - 2 cos)``.
"""

from __future__ import annotations

import math

__all__ = [
    "MODEL_SAMPLE_RATE",
    "cosine_to_distance",
    "distance_to_l2sq",
    "l2sq_to_distance",
    "samples_to_seconds",
    "seconds_to_samples",
]

#: Sample rate (Hz) of all audio inside the server and of the model's input.
MODEL_SAMPLE_RATE = 16000


def seconds_to_samples(seconds: float, sample_rate: int = MODEL_SAMPLE_RATE) -> int:
    """Return the whole number of samples in ``seconds`` (rounded to nearest)."""
    return int(round(seconds * sample_rate))


def samples_to_seconds(samples: int, sample_rate: int = MODEL_SAMPLE_RATE) -> float:
    """Return the duration in seconds of ``samples`` samples."""
    return samples / sample_rate


def l2sq_to_distance(l2sq: float) -> float:
    """Convert USearch's squared L2 value to the protocol's ``distance``.

    Tiny negative values from float rounding are clamped to 0.
    """
    return math.sqrt(max(0.0, float(l2sq)))


def distance_to_l2sq(distance: float) -> float:
    """Convert a protocol ``distance`` to USearch's squared L2 value."""
    return float(distance) * float(distance)


def cosine_to_distance(cosine: float) -> float:
    """Convert a cosine similarity between unit vectors to ``distance``."""
    return math.sqrt(max(0.0, 2.0 - 2.0 * float(cosine)))
