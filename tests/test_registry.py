"""Tests for streamer.registry on real SQLite files under tmp_path (seeded RNG)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from usearch.index import Index

from streamer.registry import replica as registry_module
from streamer.errors import ConfigError, RegistryError, UnknownPerson
from streamer.registry import Candidate, Person
from streamer.registry import SqliteRegistry as Registry

from registry_support import held_bytes, int8_bytes

DIM = 32
MODEL = "campplus-test"


def unit(rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    shape = (DIM,) if n is None else (n, DIM)
    v = rng.standard_normal(shape)
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def brute_distances(centroids: dict[str, np.ndarray], q: np.ndarray) -> list[tuple[str, float]]:
    q = q.astype(np.float64) / np.linalg.norm(q)
    out = [(pid, float(np.linalg.norm(c.astype(np.float64) - q))) for pid, c in centroids.items()]
    return sorted(out, key=lambda t: t[1])


def weighted_centroid(vectors: list[np.ndarray], weights: list[float]) -> np.ndarray:
    mean = np.average(np.array(vectors, dtype=np.float64), axis=0, weights=weights)
    return (mean / np.linalg.norm(mean)).astype(np.float32)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def reg(tmp_path: Path):
    r = Registry(tmp_path / "data", MODEL, DIM)
    r.open()
    yield r
    r.close()


def reopen(path: Path, model: str = MODEL, keep_audio: bool = False) -> Registry:
    r = Registry(path, model, DIM, keep_audio=keep_audio)
    r.open()
    return r


def settle(r: Registry) -> None:
    """Wait for the background saver to write what is pending."""
    assert r.replica.wait_saved(10), "the index cache was not saved in time"


# -- basic CRUD ---------------------------------------------------------------------


def test_constructor_does_no_io(tmp_path: Path) -> None:
    Registry(tmp_path / "nothing", MODEL, DIM)
    assert not (tmp_path / "nothing").exists()


def test_add_get_people_update_delete(reg: Registry, rng) -> None:
    g0 = reg.generation
    alice = reg.add_person("Alice", {"team": "a"}, unit(rng), 7.5)
    bob = reg.add_person("Bob", None, unit(rng), 5.0)
    assert isinstance(alice, Person)
    assert alice.id.startswith("p_") and len(alice.id) == 14
    int(alice.id[2:], 16)
    assert alice.name == "Alice" and alice.info == {"team": "a"} and alice.speech_s == 7.5
    assert bob.info == {}
    assert reg.get(alice.id) == alice
    assert [p.id for p in reg.people()] == [alice.id, bob.id]
    assert len(reg) == 2
    assert reg.generation == g0 + 2
    assert alice.to_wire() == {"id": alice.id, "name": "Alice", "info": {"team": "a"},
                               "speech_s": 7.5, "created": alice.created}

    renamed = reg.update_person(alice.id, name="Alicia")
    assert renamed.name == "Alicia" and renamed.info == {"team": "a"}
    reinfo = reg.update_person(alice.id, info={"team": "b", "n": [1, 2]})
    assert reinfo.name == "Alicia" and reinfo.info == {"team": "b", "n": [1, 2]}
    assert reg.search(unit(rng), 5)[0].name in {"Alicia", "Bob"}
    assert {c.name for c in reg.search(unit(rng), 5)} == {"Alicia", "Bob"}
    assert reg.generation == g0 + 4

    reg.delete_person(alice.id)
    assert [p.id for p in reg.people()] == [bob.id]
    assert len(reg) == 1
    with pytest.raises(UnknownPerson):
        reg.get(alice.id)
    assert [c.id for c in reg.search(unit(rng), 5)] == [bob.id]
    assert reg.generation == g0 + 5


def test_unknown_person(reg: Registry, rng) -> None:
    reg.add_person("A", None, unit(rng), 5.0)
    for call in (
        lambda: reg.get("p_000000000000"),
        lambda: reg.add_voiceprint("p_000000000000", unit(rng), 5.0),
        lambda: reg.update_person("p_000000000000", name="x"),
        lambda: reg.delete_person("p_000000000000"),
        lambda: reg.distance_to("p_000000000000", unit(rng)),
    ):
        with pytest.raises(UnknownPerson) as info:
            call()
        assert info.value.person_id == "p_000000000000"
    assert len(reg) == 1


@pytest.mark.parametrize(
    "bad",
    [
        np.full(DIM, np.nan, dtype=np.float32),
        np.r_[np.ones(DIM - 1), np.inf],
        np.ones(DIM + 1),
        np.ones(DIM - 1),
        np.zeros(DIM),
        np.ones((1, DIM)),
        np.array(["a"] * DIM),
    ],
    ids=["nan", "inf", "long", "short", "zero", "2d", "strings"],
)
def test_bad_embeddings_raise_value_error(reg: Registry, rng, bad) -> None:
    p = reg.add_person("A", None, unit(rng), 5.0)
    g = reg.generation
    with pytest.raises(ValueError):
        reg.add_person("B", None, bad, 5.0)
    with pytest.raises(ValueError):
        reg.add_voiceprint(p.id, bad, 5.0)
    with pytest.raises(ValueError):
        reg.search(bad, 3)
    with pytest.raises(ValueError):
        reg.distance_to(p.id, bad)
    assert reg.generation == g and len(reg.people()) == 1


def test_bad_arguments_raise_value_error(reg: Registry, rng) -> None:
    with pytest.raises(ValueError):
        reg.add_person("", None, unit(rng), 5.0)
    with pytest.raises(ValueError):
        reg.add_person("A", {"x": object()}, unit(rng), 5.0)
    with pytest.raises(ValueError):
        reg.add_person("A", None, unit(rng), 0.0)
    with pytest.raises(ValueError):
        reg.add_person("A", None, unit(rng), float("nan"))
    with pytest.raises(ValueError):
        reg.search(unit(rng), 0)
    assert reg.people() == []


def test_embedding_is_normalised_before_storing(reg: Registry, rng) -> None:
    v = unit(rng)
    p = reg.add_person("A", None, 3.0 * v, 5.0)
    assert reg.distance_to(p.id, v) == pytest.approx(0.0, abs=1e-3)
    with sqlite3.connect(reg.db_path) as db:
        (blob,) = db.execute("SELECT embedding FROM voiceprints").fetchone()
    stored = np.frombuffer(blob, dtype="<f4")
    assert np.linalg.norm(stored) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(stored, v, atol=1e-6)


# -- search and scoring ---------------------------------------------------------------


def test_search_ranking_and_distances_match_numpy(reg: Registry, rng) -> None:
    assert reg.search(unit(rng), 5) == []
    vectors = unit(rng, 40)
    centroids = {reg.add_person(f"p{i}", None, v, 5.0).id: v for i, v in enumerate(vectors)}
    for _ in range(20):
        q = rng.standard_normal(DIM).astype(np.float32)  # not unit: search normalises
        got = reg.search(q, 7)
        want = brute_distances(centroids, q)[:7]
        assert [c.id for c in got] == [pid for pid, _ in want]
        for c, (_, d) in zip(got, want):
            assert isinstance(c, Candidate)
            assert c.distance == pytest.approx(d, abs=1e-5)
            assert reg.distance_to(c.id, q) == pytest.approx(c.distance, abs=1e-6)
        assert got[0].to_wire() == {"id": got[0].id, "name": got[0].name,
                                    "distance": got[0].distance}
    # The query equal to an enrolled vector finds that person at distance ~0.
    pid = next(iter(centroids))
    top = reg.search(centroids[pid], 1)
    assert [c.id for c in top] == [pid] and top[0].distance < 1e-3
    assert len(reg.search(unit(rng), 100)) == 40


def test_distance_to(reg: Registry, rng) -> None:
    v, q = unit(rng), unit(rng)
    p = reg.add_person("A", None, v, 5.0)
    reg.add_person("B", None, unit(rng), 5.0)
    want = float(np.linalg.norm(v.astype(np.float64) - q))
    assert reg.distance_to(p.id, q) == pytest.approx(want, abs=1e-5)
    by_search = {c.id: c.distance for c in reg.search(q, 2)}
    assert reg.distance_to(p.id, q) == by_search[p.id]


def test_approximate_search_above_exact_limit(reg: Registry, rng, monkeypatch) -> None:
    """Above the exact-search limit the int8 graph proposes candidates; the distances
    reported are the float32 ones (as numpy's, and as ``distance_to``'s to the bit)."""
    monkeypatch.setattr(registry_module, "EXACT_SEARCH_MAX_VECTORS", 5)
    vectors = unit(rng, 60)
    ids = [reg.add_person(f"p{i}", None, v, 5.0).id for i, v in enumerate(vectors)]
    centroids = dict(zip(ids, vectors))
    for i in range(0, 60, 7):
        top = reg.search(vectors[i], 3)
        assert top[0].id == ids[i] and top[0].distance < 1e-3
    for _ in range(10):
        q = unit(rng)
        got = reg.search(q, 5)
        want = brute_distances(centroids, q)[:5]
        assert [c.id for c in got] == [pid for pid, _ in want]  # 60 people: all reached
        for c, (_, d) in zip(got, want):
            assert c.distance == pytest.approx(d, abs=1e-5)
            assert reg.distance_to(c.id, q) == c.distance


def test_several_voiceprints_give_weighted_centroid(reg: Registry, rng) -> None:
    v1, v2, v3 = unit(rng), unit(rng), unit(rng)
    p = reg.add_person("A", None, v1, 4.0)
    other = reg.add_person("B", None, unit(rng), 5.0)
    p = reg.add_voiceprint(p.id, v2, 8.0)
    assert p.speech_s == pytest.approx(12.0)
    p = reg.add_voiceprint(p.id, 2.0 * v3, 2.0)
    assert p.speech_s == pytest.approx(14.0)
    assert len(reg) == 2
    centroid = weighted_centroid([v1, v2, v3], [4.0, 8.0, 2.0])
    q = unit(rng)
    want = brute_distances({p.id: centroid, other.id: reg_vector(reg, other.id)}, q)
    got = reg.search(q, 5)
    assert [c.id for c in got] == [pid for pid, _ in want]
    assert got[[c.id for c in got].index(p.id)].distance == pytest.approx(
        dict(want)[p.id], abs=1e-5)
    assert reg.distance_to(p.id, centroid) == pytest.approx(0.0, abs=1e-3)
    # The centroid is closer to the heavier enrolment.
    assert reg.distance_to(p.id, v2) < reg.distance_to(p.id, v3)
    # Survives a restart unchanged (loaded from the cache) and a rebuild.
    d = reg.distance_to(p.id, q)
    reg.close()
    r2 = reopen(reg.data_dir)
    assert r2.distance_to(p.id, q) == pytest.approx(d, abs=1e-6)
    r2.close()
    r2.index_path.unlink()
    r3 = reopen(reg.data_dir)
    assert r3.distance_to(p.id, q) == pytest.approx(d, abs=1e-6)
    r3.close()


def reg_vector(reg: Registry, person_id: str) -> np.ndarray:
    with sqlite3.connect(reg.db_path) as db:
        (blob,) = db.execute(
            "SELECT embedding FROM voiceprints v JOIN people p ON p.key = v.person_key "
            "WHERE p.id = ?", (person_id,)).fetchone()
    return np.frombuffer(blob, dtype="<f4")


# -- persistence and the cache -----------------------------------------------------


def populate(reg: Registry, rng, n: int = 12) -> dict[str, np.ndarray]:
    return {reg.add_person(f"p{i}", {"i": i}, v, 5.0 + i).id: v
            for i, v in enumerate(unit(rng, n))}


def snapshot(reg: Registry, queries: np.ndarray) -> list[list[tuple[str, str, float]]]:
    return [[(c.id, c.name, round(c.distance, 5)) for c in reg.search(q, 5)] for q in queries]


def test_restart_finds_people(tmp_path: Path, rng) -> None:
    r = reopen(tmp_path)
    populate(r, rng)
    queries = unit(rng, 10)
    before, people, gen = snapshot(r, queries), r.people(), r.generation
    r.close()
    r.close()  # idempotent
    r2 = reopen(tmp_path)
    assert r2.people() == people and len(r2) == 12 and r2.generation == gen
    assert snapshot(r2, queries) == before
    r2.close()


def test_cache_is_used_when_current(tmp_path: Path, rng, monkeypatch) -> None:
    r = reopen(tmp_path)
    populate(r, rng)
    r.close()
    meta = json.loads(r.meta_path.read_text())
    assert meta["generation"] == r.generation and meta["model_id"] == MODEL
    assert meta["dim"] == DIM and meta["count"] == 12
    rebuilt = []
    monkeypatch.setattr(Registry, "_rebuild", lambda self: rebuilt.append(1))
    r2 = reopen(tmp_path)
    assert rebuilt == [] and len(r2) == 12
    r2.close()


def reseal(r: Registry, data: bytes) -> None:
    """Write ``data`` as the index and fix the sidecar's size and checksum to match it."""
    r.index_path.write_bytes(data)
    meta = json.loads(r.meta_path.read_text())
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    meta["size"] = len(data)
    r.meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize("damage", ["delete", "garbage", "truncate", "truncate_resealed",
                                    "sidecar", "sidecar_missing", "torn", "wrong_dim"])
