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
        [sys.executable, str(ROOT / "bench" / "realtime.py"), "--small", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "final_lag_p95_s" in result.stdout
    rows = json.loads((tmp_path / "realtime.json").read_text())
    assert rows[0]["streams"] == 1
    assert rows[0]["finals"] > 0, "a 10 s meeting excerpt must give final events"
    assert rows[0]["dropped_jobs"] == 0


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
