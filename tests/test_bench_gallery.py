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


@pytest.mark.slow
def test_gallery_benchmark_distinct_people_small(tmp_path: Path) -> None:
    """--people N --json FILE: a tiny gallery of distinct people writes the issue's keys."""
    out = tmp_path / "people.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gallery.py"), "--small", "--people", "1000",
         "--json", str(out), "--out", str(tmp_path), "--cache", str(tmp_path / "cache"),
         "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["people"] == 1000
    for key in ("search_p50_ms", "search_p99_ms", "delete_s", "startup_s"):
        assert data[key] is not None and data[key] > 0, key
    assert data["search_p99_ms"] >= data["search_p50_ms"]
    for key in ("genuine_recall_at_1", "decision_agreement", "fpir", "fnir"):
        assert 0.0 <= data[key] <= 1.0, key
    # 1000 people: the registry searches exactly, so exact decisions by definition
    assert data["search_path"] == "exact" and data["genuine_recall_at_1"] == 1.0
    assert data["exact"]["agrees_with_numpy"] == 1.0
    d = data["data"]
    assert d["real_enrolled_speakers"] > 0 and all(v > 0 for v in d["queries"].values())
    assert d["validation"]["nearest_impostor"]["real"]["n"] > 0
    o = data["open_set"][-1]
    assert o["n"] == 1000 and o["rule_threshold"] == data["rule"]["threshold_at_n"]
    assert o["fpir_rule"] == data["fpir"] and o["fnir_rule"] == data["fnir"]
    assert "fpir_imp_real_roster_only_1.0" in o["room"]
    # every key finds itself: after a one-thread build, and after re-adding the keys a
    # multi-threaded build left unreachable (USearch issue #735)
    builds = data["hnsw"]
    assert builds and all(h["memory_bytes"] > 0 for h in builds)
    for h in builds:
        if h["build_threads"] == 1 and h["dtype"] == "f32":
            assert h["keys_not_finding_themselves"] == 0
        if h["keys_not_finding_themselves"]:
            assert h["keys_not_finding_themselves_after_readd"] == 0
        for s in h["searches"]:
            assert 0 < s["p50_ms"] <= s["p99_ms"]
            assert 0.0 <= s["genuine_recall_at_1"] <= 1.0
    # deletion: remove alone leaves the bytes in the saved file; a placeholder add
    # overwrites the slot, and the victim is found no more
    x = data["deletion"]
    assert x["bytes_in_file_before"] and x["bytes_in_file_after_remove_only"]
    assert not x["bytes_in_file_after_placeholder"] and not x["victim_found_after"]
    assert x["file_bytes_after"] == x["file_bytes_before"]
    # the real registry with every person: loaded from its cache, searched, and the
    # deleted person's voiceprint bytes (float32 in the database and the cache file,
    # int8 in its index) in no file of its data dir once the deletion returns
    r = data["registry"]
    assert r["people_after_open"] == data["people"] and r["startup_s"] == data["startup_s"]
    assert r["search"]["p99_ms"] == data["search_p99_ms"]
    assert r["search"]["genuine_recall_at_1_rule"] == data["genuine_recall_at_1"]
    assert "registry.sqlite3" in r["bytes_before"]["float32"]
    assert len(r["bytes_before"]["float32"]) == 2
    assert len(r["bytes_before"]["int8"]) == 1
    for when in ("bytes_after_delete", "bytes_after_background_save"):
        assert r[when] == {"float32": [], "int8": []}, when
    assert not r["found_after_delete"] and r["delete_s"] == data["delete_s"]
