"""Enrolled people and their voiceprints: SQLite is the truth, USearch a derived cache.

Call order: build :class:`Registry` (cheap, no I/O), :meth:`~Registry.open` it before
serving, call it from any thread, :meth:`~Registry.close` it at shutdown. One process
writes. Two locks: a re-entrant *writer* lock serialises the database and every change
(one writer at a time, which USearch's add/remove also need), and a short *view* lock
guards the index and the names that :meth:`~Registry.search` reads. A search never waits
for a write: a deletion rebuilds the new index beside the old one and swaps it in, and
the deleted person is hidden from searches as soon as the deletion is committed.

``registry.sqlite3`` runs in WAL mode with ``synchronous=FULL`` (a write returns only
once durable), ``secure_delete`` and foreign keys. Each voiceprint records its model id;
only vectors of this registry's ``model_id`` are loaded. The index holds one vector per
person, keyed by ``people.key``: the speech-seconds-weighted mean of their voiceprints,
renormalised to unit length.

Cache: ``index-<model>.usearch`` and a sidecar ``index-<model>.json`` (database id,
generation, model id, dim, count, SHA-256 of the index). Each is replaced atomically,
index first, so a crash in between leaves a stale sidecar and a rebuild. The database id
is random, drawn when the database is created, so a cache is never taken for the cache
of another database that happens to be at the same generation (a database restored from
a backup or recreated beside an old cache). Every write commits before the cache is
touched, so after ``kill -9`` the cache is at most one generation behind the database
and is rebuilt at the next :meth:`~Registry.open`. Enrolments update the index in
place (``remove`` then ``add``, checked on usearch 2.23); a deletion rebuilds it from
SQLite, because ``save()`` writes removed vectors (tombstones) to disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from usearch.compiled import MetricKind, ScalarKind
from usearch.index import Index
from usearch.index import search as brute_force_search

from .errors import ConfigError, RegistryError, UnknownPerson
from .units import l2sq_to_distance

__all__ = ["EXACT_SEARCH_MAX_VECTORS", "Candidate", "Person", "Registry"]

logger = logging.getLogger("streamer.registry")

#: Up to this many people, search scans every vector (exact) instead of walking the
#: approximate HNSW graph; a brute-force scan of 10k vectors takes about a millisecond.
EXACT_SEARCH_MAX_VECTORS = 10_000

# HNSW parameters of the index, chosen with bench/gallery.py (README "Gallery scale"):
# at 1 M voiceprints, the highest recall@1 against exact search with a search within 2 ms
# (p99, 2 cores). USearch's defaults (connectivity 16, expansion_add 128, expansion_search
# 64) found the exact nearest for 36 % of queries (p99 0.8 ms); this denser graph, built
# with a wider beam, finds it for 56 % (p99 1.7 ms), and for 86 % instead of 65 % at
# 100 k. Neither reaches the 99 % target (see the README). The price is build time, 2.7x
# USearch's defaults: a rebuild (start-up without a valid cache, every delete) took 888 s
# instead of 327 s for 1 M people. expansion_search is not stored in the index file: it
# applies to a loaded cache too and can change without a rebuild.
INDEX_CONNECTIVITY = 32
INDEX_EXPANSION_ADD = 256
INDEX_EXPANSION_SEARCH = 128

_CACHE_FORMAT = 1
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
"""
_PERSON_SQL = """
SELECT p.id, p.name, p.info, p.created,
       COALESCE((SELECT SUM(v.speech_s) FROM voiceprints v
                 WHERE v.person_key = p.key AND v.model_id = ?), 0.0)
FROM people p
"""


@dataclass(frozen=True)
class Person:
    """An enrolled person; ``speech_s`` sums the voiceprints of the registry's model."""

    id: str
    name: str
    info: dict[str, Any]
    speech_s: float
    created: float

    def to_wire(self) -> dict[str, Any]:
        """Return the protocol's ``person`` map."""
        return {"id": self.id, "name": self.name, "info": dict(self.info),
                "speech_s": self.speech_s, "created": self.created}


