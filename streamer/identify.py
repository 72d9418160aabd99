"""Identification decisions: candidate distances -> who it is (pure).

A person matches when ``distance <= max_distance`` (``distance``: Euclidean between
unit embeddings, the protocol's unit). Candidates are reported nearest first whether or
not they pass, so a display can show how close the runner-up was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["CandidateLike", "Decision", "decide", "decide_in_room", "distance", "unit",
           "verify_decision"]


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


def decide(candidates: Sequence[CandidateLike], max_distance: float) -> Decision:
    """Pick the nearest candidate if it is within ``max_distance``.

    ``candidates`` must be nearest first. ``distance`` in the result is the nearest
    candidate's distance even when nobody matches (None when nobody is enrolled).
    """
    ordered = tuple(candidates)
    if not ordered:
        return Decision(None, None, ())
    best = ordered[0]
    person = best if best.distance <= max_distance else None
    return Decision(person, float(best.distance), ordered)


def decide_in_room(roster: Sequence[CandidateLike] | None,
                   everyone: Sequence[CandidateLike], max_distance: float,
                   outside_max_distance: float) -> Decision:
    """A decision in a room that may have a roster (both lists nearest first).

    Without a roster (``None``) this is :func:`decide` over ``everyone``. With one, its
    nearest member within ``max_distance`` wins (``scope`` ``"roster"``); else the
    nearest of ``everyone`` outside the roster wins only within the stricter
    ``outside_max_distance`` (and never beyond ``max_distance``; ``scope`` ``"all"``: a
    visitor must sound closer to be named among everyone).
    ``everyone`` may be empty when the roster already answered (it is not searched).
    The candidates are both lists merged, nearest first, each person once.
    """
    if roster is None:
        return decide(everyone, max_distance)
    merged = {c.id: c for c in (*everyone, *roster)}
    ordered = tuple(sorted(merged.values(), key=lambda c: c.distance))
    if roster and roster[0].distance <= max_distance:
        return Decision(roster[0], float(roster[0].distance), ordered, "roster")
    if not ordered:
        return Decision(None, None, (), "all")
    members = {c.id for c in roster}
    outsiders = [c for c in everyone if c.id not in members]
    if outsiders and outsiders[0].distance <= min(outside_max_distance, max_distance):
        return Decision(outsiders[0], float(outsiders[0].distance), ordered, "all")
    return Decision(None, float(ordered[0].distance), ordered, "all")


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
