"""streamer.units: seconds <-> samples and distance <-> l2sq <-> cosine."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamer.units import (
    MODEL_SAMPLE_RATE,
    cosine_to_distance,
    distance_to_l2sq,
    l2sq_to_distance,
    samples_to_seconds,
    seconds_to_samples,
)


def test_model_rate() -> None:
    assert MODEL_SAMPLE_RATE == 16000


@pytest.mark.parametrize(
    "seconds, rate, samples",
    [(0.0, 16000, 0), (1.0, 16000, 16000), (0.03, 16000, 480), (1.5, 16000, 24000),
     (0.75, 48000, 36000), (1 / 3, 16000, 5333), (0.00003, 16000, 0), (0.00004, 16000, 1)],
)
def test_seconds_to_samples_rounds_to_nearest(seconds: float, rate: int, samples: int) -> None:
    assert seconds_to_samples(seconds, rate) == samples
    assert isinstance(seconds_to_samples(seconds, rate), int)


def test_samples_seconds_round_trip() -> None:
    assert seconds_to_samples(2.5) == 40000
    assert samples_to_seconds(40000) == 2.5
    assert samples_to_seconds(36000, 48000) == 0.75
    for n in (0, 1, 479, 480, 16001, 10**7):
        assert seconds_to_samples(samples_to_seconds(n)) == n
        assert seconds_to_samples(samples_to_seconds(n, 44100), 44100) == n


@pytest.mark.parametrize("distance", [0.0, 0.5, 1.0, math.sqrt(2), 1.9, 2.0])
def test_distance_l2sq_round_trip(distance: float) -> None:
    l2sq = distance_to_l2sq(distance)
    assert l2sq == pytest.approx(distance**2)
    assert l2sq_to_distance(l2sq) == pytest.approx(distance)


def test_l2sq_clamps_rounding_noise() -> None:
    assert l2sq_to_distance(-1e-7) == 0.0
    assert l2sq_to_distance(np.float32(4.0)) == 2.0
    assert isinstance(l2sq_to_distance(np.float32(1.0)), float)


@pytest.mark.parametrize(
    "cosine, distance",
    [(1.0, 0.0), (0.0, math.sqrt(2)), (-1.0, 2.0), (0.5, 1.0), (1.0 + 1e-7, 0.0)],
)
def test_cosine_to_distance(cosine: float, distance: float) -> None:
    assert cosine_to_distance(cosine) == pytest.approx(distance, abs=1e-6)


def test_conversions_agree_on_real_vectors() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.normal(size=(2, 192))
        a /= np.linalg.norm(a)
        b /= np.linalg.norm(b)
        euclid = float(np.linalg.norm(a - b))
        l2sq = float(np.sum((a - b) ** 2))
        assert cosine_to_distance(float(a @ b)) == pytest.approx(euclid)
        assert l2sq_to_distance(l2sq) == pytest.approx(euclid)
        assert distance_to_l2sq(euclid) == pytest.approx(l2sq)
        # l2sq = 2 - 2 cos (style rule 11)
        assert l2sq == pytest.approx(2 - 2 * float(a @ b))
