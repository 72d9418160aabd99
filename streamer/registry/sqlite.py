"""The embedded registry: SQLite is the truth, a USearch :class:`Replica` derived from it.

One process writes. Two locks: a re-entrant *writer* lock serialises the database and
every change (one writer at a time, which USearch's add/remove also need), and the
replica's short *view* lock guards what :meth:`~SqliteRegistry.search` reads. A search
never waits for a write: a deletion rebuilds the new index beside the old one and swaps
it in, and the deleted person is hidden from searches as soon as the deletion commits.

``registry.sqlite3`` runs in WAL mode with ``synchronous=FULL`` (a write returns only
once durable), ``secure_delete`` and foreign keys. Each voiceprint records its model id;
only vectors of this registry's ``model_id`` are loaded. The index holds one vector per
person, keyed by ``people.key``: the speech-seconds-weighted mean of their voiceprints,
renormalised to unit length.

The cache (:mod:`.replica`) is tied to the database's random id (drawn when the database
is created, so a cache is never taken for that of another database at the same
generation, e.g. one restored from a backup) and must be at the database's generation.
Every write commits before the cache is touched, so after ``kill -9`` the cache is at
most one generation behind the database and is rebuilt at the next :meth:`open`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..errors import ConfigError, RegistryError, UnknownPerson
from .base import (Person, Registry, check_name, check_roster, info_json, new_person_id,
                   person_from_row)
from .replica import Replica

__all__ = ["SqliteRegistry"]

logger = logging.getLogger("streamer.registry")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('generation', 0), ('schema_version', 1),
    ('db_id', lower(hex(randomblob(16))));
CREATE TABLE IF NOT EXISTS people (key INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE, name TEXT NOT NULL, info TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS voiceprints (id INTEGER PRIMARY KEY,
    person_key INTEGER NOT NULL REFERENCES people (key) ON DELETE CASCADE,
    model_id TEXT NOT NULL, embedding BLOB NOT NULL, speech_s REAL NOT NULL,
    created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS voiceprints_person_model ON voiceprints (person_key, model_id);
CREATE TABLE IF NOT EXISTS enrol_audio (
    voiceprint_id INTEGER PRIMARY KEY REFERENCES voiceprints (id) ON DELETE CASCADE,
    pcm BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rooms (room TEXT PRIMARY KEY, people TEXT NOT NULL);
"""
_PERSON_SQL = """
SELECT p.id, p.name, p.info, p.created,
       COALESCE((SELECT SUM(v.speech_s) FROM voiceprints v
                 WHERE v.person_key = p.key AND v.model_id = ?), 0.0)
FROM people p
"""


