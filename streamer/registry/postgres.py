"""The cluster registry: PostgreSQL is the truth, each server keeps its own replica.

Several servers share one database (``registry.url``). Tables mirror the SQLite schema
(vectors as ``float4[]``, no extension needed), plus one ``streamer_state`` row with
the database's random id and its **generation**. Every change runs in one transaction
that bumps the generation (the row lock orders all writers of the cluster), stamps the
changed person's row with it, and ``NOTIFY``\\ s only the new number: a hint, never the
data. Each server applies "the people changed since my generation" (:meth:`catch_up`)
on the hint, when its listener reconnects and on a poll every ``registry.poll_s``, so
a lost notification costs seconds, never correctness. A deletion keeps a tombstone row
(key, id, generation; the name and info erased) so other replicas erase the person too.

Read-your-writes: the server that took a change applies it to its own index before the
call returns. Searches need no database (the index is in memory), so they go on while
it is unreachable; reads and writes then fail with :class:`RegistryError` naming the
database, and succeed again once it is back (a new connection per failure).

Erasure: a deletion removes the voiceprint and audio rows, then ``VACUUM (FULL)``
rewrites the tables so no data file keeps their bytes, and every replica erases the
vector from its index (:meth:`~.replica.Replica.erase`) and removes its index cache file
(written again without it by the background saver). PostgreSQL's write-ahead log (and
any WAL archive, standby or backup) keeps the bytes until PostgreSQL recycles the
segments; see ``docs/security.md``.

Cache: each server's index cache (:mod:`.replica`) is saved in the background a moment
after its index changes, so it may be several generations behind after a crash; at
:meth:`~PostgresRegistry.open` the server loads it and catches up from its generation
like from any other (names come from the database in the same read).

Thread use: one re-entrant lock serialises this server's database connection, its
writes and catch-ups; a listener thread waits for notifications on its own connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np
import psycopg

from ..errors import ConfigError, RegistryError, UnknownPerson
from .base import (Person, Registry, check_name, check_roster, info_json, new_person_id,
                   person_from_row)
from .replica import Replica, discard_model_files

__all__ = ["CHANNEL", "PostgresRegistry", "describe_url"]

logger = logging.getLogger("streamer.registry")

#: The NOTIFY channel; its payload is the new generation.
CHANNEL = "streamer_registry"
_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streamer_state (
    one integer PRIMARY KEY DEFAULT 1 CHECK (one = 1),
    generation bigint NOT NULL DEFAULT 0,
    db_id text NOT NULL,
    schema_version integer NOT NULL);
INSERT INTO streamer_state (one, generation, db_id, schema_version)
    VALUES (1, 0, md5(random()::text || clock_timestamp()::text), 1)
    ON CONFLICT (one) DO NOTHING;
CREATE TABLE IF NOT EXISTS people (
    key bigserial PRIMARY KEY, id text NOT NULL UNIQUE, name text NOT NULL,
    info text NOT NULL, created double precision NOT NULL,
    generation bigint NOT NULL, deleted boolean NOT NULL DEFAULT false);
CREATE INDEX IF NOT EXISTS people_generation ON people (generation);
CREATE TABLE IF NOT EXISTS voiceprints (
    id bigserial PRIMARY KEY,
    person_key bigint NOT NULL REFERENCES people (key) ON DELETE CASCADE,
    model_id text NOT NULL, embedding real[] NOT NULL,
    speech_s double precision NOT NULL, created double precision NOT NULL);
CREATE INDEX IF NOT EXISTS voiceprints_person_model ON voiceprints (person_key, model_id);
CREATE TABLE IF NOT EXISTS enrol_audio (
    voiceprint_id bigint PRIMARY KEY REFERENCES voiceprints (id) ON DELETE CASCADE,
    pcm bytea NOT NULL);
CREATE TABLE IF NOT EXISTS rooms (
    room text PRIMARY KEY, people text[], generation bigint NOT NULL);
"""
_PERSON_SQL = """
SELECT p.id, p.name, p.info, p.created,
       COALESCE((SELECT SUM(v.speech_s) FROM voiceprints v
                 WHERE v.person_key = p.key AND v.model_id = %s), 0.0)
FROM people p WHERE NOT p.deleted
"""