def test_damaged_cache_is_rebuilt(tmp_path: Path, rng, damage: str) -> None:
    r = reopen(tmp_path)
    populate(r, rng)
    settle(r)
    old_index = r.index_path.read_bytes()
    r.add_person("last", None, unit(rng), 5.0)  # the sidecar before this one is "old_meta"
    queries = unit(rng, 10)
    before = snapshot(r, queries)
    r.close()
    if damage == "delete":
        r.index_path.unlink()
    elif damage == "garbage":
        r.index_path.write_bytes(b"\x00garbage" * 500)
    elif damage == "truncate":  # a short write, as a full disk leaves it
        r.index_path.write_bytes(r.index_path.read_bytes()[:-40])
    elif damage == "truncate_resealed":  # the checksum agrees: usearch's own checks catch it
        reseal(r, r.index_path.read_bytes()[:-40])
    elif damage == "sidecar":
        r.meta_path.write_text("{not json")
    elif damage == "sidecar_missing":
        r.meta_path.unlink()
    elif damage == "torn":
        # A crash between the two renames of a save, one generation earlier: the old
        # index is back in place, the sidecar already describes the new one...
        r.index_path.write_bytes(old_index)
        # ...and a temporary file of the interrupted write is left beside them.
        (tmp_path / ".index-crashed.tmp").write_bytes(b"half a write")
    elif damage == "wrong_dim":  # a valid index of another dim, sidecar checksum fixed up
        other = Index(ndim=DIM * 2, metric="l2sq", dtype="f32")
        other.add(np.arange(12, dtype=np.uint64), unit(rng, 24).reshape(12, DIM * 2))
        reseal(r, bytes(other.save()))
    r2 = reopen(tmp_path)
    assert snapshot(r2, queries) == before
    assert len(r2) == 13
    r2.close()
    assert not list(tmp_path.glob(".index-*.tmp"))
    r3 = reopen(tmp_path)  # the rebuilt cache was saved and is valid
    assert snapshot(r3, queries) == before
    r3.close()


