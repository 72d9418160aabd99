"""The SQLite registry past the real large-gallery limits (issue 14), on a real SQLite
file and real USearch indexes: more than ``REBUILD_MAX_PEOPLE`` people (a deletion
overwrites the vector with a placeholder instead of rebuilding) and more than
``EXACT_SEARCH_MAX_VECTORS`` (approximate search; a build is put in service first and
checked for unreachable vectors in the background). People are written straight into
the database in one transaction, as ``bench/gallery.py`` does; the first open builds
the index once for the module (about 10 s on 2 busy cores)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from streamer.registry import SqliteRegistry as Registry
from streamer.registry import replica as registry_module

from registry_support import held_bytes, int8_bytes

DIM = 32
MODEL = "campplus-test"
N = max(registry_module.REBUILD_MAX_PEOPLE, registry_module.EXACT_SEARCH_MAX_VECTORS) + 1500


def pid(key: int) -> str:
    return f"p_{key:012x}"


@pytest.fixture(scope="module")
def gallery() -> np.ndarray:
    rng = np.random.default_rng(14)
    v = rng.standard_normal((N, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, gallery: np.ndarray) -> Path:
    """A data dir with N people and a saved, checked index cache."""
    folder = tmp_path_factory.mktemp("large") / "data"
    reg = Registry(folder, MODEL, DIM)
    reg.open()
    reg.close()
    db = sqlite3.connect(folder / "registry.sqlite3", isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.executemany("INSERT INTO people (key, id, name, info, created) VALUES (?, ?, ?, '{}', 0)",
                   ((key, pid(key), f"person {key}") for key in range(1, N + 1)))
    db.executemany("INSERT INTO voiceprints (person_key, model_id, embedding, speech_s, "
                   "created) VALUES (?, ?, ?, 5.0, 0)",
                   ((key, MODEL, gallery[key - 1].astype("<f4").tobytes())
                    for key in range(1, N + 1)))
    db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
    db.execute("COMMIT")
    db.close()
    reg = Registry(folder, MODEL, DIM)
    reg.open()  # builds the index, checks it in the background
    assert reg.replica.wait_idle(300)
    reg.close()
    return folder


@pytest.fixture
def data(template: Path, tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "data"
    shutil.copytree(template, folder)
    yield folder


def files_holding(folder: Path, needle: bytes) -> list[str]:
    return [f.name for f in folder.iterdir() if f.is_file() and needle in f.read_bytes()]


def test_deletions_erase_at_once_and_a_crash_is_caught_up(data: Path, gallery: np.ndarray,
                                                          monkeypatch) -> None:
    monkeypatch.setattr(Registry, "_rebuild", lambda self: pytest.fail("rebuilt"))
    reg = Registry(data, MODEL, DIM)
    reg.open()
    assert len(reg) == N and reg.search(gallery[99], 1)[0].id == pid(100)
    needle = gallery[99].astype("<f4").tobytes()
    needle8 = int8_bytes(reg.replica, pid(100))
    assert files_holding(data, needle)  # in the database and the cache file
    assert files_holding(data, needle8)  # in the cache file's index
    started = time.monotonic()
    reg.delete_person(pid(100))
    took = time.monotonic() - started
    assert files_holding(data, needle) == [] and len(reg.replica._placeholders) == 1
    assert files_holding(data, needle8) == []
    held = held_bytes(reg.replica)
    assert needle not in held and needle8 not in held
    assert all(c.id != pid(100) for c in reg.search(gallery[99], 5))
    assert reg.replica.wait_saved(30)  # the background save writes the index again
    assert reg.index_path.exists() and files_holding(data, needle) == []
    assert files_holding(data, needle8) == []
    # a burst of enrolments is saved a few times, not once each
    saves = reg.replica.saves
    rng = np.random.default_rng(1)
    for i in range(60):
        reg.add_person(f"new {i}", None, rng.standard_normal(DIM), 5.0)
    assert reg.replica.wait_saved(30)
    assert reg.replica.saves - saves < 20
    reg.close()
    assert took < 5.0, took  # no rebuild, no cache rewrite inside the delete

    # A crash after more work: the cache on disk is the one saved above.
    old_index, old_meta = reg.index_path.read_bytes(), reg.meta_path.read_bytes()
    reg = Registry(data, MODEL, DIM)
    reg.open()
    gone = [pid(key) for key in (7, 8, 9)]
    for person in gone:
        reg.delete_person(person)
    reg.update_person(pid(10), name="Renamed")
    newcomer = reg.add_person("Newcomer", None, rng.standard_normal(DIM), 5.0)
    expected = len(reg)
    reg.close()
    reg.index_path.write_bytes(old_index)
    reg.meta_path.write_bytes(old_meta)
    assert json.loads(old_meta)["generation"] < reg.generation
    reg = Registry(data, MODEL, DIM)
    reg.open()
    assert len(reg) == expected and newcomer.id in reg.replica
    assert reg.search(gallery[9], 1)[0].name == "Renamed"
    for key in (7, 8, 9):
        assert files_holding(data, gallery[key - 1].astype("<f4").tobytes()) == []
        assert all(c.id != pid(key) for c in reg.search(gallery[key - 1], 5))
    assert len(reg.replica._placeholders) == 4  # erased in place, not rebuilt
    reg.close()


def test_a_rebuild_serves_before_its_background_check_ends(data: Path,
                                                           gallery: np.ndarray) -> None:
    (data / f"index-{MODEL}.usearch").unlink()
    reg = Registry(data, MODEL, DIM)
    reg.open()
    assert [w for w in reg.replica._workers if w.name == "index-check" and w.is_alive()]
    assert reg.search(gallery[0], 1)[0].id == pid(1)
    for key in range(1, N, 1000):  # erased while the check runs: skipped by it
        reg.delete_person(pid(key))
    assert reg.replica.wait_idle(300)
    index, names = reg.replica._index, reg.replica._names
    keys = np.array(sorted(names), dtype=np.uint64)
    found = index.search(reg.replica._store.get(keys), 1, exact=False)
    assert int((found.keys[:, 0] != keys).sum()) == 0  # every vector finds itself
    assert len(index) == len(names) + len(reg.replica._placeholders)
    reg.close()