@dataclass(frozen=True)
class Candidate:
    """A search result; ``distance`` is Euclidean between unit vectors (0..2)."""

    id: str
    name: str
    distance: float

    def to_wire(self) -> dict[str, Any]:
        """Return the protocol's ``candidate`` map."""
        return {"id": self.id, "name": self.name, "distance": self.distance}


class Registry:
    """People, voiceprints and a nearest-neighbour index for one embedding model.

    Args:
        data_dir: Folder of ``registry.sqlite3`` and the index cache; created by
            :meth:`open`.
        model_id: Identifies the embedder; only its voiceprints are compared.
        dim: Embedding length of that model.
        keep_audio: Store enrolment PCM so voiceprints can be rebuilt for a new model.
    """

    def __init__(self, data_dir: Path, model_id: str, dim: int, keep_audio: bool = False) -> None:
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"model_id must be a non-empty string, got {model_id!r}")
        self.data_dir = Path(data_dir)
        self.model_id = model_id
        self.dim = dim
        self.keep_audio = keep_audio
        slug = re.sub(r"[^A-Za-z0-9._-]", "_", model_id)[:64]
        self.db_path = self.data_dir / "registry.sqlite3"
        self.index_path = self.data_dir / f"index-{slug}.usearch"
        self.meta_path = self.data_dir / f"index-{slug}.json"
        #: Database generation; increments with every committed change.
        self.generation = 0
        #: Random id of this database file (``meta.db_id``); ties the cache to it.
        self.db_id = ""
        self._lock = threading.RLock()
        #: Guards ``_index`` / ``_names`` for readers; held only for short steps.
        self._view_lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._index = self._new_index()
        self._names: dict[int, tuple[str, str]] = {}  # people.key -> (id, name)

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
                for stale in self.data_dir.glob(".index-*.tmp"):  # left by a crash mid-save
                    stale.unlink(missing_ok=True)
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
                        len(self._names), self.model_id, self.generation)

    def close(self) -> None:
        """Close the database; idempotent. The cache was already saved by each write."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            with self._view_lock:
                self._index = self._new_index()
                self._names = {}

    def __len__(self) -> int:
        """Number of people with at least one voiceprint of ``model_id``."""
        with self._view_lock:
            return len(self._names)

    def check(self) -> None:
        """Health probe (``/healthz``): one read of the database, without the write lock.

        Call from a worker thread (it may wait while SQLite is busy). Raises
        :class:`RegistryError` when the registry is closed or the database cannot be read.
        """
        try:
            self._db_generation()
        except sqlite3.Error as exc:
            raise RegistryError(f"the registry database cannot be read: {exc}") from exc

    def add_person(self, name: str, info: dict[str, Any] | None, embedding: np.ndarray,
                   speech_s: float, audio: np.ndarray | None = None) -> Person:
        """Enrol a new person with one voiceprint; return it once committed.

        Raises :class:`ValueError` for a bad name, info, embedding or ``speech_s``, and
        :class:`RegistryError` when the write fails.
        """
        name = _check_name(name)
        info_json = _info_json({} if info is None else info)
        vector, blob, pcm = self._check_voiceprint(embedding, speech_s, audio)
        now = time.time()
        with self._lock:
            with self._transaction() as db:
                for _ in range(3):  # 48 random bits: a collision is all but impossible
                    person_id = "p_" + secrets.token_hex(6)
                    if db.execute("SELECT 1 FROM people WHERE id = ?",
                                  (person_id,)).fetchone() is None:
                        break
                key = cast(int, db.execute(
                    "INSERT INTO people (id, name, info, created) VALUES (?, ?, ?, ?)",
                    (person_id, name, info_json, now)).lastrowid)
                self._insert_voiceprint(db, key, blob, speech_s, pcm, now)
            return self._put(key, person_id, name, vector)

    def add_voiceprint(self, person_id: str, embedding: np.ndarray, speech_s: float,
                       audio: np.ndarray | None = None) -> Person:
        """Add another enrolment to ``person_id`` and re-weight their centroid.

        Raises :class:`UnknownPerson`, :class:`ValueError` for a bad embedding or
        ``speech_s``, :class:`RegistryError` when the write fails.
        """
        _, blob, pcm = self._check_voiceprint(embedding, speech_s, audio)
        with self._lock:
            with self._transaction() as db:
                key = self._key(db, person_id)
                self._insert_voiceprint(db, key, blob, speech_s, pcm, time.time())
                name = db.execute("SELECT name FROM people WHERE key = ?", (key,)).fetchone()[0]
                rows = db.execute("SELECT embedding, speech_s FROM voiceprints "
                                  "WHERE person_key = ? AND model_id = ?", (key, self.model_id))
                centroid = self._centroid(rows.fetchall())
            return self._put(key, person_id, name, centroid)

    def update_person(self, person_id: str, name: str | None = None,
                      info: dict[str, Any] | None = None) -> Person:
        """Change the name and/or info (``None`` keeps a field). Raises :class:`UnknownPerson`."""
        name = None if name is None else _check_name(name)
        info_json = None if info is None else _info_json(info)
        with self._lock:
            with self._transaction() as db:
                key = self._key(db, person_id)
                db.execute("UPDATE people SET name = COALESCE(?, name), info = COALESCE(?, info) "
                           "WHERE key = ?", (name, info_json, key))
            with self._view_lock:
                if name is not None and key in self._names:
                    self._names[key] = (person_id, name)
            self._save_cache()
            return self.get(person_id)

    def delete_person(self, person_id: str) -> None:
        """Erase a person, all their voiceprints (every model) and their audio.

        Rows are deleted with ``secure_delete`` on, the WAL is checkpointed and
        truncated, and the index is rebuilt and re-saved, so the vectors remain in no
        file. Raises :class:`UnknownPerson`, :class:`RegistryError` when a copy could
        not be erased.
        """
        with self._lock:
            with self._transaction() as db:
                key = self._key(db, person_id)
                db.execute("DELETE FROM people WHERE key = ?", (key,))
            with self._view_lock:  # gone from search results at once; the index follows
                self._names.pop(key, None)
            try:
                busy, _, _ = self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as exc:
                raise RegistryError(f"cannot checkpoint the write-ahead log: {exc}") from exc
            if busy:
                raise RegistryError("could not checkpoint the write-ahead log after a delete")
            self._rebuild()
            self._save_cache(must_replace=True)
            logger.info("deleted person %s", person_id)

    def get(self, person_id: str) -> Person:
        """Return one person. Raises :class:`UnknownPerson`."""
        with self._lock:
            row = self._conn().execute(_PERSON_SQL + "WHERE p.id = ?",
                                       (self.model_id, person_id)).fetchone()
        if row is None:
            raise UnknownPerson(person_id)
        return _person(row)

    def people(self) -> list[Person]:
        """Return everyone, oldest enrolment first (including people of other models)."""
        with self._lock:
            rows = self._conn().execute(_PERSON_SQL + "ORDER BY p.created, p.key",
                                        (self.model_id,)).fetchall()
        return [_person(row) for row in rows]

    def search(self, embedding: np.ndarray, k: int) -> list[Candidate]:
        """Return up to ``k`` people nearest to ``embedding``, nearest first.

        Exact up to :data:`EXACT_SEARCH_MAX_VECTORS` people, HNSW beyond. Returns ``[]``
        when nobody is enrolled. Raises :class:`ValueError` for a bad embedding or ``k``.
        """
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        vector = self._unit(embedding)
        with self._view_lock:
            if not self._names:
                return []
            exact = len(self._names) <= EXACT_SEARCH_MAX_VECTORS
            matches = self._index.search(vector, k, exact=exact)
            return [Candidate(*self._names[int(key)], l2sq_to_distance(l2sq))
                    for key, l2sq in zip(matches.keys, matches.distances)
                    if int(key) in self._names]

    def distance_to(self, person_id: str, embedding: np.ndarray) -> float:
        """Return ``distance`` from ``embedding`` to one person, as :meth:`search` scores it.

        Raises :class:`UnknownPerson` (also when the person has no voiceprint of this
        model) and :class:`ValueError` for a bad embedding.
        """
        vector = self._unit(embedding)
        with self._lock:
            key = self._key(self._conn(), person_id)
        with self._view_lock:
            if key not in self._names:
                raise UnknownPerson(person_id)
            centroid = np.asarray(self._index.get(key), dtype=np.float32).reshape(1, -1)
        # Same SIMD l2sq kernel as Index.search, so the numbers agree exactly.
        match = brute_force_search(centroid, vector, 1, MetricKind.L2sq, exact=True)
        return l2sq_to_distance(float(match.distances[0]))

    def _put(self, key: int, person_id: str, name: str, vector: np.ndarray) -> Person:
        """After a committed enrolment: (re)place the person's vector and save the cache."""
        with self._view_lock:
            if key in self._names:
                self._index.remove(key)
            self._index.add(key, vector)
            self._names[key] = (person_id, name)
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

    def _insert_voiceprint(self, db: sqlite3.Connection, key: int, blob: bytes,
                           speech_s: float, pcm: bytes | None, now: float) -> None:
        vp = db.execute("INSERT INTO voiceprints (person_key, model_id, embedding, speech_s, "
                        "created) VALUES (?, ?, ?, ?, ?)",
                        (key, self.model_id, blob, speech_s, now)).lastrowid
        if pcm is not None and self.keep_audio:
            db.execute("INSERT INTO enrol_audio (voiceprint_id, pcm) VALUES (?, ?)", (vp, pcm))

    def _new_index(self) -> Index:
        # connectivity is stored in the saved file; both expansions come from here, also
        # for a loaded cache (see the INDEX_* constants).
        return Index(ndim=self.dim, metric="l2sq", dtype="f32",
                     connectivity=INDEX_CONNECTIVITY, expansion_add=INDEX_EXPANSION_ADD,
                     expansion_search=INDEX_EXPANSION_SEARCH)

    def _unit(self, embedding: np.ndarray) -> np.ndarray:
        """Validate and return ``embedding`` as a unit-length float32 vector."""
        try:
            vector = np.asarray(embedding, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError("embedding must be a numeric array") from None
        if vector.ndim != 1 or vector.shape[0] != self.dim:
            raise ValueError(f"embedding must have shape ({self.dim},), got {vector.shape}")
        norm = float(np.linalg.norm(vector))
        if not np.all(np.isfinite(vector)) or not math.isfinite(norm) or norm == 0.0:
            raise ValueError("embedding must be finite and non-zero")
        return (vector / norm).astype(np.float32)

    def _check_voiceprint(self, embedding: np.ndarray, speech_s: float,
                          audio: np.ndarray | None) -> tuple[np.ndarray, bytes, bytes | None]:
        vector = self._unit(embedding)
        if isinstance(speech_s, bool) or not isinstance(speech_s, (int, float)) \
                or not math.isfinite(speech_s) or speech_s <= 0:
            raise ValueError(f"speech_s must be a finite number > 0 seconds, got {speech_s!r}")
        pcm = None
        if audio is not None and self.keep_audio:
            samples = np.asarray(audio)
            if samples.ndim != 1:
                raise ValueError("audio must be mono (1-D) 16 kHz PCM")
            if np.issubdtype(samples.dtype, np.floating):  # [-1, 1] float -> int16
                samples = np.round(np.clip(samples, -1.0, 1.0) * 32767.0)
            elif samples.dtype != np.int16:
                raise ValueError(f"audio must be int16 or float, got {samples.dtype}")
            pcm = samples.astype("<i2").tobytes()
        return vector, vector.astype("<f4").tobytes(), pcm

    def _centroid(self, rows: list[tuple[bytes, float]]) -> np.ndarray:
        """Speech-weighted mean of unit voiceprints, renormalised. ConfigError on bad dim."""
        vectors = []
        for blob, _ in rows:
            if len(blob) != 4 * self.dim:
                raise ConfigError(f"stored voiceprints of model {self.model_id!r} have "
                                  f"{len(blob) // 4} values, the model gives {self.dim}")
            vectors.append(np.frombuffer(blob, dtype="<f4"))
        weights = np.array([s for _, s in rows], dtype=np.float64)
        mean = weights @ np.array(vectors, dtype=np.float64)
        norm = float(np.linalg.norm(mean))
        if norm < 1e-9:  # voiceprints cancel out exactly: keep the best-supported one
            mean, norm = np.asarray(vectors[int(np.argmax(weights))], np.float64), 1.0
        return (mean / norm).astype(np.float32)

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
        index = self._new_index()
        if grouped:
            keys = np.fromiter(grouped, dtype=np.uint64, count=len(grouped))
            index.add(keys, np.stack([self._centroid(vps) for vps in grouped.values()]))
        with self._view_lock:
            self._index, self._names = index, names
        logger.debug("index rebuilt from the database: %d people", len(names))

    def _load_cache(self) -> bool:
        """Load the cache if it is intact and reflects this generation; else return False."""
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            data = self.index_path.read_bytes()
        except FileNotFoundError:
            logger.debug("no index cache yet; building it from the database")
            return False
        except (OSError, ValueError):
            logger.warning("index cache unreadable; rebuilding it from the database")
            return False
        expected = {"format": _CACHE_FORMAT, "db_id": self.db_id,
                    "generation": self.generation, "model_id": self.model_id, "dim": self.dim,
                    "sha256": hashlib.sha256(data).hexdigest()}
        if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in expected.items()):
            logger.info("index cache is stale or damaged; rebuilding")
            return False
        try:
            header = cast(dict[str, Any], Index.metadata(data))
            if (header["dimensions"] != self.dim or header["kind_metric"] != MetricKind.L2sq
                    or header["kind_scalar"] != ScalarKind.F32):
                raise ValueError("index metadata does not match the model")
            index = self._new_index()
            index.load(data)
        except (ValueError, RuntimeError) as exc:
            logger.warning("index cache cannot be used (%s); rebuilding", exc)
            return False
        rows = self._conn().execute(
            "SELECT key, id, name FROM people p WHERE EXISTS (SELECT 1 FROM voiceprints v "
            "WHERE v.person_key = p.key AND v.model_id = ?)", (self.model_id,))
        names = {key: (person_id, name) for key, person_id, name in rows}
        if len(index) != len(names) or not all(key in index for key in names):
            logger.warning("index cache does not match the database; rebuilding")
            return False
        with self._view_lock:
            self._index, self._names = index, names
        return True

    def _save_cache(self, must_replace: bool = False) -> None:
        """Atomically write the index, then its sidecar, for the current generation.

        A failed save only costs a rebuild at the next start, so it is logged; after a
        delete (``must_replace``) the old files would still hold the erased vectors, so
        they are removed, and :class:`RegistryError` is raised if even that fails.
        """
        data = bytes(cast(bytes, self._index.save()))
        meta = {"format": _CACHE_FORMAT, "db_id": self.db_id, "generation": self.generation,
                "model_id": self.model_id, "dim": self.dim, "count": len(self._index),
                "sha256": hashlib.sha256(data).hexdigest()}
        try:
            _atomic_write(self.index_path, data)
            _atomic_write(self.meta_path, json.dumps(meta).encode("utf-8"))
        except OSError as exc:
            logger.warning("cannot save the index cache: %s", exc)
            try:
                self.meta_path.unlink(missing_ok=True)
                self.index_path.unlink(missing_ok=True)
            except OSError as exc2:
                if must_replace:
                    raise RegistryError(f"cannot erase the index cache: {exc2}") from exc2


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".index-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)  # no-op after a successful replace


def _person(row: tuple[Any, ...]) -> Person:
    person_id, name, info, created, speech_s = row
    return Person(person_id, name, json.loads(info), float(speech_s), float(created))


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("name must be a non-empty string")
    return name


def _info_json(info: dict[str, Any]) -> str:
    if not isinstance(info, dict):
        raise ValueError("info must be a JSON object (dict)")
    try:
        return json.dumps(info, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"info must be JSON-serialisable: {exc}") from None