@pytest.mark.parametrize("large", [False, True], ids=["rebuild", "placeholder"])
def test_a_stale_cache_is_caught_up_not_rebuilt(tmp_path: Path, rng, monkeypatch,
                                                large: bool) -> None:
    """A crash can leave the cache several generations behind the database: the next
    start applies what changed since (enrolments, added voiceprints, renames,
    deletions) to the loaded index instead of rebuilding it, and the deleted person's
    vector, which the old cache file holds, is in no file once it has opened."""
    if large:  # deletions overwrite with placeholders instead of rebuilding
        monkeypatch.setattr(registry_module, "REBUILD_MAX_PEOPLE", 3)
    r = reopen(tmp_path)
    ids = populate(r, rng, 8)
    r.close()
    old_index, old_meta = r.index_path.read_bytes(), r.meta_path.read_bytes()
    r = reopen(tmp_path)
    new = r.add_person("Newcomer", None, unit(rng), 6.0)
    gone, renamed, grown = list(ids)[:3]
    r.delete_person(gone)
    r.update_person(renamed, name="Renamed")
    r.add_voiceprint(grown, unit(rng), 9.0)
    r.set_room("board", [renamed, new.id])
    queries = np.concatenate([unit(rng, 10), [ids[grown], ids[renamed]]])
    before = snapshot(r, queries)
    assert snapshot(r, queries[-1:])[0][0][1] == "Renamed"
    r.close()
    # Put back the cache of an older generation behind the database's back.
    r.index_path.write_bytes(old_index)
    r.meta_path.write_bytes(old_meta)
    secret = ids[gone].astype("<f4").tobytes()
    assert secret in old_index
    monkeypatch.setattr(Registry, "_rebuild", lambda self: pytest.fail("rebuilt"))
    r2 = reopen(tmp_path)
    assert snapshot(r2, queries) == before
    assert {c.id for c in r2.search(unit(rng), 100)} == set(ids) - {gone} | {new.id}
    assert r2.distance_to(grown, ids[grown]) > 0.1  # the new centroid, not the old vector
    assert r2.rooms() == {"board": (renamed, new.id)}
    assert not any(secret in p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    settle(r2)  # the caught-up cache is saved in the background...
    assert json.loads(r2.meta_path.read_text())["generation"] == r2.generation
    assert secret not in r2.index_path.read_bytes()
    r2.close()
    r3 = reopen(tmp_path)  # ...and used as it is at the next start
    assert snapshot(r3, queries) == before
    r3.close()


def test_a_cache_far_behind_is_rebuilt(tmp_path: Path, rng, monkeypatch) -> None:
    r = reopen(tmp_path)
    populate(r, rng, 4)
    r.close()
    old_index, old_meta = r.index_path.read_bytes(), r.meta_path.read_bytes()
    r = reopen(tmp_path)
    populate(r, rng, 150)  # more than CATCH_UP_MAX_SHARE of everyone (and 100)
    queries = unit(rng, 5)
    before = snapshot(r, queries)
    r.close()
    r.index_path.write_bytes(old_index)
    r.meta_path.write_bytes(old_meta)
    rebuilt = []
    original = Registry._rebuild
    monkeypatch.setattr(Registry, "_rebuild", lambda self: rebuilt.append(original(self)))
    r2 = reopen(tmp_path)
    assert rebuilt and snapshot(r2, queries) == before and len(r2) == 154
    r2.close()


def test_an_older_database_is_migrated_and_an_older_cache_rebuilt(
        tmp_path: Path, rng, monkeypatch) -> None:
    """A database without ``people.generation`` gets it (0 for everyone); a cache of an
    older sidecar format (float32 index, names, no vectors after it) is rebuilt."""
    r = reopen(tmp_path)
    ids = populate(r, rng, 5)
    queries = unit(rng, 5)
    before = snapshot(r, queries)
    r.close()
    with sqlite3.connect(r.db_path) as db:  # back to schema 1
        db.execute("DROP INDEX people_generation")
        db.execute("ALTER TABLE people DROP COLUMN generation")
        db.execute("UPDATE meta SET value = 1 WHERE key = 'schema_version'")
    meta = json.loads(r.meta_path.read_text())
    names = {str(k): [pid, f"p{i}"] for i, (k, pid) in enumerate(
        sqlite3.connect(r.db_path).execute("SELECT key, id FROM people ORDER BY key"))}
    r.meta_path.write_text(json.dumps({
        "format": 2, "db_id": meta["db_id"], "generation": meta["generation"],
        "model_id": MODEL, "dim": DIM, "count": 5, "names": names, "placeholders": [],
        "sha256": meta["sha256"]}))
    rebuilt = []
    original = Registry._rebuild
    monkeypatch.setattr(Registry, "_rebuild", lambda self: rebuilt.append(original(self)))
    r2 = reopen(tmp_path)
    assert rebuilt and snapshot(r2, queries) == before
    with sqlite3.connect(r.db_path) as db:
        assert {row[1] for row in db.execute("PRAGMA table_info(people)")} >= {"generation"}
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'"
                          ).fetchone()[0] == 2
    r2.update_person(list(ids)[0], name="Renamed")
    r2.close()
    assert json.loads(r.meta_path.read_text())["format"] == 4  # saved anew
    assert "Renamed" not in r.meta_path.read_text()  # names live in the database only
    rebuilt.clear()
    r3 = reopen(tmp_path)
    first = list(ids)[0]
    assert not rebuilt and r3.search(ids[first], 1)[0].name == "Renamed"
    r3.close()


