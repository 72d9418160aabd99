"""The benchmarks run (on a small input) and print their figures.

Speed is measured by the benchmarks themselves, never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_realtime_benchmark_runs_small(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "realtime.py"), "--small", "--gallery", "2000",
         "--out", str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "largest N passing" in result.stdout
    data = json.loads((tmp_path / "realtime.json").read_text())
    assert data["mode"] == "small"
    assert "max_lag_s" in data["criterion"] and "largest_passing_streams" in data
    [row] = data["levels"]
    assert row["streams"] == 1 and row["seconds"] == 10.0
    assert row["finals"] > 0, "a 10 s meeting excerpt must give final events"
    assert sum(row["finals_by_closed_by"].values()) == row["finals"]
    assert row["first_provisional_n"] > 0
    for key in ("final_lag_p50_s", "final_lag_p95_s", "final_lag_p99_s",
                "first_provisional_p50_s", "first_provisional_p95_s"):
        assert isinstance(row[key], float), key
    for key in ("final_lag_pause_p95_s", "final_lag_change_p95_s", "final_after_vad_close_p95_s",
                "late_finals", "queue_depth_max", "criterion_group", "passed"):
        assert key in row, key
    assert row["dropped_jobs"] == 0 and row["failed_jobs"] == 0
    assert row["streams_without_bye"] == 0 and not row["stream_errors"]
    assert row["server_cpu_s_per_stream_s"] > 0 and row["client_cpu_s"] >= 0
    assert 0 < row["server_rss_mb"] <= row["server_peak_rss_mb"]
    assert row["metrics_samples"] > 0, "/metrics was not sampled"
    # --gallery 2000: synthetic people bulk-written before start, the real ones on top
    gallery = data["gallery"]
    assert gallery["synthetic_people"] == 2000 and gallery["enrolled_over_api"] > 0
    assert gallery["people"] == 2000 + gallery["enrolled_over_api"] == row["gallery_people"]
    assert gallery["server_startup_s"] > 0
    assert row["live_searches"] > 0 and row["live_search_batches"] > 0, "no batched search"
    assert row["searches_per_batch"] >= 1


@pytest.mark.slow
def test_scoring_study_runs_small(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scoring_study.py"), "--small", "--out",
         str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "scoring_study.json").read_text())
    assert data, "the study wrote no figures"
    assert "centroid" in result.stdout


@pytest.mark.slow
def test_enrolment_study_runs_small(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "enrolment.py"), "--small", "--out",
         str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Enrolment length" in result.stdout and "One-speaker check" in result.stdout
    data = json.loads((tmp_path / "enrolment_small.json").read_text())
    assert data["mode"] == "small" and data["half"] == "tune"
    rows = data["length"]["rows"]
    assert [r["speech_s"] for r in rows] == [1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0]
    for r in rows:
        assert 0 <= r["top1"] <= 1 and 0 <= r["named_at_threshold"] <= 1
        assert 0 < r["genuine_p50"] <= r["genuine_p90"] < 2
    table = data["check"]["table"]
    for cond in ("clean", "far", "telephone"):
        for kind in ("single", "mix2", "mix3"):
            row = table[f"{cond}|{kind}|all"]
            assert row["n"] > 0
            assert sum(row[k] for k in ("enrolled", "dropped", "warned", "not_one_speaker",
                                        "too_little_speech")) == row["n"]


def test_vad_level_study_runs_small(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "vad_level.py"), "--small", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "speech covered" in result.stdout and "level dBFS" in result.stdout
    data = json.loads((tmp_path / "vad_level-tune.json").read_text())
    assert data["small"] and data["meetings"] > 0
    assert {r["condition"] for r in data["rows"]} == {"clean", "room", "telephone"}
    for r in data["rows"]:
        assert 0 <= r["speech_covered"] <= 1 and 0 <= r["noise_called_speech"] <= 1
        assert r["speech"] > 0 and r["noise"] > 0
    assert {(r["level_dbfs"], r["setting"]) for r in data["levels"]} >= {(-40.0, "normalise on")}
    assert all(0 <= r["speech_covered"] <= 1 for r in data["levels"])


def test_narrowband_study_runs_small(tmp_path: Path) -> None:
    """bench/narrowband.py --small: every voiceprint kind scored on telephone-band probes."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "narrowband.py"), "--small", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "telephone-band probes" in result.stdout
    data = json.loads((tmp_path / "narrowband-test-small.json").read_text())
    assert data["half"] == "test" and data["channel_fitted_on"] == "tune" and data["small"]
    assert set(data["rows"]) == {"wideband voiceprint", "channel shift", "channel shift + scale",
                                 "narrowband voiceprint", "telephone variant",
                                 "variant, line-copy voiceprint",
                                 "variant, wideband + line-copy voiceprint",
                                 "variant, mean of both distances"}
    for row in data["rows"].values():
        assert row["probes"] > 0 and 0 <= row["top1"] <= 1 and 0 <= row["eer"] <= 1
        assert 0 < row["genuine_p50"] < 2
        for at in row["at"].values():
            assert all(0 <= v <= 1 for v in at.values())


