"""streamer.consistency (pure): pieces of the enrolment speech, leave-one-out scores, decision."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.config import EnrollConfig
from streamer.consistency import (
    MIN_PIECE_S,
    Piece,
    assess,
    check,
    describe_disagreement,
    describe_dropped,
    leave_one_out_distances,
    max_pairwise_distance,
    not_checked,
    piece_seconds,
    plan,
    split_distance,
    split_pieces,
)
from streamer.errors import TooLittleSpeech, format_shortfall

RATE = 16000


def unit(v: list[float]) -> np.ndarray:
    x = np.asarray(v, dtype=np.float64)
    return x / np.linalg.norm(x)


# -- pieces ---------------------------------------------------------------------------


def test_one_span_is_cut_into_equal_pieces() -> None:
    pieces = split_pieces([(1000, 1000 + 10 * RATE)], 2 * RATE + RATE // 2)  # 10 s / 2.5 s
    assert len(pieces) == 4
    assert [(p.speech_start, p.speech_end) for p in pieces] == [
        (0, 40000), (40000, 80000), (80000, 120000), (120000, 160000)]
    assert [(p.start, p.end) for p in pieces] == [
        (1000, 41000), (41000, 81000), (81000, 121000), (121000, 161000)]


def test_the_remainder_is_spread_so_every_piece_is_at_least_piece_long() -> None:
    pieces = split_pieces([(0, 7 * RATE)], int(2.5 * RATE))  # 7 s -> 2 pieces of 3.5 s
    assert [p.samples for p in pieces] == [56000, 56000]
    assert all(p.samples >= 2.5 * RATE for p in pieces)


def test_pieces_map_back_to_recording_times_across_pauses() -> None:
    # speech 0-3 s and 5-8 s (a 2 s pause): joined 6 s -> 3 pieces of 2 s
    spans = [(0, 3 * RATE), (5 * RATE, 8 * RATE)]
    pieces = split_pieces(spans, 2 * RATE)
    assert [(p.speech_start, p.speech_end) for p in pieces] == [
        (0, 32000), (32000, 64000), (64000, 96000)]
    # the middle piece runs from 2 s, over the pause, to 6 s of the recording
    assert [(p.start / RATE, p.end / RATE) for p in pieces] == [(0, 2), (2, 6), (6, 8)]


def test_a_piece_ending_exactly_at_a_span_end_ends_there_not_after_the_pause() -> None:
    spans = [(0, 2 * RATE), (4 * RATE, 6 * RATE)]
    pieces = split_pieces(spans, 2 * RATE)
    assert [(p.start, p.end) for p in pieces] == [(0, 2 * RATE), (4 * RATE, 6 * RATE)]


def test_too_little_speech_gives_fewer_than_two_pieces() -> None:
    assert split_pieces([], RATE) == []
    assert split_pieces([(0, RATE - 1)], RATE) == []
    assert len(split_pieces([(0, 2 * RATE - 1)], RATE)) == 1
    assert len(split_pieces([(0, RATE), (3 * RATE, 4 * RATE)], RATE)) == 2


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        split_pieces([(0, RATE)], 0)
    with pytest.raises(ValueError):
        split_pieces([(RATE, 0)], 100)


@given(st.lists(st.tuples(st.integers(0, 50_000), st.integers(0, 50_000)), max_size=8),
       st.integers(1, 60_000))
def test_pieces_tile_the_joined_speech(gaps_and_lengths: list[tuple[int, int]],
                                       piece: int) -> None:
    spans, pos = [], 0
    for gap, length in gaps_and_lengths:
        spans.append((pos + gap, pos + gap + length))
        pos += gap + length
    total = sum(b - a for a, b in spans)
    pieces = split_pieces(spans, piece)
    assert len(pieces) == total // piece
    if pieces:
        assert pieces[0].speech_start == 0 and pieces[-1].speech_end == total
        for a, b in itertools.pairwise(pieces):
            assert a.speech_end == b.speech_start
            assert a.end <= b.start
        for p in pieces:
            assert p.samples >= piece
            assert p.start < p.end
            assert any(a <= p.start < b for a, b in spans)
            assert any(a < p.end <= b for a, b in spans)


# -- scores ---------------------------------------------------------------------------


def test_leave_one_out_on_hand_made_vectors() -> None:
    e = np.stack([unit([1, 0, 0]), unit([1, 0, 0]), unit([0, 1, 0])])
    d = leave_one_out_distances(e)
    # piece 0: the others' mean is (1, 1, 0)/sqrt(2): distance sqrt(2 - 2 cos 45°)
    expected_mixed = np.sqrt(2 - 2 / np.sqrt(2))
    assert d == pytest.approx([expected_mixed, expected_mixed, np.sqrt(2)])
    assert max_pairwise_distance(e) == pytest.approx(np.sqrt(2))


def test_identical_pieces_are_distance_zero_and_rows_are_renormalised() -> None:
    e = np.stack([unit([1, 2, 3])] * 3) * np.array([[1.0], [2.0], [0.5]])
    assert leave_one_out_distances(e) == pytest.approx([0, 0, 0], abs=1e-7)
    assert max_pairwise_distance(e) == pytest.approx(0, abs=1e-6)


def test_two_pieces_score_each_other() -> None:
    a, b = unit([1, 0]), unit([np.cos(0.5), np.sin(0.5)])
    d = leave_one_out_distances(np.stack([a, b]))
    assert d == pytest.approx([np.linalg.norm(a - b)] * 2)


def test_cancelling_rest_is_unrelated() -> None:
    e = np.stack([unit([0, 1]), unit([1, 0]), unit([-1, 0])])
    assert leave_one_out_distances(e)[0] == pytest.approx(np.sqrt(2))


def test_score_errors() -> None:
    with pytest.raises(ValueError):
        leave_one_out_distances(np.ones((1, 3)))
    with pytest.raises(ValueError):
        leave_one_out_distances(np.ones(3))
    with pytest.raises(ValueError):
        leave_one_out_distances(np.zeros((2, 3)))
    with pytest.raises(ValueError):
        leave_one_out_distances(np.array([[1.0, np.nan], [1.0, 0.0]]))


# -- decision -------------------------------------------------------------------------


def pieces_of(n: int) -> list[Piece]:
    return split_pieces([(0, n * 2 * RATE)], 2 * RATE)


def vectors_at_angle(angle: float) -> np.ndarray:
    """Three unit vectors: two equal, one ``angle`` radians away from them."""
    return np.stack([unit([1, 0]), unit([1, 0]), unit([np.cos(angle), np.sin(angle)])])


def test_decision_at_the_limit() -> None:
    e = vectors_at_angle(1.0)
    worst = float(leave_one_out_distances(e).max())
    assert worst == pytest.approx(np.sqrt(2 - 2 * np.cos(1.0)))
    at = check(e, pieces_of(3), worst)  # distance == limit: one speaker
    assert at.checked and at.one_speaker and at.pieces == 3 and at.worst == 2
    assert at.max_distance == pytest.approx(worst)
    assert at.max_pairwise == pytest.approx(worst)
    below = check(e, pieces_of(3), worst - 1e-6)
    assert below.checked and not below.one_speaker and below.worst == 2


def test_wire_form_and_message() -> None:
    result = check(vectors_at_angle(1.2), pieces_of(3), 0.9)
    wire = result.to_wire(RATE)
    assert wire["checked"] is True and wire["one_speaker"] is False
    assert wire["pieces"] == 3 and wire["limit"] == 0.9
    assert wire["max_distance"] == round(float(np.sqrt(2 - 2 * np.cos(1.2))), 4)
    assert wire["piece_spans"] == [[0.0, 2.0], [2.0, 4.0], [4.0, 6.0]]
    assert "reason" not in wire
    message = describe_disagreement(result, RATE)
    assert message.startswith("the speech from 4.0 s to 6.0 s sounds like a different person")
    assert "distance 1.13, limit 0.90" in message and "one speaker at a time" in message
    with pytest.raises(ValueError):
        describe_disagreement(check(vectors_at_angle(0.1), pieces_of(3), 0.9), RATE)


def test_too_short_is_not_checked() -> None:
    one = pieces_of(1)
    result = check(np.stack([unit([1, 0])]), one, 1.0)
    assert not result.checked and result.one_speaker and result.pieces == 1
    wire = result.to_wire(RATE)
    assert wire == {"checked": False, "pieces": 1, "max_distance": None, "limit": 1.0,
                    "one_speaker": True, "reason": "too little speech to compare two pieces"}
    off = not_checked(1.0, 0, "switched off").to_wire(RATE)
    assert off["checked"] is False and off["reason"] == "switched off"
    with pytest.raises(ValueError):
        check(np.stack([unit([1, 0])] * 2), pieces_of(3), 1.0)


# -- configuration --------------------------------------------------------------------


def test_enroll_consistency_config_is_validated() -> None:
    from streamer.config import EnrollConfig, config_from_mapping
    from streamer.errors import ConfigError

    assert EnrollConfig().consistency in ("refuse", "warn")
    for mode in ("refuse", "warn", "off"):
        assert EnrollConfig(consistency=mode).consistency == mode
    for raw, shown in (({"consistency": "maybe"}, "'maybe'"),
                       ({"consistency": True}, "True"),
                       ({"consistency_piece_s": 0}, "0"),
                       ({"consistency_piece_s": 0.5}, "0.5"),
                       ({"consistency_piece_s": "2"}, "'2'"),
                       ({"consistency_max_distance": 0}, "0"),
                       ({"consistency_max_distance": 2.5}, "2.5"),
                       ({"consistency_max_distance": "1"}, "'1'")):
        with pytest.raises(ConfigError) as err:
            config_from_mapping({"enroll": raw})
        (key,) = raw
        assert f"enroll.{key}" in str(err.value) and shown in str(err.value)


def test_max_pairwise_distance_of_one_vector_is_zero() -> None:
    assert max_pairwise_distance(np.array([[0.6, 0.8]], np.float32)) == 0.0


# -- majority decision (assess) ---------------------------------------------------------

RULES = EnrollConfig(consistency_piece_s=2.0, consistency_min_pieces=4,
                     consistency_max_distance=1.0, consistency_split_distance=1.0)


def voices(*labels: int, spread: float = 0.0, seed: int = 0) -> np.ndarray:
    """Unit rows: label k is the k-th axis of an 8-d space, plus some within-voice noise."""
    rng = np.random.default_rng(seed)
    rows = [np.eye(8)[k] + spread * rng.standard_normal(8) for k in labels]
    return np.stack([r / np.linalg.norm(r) for r in rows])


def test_piece_seconds_shrink_for_short_speech_but_not_below_the_floor() -> None:
    assert piece_seconds(20.0, RULES) == 2.0
    assert piece_seconds(8.0, RULES) == 2.0
    assert piece_seconds(6.0, RULES) == pytest.approx(1.5)
    assert piece_seconds(3.0, RULES) == MIN_PIECE_S
    assert len(plan([(0, 6 * RATE)], RULES)) == 4
    assert len(plan([(0, 3 * RATE)], RULES)) == 3
    assert plan([(0, RATE // 2)], RULES) == []


@pytest.mark.parametrize("min_pieces", [2, 3, 4])
def test_plan_gives_the_minimum_pieces_whatever_the_speech_length(min_pieces: int) -> None:
    # the piece length is rounded down to a sample: rounded up (3.5 s + 3 samples over
    # two pieces: 28001.5 -> 28002 samples) one piece did not fit, and with two pieces
    # wanted the check did not run at all
    rules = EnrollConfig(consistency_min_pieces=min_pieces)
    for total in range(min_pieces * RATE, 8 * RATE + 1, 997):
        pieces = plan([(0, total)], rules)
        assert len(pieces) == max(min_pieces, total // (2 * RATE)), total
        assert pieces[0].start == 0 and pieces[-1].end == total


def test_split_distance_finds_the_two_voices() -> None:
    e = voices(0, 0, 1, 1)
    d, group = split_distance(e)
    assert d == pytest.approx(np.sqrt(2)) and group == (2, 3)
    assert split_distance(voices(0, 1, 1, 0, 0))[1] == (1, 2)  # the smaller group
    assert split_distance(voices(0, 0, 0)) == (0.0, ())  # no two groups of two
    with pytest.raises(ValueError):
        split_distance(np.ones((17, 3)))


def test_one_voice_is_enrolled_as_is() -> None:
    e = voices(0, 0, 0, 0, 0, spread=0.2)
    result = assess(e, pieces_of(5), RULES)
    assert result.checked and result.one_speaker and result.dropped == ()
    assert result.split is not None and result.split <= RULES.consistency_split_distance
    wire = result.to_wire(RATE)
    assert wire["dropped_pieces"] == [] and wire["majority"] == 5
    assert wire["split_limit"] == 1.0 and wire["piece_s"] == 2.0
    for key in ("checked", "pieces", "max_distance", "limit", "one_speaker",
                "max_pairwise_distance", "piece_distances", "piece_spans"):
        assert key in wire  # the protocol's fields stay


def test_a_lone_outlier_is_dropped_with_a_warning() -> None:
    e = voices(0, 0, 3, 0, 0, spread=0.1)
    result = assess(e, pieces_of(5), RULES)
    assert result.one_speaker and result.dropped == (2,)
    assert [p.speech_start for p in result.kept()] == [0, 2 * RATE, 6 * RATE, 8 * RATE]
    assert result.to_wire(RATE)["dropped_pieces"] == [2]
    assert result.to_wire(RATE)["majority"] == 4
    warning = describe_dropped(result, RATE)
    assert warning.startswith("the speech from 4.0 s to 6.0 s did not sound like the rest")
    assert "left out of the voiceprint" in warning
    with pytest.raises(ValueError):
        describe_dropped(assess(voices(0, 0, 0), pieces_of(3), RULES), RATE)
    # three pieces are no clear majority: refused, nothing dropped
    three = assess(voices(0, 2, 0), pieces_of(3), RULES)
    assert not three.one_speaker and three.dropped == () and three.split is None


def test_two_groups_are_refused_even_when_leave_one_out_passes() -> None:
    # A A B B C C: every piece has a partner, so leave-one-out is mild, but A and C differ
    e = voices(0, 0, 1, 1, 0, 0)
    mixed = np.stack([e[0], e[1], e[2], e[3]])
    result = assess(mixed, pieces_of(4), RULES)
    assert not result.one_speaker and result.other_group == (2, 3)
    message = describe_disagreement(result, RATE)
    assert message.startswith("the speech from 4.0 s to 8.0 s sounds like a different person")
    assert "between the two voices, limit 1.00" in message
    # a group that is not consecutive is named in parts
    result = assess(voices(0, 1, 1, 0, 0), pieces_of(5), RULES)
    assert not result.one_speaker
    assert "from 2.0 s to 6.0 s" in describe_disagreement(result, RATE)
    result = assess(voices(1, 0, 0, 1, 0), pieces_of(5), RULES)
    assert "from 0.0 s to 2.0 s and from 6.0 s to 8.0 s" in describe_disagreement(result, RATE)


def test_two_pieces_that_disagree_are_refused() -> None:
    result = assess(voices(0, 1), pieces_of(2), RULES)
    assert result.checked and not result.one_speaker and result.dropped == ()
    assert "distance 1.41, limit 1.00" in describe_disagreement(result, RATE)
    assert not assess(voices(0, 1, 2), pieces_of(3), RULES).one_speaker  # no majority


def test_assess_with_one_piece_is_not_checked() -> None:
    result = assess(voices(0), pieces_of(1), RULES)
    assert not result.checked and result.one_speaker and result.piece_s == 2.0
    with pytest.raises(ValueError):
        assess(voices(0, 0), pieces_of(3), RULES)


# -- too little speech: the message never rounds a shortfall away ---------------------


@pytest.mark.parametrize(("found", "needed", "text"), [
    (3.96, 4.0, "found 3.9 s of speech, need at least 4.0 s"),
    (3.99994, 4.0, "found 3.9 s of speech, need at least 4.0 s"),
    (1.84, 2.0, "found 1.8 s of speech, need at least 2.0 s"),
    (0.0, 2.0, "found 0.0 s of speech, need at least 2.0 s"),
    (2.24, 2.25, "found 2.24 s of speech, need at least 2.25 s"),
])
def test_too_little_speech_message(found: float, needed: float, text: str) -> None:
    assert str(TooLittleSpeech(found, needed)) == text


@given(st.integers(0, 10 * RATE), st.sampled_from([1.5, 2.0, 2.25, 4.0, 7.0]))
def test_a_shortfall_always_reads_as_one(samples: int, needed: float) -> None:
    found = samples / RATE  # what the server measures: whole samples
    shown_found, shown_needed = format_shortfall(found, needed)
    if found < needed:
        assert float(shown_found) < float(shown_needed)
    assert float(shown_found) <= found + 1e-9 and float(shown_needed) >= needed - 1e-9