class SqliteRegistry(Registry):
    """The embedded registry: ``registry.sqlite3`` and the index cache in ``data_dir``.

    Args:
        data_dir: Folder of ``registry.sqlite3`` and the index cache; created by
            :meth:`open`.
        model_id, dim, keep_audio: see :class:`~streamer.registry.base.Registry`.
    """

    def __init__(self, data_dir: Path, model_id: str, dim: int, keep_audio: bool = False) -> None:
        super().__init__(model_id, dim, keep_audio)
        self.data_dir = Path(data_dir)
        self.db_path = self.data_dir / "registry.sqlite3"
        self.replica = Replica(self.data_dir, model_id, dim)
        self.index_path = self.replica.index_path
        self.meta_path = self.replica.meta_path
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open or create the database, then load the index cache or rebuild it.

        Call once at start-up, before serving. Raises :class:`RegistryError` when the
        folder or database cannot be opened, :class:`ConfigError` when stored
        voiceprints of ``model_id`` do not have ``dim`` values.
        """
        with self._lock:
            if self._db is not None:
                return
            try:
                self.data_dir.mkdir(parents=True, exist_ok=True)
                self._db = db = sqlite3.connect(self.db_path, isolation_level=None,
                                                check_same_thread=False)
                for pragma in ("journal_mode=WAL", "synchronous=FULL", "secure_delete=ON",
                               "foreign_keys=ON"):
                    db.execute(f"PRAGMA {pragma}")
                db.executescript(_SCHEMA)
                self.generation = self._db_generation()
                self.db_id = str(db.execute(
                    "SELECT value FROM meta WHERE key = 'db_id'").fetchone()[0])
                self.replica.remove_stale_temp_files()
                self.replica.set_rosters({
                    room: tuple(json.loads(people)) for room, people in
                    db.execute("SELECT room, people FROM rooms").fetchall()})
                if not self._load_cache():
                    self._rebuild()
                    self._save_cache()
            except (OSError, sqlite3.Error) as exc:
                self.close()
                raise RegistryError(f"cannot open registry database {self.db_path}: {exc}") from exc
            except ConfigError:
                self.close()
                raise
            logger.info("registry opened: %d people for model %s, generation %d",
                        len(self.replica), self.model_id, self.generation)

    def close(self) -> None:
        """Close the database; idempotent. The cache was already saved by each write."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            self.replica.clear()

    def check(self) -> int:
        """Health probe (``/healthz``): one read of the database, without the write lock.

        Call from a worker thread (it may wait while SQLite is busy). Returns the
        generation; raises :class:`RegistryError` when the registry is closed or the
        database cannot be read.
        """
        try:
            return self._db_generation()
        except sqlite3.Error as exc:
            raise RegistryError(f"the registry database cannot be read: {exc}") from exc

    def add_person(self, name: str, info: dict[str, Any] | None, embedding: np.ndarray,
                   speech_s: float, audio: np.ndarray | None = None) -> Person:
        """See :meth:`Registry.add_person`."""
        name = check_name(name)
        info_text = info_json({} if info is None else info)
        vector, pcm = self._check_voiceprint(embedding, speech_s, audio)
        now = time.time()
        with self._lock:
            with self._transaction() as db:
                person_id = new_person_id(lambda pid: db.execute(
                    "SELECT 1 FROM people WHERE id = ?", (pid,)).fetchone() is not None)
                key = cast(int, db.execute(
                    "INSERT INTO people (id, name, info, created) VALUES (?, ?, ?, ?)",
                    (person_id, name, info_text, now)).lastrowid)
                self._insert_voiceprint(db, key, vector, speech_s, pcm, now)
            return self._put(key, person_id, name, vector)

    def add_voiceprint(self, person_id: str, embedding: np.ndarray, speech_s: float,
                       audio: np.ndarray | None = None) -> Person:
        """See :meth:`Registry.add_voiceprint`."""
        vector, pcm = self._check_voiceprint(embedding, speech_s, audio)
        with self._lock:
            with self._transaction() as db:
                key = self._key(db, person_id)
                self._insert_voiceprint(db, key, vector, speech_s, pcm, time.time())
                name = db.execute("SELECT name FROM people WHERE key = ?", (key,)).fetchone()[0]
                rows = db.execute("SELECT embedding, speech_s FROM voiceprints "
                                  "WHERE person_key = ? AND model_id = ?", (key, self.model_id))
                centroid = self._centroid_of(rows.fetchall())
            return self._put(key, person_id, name, centroid)

    def update_person(self, person_id: str, name: str | None = None,
                      info: dict[str, Any] | None = None) -> Person:
        """See :meth:`Registry.update_person`."""
        name = None if name is None else check_name(name)
        info_text = None if info is None else info_json(info)
        with self._lock:
            with self._transaction() as db:
                key = self._key(db, person_id)
                db.execute("UPDATE people SET name = COALESCE(?, name), info = COALESCE(?, info) "
                           "WHERE key = ?", (name, info_text, key))
            if name is not None:
                self.replica.rename(key, name)
            self._save_cache()
            return self.get(person_id)

    def delete_person(self, person_id: str) -> None:
        """Erase a person, all their voiceprints (every model) and their audio.

        Rows are deleted with ``secure_delete`` on, the WAL is checkpointed and
        truncated, and the vector is erased from the index (:meth:`Replica.erase`) and
        the cache files are rewritten, so the vectors remain in no file. Raises :class:`UnknownPerson`, :class:`RegistryError` when a copy could
        not be erased.
        """
        with self._lock:
            with self._transaction() as db:
                key = self._key(db, person_id)
                db.execute("DELETE FROM people WHERE key = ?", (key,))
                rosters = self._leave_rosters(db, person_id)
            self.replica.hide(key)  # gone from search results at once; the index follows
            for room, people in rosters.items():
                self.replica.set_roster(room, people)
            try:
                busy, _, _ = self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as exc:
                raise RegistryError(f"cannot checkpoint the write-ahead log: {exc}") from exc
            if busy:
                raise RegistryError("could not checkpoint the write-ahead log after a delete")
            self.replica.erase({key})
            self._save_cache(must_replace=True)
            logger.info("deleted person %s", person_id)

    def set_room(self, room: str, people: list[str] | None) -> tuple[str, ...] | None:
        """See :meth:`Registry.set_room`."""
        roster = check_roster(room, people)
        with self._lock:
            with self._transaction() as db:
                if roster is None:
                    db.execute("DELETE FROM rooms WHERE room = ?", (room,))
                else:
                    known = {pid for (pid,) in db.execute(
                        "SELECT id FROM people WHERE id IN (SELECT value FROM json_each(?))",
                        (json.dumps(roster),))}
                    missing = [pid for pid in roster if pid not in known]
                    if missing:
                        raise UnknownPerson(missing[0])
                    db.execute("INSERT INTO rooms (room, people) VALUES (?, ?) ON CONFLICT "
                               "(room) DO UPDATE SET people = excluded.people",
                               (room, json.dumps(roster)))
            self.replica.set_roster(room, roster)
            return roster

    def _leave_rosters(self, db: sqlite3.Connection,
                       person_id: str) -> dict[str, tuple[str, ...]]:
        """Take ``person_id`` out of every roster (in the caller's transaction)."""
        changed = {}
        rows = db.execute("SELECT room, people FROM rooms WHERE EXISTS (SELECT 1 FROM "
                          "json_each(rooms.people) WHERE value = ?)", (person_id,)).fetchall()
        for room, people in rows:
            roster = tuple(pid for pid in json.loads(people) if pid != person_id)
            db.execute("UPDATE rooms SET people = ? WHERE room = ?", (json.dumps(roster), room))
            changed[room] = roster
        return changed

    def get(self, person_id: str) -> Person:
        """Return one person. Raises :class:`UnknownPerson`."""
        with self._lock:
            row = self._conn().execute(_PERSON_SQL + "WHERE p.id = ?",
                                       (self.model_id, person_id)).fetchone()
        if row is None:
            raise UnknownPerson(person_id)
        return person_from_row(row)

    def people(self) -> list[Person]:
        """Return everyone, oldest enrolment first (including people of other models)."""
        with self._lock:
            rows = self._conn().execute(_PERSON_SQL + "ORDER BY p.created, p.key",
                                        (self.model_id,)).fetchall()
        return [person_from_row(row) for row in rows]

    def _put(self, key: int, person_id: str, name: str, vector: np.ndarray) -> Person:
        """After a committed enrolment: (re)place the person's vector and save the cache."""
        self.replica.put(key, person_id, name, vector)
        self._save_cache()
        return self.get(person_id)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RegistryError("the registry is not open")
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that bumps ``generation``; commits before returning."""
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
                generation = self._db_generation()
                db.execute("COMMIT")
            finally:
                if db.in_transaction:  # the body or the commit failed
                    db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise RegistryError(f"registry write failed: {exc}") from exc
        self.generation = generation

    def _db_generation(self) -> int:
        return int(self._conn().execute(
            "SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    def _key(self, db: sqlite3.Connection, person_id: str) -> int:
        row = db.execute("SELECT key FROM people WHERE id = ?", (person_id,)).fetchone()
        if row is None:
            raise UnknownPerson(person_id)
        return int(row[0])

    def _insert_voiceprint(self, db: sqlite3.Connection, key: int, vector: np.ndarray,
                           speech_s: float, pcm: bytes | None, now: float) -> None:
        vp = db.execute("INSERT INTO voiceprints (person_key, model_id, embedding, speech_s, "
                        "created) VALUES (?, ?, ?, ?, ?)",
                        (key, self.model_id, vector.astype("<f4").tobytes(), speech_s,
                         now)).lastrowid
        if pcm is not None and self.keep_audio:
            db.execute("INSERT INTO enrol_audio (voiceprint_id, pcm) VALUES (?, ?)", (vp, pcm))

    def _centroid_of(self, rows: list[tuple[bytes, float]]) -> np.ndarray:
        """Centroid of stored (blob, speech_s) rows. ConfigError on a bad dim."""
        for blob, _ in rows:
            if len(blob) != 4 * self.dim:
                raise ConfigError(f"stored voiceprints of model {self.model_id!r} have "
                                  f"{len(blob) // 4} values, the model gives {self.dim}")
        return self._centroid([np.frombuffer(blob, dtype="<f4") for blob, _ in rows],
                              [speech_s for _, speech_s in rows])

    def _rebuild(self) -> None:
        """Recompute every centroid from SQLite into a fresh index (drops tombstones)."""
        grouped: dict[int, list[tuple[bytes, float]]] = {}
        names: dict[int, tuple[str, str]] = {}
        rows = self._conn().execute(
            "SELECT p.key, p.id, p.name, v.embedding, v.speech_s FROM voiceprints v "
            "JOIN people p ON p.key = v.person_key WHERE v.model_id = ? ORDER BY p.key, v.id",
            (self.model_id,))
        for key, person_id, name, blob, speech_s in rows:
            grouped.setdefault(key, []).append((blob, speech_s))
            names[key] = (person_id, name)
        self.replica.replace({key: (*names[key], self._centroid_of(vps))
                              for key, vps in grouped.items()})
        logger.debug("index rebuilt from the database: %d people", len(names))

    def _load_cache(self) -> bool:
        """Load the cache if it is intact and reflects this generation; else return False."""
        state = self.replica.load(self.db_id)
        if state is None:
            return False
        rows = self._conn().execute(
            "SELECT key, id, name FROM people p WHERE EXISTS (SELECT 1 FROM voiceprints v "
            "WHERE v.person_key = p.key AND v.model_id = ?)", (self.model_id,))
        names = {key: (person_id, name) for key, person_id, name in rows}
        if state.generation != self.generation or state.names != names:
            logger.info("index cache is stale; rebuilding")
            return False
        return True

    def _save_cache(self, must_replace: bool = False) -> None:
        self.replica.save(self.db_id, self.generation, must_replace)