@pytest.mark.slow
def test_heldout_benchmark_runs_small(tmp_path: Path) -> None:
    """bench/heldout.py --small: a real server, the public protocol, every condition."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "heldout.py"), "--small", "--half", "tune",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "held-out accuracy, half 'tune'" in result.stdout
    data = json.loads((tmp_path / "heldout-tune.json").read_text())
    assert data["small"] and data["half"] == "tune" and data["threshold"] == 1.0
    assert data["room_profile"] == "far"
    assert set(data["conditions"]) == {"clean", "room", "telephone"}
    for name, cond in data["conditions"].items():
        enrol = cond["enrol"]
        assert enrol["singles"] > 0 and enrol["mixes_tried"] > 0, name
        identify = cond["identify"]
        assert identify["all"]["items"] > 0 and identify["never_enrolled"]["items"] > 0
        assert [s["threshold"] for s in identify["sweep"]][0] == 0.85
        totals = cond["live"]["totals"]["all"]
        assert totals["meetings"] > 0 and totals["enrolled_s"] > 0
        shares = [totals[k] for k in ("named_right", "named_wrong", "unknown", "unlabelled")]
        assert all(0 <= v <= 1 for v in shares) and sum(shares) == pytest.approx(1, abs=0.01)
        assert totals["dropped_jobs"] == 0  # the bench's server queues without bound
        ceiling = totals["whole_turns"]  # each turn sent whole to identify
        parts = [ceiling[k] for k in ("right", "wrong", "unknown", "no_answer")]
        assert all(0 <= v <= 1 for v in parts) and sum(parts) == pytest.approx(1, abs=0.01)
        for meeting in cond["live"]["meetings"].values():  # kept for analysing where time went
            assert meeting["reference_turns"] and all(
                len(f) == 5 and f[0] < f[1] for f in meeting["final_events"])


@pytest.mark.slow
def test_heldout_benchmark_meetings_only_in_more_rooms(tmp_path: Path) -> None:
    """bench/heldout.py --meetings-only --renders 2: every meeting heard in two rooms drawn
    apart, and neither identify nor the enrolment probes run."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "heldout.py"), "--small", "--half", "tune",
         "--conditions", "room", "--meetings-only", "--renders", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "meetings all" in result.stdout and "threshold sweep" not in result.stdout
    data = json.loads((tmp_path / "heldout-tune.json").read_text())
    assert data["renders"] == 2 and data["meetings_only"]
    room = data["conditions"]["room"]
    assert set(room) == {"live"}
    meetings = room["live"]["meetings"]
    firsts = [name for name in meetings if "~" not in name]
    assert firsts and sorted(meetings) == sorted(firsts + [f"{n}~1" for n in firsts])
    assert data["meetings"] == len(meetings)
    for name in firsts:
        one, two = meetings[name], meetings[f"{name}~1"]
        assert one["reference_turns"] == two["reference_turns"]  # the same conversation
        assert one["condition_params"] != two["condition_params"]  # in another room


@pytest.mark.slow
def test_stream_fidelity_study_runs_small(tmp_path: Path) -> None:
    """bench/stream_fidelity.py --small: pooled pieces against one pass, real model."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "stream_fidelity.py"), "--small", "--half", "tune",
         "--conditions", "room", "--contexts", "0.5", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "stream fidelity, half 'tune'" in result.stdout
    data = json.loads((tmp_path / "stream_fidelity-tune-small.json").read_text())
    room = data["conditions"]["room"]
    assert room["profile"] == "far" and room["channel"] == "far"
    one, pieces = room["rows"]["one pass"], room["rows"]["pieces, context 0.5 s"]
    assert one["items"] == pieces["items"] > 0
    assert 0 < pieces["cosine_p5"] <= pieces["cosine_p50"] < 1  # close, never the same
    for row in (one, pieces):
        assert 0 < row["own_distance_p50"] < 2
        assert all(0 <= row[k] <= 1 for k in ("top1", "true_accepts", "named_wrong",
                                              "leave_own_out_false_accepts"))
    agree = room["rows"]["one pass, pieces agree"]  # segment.final_agree's rule
    assert agree["items"] == one["items"]
    # the pieces can only take the one pass's names away
    assert agree["leave_own_out_false_accepts"] <= one["leave_own_out_false_accepts"]
    assert 0 < agree["true_accepts"] <= one["true_accepts"]
    assert agree["named_wrong"] <= one["named_wrong"]