def test_cache_of_a_newer_database_state_is_not_used(tmp_path: Path, rng) -> None:
    """The database restored from a backup (older) beside the index of a later state."""
    r = reopen(tmp_path)
    ids = list(populate(r, rng, 6))
    r.close()  # the last connection checkpoints the WAL: the .sqlite3 file is complete
    backup = r.db_path.read_bytes()
    queries = unit(rng, 10)
    r = reopen(tmp_path)
    expected = snapshot(r, queries)
    r.delete_person(ids[0])
    newer = r.add_person("Newer", None, queries[0], 5.0)
    assert snapshot(r, queries) != expected
    r.close()
    r.db_path.write_bytes(backup)  # the cache files stay those of the newer state
    r2 = reopen(tmp_path)
    assert r2.generation < r.generation
    assert snapshot(r2, queries) == expected
    assert {p.id for p in r2.people()} == set(ids) and newer.id not in {
        c.id for c in r2.search(queries[0], 10)}
    r2.close()


def test_cache_of_another_database_at_the_same_generation_is_not_used(
        tmp_path: Path, rng) -> None:
    """Two databases with the same history length (same generation, same keys) but other
    voiceprints: one's cache must not be taken for the other's."""
    a, b = reopen(tmp_path / "a"), reopen(tmp_path / "b")
    populate(a, rng, 5)
    populate(b, rng, 5)
    assert a.generation == b.generation and a.db_id != b.db_id
    queries = unit(rng, 10)
    expected = snapshot(a, queries)
    assert snapshot(b, queries) != expected
    a.close()
    b.close()
    a.index_path.write_bytes(b.index_path.read_bytes())
    a.meta_path.write_bytes(b.meta_path.read_bytes())
    a2 = reopen(tmp_path / "a")
    assert snapshot(a2, queries) == expected
    a2.close()


def test_writes_are_committed_when_they_return(tmp_path: Path, rng) -> None:
    """What a caller is told is done is durable: visible to another connection, with
    the WAL synced at every commit (``synchronous=FULL``)."""
    r = reopen(tmp_path)
    db = r._conn()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    other = sqlite3.connect(r.db_path)

    def stored() -> dict[str, tuple[str, float]]:
        rows = other.execute("SELECT p.id, p.name, COALESCE(SUM(v.speech_s), 0) FROM people p "
                             "LEFT JOIN voiceprints v ON v.person_key = p.key GROUP BY p.key")
        return {pid: (name, speech_s) for pid, name, speech_s in rows}

    a = r.add_person("A", None, unit(rng), 5.0)
    assert stored() == {a.id: ("A", 5.0)}
    r.add_voiceprint(a.id, unit(rng), 2.5)
    assert stored() == {a.id: ("A", 7.5)}
    r.update_person(a.id, name="A2")
    assert stored() == {a.id: ("A2", 7.5)}
    b = r.add_person("B", None, unit(rng), 4.0)
    r.delete_person(a.id)
    assert stored() == {b.id: ("B", 4.0)}
    other.close()
    r.close()


