"""Identification decisions: candidate distances -> who it is (pure).

A person matches when ``distance <= max_distance`` (``distance``: Euclidean between
unit embeddings, the protocol's unit). Candidates are reported nearest first whether or
not they pass, so a display can show how close the runner-up was.

With many people enrolled, one fixed threshold names a stranger more and more often
(false accepts grow roughly as ``1 - (1 - FAR)^N``), so :class:`GalleryRule` tightens
the threshold with the gallery's size and asks the nearest person to stand out from the
second by a margin (measured with bench/gallery.py, README "Large galleries").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from .gallery_rule import GalleryRule

__all__ = ["CandidateLike", "Decision", "GalleryRule", "agree", "decide", "decide_in_room",
           "distance", "unit", "verify_decision"]


class CandidateLike(Protocol):
    """What a registry search returns for one person."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def distance(self) -> float: ...


@dataclass(frozen=True)
class Decision:
    """The outcome of one 1:N identification."""

    person: CandidateLike | None
    distance: float | None
    candidates: tuple[CandidateLike, ...]
    #: In a room with a roster: where the answer came from, ``"roster"`` (a member
    #: within the room's threshold) or ``"all"`` (everyone, under the stricter rule; also
    #: for nobody). None without a roster.
    scope: str | None = None

    def top(self, k: int) -> Decision:
        """The same decision reporting only the nearest ``k`` candidates."""
        return replace(self, candidates=self.candidates[:k])

    def person_wire(self) -> dict[str, Any] | None:
        """The protocol's ``person`` field: ``{"id", "name"}`` or None (unknown)."""
        if self.person is None:
            return None
        return {"id": self.person.id, "name": self.person.name}

    def candidates_wire(self) -> list[dict[str, Any]]:
        """The protocol's ``candidates`` / ``results`` list, nearest first."""
        return [
            {"id": c.id, "name": c.name, "distance": round(float(c.distance), 4)}
            for c in self.candidates
        ]


def _stands_out(best: CandidateLike, ordered: Sequence[CandidateLike], margin: float) -> bool:
    """Is ``best`` at least ``margin`` nearer than the nearest other person?"""
    if margin <= 0:
        return True
    others = [c.distance for c in ordered if c.id != best.id]
    return not others or others[0] - best.distance >= margin


def decide(candidates: Sequence[CandidateLike], max_distance: float,
           margin: float = 0.0) -> Decision:
    """Pick the nearest candidate if it is within ``max_distance`` and at least
    ``margin`` nearer than the second (see :class:`GalleryRule`).

    ``candidates`` must be nearest first, one entry per person. ``distance`` in the
    result is the nearest candidate's distance even when nobody matches (None when
    nobody is enrolled).
    """
    ordered = tuple(candidates)
    if not ordered:
        return Decision(None, None, ())
    best = ordered[0]
    ok = best.distance <= max_distance and _stands_out(best, ordered, margin)
    return Decision(best if ok else None, float(best.distance), ordered)


def decide_in_room(roster: Sequence[CandidateLike] | None,
                   everyone: Sequence[CandidateLike], roster_max_distance: float,
                   everyone_max_distance: float, margin: float = 0.0) -> Decision:
    """A decision in a room that may have a roster (both lists nearest first).

    Without a roster (``None``) this is :func:`decide` over ``everyone`` within
    ``everyone_max_distance`` and ``margin``. With one, its nearest member within
    ``roster_max_distance`` wins (``scope`` ``"roster"``: the roster is small, so the
    room's own threshold and no margin); else the nearest of ``everyone`` outside the
    roster wins only within ``everyone_max_distance`` (the caller makes it stricter)
    and ``margin`` (``scope`` ``"all"``: a visitor must sound closer to be named among
    everyone). ``everyone`` may be empty when the roster already answered (it is not
    searched). The candidates are both lists merged, nearest first, each person once.
    """
    if roster is None:
        return decide(everyone, everyone_max_distance, margin)
    merged = {c.id: c for c in (*everyone, *roster)}
    ordered = tuple(sorted(merged.values(), key=lambda c: c.distance))
    if roster and roster[0].distance <= roster_max_distance:
        return Decision(roster[0], float(roster[0].distance), ordered, "roster")
    if not ordered:
        return Decision(None, None, (), "all")
    members = {c.id for c in roster}
    outsiders = [c for c in everyone if c.id not in members]
    if (outsiders and outsiders[0].distance <= everyone_max_distance
            and _stands_out(outsiders[0], ordered, margin)):
        return Decision(outsiders[0], float(outsiders[0].distance), ordered, "all")
    return Decision(None, float(ordered[0].distance), ordered, "all")


def agree(first: Decision, second: Decision) -> Decision:
    """``first`` (e.g. a turn embedded in one pass) when it names someone whom ``second``
    (a second look at the same speech: the turn's pieces pooled) also puts nearest,
    whether or not within the threshold; else ``first`` naming nobody, with its
    distance, candidates and scope (what a display shows about the speech). The second
    look can only take a name away, never add one."""
    if (first.person is not None and second.candidates
            and second.candidates[0].id == first.person.id):
        return first
    return replace(first, person=None)


def verify_decision(distance_value: float, max_distance: float) -> bool:
    """1:1 verification: accept when ``distance_value <= max_distance``."""
    return bool(distance_value <= max_distance)


def unit(vector: np.ndarray) -> np.ndarray:
    """Return ``vector`` scaled to unit length (float32). Raises ``ValueError`` for zero."""
    v = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("cannot normalise a zero or non-finite vector")
    return v / norm


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two unit vectors (the protocol's ``distance``)."""
    return float(np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32)))
