"""Shared fixtures: where the project's shared data (``../shared`` beside the repo) lives,
and the Hypothesis profiles (``ci`` by default: deterministic, no deadline)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

#: ``../shared`` relative to the repository root (laid beside the clone, also in CI).
SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The project's shared folder; the tests need it (it lies beside the checkout)."""
    if not SHARED_DIR.is_dir():
        pytest.fail(f"shared folder {SHARED_DIR} not found: clone the repo beside shared/")
    return SHARED_DIR


@pytest.fixture(scope="session")
def speech_dir(shared_dir: Path) -> Path:
    """Real speech for tests (``shared/speech``, FLAC 16 kHz mono, see its README)."""
    speech = shared_dir / "speech"
    if not speech.is_dir():
        pytest.fail(f"speech folder {speech} not found")
    return speech


# -- Hypothesis ---------------------------------------------------------------------------
# ``ci`` (the default) is deterministic: the same examples on every run, no deadline
# (CI machines are slow and shared), no example database. Pick another profile with
# ``HYPOTHESIS_PROFILE=dev`` (random, more examples) when hunting for bugs locally.

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