def test_other_model_vectors_are_ignored(tmp_path: Path, rng) -> None:
    a = reopen(tmp_path, model="model-a")
    pa = a.add_person("A-only", None, unit(rng), 5.0)
    shared = a.add_person("Both", None, unit(rng), 5.0)
    a.close()
    b = reopen(tmp_path, model="model-b")
    assert len(b) == 0 and b.search(unit(rng), 5) == []
    assert {p.id for p in b.people()} == {pa.id, shared.id}
    assert all(p.speech_s == 0.0 for p in b.people())
    with pytest.raises(UnknownPerson):
        b.distance_to(pa.id, unit(rng))
    vb = unit(rng)
    b.add_voiceprint(shared.id, vb, 9.0)
    assert len(b) == 1 and b.get(shared.id).speech_s == 9.0
    assert [c.id for c in b.search(unit(rng), 5)] == [shared.id]
    assert b.distance_to(shared.id, vb) < 1e-3
    b.close()
    a = reopen(tmp_path, model="model-a")  # model-a is unaffected by model-b's vector
    assert len(a) == 2 and a.get(shared.id).speech_s == 5.0
    assert a.distance_to(shared.id, vb) > 0.5
    a.close()
    with sqlite3.connect(a.db_path) as db:
        models = sorted(m for (m,) in db.execute("SELECT model_id FROM voiceprints"))
    assert models == ["model-a", "model-a", "model-b"]


# -- deletion erases bytes -----------------------------------------------------------


def test_delete_erases_bytes_from_db_wal_and_index(tmp_path: Path, rng) -> None:
    r = reopen(tmp_path, keep_audio=True)
    populate(r, rng, 5)
    secret = unit(rng)
    extra = unit(rng)
    # 1000 samples stay on one page; longer blobs are split across overflow pages,
    # which would only make the byte search below weaker.
    audio = rng.integers(-20000, 20000, 1000, dtype=np.int16)
    victim = r.add_person("Victim", {"note": "erase-me-7f3a"}, secret, 6.0, audio=audio)
    long_audio = rng.integers(-20000, 20000, 16000, dtype=np.int16)  # overflow pages
    r.add_voiceprint(victim.id, extra, 3.0, audio=long_audio)
    long_bytes = long_audio.astype("<i2").tobytes()
    chunks = [long_bytes[i:i + 64] for i in range(0, len(long_bytes), 512)]
    files = [r.db_path, Path(str(r.db_path) + "-wal"), r.index_path]
    with sqlite3.connect(r.db_path) as db:  # the exact stored (renormalised) bytes
        blobs = [b for (b,) in db.execute(
            "SELECT embedding FROM voiceprints v JOIN people p ON p.key = v.person_key "
            "WHERE p.id = ? ORDER BY v.id", (victim.id,))]
    np.testing.assert_allclose(np.frombuffer(blobs[0], "<f4"), secret, atol=1e-6)
    needles = {
        "embedding": blobs[0],
        "extra": blobs[1],
        "audio": audio.astype("<i2").tobytes(),
        "name": b"erase-me-7f3a",
    }
    # The bytes are on disk before the delete (otherwise the test would prove nothing).
    settle(r)
    before = b"".join(f.read_bytes() for f in files if f.exists())
    assert [w for w, n in needles.items() if n not in before] == []
    assert sum(c in before for c in chunks) > len(chunks) // 2
    mean = np.array([6.0, 3.0]) @ np.array([np.frombuffer(b, "<f4") for b in blobs], np.float64)
    centroid_bytes = (mean / np.linalg.norm(mean)).astype("<f4").tobytes()
    needles["centroid"] = centroid_bytes
    assert centroid_bytes in r.index_path.read_bytes()
    needles["centroid_int8"] = int8_bytes(r.replica, victim.id)
    assert needles["centroid_int8"] in r.index_path.read_bytes()
    r.add_person("Late", None, unit(rng), 5.0)  # a background save is due when...
    r.delete_person(victim.id)  # ...the delete comes

    def assert_erased() -> None:
        # every file of the data dir: database, WAL, cache, temporary files of a save
        for f in tmp_path.iterdir():
            data = f.read_bytes() if f.is_file() else b""
            for what, needle in needles.items():
                assert needle not in data, f"{what} still in {f.name}"
            assert not any(c in data for c in chunks), f"long audio still in {f.name}"
        held = held_bytes(r.replica)  # nor in memory
        assert centroid_bytes not in held and needles["centroid_int8"] not in held

    assert_erased()  # when the delete returns
    settle(r)  # and in what the background saver wrote since
    assert r.index_path.exists() and json.loads(r.meta_path.read_text())["count"] == 6
    assert_erased()
    with sqlite3.connect(r.db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM enrol_audio").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM voiceprints").fetchone()[0] == 6
    assert len(r) == 6
    r.close()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_keep_audio_stores_pcm_only_when_enabled(tmp_path: Path, rng) -> None:
    audio = rng.integers(-1000, 1000, 800, dtype=np.int16)
    r = reopen(tmp_path / "keep", keep_audio=True)
    r.add_person("A", None, unit(rng), 5.0, audio=audio)
    r.add_person("B", None, unit(rng), 5.0, audio=audio.astype(np.float32) / 32768.0)
    r.close()
    with sqlite3.connect(r.db_path) as db:
        blobs = [b for (b,) in db.execute("SELECT pcm FROM enrol_audio ORDER BY voiceprint_id")]
    assert blobs[0] == audio.astype("<i2").tobytes()
    np.testing.assert_allclose(np.frombuffer(blobs[1], "<i2"), audio, atol=1)
    r = reopen(tmp_path / "drop")
    r.add_person("A", None, unit(rng), 5.0, audio=audio)
    r.close()
    with sqlite3.connect(r.db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM enrol_audio").fetchone()[0] == 0


# -- failures ------------------------------------------------------------------------


def test_unopenable_database_raises_registry_error(tmp_path: Path) -> None:
    (tmp_path / "registry.sqlite3").write_bytes(b"this is not a database" * 200)
    with pytest.raises(RegistryError):
        reopen(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RegistryError):
        reopen(blocker / "sub")


def test_same_model_id_with_other_dim_is_config_error(tmp_path: Path, rng) -> None:
    r = reopen(tmp_path)
    r.add_person("A", None, unit(rng), 5.0)
    r.close()
    other = Registry(tmp_path, MODEL, DIM + 1)
    with pytest.raises(ConfigError):
        other.open()
    other.close()


def test_calls_before_open_raise_registry_error(tmp_path: Path, rng) -> None:
    r = Registry(tmp_path, MODEL, DIM)
    with pytest.raises(RegistryError):
        r.people()
    with pytest.raises(RegistryError):
        r.add_person("A", None, unit(rng), 5.0)
    assert r.search(unit(rng), 3) == [] and len(r) == 0


# -- concurrency ---------------------------------------------------------------------


def test_concurrent_add_and_search_is_safe(tmp_path: Path) -> None:
    r = reopen(tmp_path)
    seed_rng = np.random.default_rng(99)
    base = {r.add_person(f"seed{i}", None, v, 5.0).id: v for i, v in enumerate(unit(seed_rng, 5))}
    lock = threading.Lock()
    added: dict[str, np.ndarray] = {}
    deleted: set[str] = set()

    def op(i: int) -> None:
        rng = np.random.default_rng(i)
        kind = i % 5
        if kind == 0:
            v = unit(rng)
            p = r.add_person(f"t{i}", {"i": i}, v, 4.0)
            with lock:
                added[p.id] = v
        elif kind == 1:
            r.add_voiceprint(list(base)[i % 5], unit(rng), 1.0)
        elif kind == 2:
            with lock:
                victim = next((pid for pid in added if pid not in deleted), None)
                if victim is not None:
                    deleted.add(victim)
            if victim is not None:
                r.delete_person(victim)
        elif kind == 3:
            got = r.search(unit(rng), 5)
            assert [c.distance for c in got] == sorted(c.distance for c in got)
        else:
            r.distance_to(list(base)[i % 5], unit(rng))
            r.people()

    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(op, i) for i in range(200)]:
            future.result()

    alive = set(base) | (set(added) - deleted)
    assert {p.id for p in r.people()} == alive
    assert len(r) == len(alive)
    q = unit(np.random.default_rng(7))
    result = {c.id: c.distance for c in r.search(q, 1000)}
    assert set(result) == alive
    for pid in alive:
        assert r.distance_to(pid, q) == pytest.approx(result[pid], abs=1e-6)
    before = snapshot(r, unit(np.random.default_rng(8), 5))
    r.close()
    r2 = reopen(tmp_path)  # the final cache reflects the final generation
    assert snapshot(r2, unit(np.random.default_rng(8), 5)) == before
    r2.close()


