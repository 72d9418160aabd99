"""Coverage gate: the sans-I/O core is covered to 100 % by its own tests.

As websockets and uvicorn do, the pure modules (wire, audio, segmenter, identify,
gallery_rule, pooling, session, room, consistency, units, config, room_profiles, hub, limits,
metrics, fanout.peers, vector_store)
must stay fully covered: a line that no test reaches there is either dead or untested
behaviour. Lines that only guard an invariant carry ``# pragma: no cover - invariant``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE = ("wire", "audio", "segmenter", "identify", "gallery_rule", "pooling", "session", "room",
        "consistency", "units", "config", "room_profiles", "hub", "limits", "metrics", "fanout.peers",
        "vector_store", "phone_line")
TESTS = ("test_wire", "test_audio", "test_segmenter", "test_identify", "test_pooling",
         "test_session", "test_room", "test_consistency", "test_units", "test_config",
         "test_hub", "test_limits", "test_metrics", "test_fuzz_wire", "test_peers",
         "test_vectors", "test_line_voiceprints")


@pytest.mark.slow
def test_the_pure_core_is_fully_covered(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           *[f"tests/{t}.py" for t in TESTS],
           *[f"--cov=streamer.{m}" for m in PURE],
           "--cov-report=term-missing:skip-covered", "--cov-fail-under=100"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env={**os.environ, "COVERAGE_FILE": str(tmp_path / ".coverage")})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
