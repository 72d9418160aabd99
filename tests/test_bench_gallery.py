"""The gallery-scale benchmark runs on tiny galleries and writes sane figures.

Speed is measured by the benchmark itself, never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gallery_benchmark_runs_small(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gallery.py"), "--small", "--out", str(tmp_path),
         "--cache", str(tmp_path / "cache"), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "recall@1" in result.stdout
    data = json.loads((tmp_path / "gallery.json").read_text())
    assert [r["n"] for r in data["sizes"]] == [1000, 5000]
    d = data["data"]
    assert d["gallery_sources"] > 0 and d["genuine_queries"] > 0 and d["impostor_queries"] > 0
    # copies sit about as far from their source as two utterances of one speaker
    assert abs(d["copy_distance"]["p50"] - d["within_speaker_distance"]["p50"]) < 0.05
    assert d["within_speaker_distance"]["p50"] < d["between_speaker_distance_p50"]
    for size in data["sizes"]:
        assert size["gallery_real"] + size["gallery_copies"] == size["n"]
        exact = size["exact"]
        assert exact["recall_at_1"] == 1.0, "exact search must agree with the brute force"
        assert exact["p50_ms"] > 0 and exact["p99_ms"] >= exact["p50_ms"]
        assert size["hnsw"] and any(h["registry"] for h in size["hnsw"])
        for h in size["hnsw"]:
            assert h["build_s"] > 0 and h["memory_bytes"] > 0 and h["file_bytes"] > 0
            for s in h["searches"]:
                assert 0.0 <= s["recall_at_1"] <= 1.0
                assert 0 < s["p50_ms"] <= s["p99_ms"]
        o = size["open_set"]
        assert o["threshold"] == data["threshold"]
        for key in ("far_exact", "far_registry_index", "genuine_accepted"):
            assert 0.0 <= o[key] <= 1.0
        # the registry's search is never closer than exact: it cannot accept more
        assert o["far_registry_index"] <= o["far_exact"]
        s = size["startup"]
        assert s["people"] == size["n"] and s["api_people"] > 0
        assert s["open_rebuild_s"] > 0 and s["open_load_s"] > 0 and s["index_file_bytes"] > 0
    assert (tmp_path / "gallery.png").stat().st_size > 0
