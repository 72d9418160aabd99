"""The in-memory nearest-neighbour index of a registry and its cache files (USearch).

Both registries (:mod:`.sqlite`, :mod:`.postgres`) keep one :class:`Replica`: one unit
vector per person (the speech-weighted centroid of their voiceprints), keyed by the
database's integer person key, plus each key's person id and name. Call it from any
thread. Locks, outermost first: the registry's writer lock serialises writers; the
replica's *change* lock is held by every change of the index and by the background
saver while it copies the index out (so writers may wait for that copy, searches do
not); the short *view* lock guards what a search reads.

Two structures, changed together: the HNSW graph (USearch) stores each vector as int8
and only proposes candidates; a :class:`~streamer.vector_store.VectorStore` keeps every
vector in float32, and every distance the replica reports is computed from it (the top
:data:`RESCORE_CANDIDATES` of an approximate search are re-scored; up to
:data:`EXACT_SEARCH_MAX_VECTORS` people the store is searched exactly instead).

Cache: ``index-<model>.usearch`` (the USearch index file, then the store's keys and
float32 vectors) and a small sidecar ``index-<model>.json`` (database id, generation,
model id, dim, counts, where the store starts, the file's size and SHA-256). It holds no
names: the registry takes them from its database at load. Saving is debounced:
:meth:`Replica.mark` records the generation the index reflects, and a background thread
writes the files :data:`SAVE_INTERVAL_S` after the first change they miss (spaced out
further when saves take long); :meth:`Replica.close` writes a pending save at once.
Each file is replaced atomically, the index first, with the folder synced in between,
so a crash leaves an older pair, a newer index under an older sidecar (the cache looks
older than it is and is caught up; the background checksum, when the sizes agree,
then finds the mismatch and rebuilds), or after a deletion a sidecar without its index
file (rebuilt). The generation a save records never runs ahead of what the index holds.
So the cache may be several generations behind the database after a crash; the
registries catch it up instead of rebuilding.

Loading reads the file once (no checksum on the way): sidecar fields, file size, the
USearch header and the counts are checked, and the registry compares the keys with its
database. The SHA-256 is checked afterwards in a background thread
(:meth:`Replica.check_loaded_file`); a mismatch removes the files and rebuilds the index
from :attr:`Replica.source` in the background.

Erasing people (:meth:`Replica.erase`) never leaves their vector in memory or in a saved
file: their float32 row in the store is overwritten at once; in the index, USearch's
``remove`` keeps the bytes (and ``save()`` would write them), so a small index is
rebuilt without them and a large one overwrites their slots with placeholders at once,
rebuilding in the background later. Then :meth:`Replica.discard_files` unlinks
the index file (and any save in flight, whose copy of the index is zeroed) before the
deletion is acknowledged; the next background save writes the index without them.

HNSW builds above :data:`EXACT_SEARCH_MAX_VECTORS` are checked for vectors no search
reaches: the new index goes into service first and a background thread searches for
every vector, inserting the lost ones again (:func:`repair_unreachable`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
from usearch.compiled import MetricKind, ScalarKind
from usearch.index import Index
from usearch.index import search as brute_force_search

from ..errors import RegistryError
from ..units import l2sq_to_distance
from ..vector_store import VectorStore

__all__ = ["EXACT_SEARCH_MAX_VECTORS", "Candidate", "CacheState", "Replica", "cache_paths",
           "discard_model_files", "repair_unreachable"]

logger = logging.getLogger("streamer.registry")

#: Up to this many people, search scans every vector (exact) instead of walking the
#: approximate HNSW graph; a brute-force scan of 10k vectors takes about a millisecond.
EXACT_SEARCH_MAX_VECTORS = 10_000

# HNSW parameters of the index, chosen with bench/gallery.py on a million distinct
# synthetic people (README "Large galleries"): the highest recall@1 against exact search
# with a search within 2 ms p99 on 2 cores. A denser graph than USearch's defaults
# (connectivity 16, expansion_add 128) built with a wider beam; int8 vectors, whose
# distances only choose the candidates re-scored in float32. With float32 in the graph
# the same search reached recall@1 0.983 at ef 128 (p99 1.90 ms) and 0.990 at ef 160
# (p99 2.39 ms); int8 walks the graph faster (p99 1.6 ms at ef 160) and builds in 13
# instead of 29 minutes. expansion_search is not stored in the index file: it applies to
# a loaded cache too and can change without a rebuild.
INDEX_CONNECTIVITY = 32
INDEX_EXPANSION_ADD = 256
INDEX_EXPANSION_SEARCH = 192
INDEX_DTYPE = "i8"
#: An approximate search takes at least this many candidates from the index and
#: re-scores them in float32 (the int8 order of near candidates is not exact).
RESCORE_CANDIDATES = 10

#: Sidecar format. 4: int8 index followed by the float32 vectors. Older caches (float32
#: index alone) are rebuilt.
_CACHE_FORMAT = 4

#: Up to this many people an erasure rebuilds the index (within the deletion); beyond,
#: it overwrites the erased vectors with placeholders (see :meth:`Replica.erase`). A
#: build with the settings above took 0.18 s for 1,000 vectors of 192 values, 0.67 s
#: for 2,000, 8 s for 10,000 and 23 s for 20,000 (2 cores, busy with other work), so a
#: deletion stays well within a second; it was 20,000 before deletions had to.
REBUILD_MAX_PEOPLE = 2_000
#: Placeholders, as a share of the people indexed, that start a background rebuild.
COMPACT_SHARE = 0.02
#: Placeholder keys start here (people keys are database row ids, far below).
PLACEHOLDER_BASE = 2**63
#: The length of the vector that overwrites an erased person's float32 row: about this
#: far from every unit vector, so a free row is never among the nearest of a search.
PLACEHOLDER_NORM = 1000.0

#: The background saver writes the cache this many seconds after the first change it
#: does not hold (changes meanwhile are saved together).
SAVE_INTERVAL_S = 1.0
#: ...and, after a save that took T seconds, waits at least this many times T before
#: the next, so that saving a large index (seconds at 1 M people, during part of which
#: writers wait) takes at most about a quarter of the time.
SAVE_SPACING = 3.0
#: Vectors searched for per turn by the background check of a build; each turn holds
#: the view lock (searches wait) for about as many approximate searches.
VERIFY_CHUNK = 32
_HASH_CHUNK = 8 << 20


@dataclass(frozen=True)
class Candidate:
    """A search result; ``distance`` is Euclidean between unit vectors (0..2)."""

    id: str
    name: str
    distance: float

    def to_wire(self) -> dict[str, Any]:
        """Return the protocol's ``candidate`` map."""
        return {"id": self.id, "name": self.name, "distance": self.distance}


