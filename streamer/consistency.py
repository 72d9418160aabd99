"""Enrolment consistency: is the enrolment audio one speaker? Pure (numpy only, no I/O).

An enrolment that holds two voices (someone else answering, a colleague talking over
the recording) makes a voiceprint that matches neither person well. The check cuts the
enrolment's detected speech into consecutive pieces, embeds each piece, and looks at
how the pieces agree:

1. :func:`plan` (call with the speech spans from :func:`streamer.segmenter.find_speech`
   and the ``enroll`` config): pieces of ``consistency_piece_s`` seconds, shorter when
   the speech is short so there are ``consistency_min_pieces`` of them (never shorter
   than :data:`MIN_PIECE_S`); :func:`split_pieces` cuts them. Fewer than 2 pieces: the
   check cannot run (the result says why).
2. The caller embeds each piece's samples (unit vectors).
3. :func:`assess` decides, by majority:

   * **two voices**: the pieces fall into two groups of at least 2 pieces each whose
     mean voices are further apart than ``consistency_split_distance`` (the largest
     such distance over every way of cutting the pieces into two groups,
     :func:`split_distance`): refused, there is no single speaker to enrol. With 2 or
     3 pieces no such groups exist, and a piece further than
     ``consistency_max_distance`` from the others refuses instead.
   * **one outlier**: with at least :data:`MIN_PIECES_TO_DROP` pieces, one piece is
     further than
     ``consistency_max_distance`` from the unit mean of the others (its leave-one-out
     distance) but the others agree: that piece is dropped from the voiceprint and the
     enrolment goes ahead with a warning (a cough, a door, a word from someone else).
   * otherwise: one speaker.

All distances are Euclidean between unit vectors (``distance`` in the protocol).
:func:`check` is the older leave-one-out-only decision, kept for callers with a plain
limit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np


class Rules(Protocol):
    """The ``enroll`` settings the check reads (:class:`streamer.config.EnrollConfig`)."""

    consistency_piece_s: float
    consistency_min_pieces: int
    consistency_max_distance: float
    consistency_split_distance: float

__all__ = [
    "MIN_PIECES_TO_DROP",
    "MIN_PIECE_S",
    "ConsistencyResult",
    "Piece",
    "Rules",
    "assess",
    "check",
    "describe_disagreement",
    "describe_dropped",
    "leave_one_out_distances",
    "max_pairwise_distance",
    "not_checked",
    "piece_seconds",
    "plan",
    "split_distance",
    "split_pieces",
]

#: Shortest piece :func:`plan` cuts (seconds of speech): CAM++ is weak on less.
MIN_PIECE_S = 1.0
#: A lone outlier piece is dropped only when at least this many pieces were compared
#: (3 or more agreeing). Measured with ``bench/enrolment.py`` (tune half): dropping
#: the odd one of 3 pieces let 47 % of 4 s + 4 s two-speaker mixes through as "one
#: speaker minus a piece"; from 4 pieces on it refused no single speaker more.
MIN_PIECES_TO_DROP = 4


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
    #: Pieces left out of the voiceprint: a lone outlier among agreeing pieces.
    dropped: tuple[int, ...] = ()
    #: The largest distance between the mean voices of two groups of >= 2 pieces
    #: (:func:`split_distance`; None with fewer than 4 pieces or from :func:`check`).
    split: float | None = None
    #: The limit on ``split`` (None from :func:`check`).
    split_limit: float | None = None
    #: The pieces of the group that sounds like a different person when ``split``
    #: refused (the smaller group; the later one on a tie).
    other_group: tuple[int, ...] = ()
    #: Length of the pieces compared, seconds of speech (None when none were cut).
    piece_s: float | None = None

    def kept(self) -> list[Piece]:
        """The pieces whose speech makes the voiceprint (all but ``dropped``)."""
        return [p for i, p in enumerate(self.spans) if i not in self.dropped]

    def to_wire(self, sample_rate: int) -> dict[str, Any]:
        """The protocol map: checked, pieces, max_distance, limit, one_speaker (+ reason).

        Additions (optional fields): ``piece_s``, ``split_distance`` and ``split_limit``
        (when computed), ``dropped_pieces`` (indices into ``piece_spans``) and
        ``majority`` (how many pieces make the voiceprint).
        """
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
            out["dropped_pieces"] = list(self.dropped)
            out["majority"] = self.pieces - len(self.dropped)
            if self.split is not None:
                out["split_distance"] = round(self.split, 4)
            if self.split_limit is not None:
                out["split_limit"] = self.split_limit
        else:
            out["reason"] = self.reason
        if self.piece_s is not None:
            out["piece_s"] = round(self.piece_s, 3)
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


def split_distance(embeddings: np.ndarray, min_group: int = 2) -> tuple[float, tuple[int, ...]]:
    """The two groups of pieces that sound most unlike: ``(distance, smaller_group)``.

    Every way of cutting the rows into two groups of at least ``min_group`` rows is
    tried (2^(n-1) cuts: the pieces of one enrolment are few); the distance is between
    the two groups' re-normalised mean rows. Returns ``(0.0, ())`` when no cut leaves
    ``min_group`` rows on both sides. ``smaller_group`` lists the rows of the smaller
    group of the farthest cut (the one without row 0 on a tie). Raises ``ValueError``
    for malformed embeddings or more than 16 rows.
    """
    e = _unit_rows(embeddings)
    n = e.shape[0]
    if n > 16:
        raise ValueError(f"split_distance compares at most 16 pieces, got {n}")
    best, best_group = 0.0, ()
    if n < 2 * min_group:
        return best, best_group
    for mask in range(1, 2 ** (n - 1)):  # row n-1 is always on the "b" side
        a = [i for i in range(n) if (mask >> i) & 1]
        b = [i for i in range(n) if not (mask >> i) & 1]
        if len(a) < min_group or len(b) < min_group:
            continue
        ma, mb = e[a].sum(axis=0), e[b].sum(axis=0)
        na, nb = np.linalg.norm(ma), np.linalg.norm(mb)
        d = float(np.sqrt(2.0)) if na < 1e-12 or nb < 1e-12 else float(
            np.linalg.norm(ma / na - mb / nb))
        if d > best:
            small = a if len(a) < len(b) or (len(a) == len(b) and 0 not in a) else b
            best, best_group = d, tuple(small)
    return best, best_group


def piece_seconds(speech_s: float, rules: Rules) -> float:
    """Length of the pieces for ``speech_s`` seconds of speech (see :func:`plan`).

    ``consistency_piece_s``, or shorter so that ``consistency_min_pieces`` pieces fit,
    but never below :data:`MIN_PIECE_S` (nor above ``consistency_piece_s``).
    """
    wanted = speech_s / max(1, rules.consistency_min_pieces)
    return max(MIN_PIECE_S, min(rules.consistency_piece_s, wanted))


def plan(spans: Sequence[tuple[int, int]], rules: Rules, sample_rate: int = 16000
         ) -> list[Piece]:
    """The pieces the check compares: :func:`split_pieces` at :func:`piece_seconds`.

    The piece length is rounded down to a sample, so that ``consistency_min_pieces``
    pieces fit whenever they are at least :data:`MIN_PIECE_S` long (rounded up, a
    length a fraction of a sample too long left one piece out)."""
    total = sum(b - a for a, b in spans)
    seconds = piece_seconds(total / sample_rate, rules)
    return split_pieces(spans, max(1, math.floor(seconds * sample_rate + 1e-9)))


def not_checked(limit: float, pieces: int, reason: str) -> ConsistencyResult:
    """A result for a check that did not run (too little speech, or switched off)."""
    return ConsistencyResult(checked=False, limit=limit, pieces=pieces, one_speaker=True,
                             reason=reason)


def assess(embeddings: np.ndarray, pieces: Sequence[Piece], rules: Rules,
           sample_rate: int = 16000) -> ConsistencyResult:
    """Decide by majority whether the pieces are one speaker (see the module docstring).

    ``embeddings[i]`` is piece ``i`` of :func:`plan`. Refused (``one_speaker`` false)
    when two groups of >= 2 pieces are further apart than ``consistency_split_distance``,
    or when the leave-one-out distances exceed ``consistency_max_distance`` and dropping
    the single worst piece (only with >= :data:`MIN_PIECES_TO_DROP` pieces) does not
    bring the rest within it.
    When dropping that piece does, ``dropped`` names it and the result is one speaker.
    With fewer than 2 pieces the check is not run. Raises ``ValueError`` like
    :func:`check`.
    """
    e = np.asarray(embeddings)
    if e.ndim != 2 or e.shape[0] != len(pieces):
        raise ValueError(f"got {e.shape[0] if e.ndim else 0} embeddings for {len(pieces)} pieces")
    limit = float(rules.consistency_max_distance)
    split_limit = float(rules.consistency_split_distance)
    piece_s = (sum(p.samples for p in pieces) / len(pieces) / sample_rate) if pieces else None
    if len(pieces) < 2:
        return replace(not_checked(limit, len(pieces), "too little speech to compare two pieces"),
                       piece_s=piece_s)
    loo = leave_one_out_distances(e)
    worst = int(np.argmax(loo))
    n = len(pieces)
    split, group = split_distance(e) if n >= 4 else (None, ())
    dropped: tuple[int, ...] = ()
    other: tuple[int, ...] = ()
    if split is not None and split > split_limit:
        one = False
        other = group
    elif bool(np.all(loo <= limit)):
        one = True
    elif (n >= MIN_PIECES_TO_DROP
          and bool(np.all(leave_one_out_distances(np.delete(e, worst, axis=0)) <= limit))):
        one, dropped = True, (worst,)
    else:
        one = False
    return ConsistencyResult(
        checked=True,
        limit=limit,
        pieces=n,
        one_speaker=one,
        distances=tuple(float(d) for d in loo),
        max_distance=float(loo[worst]),
        max_pairwise=max_pairwise_distance(e),
        worst=worst,
        spans=tuple(pieces),
        dropped=dropped,
        split=split,
        split_limit=split_limit,
        other_group=other,
        piece_s=piece_s,
    )


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


def _where(pieces: Sequence[Piece], sample_rate: int) -> str:
    """"from A s to B s" for consecutive pieces, joined with "and" across gaps."""
    runs: list[list[Piece]] = []
    for p in pieces:
        if runs and runs[-1][-1].speech_end == p.speech_start:
            runs[-1].append(p)
        else:
            runs.append([p])
    return " and ".join(f"from {r[0].start / sample_rate:.1f} s to {r[-1].end / sample_rate:.1f} s"
                        for r in runs)


def describe_disagreement(result: ConsistencyResult, sample_rate: int) -> str:
    """One sentence naming the part of the recording that disagrees, for a person.

    Call only for a checked result that is not one speaker (raises ``ValueError``
    otherwise). For two groups of pieces it names the smaller group and gives the
    distance between the groups and ``split_limit``; otherwise the worst piece, its
    leave-one-out distance and ``limit``.
    """
    if not result.checked or result.one_speaker or result.worst is None:
        raise ValueError("describe_disagreement needs a checked result that failed")
    if result.other_group:
        where = _where([result.spans[i] for i in result.other_group], sample_rate)
        return (
            f"the speech {where} sounds like a different person (distance "
            f"{result.split:.2f} between the two voices, limit {result.split_limit:.2f}); "
            "enrol one speaker at a time"
        )
    piece = result.spans[result.worst]
    return (
        f"the speech from {piece.start / sample_rate:.1f} s to {piece.end / sample_rate:.1f} s "
        f"sounds like a different person (distance {result.max_distance:.2f}, limit "
        f"{result.limit:.2f}); enrol one speaker at a time"
    )


def describe_dropped(result: ConsistencyResult, sample_rate: int) -> str:
    """The warning for an enrolment that went ahead without its outlier piece.

    Raises ``ValueError`` when nothing was dropped.
    """
    if not result.dropped:
        raise ValueError("describe_dropped needs a result with a dropped piece")
    where = _where([result.spans[i] for i in result.dropped], sample_rate)
    d = result.distances[result.dropped[0]]
    return (
        f"the speech {where} did not sound like the rest (distance {d:.2f}, limit "
        f"{result.limit:.2f}) and was left out of the voiceprint"
    )
