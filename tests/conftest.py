"""Shared fixtures: where the project's shared data (``../shared`` beside the repo) lives,
and the Hypothesis profiles (``ci`` by default: deterministic, no deadline)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cluster_support import database_url, nats, postgres  # noqa: F401 - shared fixtures
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


# -- clients (tests/test_client_mic.py, tests/test_client_display.py) ----------------------
# Two LibriSpeech test-other speakers enrolled once per session over /v1/api, under
# display names; each test copies the data dir and starts its own server on it.

#: label -> (LibriSpeech speaker, display name); enrolled from utterances 0 and 1.
CLIENT_PEOPLE = {"ada": ("1688", "Ada Lovelace"), "grace": ("2033", "Grace Hopper")}


@pytest.fixture(scope="session")
def client_people(tmp_path_factory: pytest.TempPathFactory, speech_dir: Path) -> dict:
    """``{"data_dir": Path, "ids": {label: person id}, "names": {label: name}}``."""
    import asyncio

    import numpy as np
    from server_support import LIBRI_DIR, api_call, manifest, pcm_fields, read_flac, running_server

    base = tmp_path_factory.mktemp("client_people")
    files: dict[str, list[Path]] = {}
    for path, speaker, _ in manifest(LIBRI_DIR):
        files.setdefault(speaker, []).append(path)

    async def enrol() -> dict[str, str]:
        ids = {}
        async with running_server(base) as server:
            for label, (speaker, name) in CLIENT_PEOPLE.items():
                x = np.concatenate([read_flac(p) for p in files[speaker][:2]])
                reply = await api_call(server.url, {"type": "enroll", "id": label, "name": name,
                                                    **pcm_fields(x)})
                assert reply["type"] == "enrolled", reply
                ids[label] = reply["person"]["id"]
        return ids

    ids = asyncio.run(enrol())
    return {"data_dir": base / "data", "ids": ids,
            "names": {label: name for label, (_, name) in CLIENT_PEOPLE.items()},
            "files": {label: files[speaker] for label, (speaker, _) in CLIENT_PEOPLE.items()}}
