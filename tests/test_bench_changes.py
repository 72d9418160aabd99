"""bench/changes.py --small runs end to end and reports its figures (not their values)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_changes_small(tmp_path: Path, speech_dir: Path) -> None:
    cmd = [sys.executable, str(ROOT / "bench" / "changes.py"), "--small", "--out", str(tmp_path),
           "--speech", str(speech_dir)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "speaker changes" in result.stdout and "libri0" in result.stdout
    r = json.loads((tmp_path / "changes-small.json").read_text())
    assert set(r["halves"]) == {"tune", "test"}
    for rows in r["halves"].values():
        assert set(rows) == {"old", "new"}
        for v in rows.values():
            for part in ("singles", "stitched"):
                assert {"items", "cut", "change", "named_right", "unknown", "named_wrong",
                        "changes_found", "spurious_cuts"} <= set(v[part])
            assert {"named_right", "named_wrong", "nonenrolled_unknown", "changes_found",
                    "true_changes"} <= set(v["libri_gap0"])
            assert v["singles"]["items"] > 0