def describe_url(url: str) -> str:
    """``host:port/dbname`` of a PostgreSQL URL, without user or password (for messages)."""
    parts = urlsplit(url)
    host = parts.hostname or "local socket"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path or '/'}"


class PostgresRegistry(Registry):
    """A registry on a PostgreSQL database shared by the servers of a cluster.

    Args:
        url: ``postgresql://`` URL of the database (created tables if missing).
        data_dir: This server's folder for its index cache.
        model_id, dim, keep_audio: see :class:`~streamer.registry.base.Registry`.
        poll_s: Seconds between polls of the generation (beside notifications).
        timeout_s: Connect and statement timeout, seconds.
    """

    def __init__(self, url: str, data_dir: Path, model_id: str, dim: int,
                 keep_audio: bool = False, poll_s: float = 2.0, timeout_s: float = 5.0) -> None:
        super().__init__(model_id, dim, keep_audio)
        self.url = url
        self.where = describe_url(url)
        self.data_dir = Path(data_dir)
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.replica = Replica(self.data_dir, model_id, dim)
        self.index_path = self.replica.index_path
        self.meta_path = self.replica.meta_path
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._used = 0.0  # monotonic time of the connection's last use
        self._open = False
        self._rosters_loaded = False
        self._names_pending = False  # a loaded cache's people need their names
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        #: Newest generation heard of (notification, poll or own write).
        self.heard = 0
        #: Times the listener lost its connection and made a new one.
        self.reconnects = 0
        #: People changes applied by catching up after start-up (the changes other
        #: servers made, and this server's own once more).
        self.changes_applied = 0

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        """Create the tables if missing, load the cache, catch up, start listening.

        Returns once this server's index reflects the database (a restarted server
        answers no search before it has caught up); a large rebuilt index is checked
        for unreachable vectors in the background after that. Raises
        :class:`RegistryError` when the database cannot be reached, :class:`ConfigError`
        on a bad stored dim.
        """
        with self._lock:
            if self._open:
                return
            try:
                self.data_dir.mkdir(parents=True, exist_ok=True)
                self.replica.remove_stale_temp_files()
            except OSError as exc:
                raise RegistryError(f"cannot use the index cache folder {self.data_dir}: "
                                    f"{exc}") from exc
            try:
                conn = self._connection()
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext('streamer_schema'))")
                    conn.execute(_SCHEMA)
                self.db_id, generation = self._state(conn)
            except psycopg.Error as exc:
                self._drop_connection()
                raise self._error("cannot open the registry database", exc) from exc
            loaded = self.replica.load(self.db_id)
            self.generation = 0
            self._names_pending = False
            if loaded is not None and loaded.generation <= generation:
                self.generation = loaded.generation
                self._names_pending = True
            else:
                if loaded is not None:
                    logger.info("index cache is newer than the database (restored from a "
                                "backup?); rebuilding")
                self.replica.clear()
            self.replica.source = self._entries
            self._open = True
            try:
                self.catch_up()
            except (RegistryError, ConfigError):
                self.close()
                raise
            self.replica.check_loaded_file()
        self._stop.clear()
        self._listener = threading.Thread(target=self._listen, name="registry-listener",
                                          daemon=True)
        self._listener.start()
        logger.info("registry opened on %s: %d people for model %s, generation %d",
                    self.where, len(self.replica), self.model_id, self.generation)

    def close(self) -> None:
        """Stop listening, write a pending index cache save, close the connection;
        idempotent."""
        self._stop.set()
        listener, self._listener = self._listener, None
        if listener is not None and listener is not threading.current_thread():
            listener.join(timeout=1.0 + self.timeout_s)
        with self._lock:
            self._open = False
            self._rosters_loaded = False
            self._drop_connection()
            self.replica.close()  # writes a pending cache save

    @property
    def lag(self) -> int:
        """Generations this server's index is behind the newest it has heard of."""
        return max(0, self.heard - self.generation)

    def metrics(self) -> list[tuple[str, str, str, float]]:
        """``streamer_registry_*`` of the database listener and catch-up."""
        return [("streamer_registry_reconnects_total", "counter",
                 "Database listener reconnections.", self.reconnects),
                ("streamer_registry_changes_applied_total", "counter",
                 "People changes applied by catching up with the database.",
                 self.changes_applied)]

    def check(self) -> int:
        """Health probe: read the database's generation (a round trip) and return it.

        Raises :class:`RegistryError` when the database cannot be read.
        """
        generation = self._read(lambda conn: self._state(conn)[1])
        self.heard = max(self.heard, generation)
        return generation

    # -- replication -------------------------------------------------------------------

    def catch_up(self) -> int:
        """Apply every change made since this server's generation; return the number of
        people changed. Called on notifications, polls and reconnects (any thread).

        Raises :class:`RegistryError` when the database cannot be read.
        """
        with self._lock:
            if not self._open:
                raise RegistryError("the registry is not open")
            since = self.generation
            changes = self._read_changes(since, with_names=self._names_pending)
            if changes is None:
                return 0
            generation, full, all_rooms, rows, rooms, names = changes
            if names is not None and not full:
                # a loaded cache: everyone's names as of this same read; people not in
                # it are among the changed rows applied next
                self.replica.set_names({int(key): (pid, name) for key, pid, name in names})
            self._names_pending = False
            changed, erased = self._apply_people(rows, full)
            if erased:  # the cache file holds their vectors
                self.replica.discard_files()
            if all_rooms:
                self.replica.set_rosters({})
                self._rosters_loaded = True
            for room, people in rooms:  # people NULL: the roster was removed
                self.replica.set_roster(room, None if people is None else tuple(people))
            self.generation = generation
            self.heard = max(self.heard, generation)
            self.replica.mark(self.db_id, generation)  # saved in the background
            if self._listener is not None:  # not the load at start-up
                self.changes_applied += changed
            logger.debug("registry caught up from generation %d to %d: %d people changed",
                         since, generation, changed)
            return changed

    def _read_changes(self, since: int, with_names: bool = False
                      ) -> tuple[int, bool, bool, list[Any], list[Any], list[Any] | None] | None:
        """One consistent read of what changed after ``since``: (generation, full,
        all rooms, people rows, room rows, ``with_names``: (key, id, name) of everyone
        with a voiceprint of this model), or None when nothing did. Hold ``_lock``.
        ``full`` (the database went back, or this replica is empty): the rows are
        everyone."""
        try:
            conn = self._connection()
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                _, generation = self._state(conn)
                if generation == since and self._rosters_loaded:
                    return None
                # the database went back (a restored backup), or nothing is loaded yet
                full = generation < since or since == 0
                rows = conn.execute(
                    "SELECT p.key, p.id, p.name, p.deleted, v.embedding, v.speech_s "
                    "FROM people p LEFT JOIN voiceprints v "
                    "ON v.person_key = p.key AND v.model_id = %s "
                    "WHERE p.generation > %s ORDER BY p.key, v.id",
                    (self.model_id, 0 if full else since)).fetchall()
                all_rooms = full or not self._rosters_loaded  # few rows: all at start
                rooms = conn.execute("SELECT room, people FROM rooms WHERE generation > %s",
                                     (0 if all_rooms else since,)).fetchall()
                names = conn.execute(
                    "SELECT p.key, p.id, p.name FROM people p WHERE NOT p.deleted AND EXISTS "
                    "(SELECT 1 FROM voiceprints v WHERE v.person_key = p.key "
                    "AND v.model_id = %s)", (self.model_id,)).fetchall() if with_names else None
        except psycopg.Error as exc:
            self._drop_connection()
            raise self._error("cannot read the registry database", exc) from exc
        return generation, full, all_rooms, rows, rooms, names

    def _apply_people(self, rows: list[Any], full: bool) -> tuple[int, bool]:
        """Put changed people in the index, erase deleted ones; return (how many
        changed, whether anyone was erased). ``full``: ``rows`` are everyone (the index
        is replaced, and the cache files removed: they may hold people deleted since)."""
        changed: dict[int, tuple[str, str, list[np.ndarray], list[float]]] = {}
        for key, person_id, name, deleted, embedding, speech_s in rows:
            entry = changed.setdefault(key, (person_id, name, [], []))
            if not deleted and embedding is not None:
                entry[2].append(np.asarray(embedding, dtype=np.float32))
                entry[3].append(float(speech_s))
        puts = {key: (pid, name, self._centroid(vectors, weights))
                for key, (pid, name, vectors, weights) in changed.items() if vectors}
        if full:
            self.replica.replace(puts)
            return len(changed), True
        self.replica.put_many(puts)
        gone = self.replica.indexed(
            {key for key, (_, _, vectors, _) in changed.items() if not vectors})
        if gone:
            self.replica.erase(gone)
        return len(changed), bool(gone)

    def _listen(self) -> None:
        """Listener thread: LISTEN for generations, catch up on each, poll meanwhile."""
        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True,
                                     connect_timeout=max(1, round(self.timeout_s))) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if not first:
                        self.reconnects += 1
                        logger.info("registry listener reconnected to %s", self.where)
                    first = False
                    self._catch_up_quietly()  # whatever was missed while disconnected
                    polled = time.monotonic()
                    while not self._stop.is_set():
                        # short waits, so that close() is not kept waiting
                        hinted = False
                        for note in conn.notifies(timeout=min(self.poll_s, 0.25), stop_after=1):
                            hinted = True
                            if note.payload.isdigit():
                                self.heard = max(self.heard, int(note.payload))
                        if hinted or time.monotonic() - polled >= self.poll_s:
                            polled = time.monotonic()
                            self._catch_up_quietly()  # on a hint, or a poll every poll_s
            except psycopg.Error as exc:
                if self._stop.is_set():
                    return
                logger.warning("registry listener lost %s (%s); retrying", self.where,
                               _first_line(exc))
                first = False
                self._stop.wait(min(self.poll_s, 1.0))

    def _catch_up_quietly(self) -> None:
        try:
            self.catch_up()
        except (RegistryError, ConfigError) as exc:
            if not self._stop.is_set():
                logger.warning("registry catch-up failed: %s", exc)

    # -- reads and writes ------------------------------------------------------------------

    def add_person(self, name: str, info: dict[str, Any] | None, embedding: np.ndarray,
                   speech_s: float, audio: np.ndarray | None = None) -> Person:
        """See :meth:`Registry.add_person`."""
        name = check_name(name)
        info_text = info_json({} if info is None else info)
        vector, pcm = self._check_voiceprint(embedding, speech_s, audio)
        now = time.time()

        def write(conn: psycopg.Connection[Any], generation: int) -> tuple[int, str]:
            person_id = new_person_id(lambda pid: conn.execute(
                "SELECT 1 FROM people WHERE id = %s", (pid,)).fetchone() is not None)
            (key,) = _one(conn.execute(
                "INSERT INTO people (id, name, info, created, generation) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING key",
                (person_id, name, info_text, now, generation)))
            self._insert_voiceprint(conn, key, vector, speech_s, pcm, now)
            return int(key), person_id

        key, person_id = self._write(write)
        self.replica.put(key, person_id, name, vector)
        return self._after_write(person_id)

    def add_voiceprint(self, person_id: str, embedding: np.ndarray, speech_s: float,
                       audio: np.ndarray | None = None) -> Person:
        """See :meth:`Registry.add_voiceprint`."""
        vector, pcm = self._check_voiceprint(embedding, speech_s, audio)

        def write(conn: psycopg.Connection[Any], generation: int) -> tuple[int, str, np.ndarray]:
            key, name = self._lock_person(conn, person_id, generation)
            self._insert_voiceprint(conn, key, vector, speech_s, pcm, time.time())
            rows = conn.execute("SELECT embedding, speech_s FROM voiceprints "
                                "WHERE person_key = %s AND model_id = %s ORDER BY id",
                                (key, self.model_id)).fetchall()
            return key, name, self._centroid([np.asarray(e, np.float32) for e, _ in rows],
                                             [float(s) for _, s in rows])

        key, name, centroid = self._write(write)
        self.replica.put(key, person_id, name, centroid)
        return self._after_write(person_id)

    def add_first_voiceprints(self, entries: list[tuple[str, np.ndarray, float]]) -> int:
        """See :meth:`Registry.add_first_voiceprints`."""
        checked = [(pid, self._check_voiceprint(e, s, None)[0], s) for pid, e, s in entries]

        def write(conn: psycopg.Connection[Any],
                  generation: int) -> list[tuple[int, str, str, np.ndarray]]:
            added = []
            now = time.time()
            for person_id, vector, speech_s in checked:
                row = conn.execute(
                    "UPDATE people p SET generation = %s WHERE p.id = %s AND NOT p.deleted "
                    "AND NOT EXISTS (SELECT 1 FROM voiceprints v WHERE v.person_key = p.key "
                    "AND v.model_id = %s) RETURNING p.key, p.name",
                    (generation, person_id, self.model_id)).fetchone()
                if row is None:
                    continue
                self._insert_voiceprint(conn, int(row[0]), vector, speech_s, None, now)
                added.append((int(row[0]), person_id, str(row[1]),
                              self._centroid([vector], [speech_s])))
            return added

        added = self._write(write)
        self.replica.put_many({key: (person_id, name, centroid)
                               for key, person_id, name, centroid in added})
        with self._lock:
            self._catch_up_after_write()
        return len(added)

    def update_person(self, person_id: str, name: str | None = None,
                      info: dict[str, Any] | None = None) -> Person:
        """See :meth:`Registry.update_person`."""
        name = None if name is None else check_name(name)
        info_text = None if info is None else info_json(info)

        def write(conn: psycopg.Connection[Any], generation: int) -> int:
            key, _ = self._lock_person(conn, person_id, generation)
            conn.execute("UPDATE people SET name = COALESCE(%s, name), "
                         "info = COALESCE(%s, info) WHERE key = %s", (name, info_text, key))
            return key

        key = self._write(write)
        if name is not None:
            self.replica.rename(key, name)
        return self._after_write(person_id)

    def delete_person(self, person_id: str) -> None:
        """Erase a person everywhere; see the module docstring for what "everywhere" is.

        Raises :class:`UnknownPerson`, :class:`RegistryError` when the database cannot be
        written or its tables cannot be rewritten (the person is then already gone from
        every search; deleting anyone later rewrites them again).
        """
        def write(conn: psycopg.Connection[Any], generation: int) -> tuple[int, list[str]]:
            key, _ = self._lock_person(conn, person_id, generation)
            other_models = [model for (model,) in conn.execute(
                "SELECT DISTINCT model_id FROM voiceprints WHERE person_key = %s "
                "AND model_id != %s", (key, self.model_id)).fetchall()]
            conn.execute("DELETE FROM voiceprints WHERE person_key = %s", (key,))
            conn.execute("UPDATE people SET name = '', info = '{}', deleted = true "
                         "WHERE key = %s", (key,))
            conn.execute("UPDATE rooms SET people = array_remove(people, %s), generation = %s "
                         "WHERE %s = ANY(people)", (person_id, generation, person_id))
            return key, other_models

        key, other_models = self._write(write)
        with self._lock:
            self.replica.erase({key})
            self.replica.discard_files()  # written again without them in the background
            for model in other_models:  # this server's caches of other models
                discard_model_files(self.data_dir, model)
            self._catch_up_after_write()
            try:
                self._connection().execute("VACUUM (FULL) people, voiceprints, enrol_audio")
            except psycopg.Error as exc:
                self._drop_connection()
                raise self._error("the person was deleted, but the database tables could "
                                  "not be rewritten to erase their bytes", exc) from exc
        logger.info("deleted person %s", person_id)

    def set_room(self, room: str, people: list[str] | None) -> tuple[str, ...] | None:
        """See :meth:`Registry.set_room` (replicated like people)."""
        roster = check_roster(room, people)

        def write(conn: psycopg.Connection[Any], generation: int) -> None:
            if roster:
                known = {pid for (pid,) in conn.execute(
                    "SELECT id FROM people WHERE id = ANY(%s) AND NOT deleted",
                    (list(roster),)).fetchall()}
                missing = [pid for pid in roster if pid not in known]
                if missing:
                    raise UnknownPerson(missing[0])
            conn.execute("INSERT INTO rooms (room, people, generation) VALUES (%s, %s, %s) "
                         "ON CONFLICT (room) DO UPDATE SET people = excluded.people, "
                         "generation = excluded.generation",
                         (room, None if roster is None else list(roster), generation))

        self._write(write)
        with self._lock:
            self.replica.set_roster(room, roster)
            self._catch_up_after_write()
        return roster

    def get(self, person_id: str) -> Person:
        """Return one person. Raises :class:`UnknownPerson`, :class:`RegistryError`."""
        row = self._read(lambda conn: conn.execute(
            _PERSON_SQL + "AND p.id = %s", (self.model_id, person_id)).fetchone())
        if row is None:
            raise UnknownPerson(person_id)
        return person_from_row(row)

    def people(self) -> list[Person]:
        """Return everyone, oldest first. Raises :class:`RegistryError`."""
        rows = self._read(lambda conn: conn.execute(
            _PERSON_SQL + "ORDER BY p.created, p.key", (self.model_id,)).fetchall())
        return [person_from_row(row) for row in rows]

    def people_page(self, offset: int, limit: int,
                    query: str | None = None) -> tuple[list[Person], int]:
        """See :meth:`Registry.people_page` (answered by PostgreSQL: one page is read).
        Raises :class:`RegistryError`."""
        where, args = "", ()
        if query is not None:
            where = "AND (p.id = %s OR strpos(lower(p.name), lower(%s)) > 0) "
            args = (query, query)

        def read(conn: Any) -> tuple[list[Any], int]:
            total = conn.execute("SELECT COUNT(*) FROM people p WHERE NOT p.deleted " + where,
                                 args).fetchone()[0]
            rows = conn.execute(_PERSON_SQL + where + "ORDER BY p.created, p.key "
                                "LIMIT %s OFFSET %s",
                                (self.model_id, *args, limit, offset)).fetchall()
            return rows, int(total)

        rows, total = self._read(read)
        return [person_from_row(row) for row in rows], total

    # -- helpers -------------------------------------------------------------------------

    def _entries(self) -> dict[int, tuple[str, str, np.ndarray]]:
        """key -> (id, name, centroid) of everyone with a voiceprint of this model (the
        replica's :attr:`~.replica.Replica.source`, from a background thread). Raises
        :class:`RegistryError`, :class:`ConfigError`."""
        rows = self._read(lambda conn: conn.execute(
            "SELECT p.key, p.id, p.name, v.embedding, v.speech_s FROM people p "
            "JOIN voiceprints v ON v.person_key = p.key AND v.model_id = %s "
            "WHERE NOT p.deleted ORDER BY p.key, v.id", (self.model_id,)).fetchall())
        grouped: dict[int, tuple[str, str, list[np.ndarray], list[float]]] = {}
        for key, person_id, name, embedding, speech_s in rows:
            entry = grouped.setdefault(int(key), (person_id, name, [], []))
            entry[2].append(np.asarray(embedding, dtype=np.float32))
            entry[3].append(float(speech_s))
        return {key: (pid, name, self._centroid(vectors, weights))
                for key, (pid, name, vectors, weights) in grouped.items()}

    def _connection(self) -> psycopg.Connection[Any]:
        """The open connection (a new one after a failure). Hold ``_lock``.

        A connection idle for a second is pinged first: a database restarted meanwhile
        has closed it, and the request should not fail for that.
        """
        now = time.monotonic()
        if self._conn is not None and not self._conn.broken and now - self._used > 1.0:
            try:
                self._conn.execute("SELECT 1")
            except psycopg.Error:
                self._drop_connection()
        self._used = now
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._drop_connection()
            ms = round(self.timeout_s * 1000)
            self._conn = psycopg.connect(self.url, autocommit=True,
                                         connect_timeout=max(1, round(self.timeout_s)),
                                         options=f"-c statement_timeout={ms} "
                                                 f"-c lock_timeout={ms}")
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:  # pragma: no cover - closing a dead socket
                pass

    def _read(self, query: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        with self._lock:
            if not self._open:
                raise RegistryError("the registry is not open")
            try:
                return query(self._connection())
            except psycopg.Error as exc:
                self._drop_connection()
                raise self._error("cannot read the registry database", exc) from exc

    def _write(self, change: Callable[[psycopg.Connection[Any], int], _T]) -> _T:
        """Run ``change(conn, generation)`` in one transaction with the generation bump
        and the NOTIFY; return its result once committed."""
        with self._lock:
            if not self._open:
                raise RegistryError("the registry is not open")
            try:
                conn = self._connection()
                with conn.transaction():
                    (generation,) = _one(conn.execute(
                        "UPDATE streamer_state SET generation = generation + 1 "
                        "RETURNING generation"))
                    result = change(conn, int(generation))
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(generation)))
            except psycopg.Error as exc:
                self._drop_connection()
                raise self._error("registry write failed", exc) from exc
            self.heard = max(self.heard, int(generation))
            return result

    def _after_write(self, person_id: str) -> Person:
        """After a committed change applied to the index: catch up (which marks the
        cache for the background saver), return them."""
        with self._lock:
            self._catch_up_after_write()
        return self.get(person_id)

    def _catch_up_after_write(self) -> None:
        # The change is committed and already in this index; catching up also applies
        # anyone else's changes in between (best effort: the listener retries).
        try:
            self.catch_up()
        except RegistryError as exc:
            logger.warning("catch-up after a write failed: %s", exc)

    def _lock_person(self, conn: psycopg.Connection[Any], person_id: str,
                     generation: int) -> tuple[int, str]:
        row = conn.execute("UPDATE people SET generation = %s WHERE id = %s AND NOT deleted "
                           "RETURNING key, name", (generation, person_id)).fetchone()
        if row is None:
            raise UnknownPerson(person_id)
        return int(row[0]), str(row[1])

    def _insert_voiceprint(self, conn: psycopg.Connection[Any], key: int, vector: np.ndarray,
                           speech_s: float, pcm: bytes | None, now: float) -> None:
        (vp,) = _one(conn.execute(
            "INSERT INTO voiceprints (person_key, model_id, embedding, speech_s, created) "
            "VALUES (%s, %s, %s::real[], %s, %s) RETURNING id",
            (key, self.model_id, [float(x) for x in vector], speech_s, now)))
        if pcm is not None and self.keep_audio:
            conn.execute("INSERT INTO enrol_audio (voiceprint_id, pcm) VALUES (%s, %s)",
                         (vp, pcm))

    @staticmethod
    def _state(conn: psycopg.Connection[Any]) -> tuple[str, int]:
        db_id, generation = _one(conn.execute(
            "SELECT db_id, generation FROM streamer_state WHERE one = 1"))
        return str(db_id), int(generation)

    def _error(self, what: str, exc: psycopg.Error) -> RegistryError:
        state = ("is unavailable" if isinstance(exc, psycopg.OperationalError)
                 else "refused it")
        return RegistryError(f"{what}: the registry database {self.where} {state} "
                             f"({_first_line(exc)})")


def _one(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    row = cursor.fetchone()
    if row is None:  # pragma: no cover - invariant: the statements always return a row
        raise RegistryError("the registry database returned no row")
    return tuple(row)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
