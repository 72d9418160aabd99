"""streamer.identify: 1:N decisions, 1:1 verification, unit vectors and distances."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from streamer.identify import (Decision, GalleryRule, agree, decide, decide_in_room, distance,
                               unit, verify_decision)


@dataclass(frozen=True)
class Cand:
    id: str
    name: str
    distance: float


ADA = Cand("p_ada", "Ada Lovelace", 0.61234567)
BOB = Cand("p_bob", "Bob", 0.9)
CY = Cand("p_cy", "Cy", 1.3)


def test_nearest_within_threshold_matches() -> None:
    d = decide([ADA, BOB, CY], max_distance=1.0)
    assert d.person is ADA
    assert d.distance == pytest.approx(0.61234567)
    assert d.candidates == (ADA, BOB, CY)
    assert d.person_wire() == {"id": "p_ada", "name": "Ada Lovelace"}
    assert d.candidates_wire() == [
        {"id": "p_ada", "name": "Ada Lovelace", "distance": 0.6123},
        {"id": "p_bob", "name": "Bob", "distance": 0.9},
        {"id": "p_cy", "name": "Cy", "distance": 1.3},
    ]


def test_threshold_is_inclusive() -> None:
    assert decide([BOB], max_distance=0.9).person is BOB
    assert decide([BOB], max_distance=math.nextafter(0.9, 0)).person is None


def test_unknown_when_too_far_but_candidates_reported() -> None:
    d = decide([BOB, CY], max_distance=0.5)
    assert d.person is None and d.person_wire() is None
    assert d.distance == 0.9  # the nearest distance, even without a match
    assert [c["id"] for c in d.candidates_wire()] == ["p_bob", "p_cy"]


def test_no_candidates() -> None:
    d = decide([], max_distance=1.0)
    assert d == Decision(None, None, ())
    assert d.person_wire() is None and d.candidates_wire() == []


def test_decide_accepts_any_sequence_and_numpy_distances() -> None:
    d = decide(iter([Cand("p", "P", np.float32(0.25))]), max_distance=1.0)  # type: ignore[arg-type]
    assert isinstance(d.distance, float) and d.distance == 0.25
    assert isinstance(d.candidates_wire()[0]["distance"], float)


def test_verify_decision() -> None:
    assert verify_decision(0.62, 0.95) is True
    assert verify_decision(0.95, 0.95) is True
    assert verify_decision(0.951, 0.95) is False
    assert verify_decision(np.float32(0.1), 0.95) is True


def test_unit() -> None:
    v = unit(np.array([3.0, 4.0]))
    assert v.dtype == np.float32
    np.testing.assert_allclose(v, [0.6, 0.8], rtol=1e-6)
    assert float(np.linalg.norm(unit(np.arange(1, 193)))) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("bad", [[0.0, 0.0], [np.nan, 1.0], [np.inf, 1.0]])
def test_unit_refuses_zero_and_non_finite(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="zero or non-finite"):
        unit(np.array(bad))


def test_distance_between_unit_vectors() -> None:
    a = np.array([1.0, 0.0], np.float32)
    b = np.array([0.0, 1.0], np.float32)
    assert distance(a, a) == 0.0
    assert distance(a, b) == pytest.approx(math.sqrt(2))
    assert distance(a, -a) == pytest.approx(2.0)
    assert isinstance(distance(a, b), float)
    rng = np.random.default_rng(1)
    x, y = unit(rng.normal(size=16)), unit(rng.normal(size=16))
    assert distance(x, y) == pytest.approx(math.sqrt(2 - 2 * float(x @ y)), abs=1e-6)


def test_decide_in_room_without_roster_is_decide() -> None:
    # no roster: everyone's threshold and the margin, not the roster's threshold
    assert decide_in_room(None, [ADA, BOB], 0.5, 1.0) == decide([ADA, BOB], 1.0)
    assert decide_in_room(None, [ADA, BOB], 1.0, 0.5).person is None
    assert decide_in_room(None, [ADA, BOB], 1.0, 1.0, margin=0.3).person is None
    assert decide_in_room(None, [ADA, BOB], 1.0, 1.0, margin=0.28) == decide(
        [ADA, BOB], 1.0, margin=0.28)


def test_the_margin_asks_the_nearest_to_stand_out_from_the_second() -> None:
    # ADA 0.612, BOB 0.9: 0.288 apart
    assert decide([ADA, BOB, CY], 1.0, margin=0.28).person is ADA
    d = decide([ADA, BOB, CY], 1.0, margin=0.29)
    assert d.person is None and d.distance == ADA.distance and d.candidates == (ADA, BOB, CY)
    assert decide([ADA], 1.0, margin=0.5).person is ADA  # nobody else enrolled
    assert decide([BOB, CY], 1.0, margin=0.4).person is BOB  # CY is 0.4 farther
    # the same person twice (not possible from the registry) is not a second person
    assert decide([ADA, ADA], 1.0, margin=0.1).person is ADA


def test_gallery_rule_tightens_with_the_gallery_and_adds_the_margin_beyond_its_start() -> None:
    rule = GalleryRule(from_people=100, tighten_per_tenfold=0.035, margin=0.06)
    assert rule.threshold(1.0, 0) == rule.threshold(1.0, 100) == 1.0
    assert rule.margin_at(100) == 0.0 and rule.margin_at(101) == 0.06
    assert rule.threshold(1.0, 1000) == pytest.approx(0.965)
    assert rule.threshold(1.0, 100_000) == pytest.approx(0.895)
    assert rule.threshold(1.0, 1_000_000) == pytest.approx(0.86)
    assert rule.threshold(1.1, 1000) == pytest.approx(1.065)  # a far room's own threshold
    assert rule.candidates(1, 100) == 1 and rule.candidates(1, 101) == 2
    assert rule.candidates(5, 10**6) == 5
    off = GalleryRule(100, 0.0, 0.0)
    assert off.threshold(1.0, 10**6) == 1.0 and off.margin_at(10**6) == 0.0


def test_decision_top_keeps_the_decision_and_the_nearest_candidates() -> None:
    d = decide([ADA, BOB, CY], 1.0).top(2)
    assert d.person is ADA and d.candidates == (ADA, BOB)


def test_decide_in_room_roster_first_then_everyone_under_the_stricter_distance() -> None:
    d = decide_in_room([BOB], (), 1.0, 0.5)  # a member within the room's threshold
    assert d.person == BOB and d.scope == "roster" and d.candidates == (BOB,)
    far_bob = Cand("p_bob", "Bob", 1.2)
    d = decide_in_room([far_bob], [ADA, far_bob], 1.0, 0.7)  # Ada is a visitor at 0.61
    assert d.person == ADA and d.scope == "all" and d.candidates == (ADA, far_bob)
    d = decide_in_room([far_bob], [ADA, far_bob], 1.0, 0.5)  # not close enough for that
    assert d.person is None and d.scope == "all" and d.distance == ADA.distance
    d = decide_in_room([], [CY], 1.0, 0.5)  # an empty roster
    assert d.person is None and d.scope == "all" and d.candidates == (CY,)
    d = decide_in_room([far_bob], [far_bob, CY], 1.0, 1.25)  # a member too far is nobody
    assert d.person is None and d.scope == "all"
    d = decide_in_room([], [ADA, BOB], 1.0, 1.0, margin=0.3)  # a visitor must stand out
    assert d.person is None and d.scope == "all"
    near_bob = Cand("p_bob", "Bob", 0.65)  # a member too far for the margin decides nothing
    d = decide_in_room([CY], [ADA, near_bob], 0.6, 1.0, margin=0.06)
    assert d.person is None and d.candidates[:2] == (ADA, near_bob)
    d = decide_in_room([], [], 1.0, 0.5)  # nobody enrolled at all
    assert d == Decision(None, None, (), "all")


def test_agree_keeps_a_name_only_when_the_second_look_puts_that_person_nearest() -> None:
    near_ada = decide([ADA, BOB], max_distance=1.0)
    ada_beyond = decide([Cand("p_ada", "Ada Lovelace", 1.05), CY], max_distance=1.0)
    bob_first = decide([BOB, ADA], max_distance=1.0)
    assert agree(near_ada, ada_beyond) is near_ada  # nearest Ada, though beyond: agreed
    assert agree(near_ada, near_ada) is near_ada
    for first, second in ((near_ada, bob_first),  # the second puts Bob nearest
                          (ada_beyond, near_ada),  # the second look never adds a name
                          (near_ada, decide([], max_distance=1.0))):
        kept = agree(first, second)
        assert kept.person is None
        assert kept.distance == first.distance and kept.candidates == first.candidates
    scoped = Decision(ADA, 0.6, (ADA,), "roster")
    assert agree(scoped, bob_first) == Decision(None, 0.6, (ADA,), "roster")
