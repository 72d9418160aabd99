"""The PostgreSQL registry's own promises, on a real PostgreSQL server (pgserver):
replication between servers (NOTIFY hint, poll for a lost one), erasure from the
database files and every replica's cache, the cache tied to its database."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
from cluster_support import Postgres

from streamer.registry.postgres import PostgresRegistry, describe_url

DIM = 32
MODEL = "campplus-test"


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def opened(url: str, folder: Path, poll_s: float = 30.0, keep_audio: bool = False
           ) -> PostgresRegistry:
    reg = PostgresRegistry(url, folder, MODEL, DIM, keep_audio=keep_audio, poll_s=poll_s)
    reg.open()
    return reg


def wait_for(predicate, timeout_s: float) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, "not converged in time"
        time.sleep(0.005)
    return time.monotonic() - started


def test_describe_url_hides_the_password() -> None:
    assert describe_url("postgresql://u:secret@db.example:5433/people") == "db.example:5433/people"
    assert "secret" not in describe_url("postgresql://u:secret@/x?host=/tmp")


def test_a_change_reaches_another_server_through_notify_alone(database_url: str,
                                                              tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    a, b = opened(database_url, tmp_path / "a"), opened(database_url, tmp_path / "b")
    try:
        times = []
        for i in range(10):  # poll_s is 30 s: only the notification can explain it
            v = unit(rng)
            person = a.add_person(f"P{i}", None, v, 5.0)
            times.append(wait_for(lambda: any(c.id == person.id for c in b.search(v, 1)), 1.0))
        assert max(times) < 1.0
        renamed = a.update_person(person.id, name="Renamed")
        wait_for(lambda: b.search(v, 1)[0].name == renamed.name, 1.0)
        a.delete_person(person.id)
        wait_for(lambda: all(c.id != person.id for c in b.search(v, 3)), 1.0)
        assert b.generation == a.generation and b.lag == 0
        assert b.changes_applied >= 12
    finally:
        a.close()
        b.close()


def test_a_lost_notification_costs_one_poll(database_url: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    a = opened(database_url, tmp_path / "a")
    b = opened(database_url, tmp_path / "b", poll_s=0.3)
    try:
        person = a.add_person("Seen", None, unit(rng), 5.0)
        wait_for(lambda: len(b) == 1, 1.0)
        with psycopg.connect(database_url, autocommit=True) as conn:  # a change, no NOTIFY
            with conn.transaction():
                (gen,) = conn.execute("UPDATE streamer_state SET generation = generation + 1 "
                                      "RETURNING generation").fetchone()
                conn.execute("UPDATE people SET name = 'Quiet', generation = %s WHERE id = %s",
                             (gen, person.id))
        took = wait_for(lambda: b.replica.names() and
                        next(iter(b.replica.names().values()))[1] == "Quiet", 2.0)
        assert took <= 0.3 + 0.5
    finally:
        a.close()
        b.close()


def test_deletion_leaves_no_byte_in_the_database_files_or_any_cache(
        postgres: Postgres, tmp_path: Path) -> None:
    if postgres.pgdata is None:
        pytest.skip("needs the test's own PostgreSQL data folder")
    url = postgres.database()
    rng = np.random.default_rng(3)
    a = opened(url, tmp_path / "a", keep_audio=True)
    b = opened(url, tmp_path / "b", poll_s=0.2)
    try:
        for i in range(5):
            a.add_person(f"Keep {i}", None, unit(rng), 5.0)
        secret = unit(rng)
        audio = rng.integers(-20000, 20000, 1000, dtype=np.int16)
        victim = a.add_person("Victim erase-me-7f3a", {"n": 1}, secret, 6.0, audio=audio)
        wait_for(lambda: len(b) == 6, 2.0)
        needles = {"embedding": secret.astype("<f4").tobytes(),
                   # PostgreSQL may store a long value in chunks: look for a piece of it
                   "audio": audio.astype("<i2").tobytes()[100:164], "name": b"erase-me-7f3a"}
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")  # the rows are in the table files before the delete

        def files() -> list[Path]:
            data = [p for p in (postgres.pgdata / "base").rglob("*") if p.is_file()]
            caches = [p for d in ("a", "b") for p in (tmp_path / d).iterdir() if p.is_file()]
            return data + caches

        def read(path: Path) -> bytes:
            """The file's bytes; none when it went meanwhile (PostgreSQL replaces files
            such as pg_internal.init, the cache saver its temporary files)."""
            try:
                return path.read_bytes()
            except FileNotFoundError:
                return b""

        before = b"".join(read(p) for p in files())
        assert [w for w, n in needles.items() if n not in before] == []
        a.delete_person(victim.id)
        wait_for(lambda: len(b) == 5, 2.0)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")  # what PostgreSQL wrote since is in the files too
        for path in files():
            data = read(path)
            for what, needle in needles.items():
                assert needle not in data, f"{what} still in {path}"
    finally:
        a.close()
        b.close()


def test_the_cache_of_another_database_is_not_used(postgres: Postgres, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    first = opened(postgres.database(), tmp_path)
    first.add_person("Only in the first", None, unit(rng), 5.0)
    first.close()
    second = opened(postgres.database(), tmp_path)  # same folder, same generation 0+1
    try:
        second.add_person("Only in the second", None, unit(rng), 5.0)
        second.close()
        again = opened(second.url, tmp_path)
        assert [name for _, name in again.replica.names().values()] == ["Only in the second"]
        again.close()
    finally:
        second.close()


def test_rosters_replicate_and_follow_deletions(database_url: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    a, b = opened(database_url, tmp_path / "a"), opened(database_url, tmp_path / "b")
    try:
        ids = [a.add_person(f"P{i}", None, unit(rng), 5.0).id for i in range(3)]
        a.set_room("board", ids)
        assert a.rooms() == {"board": tuple(ids)}  # read-your-writes
        wait_for(lambda: b.rooms() == {"board": tuple(ids)}, 1.0)
        a.delete_person(ids[0])
        wait_for(lambda: b.rooms() == {"board": tuple(ids[1:])}, 1.0)
        b.set_room("board", None)
        wait_for(lambda: a.rooms() == {}, 1.0)
    finally:
        a.close()
        b.close()
