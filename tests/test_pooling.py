"""streamer.pooling: pooled frame statistics add up to the statistics of all the frames."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.pooling import STD_OF_ONE_FRAME, Stats, total


def frames(seed: int, t: int, c: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(c, t))


@given(st.lists(st.integers(1, 40), min_size=1, max_size=6), st.integers(0, 10**6))
def test_pieces_pool_like_the_whole(lengths: list[int], seed: int) -> None:
    whole = frames(seed, sum(lengths))
    cuts = np.cumsum([0, *lengths])
    parts = [Stats.of_frames(whole[:, a:b]) for a, b in zip(cuts, cuts[1:])]
    pooled = total(parts)
    assert pooled is not None and pooled.n == whole.shape[1]
    got = pooled.mean_std()
    std = whole.std(axis=1, ddof=1) if whole.shape[1] > 1 else np.full(5, STD_OF_ONE_FRAME)
    np.testing.assert_allclose(got, np.concatenate([whole.mean(axis=1), std]), rtol=1e-5, atol=1e-6)
    assert got.dtype == np.float32


def test_one_frame_uses_the_model_s_fixed_std() -> None:
    s = Stats.of_frames(np.array([[2.0], [3.0]]))
    np.testing.assert_allclose(s.mean_std(), [2.0, 3.0, STD_OF_ONE_FRAME, STD_OF_ONE_FRAME])


def test_a_vector_repeated() -> None:
    s = Stats.of_vector(np.array([1.0, -2.0]), weight=4)
    assert s.n == 4
    np.testing.assert_allclose(s.mean(), [1.0, -2.0])
    np.testing.assert_allclose(s.mean_std(), [1.0, -2.0, 0.0, 0.0], atol=1e-6)


def test_errors() -> None:
    with pytest.raises(ValueError, match="channels, time"):
        Stats.of_frames(np.zeros(3))
    with pytest.raises(ValueError, match="cannot add"):
        Stats.of_frames(np.zeros((2, 1))) + Stats.of_frames(np.zeros((3, 1)))
    with pytest.raises(ValueError, match="no frames"):
        Stats(np.zeros(2), np.zeros(2), 0).mean()
    assert total([]) is None