def test_search_never_waits_for_a_writer(reg: Registry, rng: np.random.Generator) -> None:
    """A search (on the server's event loop) must not stall behind a long write, e.g. a
    deletion rebuilding a large index: it takes only the short view lock."""
    import threading

    v = unit(rng)
    alice = reg.add_person("Alice", None, v, 5.0)
    holding, release = threading.Event(), threading.Event()

    def slow_writer() -> None:
        with reg._lock:  # what delete_person holds while it rebuilds
            holding.set()
            release.wait(10)

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert holding.wait(5)
    try:
        assert [c.id for c in reg.search(v, 1)] == [alice.id]  # blocked before the split
        assert len(reg) == 1
    finally:
        release.set()
        writer.join()


def test_a_deleted_person_is_never_found_after_delete_returns(
        reg: Registry, rng: np.random.Generator) -> None:
    vectors = unit(rng, 5)
    people = [reg.add_person(f"P{i}", None, vectors[i], 5.0) for i in range(5)]
    reg.delete_person(people[2].id)
    for q in vectors:
        assert people[2].id not in [c.id for c in reg.search(q, 5)]
    assert len(reg) == 4


def test_a_first_start_is_quiet_and_an_unreadable_cache_warns(tmp_path: Path, rng,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.DEBUG, logger="streamer.registry"):
        r = reopen(tmp_path)  # a new data dir: no cache yet is normal, not a warning
        r.add_person("Ada", None, unit(rng), 5.0)
        r.close()
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    caplog.clear()
    r.meta_path.write_bytes(b"\xff\xfe not json")
    with caplog.at_level(logging.INFO, logger="streamer.registry"):
        r = reopen(tmp_path)
    assert any(rec.levelno == logging.WARNING and "unreadable" in rec.getMessage()
               for rec in caplog.records)
    assert [p.name for p in r.people()] == ["Ada"]
    r.close()


# -- erasure in a large index: placeholders, background compaction ---------------------


