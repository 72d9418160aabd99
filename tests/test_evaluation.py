"""``streamer.evaluation``: error rates, RTTM, meeting scoring, stitching; and the benchmark."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamer.evaluation import (
    half_of,
    speaker_halves,
    Turn,
    Utterance,
    det_curve,
    eer,
    enrol_test_split,
    far_frr,
    largest_threshold_at_far,
    load_manifest,
    read_rttm,
    speaker_of,
    score_meeting,
    solo_spans,
    stitch,
)

REPO = Path(__file__).resolve().parents[1]


# -- far_frr / eer ---------------------------------------------------------------------------


def brute_rates(genuine: list[float], impostor: list[float], t: float) -> tuple[float, float]:
    """The definition, counted by hand: accept when distance <= t."""
    far = sum(1 for d in impostor if d <= t) / len(impostor)
    frr = sum(1 for d in genuine if d > t) / len(genuine)
    return far, frr


def test_far_frr_matches_definition() -> None:
    genuine = [0.5, 0.7, 0.9, 1.1]
    impostor = [0.95, 1.2, 1.3, 1.4, 1.5]
    for t in (0.0, 0.5, 0.8, 0.95, 1.0, 1.1, 1.3, 2.0):
        assert far_frr(genuine, impostor, t) == pytest.approx(brute_rates(genuine, impostor, t))


def test_far_frr_boundary_is_accepted() -> None:
    # distance == threshold is a match (as streamer.identify.decide does it)
    assert far_frr([1.0], [1.0], 1.0) == (1.0, 0.0)


def test_far_frr_empty_list_is_nan() -> None:
    far, frr = far_frr([], [0.3], 0.5)
    assert far == 1.0 and math.isnan(frr)


def test_eer_crossing() -> None:
    # One genuine (0.4) is above one impostor (0.35): at t = 0.35 one of four of each
    # side is wrong, so FAR = FRR = 1/4 there, and no threshold does better on both.
    genuine = [0.1, 0.2, 0.3, 0.4]
    impostor = [0.35, 0.5, 0.6, 0.7]
    rate, t = eer(genuine, impostor)
    far, frr = brute_rates(genuine, impostor, t)
    assert far == frr == pytest.approx(rate)
    assert rate == pytest.approx(1 / 4)
    assert t == pytest.approx(0.35)


def test_eer_is_where_far_and_frr_are_closest() -> None:
    rng = np.random.default_rng(3)
    genuine = list(rng.normal(0.8, 0.15, 200))
    impostor = list(rng.normal(1.3, 0.1, 300))
    rate, t = eer(genuine, impostor)
    far, frr = brute_rates(genuine, impostor, t)
    gap = abs(far - frr)
    for cand in np.unique(genuine + impostor):  # no observed threshold is closer to equal
        f, r = brute_rates(genuine, impostor, float(cand))
        assert abs(f - r) >= gap - 1e-12
    assert rate == pytest.approx((far + frr) / 2)


def test_eer_separated_lists() -> None:
    rate, t = eer([0.2, 0.6], [1.0, 1.4])
    assert rate == 0.0
    assert 0.6 < t < 1.0
    assert brute_rates([0.2, 0.6], [1.0, 1.4], t) == (0.0, 0.0)


def test_eer_total_overlap() -> None:
    # Identical distributions: every threshold gives FAR = 1 - FRR shifted by one item.
    d = [0.5, 1.0, 1.5]
    rate, t = eer(d, d)
    far, frr = brute_rates(d, d, t)
    assert rate == pytest.approx((far + frr) / 2)
    assert 0.3 <= rate <= 0.7


def test_eer_needs_both_lists() -> None:
    with pytest.raises(ValueError):
        eer([], [1.0])


def test_det_curve_matches_far_frr() -> None:
    rng = np.random.default_rng(5)
    genuine = list(rng.normal(0.8, 0.15, 50))
    impostor = list(rng.normal(1.2, 0.1, 70)) + [0.8]  # a tie with nothing in particular
    t, far, frr = det_curve(genuine, impostor)
    assert list(t) == sorted(set(genuine + impostor))
    for k in range(len(t)):
        assert (far[k], frr[k]) == pytest.approx(brute_rates(genuine, impostor, float(t[k])))
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(frr) <= 0)
    with pytest.raises(ValueError):
        det_curve([], [1.0])


def test_largest_threshold_at_far_definition() -> None:
    rng = np.random.default_rng(11)
    for n in (1, 7, 50, 333):
        impostor = list(rng.uniform(0.6, 1.5, n))
        for target in (0.0, 0.01, 0.1, 0.5):
            t = largest_threshold_at_far(impostor, target, step=0.01)
            assert t is not None
            assert math.isclose(t * 100, round(t * 100))
            far_t = brute_rates([0.0], impostor, t)[0]
            far_next = brute_rates([0.0], impostor, t + 0.01)[0]
            assert far_t <= target < far_next or (far_t <= target and t + 0.01 > 2.0)


def test_largest_threshold_at_far_edges() -> None:
    # A distance exactly on the grid is accepted at that threshold: stay one step below.
    assert largest_threshold_at_far([1.0, 1.5], 0.0) == pytest.approx(0.99)
    # All trials may be accepted: the upper end of the distance range.
    assert largest_threshold_at_far([1.0, 1.5], 1.0) == pytest.approx(2.0)
    # An impostor at (almost) zero distance: no positive threshold qualifies.
    assert largest_threshold_at_far([0.004, 1.5], 0.0) is None
    assert largest_threshold_at_far([1.234], 0.0, step=0.05) == pytest.approx(1.2)
    for bad in (([], 0.01, 0.01), ([1.0], 1.5, 0.01), ([1.0], 0.01, 0.0)):
        with pytest.raises(ValueError):
            largest_threshold_at_far(*bad)


# -- manifests ---------------------------------------------------------------------------


def test_enrol_test_split() -> None:
    u = [Utterance(Path(f"{s}{k}"), s, sec) for s, k, sec in [
        ("a", 0, 5.0), ("a", 1, 4.0), ("a", 2, 3.0), ("a", 3, 2.0),
        ("b", 0, 9.0), ("b", 1, 2.0),
        ("c", 0, 5.0), ("c", 1, 4.0),          # all needed for enrolment: no test left
        ("d", 0, 3.0),                           # not enough for enrolment at all
    ]]
    enrol, test = enrol_test_split(u, enrol_s=8.0)
    assert sorted(enrol) == sorted(test) == ["a", "b"]
    assert [x.path.name for x in enrol["a"]] == ["a0", "a1"]
    assert [x.path.name for x in test["a"]] == ["a2", "a3"]
    assert [x.path.name for x in enrol["b"]] == ["b0"]


def test_load_manifest(tmp_path: Path) -> None:
    (tmp_path / "MANIFEST.tsv").write_text("path\tspeaker\tseconds\nx/1.flac\tx\t2.5\n")
    (u,) = load_manifest(tmp_path)
    assert u == Utterance(tmp_path / "x" / "1.flac", "x", 2.5)


def test_speech_commands_speaker_is_the_hash_in_the_file_name() -> None:
    p = Path("/x/sc_five/unknown_five_0cb74144_nohash_2.wav.flac")
    assert speaker_of(p, "sc_five") == "sc_0cb74144"
    assert speaker_of(Path("/x/sc_0c40e715/go_0c40e715_nohash_1.flac"), "sc_0c40e715") == (
        "sc_0c40e715")
    # other corpora (and a name that only looks like one) keep the manifest's label
    assert speaker_of(Path("/x/s/go_0c40e715_nohash_1.flac"), "1998") == "1998"
    assert speaker_of(Path("/x/sc_a/notes.flac"), "sc_a") == "sc_a"


def test_corrected_labels_move_nobody_between_halves(tmp_path: Path) -> None:
    """A row filed under the wrong label joins its true speaker's half; a speaker with
    no label of their own is in neither half; everyone else stays where the manifest's
    labels deal them."""
    rows = [f"sc_{h}/go_{h}_nohash_{k}.flac\tsc_{h}\t1.0"
            for h in ("0000000a", "0000000b", "0000000c", "0000000d") for k in range(2)]
    rows += ["sc_five/unknown_five_0000000a_nohash_0.wav.flac\tsc_five\t1.0",
             "sc_five/unknown_five_000000ff_nohash_0.wav.flac\tsc_five\t1.0"]
    (tmp_path / "MANIFEST.tsv").write_text("path\tspeaker\tseconds\n" + "\n".join(rows) + "\n")
    utts = load_manifest(tmp_path)
    assert [u.speaker for u in utts[-2:]] == ["sc_0000000a", "sc_000000ff"]
    assert [u.listed for u in utts[-2:]] == ["sc_five", "sc_five"]
    assert all(u.listed == "" for u in utts[:-2])
    labels = {f"sc_{h}" for h in ("0000000a", "0000000b", "0000000c", "0000000d")} | {"sc_five"}
    for name, dealt in zip(("tune", "test"), speaker_halves(labels)):
        got = half_of(utts, name)
        assert {u.speaker for u in got} == set(dealt) - {"sc_five"}
    assert utts[-2] in half_of(utts, "tune") + half_of(utts, "test")
    assert not any(u.speaker == "sc_000000ff" for h in ("tune", "test") for u in half_of(utts, h))


def test_speech_commands_people_are_one_voice_each(speech_dir: Path) -> None:
    """The shared Speech Commands set: every speaker's files carry that speaker's hash,
    and a half holds whole speakers only."""
    utts = load_manifest(speech_dir / "speechcommands_v002test_80spk")
    for u in utts:
        assert u.speaker[3:] in u.path.name, u
    assert sum(1 for u in utts if u.listed) > 0  # the manifest's word folders were corrected
    tune, test = half_of(utts, "tune"), half_of(utts, "test")
    assert {u.speaker for u in tune}.isdisjoint({u.speaker for u in test})


# -- RTTM --------------------------------------------------------------------------------


def test_read_rttm(tmp_path: Path) -> None:
    p = tmp_path / "m.rttm"
    p.write_text(
        "SPEAKER m 1 3.000 1.500 <NA> <NA> bob <NA> <NA>\n"
        "\n"
        "SPKR-INFO m 1 <NA> <NA> <NA> unknown bob <NA> <NA>\n"
        "SPEAKER m 1 0.250 2.000 <NA> <NA> alice <NA> <NA>\n"
    )
    assert read_rttm(p) == [Turn(0.25, 2.25, "alice"), Turn(3.0, 4.5, "bob")]


def test_read_rttm_malformed(tmp_path: Path) -> None:
    p = tmp_path / "bad.rttm"
    p.write_text("SPEAKER m 1 3.0\n")
    with pytest.raises(ValueError):
        read_rttm(p)


def test_solo_spans() -> None:
    turns = [Turn(0.0, 3.0, "a"), Turn(2.5, 6.0, "b"), Turn(7.0, 7.5, "a")]
    spans = solo_spans(turns, min_s=1.0)
    assert spans.keys() == {"a", "b"}
    ((a0, a1),) = spans["a"]  # the 0.5 s turn at 7 s is too short
    assert (a0, a1) == pytest.approx((0.0, 2.5))
    ((b0, b1),) = spans["b"]
    assert (b0, b1) == pytest.approx((3.0, 6.0))


# -- score_meeting ----------------------------------------------------------------------


def final(start: float, end: float, name: str | None) -> dict:
    return {"type": "speaker", "final": True, "start": start, "end": end,
            "person": None if name is None else {"id": "p_" + name, "name": name}}


def prov(start: float, end: float, name: str | None) -> dict:
    return {**final(start, end, name), "final": False}


TURNS = [Turn(0.0, 4.0, "A"), Turn(5.0, 9.0, "B"), Turn(10.0, 12.0, "X")]
NAME_OF = {"alice": "A", "bob": "B"}  # X is never enrolled


def test_perfect_labelling_scores_one() -> None:
    finals = [final(0.0, 4.0, "alice"), final(5.0, 9.0, "bob"), final(10.0, 12.0, None)]
    s = score_meeting(TURNS, finals, [], NAME_OF)
    assert s.named_right == pytest.approx(1.0)
    assert s.named_wrong == s.unknown == s.unlabelled == 0.0
    assert s.nonenrolled_unknown == pytest.approx(1.0)
    # scored time: each turn loses the collar at both ends
    assert s.enrolled_s == pytest.approx(2 * (4.0 - 2 * 0.25), abs=0.011)
    assert s.nonenrolled_s == pytest.approx(2.0 - 2 * 0.25, abs=0.011)
    assert s.turns == 2 and s.turns_named == 1.0
    assert s.latency_median_s == pytest.approx(4.0)  # the finals come at the turn ends


def test_wrong_name_lowers_by_its_share() -> None:
    # bob's turn named alice: scored time is 3.5 s per turn, so half is right
    finals = [final(0.0, 4.0, "alice"), final(5.0, 9.0, "alice")]
    s = score_meeting(TURNS, finals, [], NAME_OF)
    assert s.named_right == pytest.approx(0.5, abs=0.005)
    assert s.named_wrong == pytest.approx(0.5, abs=0.005)
    # X is not labelled at all: counts as correct for a never-enrolled voice
    assert s.nonenrolled_unknown == pytest.approx(1.0)
    # a partly wrong final: first 1.25 s of bob's scored 3.5 s (5.25 .. 6.5) wrong
    finals = [final(0.0, 4.0, "alice"), final(5.0, 6.5, "alice"), final(6.5, 9.0, "bob")]
    s = score_meeting(TURNS, finals, [], NAME_OF)
    assert s.named_right == pytest.approx((3.5 + 3.5 - 1.25) / 7.0, abs=0.005)


def test_naming_a_never_enrolled_voice_counts() -> None:
    finals = [final(10.0, 12.0, "bob")]
    s = score_meeting(TURNS, finals, [], NAME_OF)
    assert s.nonenrolled_named == pytest.approx(1.0)
    assert s.unlabelled == pytest.approx(1.0)


def test_unknown_name_outside_mapping_is_wrong() -> None:
    s = score_meeting(TURNS, [final(0.0, 4.0, "carol")], [], NAME_OF)
    assert s.named_wrong == pytest.approx(0.5, abs=0.005)


def test_collar_excluded() -> None:
    # Wrong labels only inside the collars (0.25 s either side of each boundary)
    # change nothing.
    finals = [final(0.0, 0.24, "bob"), final(0.24, 3.76, "alice"), final(3.76, 4.0, "bob"),
              final(5.0, 9.0, "bob")]
    s = score_meeting(TURNS, finals, [], NAME_OF)
    assert s.named_right == pytest.approx(1.0)
    # a larger collar shrinks the scored time by the right amount
    s2 = score_meeting(TURNS, finals, [], NAME_OF, collar_s=0.5)
    assert s2.enrolled_s == pytest.approx(2 * (4.0 - 1.0), abs=0.011)


def test_overlap_excluded() -> None:
    turns = [Turn(0.0, 4.0, "A"), Turn(2.0, 6.0, "B")]
    finals = [final(0.0, 6.0, "alice")]  # wrong for B, but only B's solo part counts
    s = score_meeting(turns, finals, [], NAME_OF)
    # A solo 0.25..1.75 (1.5 s), B solo 4.25..5.75 (1.5 s)
    assert s.enrolled_s == pytest.approx(3.0, abs=0.011)
    assert s.named_right == pytest.approx(0.5, abs=0.01)


def test_latency_from_provisionals() -> None:
    provisionals = [prov(0.0, 1.0, "bob"), prov(0.0, 1.75, "alice"), prov(5.0, 6.0, "bob"),
                    prov(5.0, 9.5, "alice")]
    finals = [final(0.0, 4.0, "alice"), final(5.0, 9.2, "bob")]
    s = score_meeting(TURNS, finals, provisionals, NAME_OF)
    assert sorted(s.latencies_s) == pytest.approx([1.0, 1.75])
    assert s.latency_median_s == pytest.approx(1.375)
    assert s.turns_named == 1.0
    # an event only after the turn (+ collar) does not count
    s = score_meeting(TURNS, [final(0.0, 4.3, "alice")], [], NAME_OF)
    assert s.turns_named == 0.0 and math.isnan(s.latency_median_s)


def test_short_turns_skip_latency() -> None:
    turns = [Turn(0.0, 0.8, "A"), Turn(1.0, 3.0, "B")]
    s = score_meeting(turns, [final(1.0, 3.0, "bob")], [], NAME_OF)
    assert s.turns == 1


# -- stitch ------------------------------------------------------------------------------


def write(path: Path, seconds: float, value: float) -> Utterance:
    sf.write(str(path), np.full(int(seconds * 16000), value, np.float32), 16000)
    return Utterance(path, path.stem[0], seconds)


def test_stitch_gaps_and_turns(tmp_path: Path) -> None:
    a = write(tmp_path / "a1.flac", 1.0, 0.25)
    b = write(tmp_path / "b1.flac", 2.0, -0.5)
    audio, turns = stitch([a, b, a], gap_s=0.5)
    assert audio.dtype == np.float32
    assert len(audio) == int((1.0 + 0.5 + 2.0 + 0.5 + 1.0) * 16000)
    assert turns == [Turn(0.0, 1.0, "a"), Turn(1.5, 3.5, "b"), Turn(4.0, 5.0, "a")]
    assert np.all(audio[16000:24000] == 0)
    assert np.allclose(audio[24000:56000], -0.5, atol=1e-4)


def test_stitch_interruption_and_cut(tmp_path: Path) -> None:
    a = write(tmp_path / "a1.flac", 1.0, 0.25)
    b = write(tmp_path / "b1.flac", 2.0, -0.5)
    audio, turns = stitch([a, b], gap_s=0.0, max_turn_s=[None, 1.5])
    assert len(audio) == int(2.5 * 16000)
    assert turns == [Turn(0.0, 1.0, "a"), Turn(1.0, 2.5, "b")]
    audio, turns = stitch([a, b], gap_s=0.0, trim=lambda x: x[:8000])
    assert turns == [Turn(0.0, 0.5, "a"), Turn(0.5, 1.0, "b")]


# -- the benchmark script ------------------------------------------------------------------


@pytest.mark.slow
def test_accuracy_small_runs(tmp_path: Path, speech_dir: Path) -> None:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "accuracy.py"), "--small", "--out", str(tmp_path),
         "--speech", str(speech_dir)],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "accuracy.json").read_text())
    assert {"meta", "closed_set", "open_set", "threshold_sweep", "recommendation", "live",
            "change_distance"} <= result.keys()
    assert "pooled" in result["closed_set"]
    assert 0.0 <= result["closed_set"]["pooled"]["top1"] <= 1.0
    assert {"librispeech10_vs_impostors", "pooled_vs_impostors"} <= result["open_set"].keys()
    assert result["live"]["streams"]
    for name in ("det.png", "scores.png"):  # written next to accuracy.json
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
        assert f"wrote {tmp_path / name}" in proc.stdout
    assert result["plots"] == ["det.png", "scores.png"]
    for row in result["live"]["streams"].values():
        assert {"named_right", "nonenrolled_unknown", "latency_median_s"} <= row.keys()


def test_speaker_halves_are_balanced_disjoint_and_order_free() -> None:
    speakers = [f"spk{k}" for k in range(11)]
    tune, test = speaker_halves(speakers)
    assert set(tune) | set(test) == set(speakers)
    assert not set(tune) & set(test)
    assert len(tune) - len(test) in (0, 1)
    assert speaker_halves(list(reversed(speakers))) == (tune, test)
    one, other = speaker_halves(["a", "b"])
    assert len(one) == len(other) == 1


def test_half_of_keeps_order_and_splits_by_speaker() -> None:
    utts = [Utterance(Path(f"/x/{s}{k}.flac"), s, 1.0) for k in range(3) for s in "abcd"]
    utts.append(Utterance(Path("/x/mix.flac"), "a,b", 2.0))
    tune, test = half_of(utts, "tune"), half_of(utts, "test")
    assert {u.speaker for u in tune}.isdisjoint({u.speaker for u in test})
    assert len(tune) + len(test) == 12  # the mixed row belongs to neither half
    assert [u for u in utts if u in tune] == tune
    assert half_of(utts, "all") == utts
    with pytest.raises(ValueError, match="half must be"):
        half_of(utts, "train")
