"""The int8 quantisation benchmark runs (on a small input) and writes sane figures.

Speed and the adoption decision are measured by the benchmark itself, never asserted
here. The benchmark records a quantisation error and still measures float32; with the
test extras installed (onnx, onnxruntime) making the int8 graph must work, so such an
error fails this test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _check_cosines(summary: dict[str, float]) -> None:
    assert summary["n"] > 0
    for key in ("median", "p5", "p1", "min", "mean"):
        assert -1.0 <= summary[key] <= 1.0, (key, summary[key])
    assert summary["min"] <= summary["p5"] <= summary["median"]


@pytest.mark.slow
def test_quantization_benchmark_runs_small(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "quantization.py"), "--small", "--out", str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "quantization.json").read_text())
    assert data["meta"]["small"] is True
    assert "speed" in result.stdout and "accuracy" in result.stdout

    # float32: always measured
    for batch in ("batch1", "batch8"):
        fp = data["speed"][batch]["fp32"]
        assert fp["ms_per_run"] > 0 and fp["ms_per_piece"] > 0 and fp["runs"] > 0
    assert data["speed"]["batch8"]["fp32"]["ms_per_run"] >= data["speed"]["batch8"]["fp32"]["ms_per_piece"]
    sets = [k for k in data["accuracy"] if k != "pooled"]
    assert sets, "no dataset was evaluated"
    for name in [*sets, "pooled"]:
        res = data["accuracy"][name]
        assert res["test_items"] > 0
        assert 0.0 <= res["fp32"]["top1"] <= 1.0 and 0.0 <= res["fp32"]["eer"] <= 1.0

    # int8: every variant that was made has timings, cosines and a verdict
    int8 = [g for g in data["speed"]["batch1"] if g != "fp32"]
    assert int8, f"no int8 graph was made: {data.get('errors')}"
    for g in int8:
        for batch in ("batch1", "batch8"):
            row = data["speed"][batch][g]
            assert row["ms_per_run"] > 0 and row["ms_per_piece"] > 0 and row["ratio_to_fp32"] > 0
        for name in [*sets, "pooled"]:
            res = data["accuracy"][name][g]
            assert 0.0 <= res["top1"] <= 1.0 and 0.0 <= res["eer"] <= 1.0
            _check_cosines(res["cosine_piece"])
            _check_cosines(res["cosine_item"])
        assert set(data["verdict"][g]) >= {"faster", "top1_unchanged", "eer_holds",
                                           "cosine_holds", "adopt"}
        assert data["variants"][g]["bytes"] > 0