def test_a_large_index_erases_with_placeholders_and_compacts_later(
        tmp_path: Path, rng, monkeypatch) -> None:
    monkeypatch.setattr(registry_module, "REBUILD_MAX_PEOPLE", 5)  # "large" from 6 people
    monkeypatch.setattr(registry_module, "COMPACT_SHARE", 0.2)
    r = reopen(tmp_path)
    vectors = {r.add_person(f"P{i}", None, v, 5.0).id: v for i, v in enumerate(unit(rng, 30))}
    ids = list(vectors)
    victim = ids[0]
    secret = r.replica.search(vectors[victim], 1)  # stored centroid == the unit vector
    assert secret[0].id == victim
    needle, needle8 = vectors[victim].astype("<f4").tobytes(), int8_bytes(r.replica, victim)
    assert needle in held_bytes(r.replica) and needle8 in held_bytes(r.replica)
    r.delete_person(victim)
    # overwritten at once: not in memory, not in a saved file; no rebuild happened
    assert len(r.replica._placeholders) == 1
    assert needle not in held_bytes(r.replica) and needle8 not in held_bytes(r.replica)
    assert not r.index_path.exists() or needle not in r.index_path.read_bytes()
    settle(r)
    assert needle not in r.index_path.read_bytes()
    assert needle8 not in r.index_path.read_bytes()
    # searches never return a placeholder, and everyone else is still found
    for pid in ids[1:]:
        (best,) = r.search(vectors[pid], 1)
        assert best.id == pid and best.distance < 1e-3
    assert {c.id for c in r.search(vectors[ids[1]], 40)} == set(ids[1:])
    # the cache with its placeholder loads at the next start
    r.close()
    r = reopen(tmp_path)
    assert len(r.replica._placeholders) == 1 and len(r) == 29
    # more erasures pass 20 % of the index: a background rebuild drops the placeholders,
    # and a change made meanwhile is kept
    for pid in ids[1:7]:
        r.delete_person(pid)
    newcomer = r.add_person("New", None, unit(rng), 5.0)
    deadline = time.monotonic() + 10
    while r.replica._compacting:
        assert time.monotonic() < deadline, "compaction did not end"
        time.sleep(0.01)
    # at most the erasures made while it ran are placeholders again
    assert len(r.replica._placeholders) <= 2 and len(r) == 24
    assert len(r.replica._index) == len(r) + len(r.replica._placeholders)
    saved = held_bytes(r.replica)
    assert not any(vectors[pid].astype("<f4").tobytes() in saved for pid in ids[:7])
    assert r.search(r.replica._store.get([r.replica._keys[newcomer.id]])[0], 1)[0].id \
        == newcomer.id
    r.replica.compact()
    assert not r.replica._placeholders and len(r.replica._index) == 24
    r.close()
    again = reopen(tmp_path)
    assert len(again) == 24 and not again.replica._placeholders
    again.close()


