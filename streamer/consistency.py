"""Enrolment consistency: is the enrolment audio one speaker? Pure (numpy only, no I/O).

An enrolment that holds two voices (someone else answering, a colleague talking over
the recording) makes a voiceprint that matches neither person well. The check cuts the
enrolment's detected speech into consecutive pieces, embeds each piece, and scores how
far each piece is from the others:

1. :func:`split_pieces` (call with the speech spans from
   :func:`streamer.segmenter.find_speech`): ``n = floor(speech / piece_s)`` pieces of
   equal length (each at least ``piece_s``), each with its stretch of the joined speech
   and its time span in the original recording. Fewer than 2 pieces: the check cannot
   run (:func:`check` reports why).
2. The caller embeds each piece's samples (unit vectors).
3. :func:`check` computes each piece's leave-one-out distance (to the re-normalised
   mean of the other pieces), the largest pairwise distance, and decides "one speaker"
   when every leave-one-out distance is ``<= limit``.

All distances are Euclidean between unit vectors (``distance`` in the protocol).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ConsistencyResult",
    "Piece",
    "check",
    "describe_disagreement",
    "leave_one_out_distances",
    "max_pairwise_distance",
    "not_checked",
    "split_pieces",
]


@dataclass(frozen=True)
class Piece:
    """One piece of the enrolment's speech.

    ``speech_start``/``speech_end`` index the joined speech (the output of
    ``extract_speech``); ``start``/``end`` are the samples of the original recording
    where the piece's first and last speech samples lie (a piece may span a pause).
    """

    speech_start: int
    speech_end: int
    start: int
    end: int

    @property
    def samples(self) -> int:
        """Length of the piece in speech samples."""
        return self.speech_end - self.speech_start


@dataclass(frozen=True)
class ConsistencyResult:
    """The outcome of the check; :meth:`to_wire` is ``enrolled.quality.consistency``."""

    checked: bool
    limit: float
    pieces: int = 0
    one_speaker: bool = True
    #: Leave-one-out distance of each piece, in piece order (empty when not checked).
    distances: tuple[float, ...] = ()
    max_distance: float | None = None
    max_pairwise: float | None = None
    #: Index of the piece with the largest leave-one-out distance (None when not checked).
    worst: int | None = None
    #: Why the check did not run (only when ``checked`` is false).
    reason: str | None = None
    spans: tuple[Piece, ...] = field(default=(), repr=False)

    def to_wire(self, sample_rate: int) -> dict[str, Any]:
        """The protocol map: checked, pieces, max_distance, limit, one_speaker (+ reason)."""
        out: dict[str, Any] = {
            "checked": self.checked,
            "pieces": self.pieces,
            "max_distance": None if self.max_distance is None else round(self.max_distance, 4),
            "limit": self.limit,
            "one_speaker": self.one_speaker,
        }
        if self.checked:
            out["max_pairwise_distance"] = round(float(self.max_pairwise or 0.0), 4)
            out["piece_distances"] = [round(d, 4) for d in self.distances]
            out["piece_spans"] = [[round(p.start / sample_rate, 3), round(p.end / sample_rate, 3)]
                                  for p in self.spans]
        else:
            out["reason"] = self.reason
        return out


def split_pieces(spans: Sequence[tuple[int, int]], piece_samples: int) -> list[Piece]:
    """Cut the joined speech of ``spans`` into consecutive pieces of equal length.

    ``spans`` are ``(start, end)`` sample ranges of the recording (``find_speech``),
    in order and not overlapping; their concatenation is the joined speech. Returns
    ``floor(total / piece_samples)`` pieces covering the whole joined speech (each at
    least ``piece_samples`` long; the remainder is spread over them), or ``[]`` when
    there is less than one piece of speech. Raises ``ValueError`` for
    ``piece_samples < 1`` or spans with ``end < start``.
    """
    if piece_samples < 1:
        raise ValueError(f"piece_samples must be >= 1, got {piece_samples}")
    for a, b in spans:
        if b < a:
            raise ValueError(f"span ({a}, {b}) ends before it starts")
    lengths = np.array([b - a for a, b in spans], dtype=np.int64)
    total = int(lengths.sum()) if len(lengths) else 0
    n = total // piece_samples
    if n < 1:
        return []
    # boundaries in joined-speech samples: n equal pieces (the last one takes rounding)
    bounds = [round(i * total / n) for i in range(n + 1)]
    # joined-speech offset of each span's start
    offsets = np.concatenate([[0], np.cumsum(lengths)])

    def to_recording(pos: int, *, is_end: bool) -> int:
        # the recording sample of joined-speech sample ``pos`` (for an end: of pos - 1, + 1)
        p = pos - 1 if is_end else pos
        i = int(np.searchsorted(offsets, p, side="right")) - 1
        i = min(max(i, 0), len(spans) - 1)
        sample = spans[i][0] + (p - int(offsets[i]))
        return sample + 1 if is_end else sample

    return [
        Piece(bounds[i], bounds[i + 1], to_recording(bounds[i], is_end=False),
              to_recording(bounds[i + 1], is_end=True))
        for i in range(n)
    ]


def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be [pieces, dim], got shape {e.shape}")
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    if np.any(norms == 0) or not np.all(np.isfinite(e)):
        raise ValueError("embeddings must be finite and non-zero")
    unit: np.ndarray = e / norms
    return unit


def leave_one_out_distances(embeddings: np.ndarray) -> np.ndarray:
    """Distance of each row to the unit mean of the other rows (``[n]``, ``n >= 2``).

    Rows are re-normalised first. Raises ``ValueError`` for fewer than 2 rows, a
    non-2-D array, zero or non-finite rows. When the other rows cancel out (their mean
    is zero), the distance is sqrt(2) (unrelated).
    """
    e = _unit_rows(embeddings)
    n = e.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 pieces, got {n}")
    total = e.sum(axis=0)
    out = np.empty(n)
    for i in range(n):
        rest = total - e[i]
        norm = np.linalg.norm(rest)
        if norm < 1e-12:
            out[i] = np.sqrt(2.0)
            continue
        out[i] = np.linalg.norm(e[i] - rest / norm)
    return out


def max_pairwise_distance(embeddings: np.ndarray) -> float:
    """The largest distance between two rows (re-normalised); 0 for fewer than 2 rows."""
    e = _unit_rows(embeddings)
    if e.shape[0] < 2:
        return 0.0
    cos = np.clip(e @ e.T, -1.0, 1.0)
    return float(np.sqrt(max(0.0, 2.0 - 2.0 * float(cos.min()))))


def not_checked(limit: float, pieces: int, reason: str) -> ConsistencyResult:
    """A result for a check that did not run (too little speech, or switched off)."""
    return ConsistencyResult(checked=False, limit=limit, pieces=pieces, one_speaker=True,
                             reason=reason)


def check(embeddings: np.ndarray, pieces: Sequence[Piece], limit: float) -> ConsistencyResult:
    """Decide whether the pieces are one speaker: every leave-one-out distance ``<= limit``.

    Call after embedding each piece of :func:`split_pieces` (``embeddings[i]`` is piece
    ``i``). With fewer than 2 pieces the check is not run (``checked`` false, with a
    reason). Raises ``ValueError`` when the number of embeddings and pieces differ or
    the embeddings are malformed (see :func:`leave_one_out_distances`).
    """
    e = np.asarray(embeddings)
    if e.ndim != 2 or e.shape[0] != len(pieces):
        raise ValueError(f"got {e.shape[0] if e.ndim else 0} embeddings for {len(pieces)} pieces")
    if len(pieces) < 2:
        return not_checked(limit, len(pieces),
                           "too little speech to compare two pieces")
    loo = leave_one_out_distances(e)
    worst = int(np.argmax(loo))
    return ConsistencyResult(
        checked=True,
        limit=limit,
        pieces=len(pieces),
        one_speaker=bool(np.all(loo <= limit)),
        distances=tuple(float(d) for d in loo),
        max_distance=float(loo[worst]),
        max_pairwise=max_pairwise_distance(e),
        worst=worst,
        spans=tuple(pieces),
    )


def describe_disagreement(result: ConsistencyResult, sample_rate: int) -> str:
    """One sentence naming the part of the recording that disagrees most, for a person.

    Call only for a checked result that is not one speaker (raises ``ValueError``
    otherwise).
    """
    if not result.checked or result.one_speaker or result.worst is None:
        raise ValueError("describe_disagreement needs a checked result that failed")
    piece = result.spans[result.worst]
    return (
        f"the speech from {piece.start / sample_rate:.1f} s to {piece.end / sample_rate:.1f} s "
        f"sounds like a different person (distance {result.max_distance:.2f}, limit "
        f"{result.limit:.2f}); enrol one speaker at a time"
    )
