"""The embedded registry: SQLite is the truth, a USearch :class:`Replica` derived from it.

One process writes. A re-entrant *writer* lock serialises the database and every change
(one writer at a time, which USearch's add/remove also need); the replica's own locks
(:mod:`.replica`) let a search go on during a write and during a background save. A
deletion hides the person from searches as soon as it commits.

``registry.sqlite3`` runs in WAL mode with ``synchronous=FULL`` (a write returns only
once durable), ``secure_delete`` and foreign keys. Each voiceprint records its model id;
only vectors of this registry's ``model_id`` are loaded. The index holds one vector per
person, keyed by ``people.key``: the speech-seconds-weighted mean of their voiceprints,
renormalised to unit length. Every write bumps the database's generation and stamps the
people it changes (enrolment, added voiceprint, rename) with it (``people.generation``,
added to older databases at open).

The cache (:mod:`.replica`) is tied to the database's random id (drawn when the database
is created, so a cache is never taken for that of another database at the same
generation, e.g. one restored from a backup). It is written in the background a moment
after each write, so after ``kill -9`` it may be several generations behind: :meth:`open`
then catches it up (recomputes the people stamped since, adds the ones missing from it,
erases the ones no longer in the database) and rebuilds only a cache that is damaged,
of another database or model, newer than the database, or too far behind. Names come
from the database, not the cache.
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
from .replica import Replica, discard_model_files

__all__ = ["SqliteRegistry"]

logger = logging.getLogger("streamer.registry")

#: A cache behind the database is caught up person by person (HNSW inserts) when at
#: most this share of the people changed since; beyond, rebuilding it is faster.
CATCH_UP_MAX_SHARE = 0.25
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('generation', 0), ('schema_version', 1),
    ('db_id', lower(hex(randomblob(16))));
CREATE TABLE IF NOT EXISTS people (key INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE, name TEXT NOT NULL, info TEXT NOT NULL, created REAL NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0);
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
        """Open or create the database (adding ``people.generation`` to an older one),
        then load the index cache and catch it up, or rebuild it.

        Call once at start-up, before serving. Returns once the index reflects the
        database; a large rebuilt index is checked for unreachable vectors in the
        background after that, and a loaded cache file's checksum too. Raises
        :class:`RegistryError` when the folder or database cannot be opened,
        :class:`ConfigError` when stored voiceprints of ``model_id`` do not have ``dim``
        values.
        """
        with self._lock:
            if self._db is not None:
                return
            try:
                self.data_dir.mkdir(parents=True, exist_ok=True)
                self._db = db = sqlite3.connect(self.db_path, isolation_level=None,
                                                check_same_thread=False)
                # Unicode-aware case folding for people_page's query (SQLite's lower()
                # folds ASCII only)
                db.create_function("casefold", 1, _casefold, deterministic=True)
                for pragma in ("journal_mode=WAL", "synchronous=FULL", "secure_delete=ON",
                               "foreign_keys=ON"):
                    db.execute(f"PRAGMA {pragma}")
                db.executescript(_SCHEMA)
                self._migrate(db)
                self.generation = self._db_generation()
                self.db_id = str(db.execute(
                    "SELECT value FROM meta WHERE key = 'db_id'").fetchone()[0])
                self.replica.remove_stale_temp_files()
                self.replica.set_rosters({
                    room: tuple(json.loads(people)) for room, people in
                    db.execute("SELECT room, people FROM rooms").fetchall()})
                self.replica.source = self._entries
                self._load_index()
                self.replica.check_loaded_file()
            except (OSError, sqlite3.Error) as exc:
                self.close()
                raise RegistryError(f"cannot open registry database {self.db_path}: {exc}") from exc
            except (ConfigError, RegistryError):
                self.close()
                raise
            logger.info("registry opened: %d people for model %s, generation %d",
                        len(self.replica), self.model_id, self.generation)

    def close(self) -> None:
        """Write the pending index cache save, close the database; idempotent."""
        with self._lock:
            self.replica.close()
            if self._db is not None:
                self._db.close()
                self._db = None

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
            with self._transaction() as (db, generation):
                person_id = new_person_id(lambda pid: db.execute(
                    "SELECT 1 FROM people WHERE id = ?", (pid,)).fetchone() is not None)
                key = cast(int, db.execute(
                    "INSERT INTO people (id, name, info, created, generation) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (person_id, name, info_text, now, generation)).lastrowid)
                self._insert_voiceprint(db, key, vector, speech_s, pcm, now)
            return self._put(key, person_id, name, vector)

    def add_voiceprint(self, person_id: str, embedding: np.ndarray, speech_s: float,
                       audio: np.ndarray | None = None) -> Person:
        """See :meth:`Registry.add_voiceprint`."""
        vector, pcm = self._check_voiceprint(embedding, speech_s, audio)
        with self._lock:
            with self._transaction() as (db, generation):
                key = self._key(db, person_id)
                self._insert_voiceprint(db, key, vector, speech_s, pcm, time.time())
                db.execute("UPDATE people SET generation = ? WHERE key = ?", (generation, key))
                name = db.execute("SELECT name FROM people WHERE key = ?", (key,)).fetchone()[0]
                rows = db.execute("SELECT embedding, speech_s FROM voiceprints "
                                  "WHERE person_key = ? AND model_id = ?", (key, self.model_id))
                centroid = self._centroid_of(rows.fetchall())
            return self._put(key, person_id, name, centroid)

    def add_first_voiceprints(self, entries: list[tuple[str, np.ndarray, float]]) -> int:
        """See :meth:`Registry.add_first_voiceprints`."""
        checked = [(pid, self._check_voiceprint(e, s, None)[0], s) for pid, e, s in entries]
        added: list[tuple[int, str, str, np.ndarray]] = []
        with self._lock:
            with self._transaction() as (db, generation):
                now = time.time()
                for person_id, vector, speech_s in checked:
                    row = db.execute(
                        "SELECT p.key, p.name FROM people p WHERE p.id = ? AND NOT EXISTS "
                        "(SELECT 1 FROM voiceprints v WHERE v.person_key = p.key "
                        "AND v.model_id = ?)", (person_id, self.model_id)).fetchone()
                    if row is None:
                        continue
                    self._insert_voiceprint(db, int(row[0]), vector, speech_s, None, now)
                    db.execute("UPDATE people SET generation = ? WHERE key = ?",
                               (generation, row[0]))
                    added.append((int(row[0]), person_id, str(row[1]),
                                  self._centroid([vector], [speech_s])))
            self.replica.put_many({key: (person_id, name, centroid)
                                   for key, person_id, name, centroid in added})
            self.replica.mark(self.db_id, self.generation)
        return len(added)

    def update_person(self, person_id: str, name: str | None = None,
                      info: dict[str, Any] | None = None) -> Person:
        """See :meth:`Registry.update_person`."""
        name = None if name is None else check_name(name)
        info_text = None if info is None else info_json(info)
        with self._lock:
            with self._transaction() as (db, generation):
                key = self._key(db, person_id)
                db.execute("UPDATE people SET name = COALESCE(?, name), "
                           "info = COALESCE(?, info), generation = ? WHERE key = ?",
                           (name, info_text, generation, key))
            if name is not None:
                self.replica.rename(key, name)
            self.replica.mark(self.db_id, self.generation)  # the sidecar alone is rewritten
            return self.get(person_id)

    def delete_person(self, person_id: str) -> None:
        """Erase a person, all their voiceprints (every model) and their audio.

        Rows are deleted with ``secure_delete`` on, the WAL is checkpointed and
        truncated, the vector is erased from the index (:meth:`Replica.erase`) and the
        index cache file is removed (:meth:`Replica.discard_files`; a background save
        writes it again without them), and so are the cache files of other models the
        person had voiceprints of; so the vectors remain in no file when this returns.
        Raises :class:`UnknownPerson`, :class:`RegistryError` when a copy could not be
        erased.
        """
        with self._lock:
            with self._transaction() as (db, _):
                key = self._key(db, person_id)
                other_models = [model for (model,) in db.execute(
                    "SELECT DISTINCT model_id FROM voiceprints WHERE person_key = ? "
                    "AND model_id != ?", (key, self.model_id))]
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
            self.replica.discard_files()
            for model in other_models:
                discard_model_files(self.data_dir, model)
            self.replica.mark(self.db_id, self.generation)
            logger.info("deleted person %s", person_id)

    def set_room(self, room: str, people: list[str] | None) -> tuple[str, ...] | None:
        """See :meth:`Registry.set_room`."""
        roster = check_roster(room, people)
        with self._lock:
            with self._transaction() as (db, _):
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
            self.replica.mark(self.db_id, self.generation)
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

    def people_page(self, offset: int, limit: int,
                    query: str | None = None) -> tuple[list[Person], int]:
        """See :meth:`Registry.people_page` (answered by SQLite: one page is read)."""
        where, args = "", ()
        if query is not None:
            where = "WHERE p.id = ? OR instr(casefold(p.name), ?) > 0 "
            args = (query, query.casefold())
        with self._lock:
            db = self._conn()
            total = int(db.execute(f"SELECT COUNT(*) FROM people p {where}", args).fetchone()[0])
            rows = db.execute(_PERSON_SQL + where + "ORDER BY p.created, p.key LIMIT ? OFFSET ?",
                              (self.model_id, *args, limit, offset)).fetchall()
        return [person_from_row(row) for row in rows], total

    def _put(self, key: int, person_id: str, name: str, vector: np.ndarray) -> Person:
        """After a committed enrolment: (re)place the person's vector; the cache follows
        in the background."""
        self.replica.put(key, person_id, name, vector)
        self.replica.mark(self.db_id, self.generation)
        return self.get(person_id)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RegistryError("the registry is not open")
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[tuple[sqlite3.Connection, int]]:
        """One write transaction that bumps ``generation``: yields (connection, the new
        generation) and commits before returning."""
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
                generation = self._db_generation()
                yield db, generation
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

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Bring an older database to :data:`SCHEMA_VERSION`: ``people.generation``
        (existing people get 0: older than any cache saved from now on) and its index."""
        columns = {row[1] for row in db.execute("PRAGMA table_info(people)")}
        db.execute("BEGIN IMMEDIATE")
        try:
            if "generation" not in columns:
                db.execute("ALTER TABLE people ADD COLUMN generation INTEGER NOT NULL "
                           "DEFAULT 0")
            db.execute("CREATE INDEX IF NOT EXISTS people_generation ON people (generation)")
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version' AND value < ?",
                       (SCHEMA_VERSION, SCHEMA_VERSION))
            db.execute("COMMIT")
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")

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

    def _entries(self, keys: list[int] | None = None
                 ) -> dict[int, tuple[str, str, np.ndarray]]:
        """key -> (id, name, centroid) of everyone with a voiceprint of this model, or of
        those of ``keys`` who have one. Takes the writer lock (any thread).
        ConfigError on a bad stored dim."""
        grouped: dict[int, list[tuple[bytes, float]]] = {}
        names: dict[int, tuple[str, str]] = {}
        sql = ("SELECT p.key, p.id, p.name, v.embedding, v.speech_s FROM voiceprints v "
               "JOIN people p ON p.key = v.person_key WHERE v.model_id = ?")
        with self._lock:
            if keys is None:
                rows = self._conn().execute(sql + " ORDER BY p.key, v.id", (self.model_id,))
            else:
                rows = self._conn().execute(
                    sql + " AND v.person_key IN (SELECT value FROM json_each(?)) "
                    "ORDER BY p.key, v.id", (self.model_id, json.dumps(keys)))
            for key, person_id, name, blob, speech_s in rows:
                grouped.setdefault(key, []).append((blob, speech_s))
                names[key] = (person_id, name)
        return {key: (*names[key], self._centroid_of(vps)) for key, vps in grouped.items()}

    def _rebuild(self) -> None:
        """Recompute every centroid from SQLite into a fresh index (drops placeholders);
        the cache files are removed at once (a cache not used may hold people deleted
        since) and written again in the background."""
        self.replica.clear()
        self.replica.discard_files()
        self.replica.replace(self._entries())
        self.replica.mark(self.db_id, self.generation)
        logger.debug("index rebuilt from the database: %d people", len(self.replica))

    def _load_index(self) -> None:
        """Load the cache and catch it up with the database, or rebuild the index."""
        state = self.replica.load(self.db_id)
        if state is None:
            self._rebuild()
            return
        names = {key: (person_id, name) for key, person_id, name in self._conn().execute(
            "SELECT key, id, name FROM people p WHERE EXISTS (SELECT 1 FROM voiceprints v "
            "WHERE v.person_key = p.key AND v.model_id = ?)", (self.model_id,))}
        db_keys = np.sort(np.fromiter(names, dtype=np.uint64, count=len(names)))
        if state.generation == self.generation:
            if np.array_equal(state.keys, db_keys):
                self.replica.set_names(names)
                return
            why = "does not hold the database's people"
        elif state.generation > self.generation:
            why = "is newer than the database (restored from a backup?)"
        else:
            self._catch_up(state.generation, state.keys, names, db_keys)
            return
        logger.info("index cache %s; rebuilding", why)
        self._rebuild()

    def _catch_up(self, since: int, cached: np.ndarray, names: dict[int, tuple[str, str]],
                  db_keys: np.ndarray) -> None:
        """Bring a loaded cache of generation ``since`` (people keys ``cached``) up to
        the database: people stamped since or missing from it are recomputed and put,
        people no longer in the database erased (and the old cache file removed)."""
        changed = np.fromiter((key for (key,) in self._conn().execute(
            "SELECT key FROM people WHERE generation > ?", (since,))), dtype=np.uint64)
        # every array holds unique keys (sorting is all the set operations need)
        todo = np.union1d(np.intersect1d(changed, db_keys, assume_unique=True),
                          np.setdiff1d(db_keys, cached, assume_unique=True))
        gone = np.setdiff1d(cached, db_keys, assume_unique=True)
        if len(todo) > max(100, CATCH_UP_MAX_SHARE * len(db_keys)):
            logger.info("index cache is %d generation(s) behind with %d people changed; "
                        "rebuilding", self.generation - since, len(todo))
            self._rebuild()
            return
        self.replica.set_names(names)  # the new people's vectors follow at once
        self.replica.put_many(self._entries([int(key) for key in todo]))
        if len(gone):
            self.replica.erase({int(key) for key in gone})
            self.replica.discard_files()  # the loaded file holds their vectors
        self.replica.mark(self.db_id, self.generation)
        logger.info("index cache caught up from generation %d to %d: %d people put, %d "
                    "erased", since, self.generation, len(todo), len(gone))


def _casefold(text: object) -> object:
    return text.casefold() if isinstance(text, str) else text
