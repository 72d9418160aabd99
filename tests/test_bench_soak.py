"""The soak benchmark runs (``--small``: 2 streams for 15 s, enrolments and deletions
alongside) against a real server process and writes sane per-window figures.

Memory and latency flatness are measured by the benchmark itself, never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_soak_benchmark_runs_small(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--small", "--out", str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "flat:" in result.stdout and "totals:" in result.stdout
    data = json.loads((tmp_path / "soak.json").read_text())
    assert data["mode"] == "small"
    assert data["settings"]["streams"] == 2 and data["settings"]["seconds"] == 15.0
    windows = data["windows"]
    assert [(w["from_s"], w["to_s"]) for w in windows] == [(0, 5), (5, 10), (10, 15)]
    for w in windows:
        assert w["rss_mb"] > 0 and w["fds"] > 0, w
        assert w["people"] is not None and w["people"] > 0, w
        assert w["ingest_connections_min"] == 2, "a stream died during the run"
        assert w["dropped_jobs"] == 0 and w["errors"] == 0, w
    t = data["totals"]
    assert t["finals"] > 0, "15 s of meeting and conversation audio must give finals"
    assert sum(t["finals_by_closed_by"].values()) == t["finals"]
    assert t["streams_without_bye"] == 0 and not t["stream_errors"]
    assert t["missing_finals"] == 0 and t["failed_jobs"] == 0
    # an enrolment every 4 s from 0 s, at most one extra kept: 4 enrolments, 3 deletions
    assert t["enroll"]["n"] == 4 and t["extras_enrolled"] >= 2, t["api_refusals"]
    assert t["extras_deleted"] == t["extras_enrolled"] - 1
    assert t["identify"]["ok"] >= 5 and t["identify"]["errors"] == 0
    assert t["identify_enrolled_probes"] > 0
    assert t["identify_correct"] >= t["identify_enrolled_probes"] - 1
    assert t["ghost_hits"] == 0, "a deleted person was still identified"
    assert t["people_consistent"], "the registry lists other extras than the bench left"
    assert t["people_end"] == t["people_start"] + t["extras_live_end"]
    for kind in ("enroll", "delete", "identify"):
        assert 0 < t[kind]["p50_s"] <= t[kind]["p95_s"] <= t[kind]["max_s"], kind
    flat = data["flatness"]
    for key in ("rss_mb", "fds", "identify_p95_s"):
        assert flat[key]["first"] is not None and flat[key]["slope_per_min"] is not None, key
    assert any(w["lag_pause_p95_s"] is not None for w in windows), "no pause-closed final"
    assert isinstance(flat["flat"], bool)
    assert len(data["samples"]) >= 10, "the server was not sampled every second"
    assert (tmp_path / "soak.png").stat().st_size > 0