def test_every_key_finds_itself_after_a_build(tmp_path: Path, monkeypatch) -> None:
    """USearch issue #735: HNSW builds can leave vectors unreachable; above the exact-
    search limit the registry searches every vector after a build and inserts the lost
    ones again. Every vector's approximate nearest is then itself."""
    monkeypatch.setattr(registry_module, "EXACT_SEARCH_MAX_VECTORS", 1000)
    gen = np.random.default_rng(11)
    vectors = gen.standard_normal((8000, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    replica = registry_module.Replica(tmp_path, MODEL, DIM)
    replica.replace({i: (f"p_{i}", f"P{i}", v) for i, v in enumerate(vectors)})
    assert replica.wait_idle(120), "the background check did not end"
    found = replica._index.search(vectors, 1, exact=False)
    assert int((found.keys[:, 0] != np.arange(len(vectors))).sum()) == 0
    # a second pass of the repair finds nothing left to do
    index = replica._index
    keys = np.arange(len(vectors), dtype=np.uint64)
    assert registry_module.repair_unreachable(index, keys, vectors) == 0
    assert registry_module.repair_unreachable(index, keys[:1], vectors[:1]) == 0  # one query


# -- the cache in the background: debounced saves, erasure, checks ----------------------


def sidecar_generation(r: Registry) -> int:
    return int(json.loads(r.meta_path.read_text())["generation"])


def test_writes_do_not_wait_for_the_cache_and_close_saves_it(tmp_path: Path, rng,
                                                             monkeypatch) -> None:
    monkeypatch.setattr(registry_module, "SAVE_INTERVAL_S", 60.0)
    r = reopen(tmp_path)
    r.add_person("A", None, unit(rng), 5.0)
    r.close()  # a pending save is written at close
    assert sidecar_generation(r) == r.generation
    r = reopen(tmp_path)
    saves = r.replica.saves
    people = [r.add_person(f"P{i}", None, unit(rng), 5.0) for i in range(20)]
    assert r.replica.saves == saves and sidecar_generation(r) < r.generation  # not yet
    r.close()
    assert r.replica.saves == saves + 1 and sidecar_generation(r) == r.generation
    r = reopen(tmp_path)
    assert {c.id for c in r.search(unit(rng), 30)} >= {p.id for p in people}
    r.close()


def test_saves_are_debounced_and_a_rename_rewrites_the_sidecar_alone(tmp_path: Path,
                                                                       rng) -> None:
    r = reopen(tmp_path)
    settle(r)
    saves = r.replica.saves
    started = time.monotonic()
    people = [r.add_person(f"P{i}", None, unit(rng), 5.0) for i in range(40)]
    took = time.monotonic() - started
    settle(r)
    # one save per SAVE_INTERVAL_S at most (plus the one in flight at the end)
    assert r.replica.saves - saves <= 2 + took / registry_module.SAVE_INTERVAL_S
    assert sidecar_generation(r) == r.generation
    index_file = r.index_path.stat()
    r.update_person(people[0].id, name="Renamed")
    settle(r)
    assert sidecar_generation(r) == r.generation
    assert r.index_path.stat().st_ino == index_file.st_ino  # not rewritten
    r.add_person("Another", None, unit(rng), 5.0)
    settle(r)
    assert r.index_path.stat().st_ino != index_file.st_ino
    r.close()
    r = reopen(tmp_path)
    assert r.search(r.replica._index.get(r.replica._keys[people[0].id]), 1)[0].name == "Renamed"
    r.close()


@pytest.mark.parametrize("moment", ["copied", "temp_file_written"])
def test_a_save_in_flight_never_brings_back_a_deleted_vector(
        tmp_path: Path, rng, monkeypatch, moment: str) -> None:
    """The background saver copied the index (victim included) before a deletion and
    is still writing it when the deletion returns: its copy is zeroed, its temporary
    file removed, and it does not replace the cache; the next save writes the index
    without the victim."""
    r = reopen(tmp_path)
    populate(r, rng, 6)
    secret = unit(rng)
    victim = r.add_person("Victim", None, secret, 5.0)
    needle = secret.astype("<f4").tobytes()
    settle(r)
    entered, release = threading.Event(), threading.Event()
    if moment == "copied":  # between the copy of the index and the first file
        original = registry_module.Replica._write_files

        def held(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            entered.set()
            assert release.wait(10)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(registry_module.Replica, "_write_files", held)
    else:  # the temporary index file is written, not yet renamed
        fsync = os.fsync

        def held_fsync(fd: int) -> None:
            if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp") and not entered.is_set():
                entered.set()
                assert release.wait(10)
            fsync(fd)

        monkeypatch.setattr(os, "fsync", held_fsync)
    r.add_person("Trigger", None, unit(rng), 5.0)  # the saver starts a save of this
    assert entered.wait(10)
    in_flight = r.replica._in_flight
    assert in_flight is not None and needle in in_flight
    r.delete_person(victim.id)
    try:
        assert needle not in in_flight  # zeroed
        for f in tmp_path.iterdir():
            assert needle not in f.read_bytes(), f"the victim is still in {f.name}"
    finally:
        release.set()
    settle(r)
    assert r.index_path.exists() and needle not in r.index_path.read_bytes()
    assert not list(tmp_path.glob(".index-*.tmp"))
    r.close()
    r = reopen(tmp_path)
    assert len(r) == 7 and victim.id not in r.replica
    r.close()


def test_a_damaged_cache_file_of_the_right_size_is_caught_in_the_background(
        tmp_path: Path, rng, caplog: pytest.LogCaptureFixture) -> None:
    """No checksum on the way in (start-up reads the file once); the background check
    finds the damage, removes the files and rebuilds the index from the database."""
    import logging

    r = reopen(tmp_path)
    ids = populate(r, rng, 8)
    r.close()
    pid, v = next(iter(ids.items()))
    data = r.index_path.read_bytes()
    good = v.astype("<f4").tobytes()
    assert data.count(good) == 1
    r.index_path.write_bytes(data.replace(good, (-v).astype("<f4").tobytes()))
    with caplog.at_level(logging.WARNING, logger="streamer.registry"):
        r = reopen(tmp_path)
        assert r.replica.wait_idle(30)
    assert any("damaged" in rec.getMessage() for rec in caplog.records)
    assert r.distance_to(pid, v) < 1e-3  # rebuilt from the database
    settle(r)
    assert r.index_path.read_bytes().count(good) == 1
    r.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streamer.registry"):
        r = reopen(tmp_path)
        assert r.replica.wait_idle(30)
    assert not caplog.records and r.distance_to(pid, v) < 1e-3
    r.close()


def test_deleting_removes_the_cache_of_another_model_that_holds_the_person(
        tmp_path: Path, rng) -> None:
    a = reopen(tmp_path, model="model-a")
    both = a.add_person("Both", None, unit(rng), 5.0)
    a.add_person("A only", None, unit(rng), 5.0)
    a.close()
    vb = unit(rng)
    b = reopen(tmp_path, model="model-b")
    b.add_voiceprint(both.id, vb, 5.0)
    b.close()
    b_files = [b.index_path, b.meta_path]
    assert vb.astype("<f4").tobytes() in b.index_path.read_bytes()
    a = reopen(tmp_path, model="model-a")
    a.delete_person(both.id)
    assert not any(f.exists() for f in b_files)
    for f in tmp_path.iterdir():
        assert vb.astype("<f4").tobytes() not in f.read_bytes(), f.name
    a.close()
    b = reopen(tmp_path, model="model-b")  # rebuilt: nobody of model-b is left
    assert len(b) == 0
    b.close()


def test_a_large_build_serves_at_once_and_is_checked_in_the_background(
        tmp_path: Path, rng, monkeypatch) -> None:
    r = reopen(tmp_path)
    vectors = unit(rng, 1500)
    with r._transaction() as (db, generation):  # fast: one transaction
        for i, v in enumerate(vectors):
            key = db.execute("INSERT INTO people (id, name, info, created, generation) "
                             "VALUES (?, ?, '{}', 0, ?)", (f"p_{i:012x}", f"P{i}",
                                                           generation)).lastrowid
            r._insert_voiceprint(db, key, v, 5.0, None, 0.0)
    r.close()
    r.index_path.unlink()
    monkeypatch.setattr(registry_module, "EXACT_SEARCH_MAX_VECTORS", 100)
    monkeypatch.setattr(registry_module, "VERIFY_CHUNK", 1)  # a slow check
    r = reopen(tmp_path)
    checks = [w for w in r.replica._workers if w.name == "index-check" and w.is_alive()]
    assert checks, "the check should still be running when open() returns"
    assert r.search(vectors[3], 1)[0].id == f"p_{3:012x}"
    # changes while it runs: erased keys are skipped, new ones left alone
    for i in range(0, 1500, 100):
        r.delete_person(f"p_{i:012x}")
    newcomer = r.add_person("New", None, unit(rng), 5.0)
    assert r.replica.wait_idle(120), "the background check did not end"
    index = r.replica._index
    assert len(index) == len(r) + len(r.replica._placeholders) == 1500 - 15 + 1
    keys = np.array(sorted(r.replica._names), dtype=np.uint64)
    found = index.search(r.replica._store.get(keys), 1, exact=False)
    assert int((found.keys[:, 0] != keys).sum()) == 0
    assert r.search(r.replica._store.get([r.replica._keys[newcomer.id]])[0], 1)[0].id \
        == newcomer.id
    r.close()
