"""Pooled frame statistics: what a live stream keeps instead of re-embedding its audio.

CAM++ ends in statistics pooling: the embedding is a small head applied to the mean and
standard deviation, over time, of frame-level features. Those are sums, so the features
of consecutive pieces of a segment can be pooled piece by piece and the head run on any
run of pieces (a window, a turn, a whole segment) without passing the audio through the
network again. :class:`Stats` holds the sums for one run of frames and adds up.

Pure (numpy only). Made by :class:`~streamer.stream_embedder.StreamEmbedder`; combined
and turned into embeddings by :class:`~streamer.session.Session`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["STD_OF_ONE_FRAME", "Stats", "total"]

#: The standard deviation CAM++'s pooling uses when there is a single frame.
STD_OF_ONE_FRAME = 1e-2


@dataclass(frozen=True)
class Stats:
    """Per-channel sum and sum of squares of ``n`` frames (float64, shape ``(channels,)``)."""

    total: np.ndarray
    squares: np.ndarray
    n: int

    @classmethod
    def of_frames(cls, frames: np.ndarray) -> Stats:
        """Pool ``frames`` of shape ``(channels, time)``. Raises ``ValueError`` for another rank."""
        f = np.asarray(frames, dtype=np.float64)
        if f.ndim != 2:
            raise ValueError(f"frames must be (channels, time), got shape {f.shape}")
        return cls(f.sum(axis=1), (f * f).sum(axis=1), int(f.shape[1]))

    @classmethod
    def of_vector(cls, vector: np.ndarray, weight: int) -> Stats:
        """``weight`` identical frames equal to ``vector`` (for models without a frame graph)."""
        v = np.asarray(vector, dtype=np.float64)
        return cls(v * weight, v * v * weight, int(weight))

    def __add__(self, other: Stats) -> Stats:
        if self.total.shape != other.total.shape:
            raise ValueError(f"cannot add stats of {self.total.shape} and {other.total.shape} channels")
        return Stats(self.total + other.total, self.squares + other.squares, self.n + other.n)

    def mean(self) -> np.ndarray:
        """Per-channel mean. Raises ``ValueError`` when no frames were pooled."""
        if self.n < 1:
            raise ValueError("no frames pooled")
        return self.total / self.n

    def mean_std(self) -> np.ndarray:
        """Mean then unbiased standard deviation, concatenated (float32 ``(2 * channels,)``),
        exactly as the model's statistics pooling computes them over the same frames."""
        mean = self.mean()
        if self.n == 1:
            std = np.full_like(mean, STD_OF_ONE_FRAME)
        else:
            var = (self.squares - self.n * mean * mean) / (self.n - 1)
            std = np.sqrt(np.maximum(var, 0.0))
        return np.concatenate([mean, std]).astype(np.float32)


def total(parts: list[Stats]) -> Stats | None:
    """The pooled sum of ``parts``, or ``None`` for an empty list."""
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out