@dataclass(frozen=True)
class CacheState:
    """What a loaded cache reflects: its database, generation and the people keys in
    it (sorted)."""

    db_id: str
    generation: int
    keys: np.ndarray


def cache_paths(cache_dir: Path, model_id: str) -> tuple[Path, Path]:
    """(index file, sidecar) of ``model_id``'s cache in ``cache_dir``."""
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", model_id)[:64]
    return Path(cache_dir) / f"index-{slug}.usearch", Path(cache_dir) / f"index-{slug}.json"


def discard_model_files(cache_dir: Path, model_id: str) -> None:
    """Remove the cache files of another model (they may hold an erased person's vector
    of that model; it is rebuilt when that model is next used). Raises
    :class:`RegistryError` when they cannot be removed."""
    try:
        for path in cache_paths(cache_dir, model_id):
            path.unlink(missing_ok=True)
        _fsync_dir(Path(cache_dir))
    except OSError as exc:
        raise RegistryError(f"cannot erase the index cache of model {model_id}: {exc}") from exc


class Replica:
    """One registry's index: people key -> unit vector, id and name; cache files."""

    def __init__(self, cache_dir: Path, model_id: str, dim: int) -> None:
        self.dim = dim
        self.model_id = model_id
        self.cache_dir = Path(cache_dir)
        self.index_path, self.meta_path = cache_paths(self.cache_dir, model_id)
        self._view_lock = threading.Lock()
        self._change_lock = threading.RLock()
        self._far = np.zeros(dim, np.float32)
        self._far[0] = PLACEHOLDER_NORM
        self._index = self._new_index()
        self._store = VectorStore(dim, self._far)
        self._names: dict[int, tuple[str, str]] = {}  # key -> (id, name)
        self._keys: dict[str, int] = {}  # id -> key
        self._rosters: dict[str, tuple[str, ...]] = {}  # room -> person ids
        #: Keys of placeholder vectors that overwrote erased people (see :meth:`erase`).
        self._placeholders: set[int] = set()
        self._next_placeholder = 0
        #: Changes made while :meth:`compact` builds (replayed on the new index).
        self._journal: list[tuple[str, int, np.ndarray | None]] | None = None
        self._compacting = False
        self._compact_lock = threading.Lock()
        #: Bumped by :meth:`replace`/:meth:`clear`: a compaction started before gives up.
        self._version = 0
        #: Every person's key -> (id, name, unit vector) from the database; set by the
        #: registry, called from a background thread (which must not hold the change
        #: lock) to rebuild the index when the loaded cache file proves damaged.
        self.source: Callable[[], dict[int, tuple[str, str, np.ndarray]]] | None = None
        # -- saving (see the module docstring) --
        self._cond = threading.Condition()
        self._state: tuple[str, int] | None = None  # what the index in memory reflects
        self._disk_state: tuple[str, int] | None = None  # what the sidecar on disk says
        #: (size, sha256, where the vectors start) of the index file
        self._on_disk: tuple[int, str, int] | None = None
        #: The sidecar on disk is one of this format (no names): a deletion keeps it.
        self._sidecar_ours = False
        self._index_dirty = False
        self._pending_since: float | None = None
        self._saving = False
        self._closing = False
        self._saver: threading.Thread | None = None
        self._save_lock = threading.Lock()
        self._last_save_end = 0.0
        #: Seconds the last save took (copy, checksum, write and sync).
        self.last_save_s = 0.0
        #: Saves written (index and sidecar, or the sidecar alone).
        self.saves = 0
        self._file_lock = threading.Lock()
        self._epoch = 0  # bumped by discard_files: a save in flight is dropped
        self._temp_files: set[Path] = set()
        self._in_flight: bytearray | None = None
        # -- background work --
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        #: Vectors the background checks of builds found unreachable and inserted again.
        self.repaired = 0
        self._unchecked: tuple[IO[bytes], str, int] | None = None  # see check_loaded_file

    # -- reads ---------------------------------------------------------------------------

    def __len__(self) -> int:
        """People in the index."""
        with self._view_lock:
            return len(self._index) - len(self._placeholders)

    def names(self) -> dict[int, tuple[str, str]]:
        """A copy of key -> (person id, name) of everyone in the index."""
        with self._view_lock:
            return dict(self._names)

    def __contains__(self, person_id: object) -> bool:
        """True when ``person_id`` is in the index (searchable)."""
        with self._view_lock:
            return person_id in self._keys

    def indexed(self, keys: set[int]) -> set[int]:
        """Those of ``keys`` that have a vector in the index (hidden or not)."""
        with self._view_lock:
            return {key for key in keys if key in self._index}

    def search(self, vector: np.ndarray, k: int) -> list[Candidate]:
        """Up to ``k`` nearest people to the unit ``vector``, nearest first."""
        return self.search_many(np.asarray(vector).reshape(1, -1), k)[0]

    def search_many(self, vectors: np.ndarray, k: int) -> list[list[Candidate]]:
        """Up to ``k`` nearest people to each row of ``vectors`` (unit), nearest first,
        in one index call on up to two threads (one row: one search on this thread)."""
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), self.dim)
        with self._view_lock:
            if not self._names or not len(vectors):
                return [[] for _ in range(len(vectors))]
            if len(self._names) <= EXACT_SEARCH_MAX_VECTORS:
                matrix, row_keys = self._store.matrix()
                found = _rows(brute_force_search(
                    matrix, vectors, min(k, len(matrix)), MetricKind.L2sq, exact=True,
                    threads=min(2, len(vectors))), len(vectors))
                return [[Candidate(*self._names[int(key)], l2sq_to_distance(float(d)))
                         for key, d in zip(row_keys[rows], l2sq)
                         if int(key) in self._names] for rows, l2sq in found]
            proposed = _rows(self._index.search(
                vectors, max(k, RESCORE_CANDIDATES), threads=min(2, len(vectors))),
                len(vectors))
            return [self._rescore(vector, keys, k)
                    for vector, (keys, _) in zip(vectors, proposed)]

    def _rescore(self, vector: np.ndarray, keys: np.ndarray, k: int) -> list[Candidate]:
        """The ``k`` nearest of the people ``keys`` (placeholders and hidden people
        left out) to ``vector``, by their float32 vectors. Hold the view lock."""
        keys = np.array([key for key in keys.tolist() if key in self._names], np.uint64)
        if not len(keys):
            return []
        # Same SIMD l2sq kernel as distance_to and the exact search, so numbers agree.
        match = brute_force_search(self._store.get(keys), vector, min(k, len(keys)),
                                   MetricKind.L2sq, exact=True, threads=1)
        return [Candidate(*self._names[int(keys[row])], l2sq_to_distance(float(l2sq)))
                for row, l2sq in zip(np.asarray(match.keys).reshape(-1),
                                     np.asarray(match.distances).reshape(-1))]

    def distance_to(self, person_id: str, vector: np.ndarray) -> float | None:
        """``distance`` from the unit ``vector`` to ``person_id``; None if not indexed."""
        with self._view_lock:
            key = self._keys.get(person_id)
            if key is None:
                return None
            centroid = self._store.get([key])
        # Same SIMD l2sq kernel as Index.search, so the numbers agree exactly.
        match = brute_force_search(centroid, vector, 1, MetricKind.L2sq, exact=True, threads=1)
        return l2sq_to_distance(float(match.distances[0]))

    def vector_of(self, person_id: str) -> tuple[int, np.ndarray] | None:
        """(key, a copy of the unit vector) of ``person_id``; None if not indexed."""
        with self._view_lock:
            key = self._keys.get(person_id)
            if key is None:
                return None
            return key, self._store.get([key])[0]

    def search_among(self, person_ids: tuple[str, ...], vector: np.ndarray,
                     k: int) -> list[Candidate]:
        """Up to ``k`` of ``person_ids`` nearest to ``vector`` (exact), nearest first;
        ids not in the index (no voiceprint of this model) are left out."""
        with self._view_lock:
            keys = [self._keys[pid] for pid in person_ids if pid in self._keys]
            if not keys:
                return []
            vectors = self._store.get(keys)
            names = [self._names[key] for key in keys]
        # Same SIMD l2sq kernel as Index.search, so the numbers agree exactly.
        matches = brute_force_search(vectors, vector, min(k, len(keys)), MetricKind.L2sq,
                                     exact=True, threads=1)
        return [Candidate(*names[int(row)], l2sq_to_distance(float(l2sq)))
                for row, l2sq in zip(matches.keys, matches.distances)]

    # -- rosters ---------------------------------------------------------------------------

    def roster(self, room: str) -> tuple[str, ...] | None:
        """The person ids of ``room``'s roster, or None when it has none."""
        with self._view_lock:
            return self._rosters.get(room)

    def roster_people(self, room: str) -> list[dict[str, Any]] | None:
        """``room``'s roster as ``[{"id", "name"}]`` (name None for someone without a
        voiceprint of this model), or None when the room has none."""
        with self._view_lock:
            roster = self._rosters.get(room)
            if roster is None:
                return None
            return [{"id": pid, "name": self._names[self._keys[pid]][1]
                     if pid in self._keys else None} for pid in roster]

    def rosters(self) -> dict[str, tuple[str, ...]]:
        """Every room with a roster."""
        with self._view_lock:
            return dict(self._rosters)

    def set_roster(self, room: str, person_ids: tuple[str, ...] | None) -> None:
        """Replace ``room``'s roster (None: remove it)."""
        with self._view_lock:
            if person_ids is None:
                self._rosters.pop(room, None)
            else:
                self._rosters[room] = person_ids

    def set_rosters(self, rosters: dict[str, tuple[str, ...]]) -> None:
        """Replace every roster (loading them from the database)."""
        with self._view_lock:
            self._rosters = dict(rosters)

    # -- changes ---------------------------------------------------------------------------

    def put(self, key: int, person_id: str, name: str, vector: np.ndarray) -> None:
        """Add or replace one person's vector (in place: remove then add)."""
        with self._change_lock:
            with self._view_lock:
                if key in self._index:
                    self._index.remove(key)
                self._index.add(key, vector)
                self._store.put([key], vector)
                self._names[key] = (person_id, name)
                self._keys[person_id] = key
                if self._journal is not None:
                    self._journal.append(("put", key, vector))
            self._changed()

    def put_many(self, entries: dict[int, tuple[str, str, np.ndarray]]) -> None:
        """:meth:`put` of key -> (person id, name, unit vector), a few hundred per
        hold of the view lock (catching up at start-up, or with other servers)."""
        items = list(entries.items())
        for start in range(0, len(items), 256):
            chunk = items[start:start + 256]
            keys = np.array([key for key, _ in chunk], dtype=np.uint64)
            vectors = np.stack([vector for _, (_, _, vector) in chunk]).astype(np.float32)
            with self._change_lock:
                with self._view_lock:
                    present = keys[np.asarray(self._index.contains(keys), dtype=bool)]
                    if len(present):
                        self._index.remove(present)
                    self._index.add(keys, vectors)
                    self._store.put(keys, vectors)
                    for key, (person_id, name, vector) in chunk:
                        self._names[key] = (person_id, name)
                        self._keys[person_id] = key
                        if self._journal is not None:
                            self._journal.append(("put", key, vector))
                self._changed()

    def set_names(self, names: dict[int, tuple[str, str]]) -> None:
        """Give the people of a loaded cache their (person id, name), from the database.

        Call right after :meth:`load`, before serving. Keys of the index missing from
        ``names`` (people deleted since the cache was saved) stay unsearchable until
        :meth:`erase`; keys of ``names`` missing from the index (enrolled since) must be
        :meth:`put` next.
        """
        with self._view_lock:
            self._names = names
            self._keys = {pid: key for key, (pid, _) in names.items()}

    def rename(self, key: int, name: str) -> None:
        """Change the name searches report for ``key`` (no-op when not indexed)."""
        with self._view_lock:
            if key in self._names:
                self._names[key] = (self._names[key][0], name)

    def hide(self, key: int) -> None:
        """Stop returning ``key`` from searches at once; :meth:`erase` erases it."""
        with self._view_lock:
            entry = self._names.pop(key, None)
            if entry is not None:
                self._keys.pop(entry[0], None)

    def erase(self, keys: set[int]) -> None:
        """Erase the vectors of ``keys`` from memory (hide them first).

        Their float32 rows are overwritten at once. Up to :data:`REBUILD_MAX_PEOPLE`
        people the index is rebuilt from everyone else's vectors (well within a
        second). Beyond, rebuilding takes longer (minutes at a million), so each key is
        removed and a placeholder (a random direction under a reserved key that
        searches never return) is added at once: USearch's ``remove`` keeps the bytes,
        and the next ``add`` overwrites the freed slot. When placeholders pass
        :data:`COMPACT_SHARE` of the index, a background thread rebuilds it without them.
        The cache files still hold the vectors: call :meth:`discard_files` next.
        """
        with self._change_lock:
            with self._view_lock:
                for key in keys:
                    entry = self._names.pop(key, None)
                    if entry is not None:
                        self._keys.pop(entry[0], None)
                self._store.erase(keys)
                # while a compaction runs, it owns the rebuilding: overwrite meanwhile
                small = len(self._names) <= REBUILD_MAX_PEOPLE and not self._compacting
                if not small:
                    for key in keys:
                        self._overwrite(self._index, key)
                        if self._journal is not None:
                            self._journal.append(("erase", key, None))
                compact = (not small and not self._compacting and len(self._placeholders)
                           > COMPACT_SHARE * max(1, len(self._names)))
                if compact:
                    self._compacting = True
            if not small:
                self._changed()
        if small:
            self.compact()
        elif compact:
            self._start_worker("index-compaction", self.compact)

    def _overwrite(self, index: Index, key: int) -> None:
        """Remove ``key`` from ``index`` and overwrite its slot with a placeholder. Hold
        the view lock.

        Each placeholder is its own random direction: the index normalises int8
        vectors, so none is far from every voice, and many equal ones would make the
        dense duplicate cluster HNSW handles worst. Searches skip its key."""
        if key not in index:
            return
        index.remove(key)
        placeholder = PLACEHOLDER_BASE + self._next_placeholder
        self._next_placeholder += 1
        direction = np.random.default_rng(self._next_placeholder).standard_normal(self.dim)
        index.add(placeholder, (direction / np.linalg.norm(direction)).astype(np.float32))
        self._placeholders.add(placeholder)

    def compact(self, source: Callable[[], dict[int, tuple[str, str, np.ndarray]]] | None = None
                ) -> None:
        """Rebuild the index without placeholders or removed bytes, from the float32
        vectors kept, or (index and vectors) from ``source()`` (key -> (id, name,
        vector) of everyone, e.g. the database), then let the background saver write it.

        Searches go on meanwhile; changes made meanwhile are replayed on the new index
        before it is swapped in; a large new index is checked in the background (see
        :meth:`replace`). Call from any thread without holding the change lock;
        :meth:`erase` and its background thread call it. Compactions run one at a time.
        """
        with self._compact_lock:
            with self._change_lock:
                with self._view_lock:
                    self._compacting = True
                    self._journal = []
                    version = self._version
                    names = dict(self._names)
            index = None
            try:
                if source is not None:
                    entries = source()
                else:
                    entries = {}
                    chunk = list(names)
                    for start in range(0, len(chunk), 10_000):  # short holds: searches go on
                        with self._view_lock:
                            keys = [key for key in chunk[start:start + 10_000]
                                    if key in self._names]
                            for key, vector in zip(keys, self._store.get(keys)):
                                entries[key] = (*names[key], vector)
                index, store = self._build(entries)
                del entries
                with self._change_lock:
                    with self._view_lock:
                        if self._version != version:  # replaced meanwhile: drop this one
                            store.wipe()
                            index = None
                            return
                        placeholders, self._placeholders = self._placeholders, set()
                        for op, key, vector in self._journal:
                            if op == "put":
                                if key in index:
                                    index.remove(key)
                                index.add(key, vector)
                                store.put([key], vector)
                            else:
                                self._overwrite(index, key)
                                store.erase([key])
                        self._index = index
                        self._store, old = store, self._store
                        old.wipe()
                    self._changed()
                logger.debug("index compacted: %d placeholder(s) dropped", len(placeholders))
            finally:
                with self._view_lock:
                    self._journal = None
                    self._compacting = False
        if index is not None:
            self._verify_later(index)

    def replace(self, entries: dict[int, tuple[str, str, np.ndarray]]) -> None:
        """Swap in a fresh index of ``entries``: key -> (person id, name, unit vector).

        Above :data:`EXACT_SEARCH_MAX_VECTORS` the new index serves at once and a
        background thread checks that every vector finds itself (:meth:`wait_idle`
        waits for it).
        """
        index, store = self._build(entries)
        names = {key: (pid, name) for key, (pid, name, _) in entries.items()}
        with self._change_lock:
            with self._view_lock:
                self._index, self._names = index, names
                self._store, old = store, self._store
                old.wipe()
                self._keys = {pid: key for key, (pid, _) in names.items()}
                self._placeholders = set()
                self._version += 1
            self._changed()
        self._verify_later(index)

    def clear(self) -> None:
        """Empty the index and forget what the cache files hold (they stay on disk)."""
        with self._change_lock:
            with self._view_lock:
                self._index, self._names, self._keys = self._new_index(), {}, {}
                self._store.wipe()
                self._placeholders = set()
                self._version += 1
            with self._cond:
                self._state = self._disk_state = self._on_disk = None
                self._index_dirty, self._pending_since = False, None
        unchecked, self._unchecked = self._unchecked, None
        if unchecked is not None:
            unchecked[0].close()

    def _build(self, entries: dict[int, tuple[str, str, np.ndarray]]
               ) -> tuple[Index, VectorStore]:
        """A new index and store of ``entries`` (the index not yet checked for
        unreachable vectors)."""
        index = self._new_index()
        store = VectorStore(self.dim, self._far, capacity=len(entries))
        if not entries:
            return index, store
        keys = np.fromiter(entries, dtype=np.uint64, count=len(entries))
        vectors = np.stack([vector for _, _, vector in entries.values()]).astype(np.float32)
        index.add(keys, vectors)
        store.put(keys, vectors)
        vectors[:] = 0
        return index, store

    def _new_index(self) -> Index:
        # connectivity is stored in the saved file; both expansions come from here, also
        # for a loaded cache (see the INDEX_* constants).
        return Index(ndim=self.dim, metric="l2sq", dtype=INDEX_DTYPE,
                     connectivity=INDEX_CONNECTIVITY, expansion_add=INDEX_EXPANSION_ADD,
                     expansion_search=INDEX_EXPANSION_SEARCH)

    # -- background checks -------------------------------------------------------------------

    def _verify_later(self, index: Index) -> None:
        """Check ``index`` (just put in service) in the background if it is searched
        approximately. HNSW builds can leave a few vectors that no search reaches
        (USearch issue #735; bench/gallery.py measured 8 of 100,000 with this index's
        settings, on one thread or two)."""
        if len(index) > EXACT_SEARCH_MAX_VECTORS:
            self._start_worker("index-check", self._verify, index, self._stop)

    def _verify(self, index: Index, stop: threading.Event) -> None:
        """Search for every person's vector of ``index``, a few at a time, and insert
        again the ones not found; stop when ``index`` leaves service. Vectors erased
        meanwhile are skipped; a changed one is checked as it is now."""
        started = time.monotonic()
        with self._view_lock:
            if self._index is not index:
                return
            keys = list(self._names)
        lost = repaired = 0
        for start in range(0, len(keys), VERIFY_CHUNK):
            if stop.is_set():
                return
            with self._change_lock:
                with self._view_lock:
                    if self._index is not index:
                        return
                    chunk = np.array([key for key in keys[start:start + VERIFY_CHUNK]
                                      if key in self._names], dtype=np.uint64)
                    if not len(chunk):
                        continue
                    vectors = self._store.get(chunk)
                    missed, still = _repair(index, chunk, vectors)
                if missed:
                    self._changed()
            lost += still
            repaired += missed - still
            time.sleep(0.001)  # let a waiting search have the view lock
        self.repaired += repaired
        log = logger.info if repaired or lost else logger.debug
        log("index checked in the background (%.0f s): %d people, %d unreachable vector(s) "
            "inserted again, %d still unreachable", time.monotonic() - started, len(keys),
            repaired, lost)

    def _check_file(self, file: IO[bytes], sha256: str, version: int,
                    stop: threading.Event) -> None:
        """Compare the SHA-256 of the loaded cache file with its sidecar's; on a mismatch
        remove the files and rebuild the index from :attr:`source`. Stops when the
        loaded index was replaced meanwhile (not when it was compacted: that keeps its
        vectors)."""
        digest = hashlib.sha256()
        try:
            while chunk := file.read(_HASH_CHUNK):
                if stop.is_set() or self._version != version:
                    return
                digest.update(chunk)
        except OSError as exc:
            logger.warning("index cache file cannot be read back for its checksum: %s", exc)
            return
        finally:
            file.close()
        if digest.hexdigest() == sha256:
            logger.debug("index cache checksum verified")
            return
        if self._version != version or stop.is_set():
            return
        logger.warning("index cache file is damaged (checksum); rebuilding the index from "
                       "the database in the background")
        try:
            self.discard_files()
        except RegistryError as exc:
            logger.warning("%s", exc)
        if self.source is not None:
            self.compact(self.source)

    def _start_worker(self, name: str, target: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            try:
                target(*args)
            except Exception:  # a background failure must not go unseen
                logger.exception("index %s failed", name)

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._cond:
            self._workers = [w for w in self._workers if w.is_alive()] + [thread]
        thread.start()

    def wait_idle(self, timeout_s: float = 60.0) -> bool:
        """Wait for the background checks and compactions running now; False on timeout.
        For tests and benchmarks."""
        deadline = time.monotonic() + timeout_s
        while True:  # a worker may start another (a compaction, then its check)
            with self._cond:
                workers = [w for w in self._workers if w.is_alive()]
            if not workers:
                return True
            for worker in workers:
                worker.join(max(0.0, deadline - time.monotonic()))
                if worker.is_alive():
                    return False

    # -- the cache files -------------------------------------------------------------------

    def remove_stale_temp_files(self) -> None:
        """Delete temporary files a crash left mid-save. Raises :class:`OSError`."""
        for stale in self.cache_dir.glob(".index-*.tmp"):
            stale.unlink(missing_ok=True)

    def load(self, db_id: str) -> CacheState | None:
        """Load the cache into this (empty) replica if it is intact and belongs to
        database ``db_id``; give names with :meth:`set_names` next.

        Returns what it reflects, or None (nothing loaded) when it is missing, damaged,
        of another database or another model. The caller checks the generation and the
        keys against its database. The file's checksum is checked in the background.
        """
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            file = self.index_path.open("rb")
        except FileNotFoundError:
            logger.debug("no index cache yet; building it from the database")
            return None
        except (OSError, ValueError):
            logger.warning("index cache unreadable; rebuilding it from the database")
            return None
        try:
            expected = {"db_id": db_id, "model_id": self.model_id, "dim": self.dim}
            if (not isinstance(meta, dict) or meta.get("format") != _CACHE_FORMAT
                    or any(meta.get(k) != v for k, v in expected.items())):
                logger.info("index cache is of another database, model or format; rebuilding")
                file.close()
                return None
            size = os.fstat(file.fileno()).st_size
            generation, sha256 = int(meta["generation"]), str(meta["sha256"])
            count, placeholders = int(meta["count"]), int(meta["placeholders"])
            store_at = int(meta["store_offset"])
            if int(meta["size"]) != size or size != store_at + count * (8 + 4 * self.dim):
                raise ValueError("the index file is not the size its sidecar says")
            header = cast(dict[str, Any], Index.metadata(str(self.index_path)))
            if (header["dimensions"] != self.dim or header["kind_metric"] != MetricKind.L2sq
                    or header["kind_scalar"] != ScalarKind.I8):
                raise ValueError("index metadata does not match the model")
            index = self._new_index()
            index.load(str(self.index_path))  # reads the index part of the file
            keys = np.asarray(index.keys[:], dtype=np.uint64)
            people = np.sort(keys[keys < PLACEHOLDER_BASE])
            if len(people) != count or len(keys) - len(people) != placeholders:
                raise ValueError("the index does not hold the people its sidecar counts")
            file.seek(store_at)
            store = VectorStore.read(file, count, self.dim, self._far)
            file.seek(0)
            if not np.array_equal(store.keys(), people):
                store.wipe()
                raise ValueError("the saved vectors are not those of the indexed people")
        except (KeyError, TypeError, ValueError, RuntimeError, OSError) as exc:
            logger.warning("index cache cannot be used (%s); rebuilding", exc)
            file.close()
            return None
        placeholder_keys = {int(key) for key in keys[keys >= PLACEHOLDER_BASE]}
        with self._change_lock:
            with self._view_lock:
                self._index, self._names, self._keys = index, {}, {}
                self._store, old = store, self._store
                old.wipe()
                self._placeholders = placeholder_keys
                self._next_placeholder = 1 + max(
                    (k - PLACEHOLDER_BASE for k in placeholder_keys), default=-1)
                self._version += 1
            with self._cond:
                self._state = self._disk_state = (db_id, generation)
                self._on_disk = (size, sha256, store_at)
                self._sidecar_ours = True
                self._index_dirty, self._pending_since = False, None
        self._unchecked = (file, sha256, self._version)
        return CacheState(db_id, generation, people)

    def check_loaded_file(self) -> None:
        """Start the background SHA-256 check of the cache file :meth:`load` loaded
        (no-op without one). Call once the registry has opened, so that it does not
        slow the start-up down."""
        unchecked, self._unchecked = self._unchecked, None
        if unchecked is not None:
            self._start_worker("cache-checksum", self._check_file, *unchecked, self._stop)

    def mark(self, db_id: str, generation: int) -> None:
        """Record that the index now reflects ``generation`` of database ``db_id``; the
        background saver writes the cache soon (see :data:`SAVE_INTERVAL_S`). Call after
        applying a committed change (or several), holding the registry's writer lock."""
        with self._cond:
            self._state = (db_id, generation)
            if self._state != self._disk_state or self._index_dirty or self._on_disk is None:
                self._pend()

    def _changed(self) -> None:
        """The index changed (hold the change lock): it must be saved again."""
        with self._cond:
            self._index_dirty = True
            if self._state is not None:
                self._pend()

    def _pend(self) -> None:
        """A save is due (hold ``_cond``); start the saver if needed."""
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        if self._saver is None and not self._closing:
            self._saver = threading.Thread(target=self._save_loop, name="index-saver",
                                           daemon=True)
            self._saver.start()
        self._cond.notify_all()

    def _save_loop(self) -> None:
        """The background saver: waits for a due save, writes it, until close."""
        while True:
            with self._cond:
                if self._closing:
                    return
                if self._pending_since is None:
                    self._cond.wait()
                    continue
                due = max(self._pending_since + SAVE_INTERVAL_S,
                          self._last_save_end + SAVE_SPACING * self.last_save_s)
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
            try:
                with self._save_lock:
                    self._save_now()
            except Exception:  # noqa: BLE001 - the saver must live on
                logger.exception("index cache save failed")

    def flush(self) -> None:
        """Write a pending save now (blocking). A failure is logged: it only costs a
        catch-up or a rebuild at the next start."""
        with self._save_lock:
            self._save_now()

    def save(self, db_id: str, generation: int) -> None:
        """:meth:`mark` and :meth:`flush`: write the cache for ``generation`` now."""
        self.mark(db_id, generation)
        self.flush()

    def wait_saved(self, timeout_s: float = 30.0) -> bool:
        """Wait until no save is pending or being written; False on timeout (tests)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._pending_since is None and not self._saving, timeout_s)

    def _save_now(self) -> None:
        """Copy the index out (holding the change lock: writers wait, searches do not),
        then checksum and write it without locks. Hold ``_save_lock``."""
        started = time.monotonic()
        with self._change_lock:
            with self._cond:
                if self._pending_since is None or self._state is None:
                    return
                state = self._state
                with_index = (self._index_dirty or self._on_disk is None
                              or not self._sidecar_ours)
                self._pending_since, self._index_dirty, self._saving = None, False, True
            try:
                count, placeholders = len(self._store), len(self._placeholders)
                data, store_at = self._file_bytes() if with_index else (None, 0)
                with self._file_lock:
                    epoch, on_disk = self._epoch, self._on_disk
                    self._in_flight = data
            except BaseException:
                with self._cond:
                    self._saving = False
                    self._index_dirty |= with_index
                    self._pend()
                raise
        saved = False
        try:
            if data is not None:
                size, sha256 = len(data), hashlib.sha256(data).hexdigest()
            elif on_disk is not None:
                size, sha256, store_at = on_disk
            else:  # the index file was discarded since: write it next time
                return
            meta = {"format": _CACHE_FORMAT, "db_id": state[0], "generation": state[1],
                    "model_id": self.model_id, "dim": self.dim, "count": count,
                    "placeholders": placeholders, "store_offset": store_at, "size": size,
                    "sha256": sha256}
            saved = self._write_files(data, json.dumps(meta).encode("utf-8"), epoch,
                                      (size, sha256, store_at), state)
        except OSError as exc:
            logger.warning("cannot save the index cache: %s", exc)
        finally:
            with self._file_lock:
                self._in_flight = None
            del data
            with self._cond:
                self._saving = False
                if not saved:  # try again later (the files on disk are an older pair)
                    self._index_dirty |= with_index
                    self._pend()
                self.last_save_s = time.monotonic() - started
                self._last_save_end = time.monotonic()
                self._cond.notify_all()
        if saved:
            self.saves += 1
            logger.debug("index cache saved at generation %d (%s, %.2f s)", state[1],
                         "index and sidecar" if with_index else "sidecar", self.last_save_s)

    def _file_bytes(self) -> tuple[bytearray, int]:
        """(the index file's bytes, where the vectors start in them): the USearch index,
        then :meth:`~streamer.vector_store.VectorStore.dump_into`. Hold the change
        lock."""
        index_bytes = cast(bytearray, self._index.save())
        store_at = len(index_bytes)
        data = bytearray(store_at + self._store.dump_size())
        data[:store_at] = index_bytes
        np.frombuffer(index_bytes, dtype=np.uint8)[:] = 0  # released holding nothing
        del index_bytes
        self._store.dump_into(data, store_at)
        return data, store_at

    def _write_files(self, data: bytearray | None, meta: bytes, epoch: int,
                     on_disk: tuple[int, str, int], state: tuple[str, int]) -> bool:
        """Write the index (unless None) and the sidecar beside their paths, then
        rename them into place; False (nothing replaced) when :meth:`discard_files`
        ran since the index was copied. Raises :class:`OSError`."""
        temps: list[Path] = []
        try:
            for payload in (data, meta):
                if payload is None:
                    continue
                with self._file_lock:
                    if self._epoch != epoch:
                        return False
                    fd, name = tempfile.mkstemp(dir=self.cache_dir, prefix=".index-",
                                                suffix=".tmp")
                    temps.append(Path(name))
                    self._temp_files.add(temps[-1])
                with os.fdopen(fd, "wb") as f:
                    f.write(payload)
                    f.flush()
                    os.fsync(f.fileno())
            with self._file_lock:
                if self._epoch != epoch:
                    return False
                if data is not None:
                    os.replace(temps[0], self.index_path)
                    _fsync_dir(self.cache_dir)  # the index is in place before its sidecar
                os.replace(temps[-1], self.meta_path)
                _fsync_dir(self.cache_dir)
                self._on_disk, self._disk_state, self._sidecar_ours = on_disk, state, True
                return True
        finally:
            with self._file_lock:
                for temp in temps:
                    self._temp_files.discard(temp)
                    temp.unlink(missing_ok=True)  # no-op after a successful replace

    def discard_files(self) -> None:
        """Remove the index file and any save in flight (its file and its copy of the
        index, zeroed), so no file holds a vector just erased; the background saver
        writes the index again soon. Call after :meth:`erase`, before acknowledging.

        The sidecar stays when this replica wrote or loaded it (this format holds no
        personal data, and without the index file it is never used); any other is
        removed too. Raises
        :class:`RegistryError` when a file cannot be removed.
        """
        with self._file_lock:
            self._epoch += 1
            self._on_disk = None
            if self._in_flight is not None:
                np.frombuffer(self._in_flight, dtype=np.uint8)[:] = 0
            try:
                for temp in self._temp_files:
                    temp.unlink(missing_ok=True)
                self.index_path.unlink(missing_ok=True)
                if not self._sidecar_ours:
                    self.meta_path.unlink(missing_ok=True)
                    self._disk_state = None
                _fsync_dir(self.cache_dir)
            except OSError as exc:
                raise RegistryError(f"cannot erase the index cache: {exc}") from exc
        with self._cond:
            self._index_dirty = True
            if self._state is not None:
                self._pend()

    def close(self) -> None:
        """Stop the background work, write a pending save (blocking), empty the index
        and the rosters. Call at the registry's close; idempotent. The replica can be
        loaded or filled again afterwards."""
        self._stop.set()
        with self._cond:
            self._closing = True
            saver, self._saver = self._saver, None
            self._cond.notify_all()
        if saver is not None and saver is not threading.current_thread():
            saver.join()
        self.flush()
        with self._cond:
            self._closing = False
        self.clear()
        self.set_rosters({})
        self._stop = threading.Event()  # for a later use; running workers keep theirs


def repair_unreachable(index: Index, keys: np.ndarray, vectors: np.ndarray,
                       rounds: int = 3) -> int:
    """Re-insert the vectors whose approximate search does not find them (or an exact
    duplicate); return how many still do not after ``rounds``. Call after a build (the
    replica does, in the background, for indexes searched approximately), holding the
    lock that keeps other threads off ``index``."""
    missed, still = _repair(index, keys, vectors, rounds)
    if missed:
        logger.info("index build: %d vector(s) unreachable; inserted them again (%d still "
                    "unreachable)", missed, still)
    return still


def _repair(index: Index, keys: np.ndarray, vectors: np.ndarray,
            rounds: int = 3) -> tuple[int, int]:
    """(vectors not found by the first search, vectors still not found at the end)."""
    todo = np.arange(len(keys))
    missed = 0
    for round_no in range(rounds):
        found = index.search(vectors[todo], 1, exact=False)
        # one query gives 1-D results: shape them as one row per query
        nearest = np.asarray(found.keys).reshape(len(todo), -1)[:, 0]
        distances = np.asarray(found.distances).reshape(len(todo), -1)[:, 0]
        hit = (nearest == keys[todo]) | (distances <= 0.0)
        todo = todo[~hit]
        if round_no == 0:
            missed = len(todo)
        if not len(todo):
            return missed, 0
        for i in todo:
            index.remove(int(keys[i]))
            index.add(int(keys[i]), vectors[i])
    return missed, len(todo)


def _fsync_dir(path: Path) -> None:
    """Make renames and unlinks in ``path`` durable (a no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EISDIR):
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _rows(matches: Any, queries: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(keys, l2sq) of each query's results from a USearch search of ``queries`` rows
    (one query gives 1-D results without counts)."""
    keys = np.asarray(matches.keys).reshape(queries, -1)
    l2sq = np.asarray(matches.distances).reshape(queries, -1)
    counts = (np.asarray(matches.counts).reshape(-1) if hasattr(matches, "counts")
              else np.array([keys.shape[1]]))
    return [(keys[row, :count], l2sq[row, :count]) for row, count in enumerate(counts)]
