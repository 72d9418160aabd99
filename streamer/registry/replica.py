"""The in-memory nearest-neighbour index of a registry and its cache files (USearch).

Both registries (:mod:`.sqlite`, :mod:`.postgres`) keep one :class:`Replica`: one unit
vector per person (the speech-weighted centroid of their voiceprints), keyed by the
database's integer person key, plus each key's person id and name. Call it from any
thread: a short *view* lock guards the index and the names, so a search never waits for
a database write. Writers are serialised by their registry.

Cache: ``index-<model>.usearch`` and a sidecar ``index-<model>.json`` (database id,
generation, model id, dim, count, names, SHA-256 of the index). Each is replaced
atomically, index first, so a crash in between leaves a stale sidecar and a rebuild.
Erasing people (:meth:`Replica.erase`) never leaves their vector in memory or in the
saved file: USearch's ``remove`` keeps the bytes (and ``save()`` would write them), so a
small index is rebuilt without them and a large one overwrites their slots with
placeholders at once, rebuilding in the background later.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from usearch.compiled import MetricKind, ScalarKind
from usearch.index import Index
from usearch.index import search as brute_force_search

from ..errors import RegistryError
from ..units import l2sq_to_distance

__all__ = ["EXACT_SEARCH_MAX_VECTORS", "Candidate", "CacheState", "Replica"]

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

_CACHE_FORMAT = 2

#: Up to this many people an erasure rebuilds the index (fast); beyond, it overwrites
#: the erased vectors with placeholders (see :meth:`Replica.erase`).
REBUILD_MAX_PEOPLE = 20_000
#: Placeholders, as a share of the people indexed, that start a background rebuild.
COMPACT_SHARE = 0.02
#: Placeholder keys start here (people keys are database row ids, far below).
PLACEHOLDER_BASE = 2**63
#: The length of the placeholder vector: about this far from every unit vector, so it
#: is never among the nearest of a search.
PLACEHOLDER_NORM = 1000.0


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
    """What a loaded cache file reflects: its database, generation and names."""

    db_id: str
    generation: int
    names: dict[int, tuple[str, str]]


class Replica:
    """One registry's index: people key -> unit vector, id and name; cache files."""

    def __init__(self, cache_dir: Path, model_id: str, dim: int) -> None:
        self.dim = dim
        self.model_id = model_id
        slug = re.sub(r"[^A-Za-z0-9._-]", "_", model_id)[:64]
        self.cache_dir = Path(cache_dir)
        self.index_path = self.cache_dir / f"index-{slug}.usearch"
        self.meta_path = self.cache_dir / f"index-{slug}.json"
        self._view_lock = threading.Lock()
        self._index = self._new_index()
        self._names: dict[int, tuple[str, str]] = {}  # key -> (id, name)
        self._keys: dict[str, int] = {}  # id -> key
        self._rosters: dict[str, tuple[str, ...]] = {}  # room -> person ids
        #: Keys of placeholder vectors that overwrote erased people (see :meth:`erase`).
        self._placeholders: set[int] = set()
        self._next_placeholder = 0
        self._far = np.zeros(dim, np.float32)
        self._far[0] = PLACEHOLDER_NORM
        #: Changes made while :meth:`compact` builds (replayed on the new index).
        self._journal: list[tuple[str, int, np.ndarray | None]] | None = None
        self._compacting = False
        #: (database id, generation) of the last save, for a save after compaction.
        self._saved_as: tuple[str, int] | None = None

    def __len__(self) -> int:
        with self._view_lock:
            return len(self._names)

    def names(self) -> dict[int, tuple[str, str]]:
        """A copy of key -> (person id, name) of everyone in the index."""
        with self._view_lock:
            return dict(self._names)

    def __contains__(self, person_id: object) -> bool:
        """True when ``person_id`` is in the index (searchable)."""
        with self._view_lock:
            return person_id in self._keys

    def search(self, vector: np.ndarray, k: int) -> list[Candidate]:
        """Up to ``k`` nearest people to the unit ``vector``, nearest first."""
        with self._view_lock:
            if not self._names:
                return []
            exact = len(self._names) <= EXACT_SEARCH_MAX_VECTORS
            matches = self._index.search(vector, k, exact=exact)
            return [Candidate(*self._names[int(key)], l2sq_to_distance(l2sq))
                    for key, l2sq in zip(matches.keys, matches.distances)
                    if int(key) in self._names]

    def search_many(self, vectors: np.ndarray, k: int) -> list[list[Candidate]]:
        """:meth:`search` for each row of ``vectors`` (unit), in one index call on up to
        two threads (one query costs the same as :meth:`search`)."""
        with self._view_lock:
            if not self._names or not len(vectors):
                return [[] for _ in range(len(vectors))]
            exact = len(self._names) <= EXACT_SEARCH_MAX_VECTORS
            matches = self._index.search(vectors, k, exact=exact,
                                         threads=min(2, len(vectors)))
            # one query gives Matches (1-D, no counts): shape it as one row per query
            keys = np.asarray(matches.keys).reshape(len(vectors), -1)
            l2sq = np.asarray(matches.distances).reshape(len(vectors), -1)
            counts = (np.asarray(matches.counts).reshape(-1) if hasattr(matches, "counts")
                      else np.array([keys.shape[1]]))
            return [[Candidate(*self._names[int(key)], l2sq_to_distance(float(d)))
                     for key, d in zip(keys[row, :count], l2sq[row, :count])
                     if int(key) in self._names]
                    for row, count in enumerate(counts)]

    def distance_to(self, person_id: str, vector: np.ndarray) -> float | None:
        """``distance`` from the unit ``vector`` to ``person_id``; None if not indexed."""
        with self._view_lock:
            key = self._keys.get(person_id)
            if key is None:
                return None
            centroid = np.asarray(self._index.get(key), dtype=np.float32).reshape(1, -1)
        # Same SIMD l2sq kernel as Index.search, so the numbers agree exactly.
        match = brute_force_search(centroid, vector, 1, MetricKind.L2sq, exact=True)
        return l2sq_to_distance(float(match.distances[0]))

    def search_among(self, person_ids: tuple[str, ...], vector: np.ndarray,
                     k: int) -> list[Candidate]:
        """Up to ``k`` of ``person_ids`` nearest to ``vector`` (exact), nearest first;
        ids not in the index (no voiceprint of this model) are left out."""
        with self._view_lock:
            keys = [self._keys[pid] for pid in person_ids if pid in self._keys]
            if not keys:
                return []
            vectors = np.asarray(self._index.get(np.array(keys, dtype=np.uint64)),
                                 dtype=np.float32).reshape(len(keys), -1)
            names = [self._names[key] for key in keys]
        # Same SIMD l2sq kernel as Index.search, so the numbers agree exactly.
        matches = brute_force_search(vectors, vector, min(k, len(keys)), MetricKind.L2sq,
                                     exact=True)
        return [Candidate(*names[int(row)], l2sq_to_distance(float(l2sq)))
                for row, l2sq in zip(matches.keys, matches.distances)]

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

    def put(self, key: int, person_id: str, name: str, vector: np.ndarray) -> None:
        """Add or replace one person's vector (in place: remove then add)."""
        with self._view_lock:
            if key in self._names:
                self._index.remove(key)
            self._index.add(key, vector)
            self._names[key] = (person_id, name)
            self._keys[person_id] = key
            if self._journal is not None:
                self._journal.append(("put", key, vector))

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

        Up to :data:`REBUILD_MAX_PEOPLE` people the index is rebuilt from everyone
        else's vectors (milliseconds). Beyond, rebuilding takes minutes, so each key is
        removed and a placeholder (a vector far from every voice, under a reserved key
        that searches never return) is added at once: USearch's ``remove`` keeps the
        bytes, and the next ``add`` overwrites the freed slot. When placeholders pass
        :data:`COMPACT_SHARE` of the index, a background thread rebuilds it without them.
        """
        with self._view_lock:
            for key in keys:
                entry = self._names.pop(key, None)
                if entry is not None:
                    self._keys.pop(entry[0], None)
            small = len(self._names) <= REBUILD_MAX_PEOPLE
            if not small:
                for key in keys:
                    self._overwrite(self._index, key)
                    if self._journal is not None:
                        self._journal.append(("erase", key, None))
                compact = (not self._compacting and len(self._placeholders)
                           > COMPACT_SHARE * max(1, len(self._names)))
        if small:
            self.compact(save=False)  # the registry saves after the erasure
        elif compact:
            self._compacting = True
            threading.Thread(target=self.compact, name="index-compaction", daemon=True).start()

    def _overwrite(self, index: Index, key: int) -> None:
        """Remove ``key`` from ``index`` and overwrite its slot with a placeholder. Hold
        the view lock."""
        if key not in index:
            return
        index.remove(key)
        placeholder = PLACEHOLDER_BASE + self._next_placeholder
        self._next_placeholder += 1
        index.add(placeholder, self._far)
        self._placeholders.add(placeholder)

    def compact(self, save: bool = True) -> None:
        """Rebuild the index from the people in it (no placeholders, no removed bytes),
        then (``save``) rewrite the cache files as last saved.

        Searches go on meanwhile; changes made meanwhile are replayed on the new index
        before it is swapped in. Call from any thread; the background thread of
        :meth:`erase` calls it.
        """
        with self._view_lock:
            self._journal = []
            names = dict(self._names)
        try:
            entries = {}
            chunk = list(names)
            for start in range(0, len(chunk), 10_000):  # short lock holds: searches go on
                with self._view_lock:
                    for key in chunk[start:start + 10_000]:
                        if key in self._names:
                            entries[key] = (*names[key],
                                            np.asarray(self._index.get(key), np.float32))
            index = self._build(entries)
            with self._view_lock:
                placeholders, self._placeholders = self._placeholders, set()
                for op, key, vector in self._journal:
                    if op == "put":
                        if key in index:
                            index.remove(key)
                        index.add(key, vector)
                    else:
                        self._overwrite(index, key)
                self._index = index
                logger.debug("index compacted: %d placeholder(s) dropped", len(placeholders))
        finally:
            with self._view_lock:
                self._journal = None
                self._compacting = False
        if save and self._saved_as is not None:
            self.save(*self._saved_as, must_replace=True)

    def replace(self, entries: dict[int, tuple[str, str, np.ndarray]]) -> None:
        """Swap in a fresh index of ``entries``: key -> (person id, name, unit vector)."""
        index = self._build(entries)
        names = {key: (pid, name) for key, (pid, name, _) in entries.items()}
        with self._view_lock:
            self._index, self._names = index, names
            self._keys = {pid: key for key, (pid, _) in names.items()}
            self._placeholders = set()

    def _build(self, entries: dict[int, tuple[str, str, np.ndarray]]) -> Index:
        """A new index of ``entries``. HNSW builds can leave a few vectors that no search
        reaches (USearch issue #735; bench/gallery.py measured 8 of 100,000 with this
        index's settings, on one thread or two): above :data:`EXACT_SEARCH_MAX_VECTORS`
        (where searches walk the graph) every vector is searched for and the ones that
        do not find themselves are inserted again."""
        index = self._new_index()
        if not entries:
            return index
        keys = np.fromiter(entries, dtype=np.uint64, count=len(entries))
        vectors = np.stack([vector for _, _, vector in entries.values()])
        index.add(keys, vectors)
        if len(keys) > EXACT_SEARCH_MAX_VECTORS:
            repair_unreachable(index, keys, vectors)
        return index

    def clear(self) -> None:
        """Empty the index and the rosters (at close)."""
        self.replace({})
        self.set_rosters({})

    def _new_index(self) -> Index:
        # connectivity is stored in the saved file; both expansions come from here, also
        # for a loaded cache (see the INDEX_* constants).
        return Index(ndim=self.dim, metric="l2sq", dtype="f32",
                     connectivity=INDEX_CONNECTIVITY, expansion_add=INDEX_EXPANSION_ADD,
                     expansion_search=INDEX_EXPANSION_SEARCH)

    def remove_stale_temp_files(self) -> None:
        """Delete temporary files a crash left mid-save. Raises :class:`OSError`."""
        for stale in self.cache_dir.glob(".index-*.tmp"):
            stale.unlink(missing_ok=True)

    def load(self, db_id: str) -> CacheState | None:
        """Load the cache if it is intact and belongs to database ``db_id``.

        Returns what it reflects, or None (nothing loaded) when it is missing, damaged,
        of another database or another model. The caller checks the generation.
        """
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            data = self.index_path.read_bytes()
        except FileNotFoundError:
            logger.debug("no index cache yet; building it from the database")
            return None
        except (OSError, ValueError):
            logger.warning("index cache unreadable; rebuilding it from the database")
            return None
        expected = {"format": _CACHE_FORMAT, "db_id": db_id, "model_id": self.model_id,
                    "dim": self.dim, "sha256": hashlib.sha256(data).hexdigest()}
        if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in expected.items()):
            logger.info("index cache is stale or damaged; rebuilding")
            return None
        try:
            names = {int(key): (str(pid), str(name)) for key, (pid, name)
                     in cast(dict[str, Any], meta["names"]).items()}
            placeholders = {int(key) for key in cast(list[Any], meta["placeholders"])}
            generation = int(meta["generation"])
            header = cast(dict[str, Any], Index.metadata(data))
            if (header["dimensions"] != self.dim or header["kind_metric"] != MetricKind.L2sq
                    or header["kind_scalar"] != ScalarKind.F32):
                raise ValueError("index metadata does not match the model")
            index = self._new_index()
            index.load(data)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            logger.warning("index cache cannot be used (%s); rebuilding", exc)
            return None
        if (len(index) != len(names) + len(placeholders)
                or not all(key in index for key in (*names, *placeholders))):
            logger.warning("index cache does not match its names; rebuilding")
            return None
        with self._view_lock:
            self._index, self._names = index, names
            self._keys = {pid: key for key, (pid, _) in names.items()}
            self._placeholders = placeholders
            self._next_placeholder = 1 + max((k - PLACEHOLDER_BASE for k in placeholders),
                                             default=-1)
        return CacheState(db_id, generation, names)

    def save(self, db_id: str, generation: int, must_replace: bool = False) -> None:
        """Atomically write the index, then its sidecar, for ``generation``.

        A failed save only costs a rebuild at the next start, so it is logged; after a
        deletion (``must_replace``) the old files would still hold the erased vectors, so
        they are removed, and :class:`RegistryError` is raised if even that fails.
        """
        with self._view_lock:
            data = bytes(cast(bytes, self._index.save()))
            names = {str(key): list(entry) for key, entry in self._names.items()}
            placeholders = sorted(self._placeholders)
            self._saved_as = (db_id, generation)
        meta = {"format": _CACHE_FORMAT, "db_id": db_id, "generation": generation,
                "model_id": self.model_id, "dim": self.dim, "count": len(names),
                "names": names, "placeholders": placeholders,
                "sha256": hashlib.sha256(data).hexdigest()}
        try:
            _atomic_write(self.index_path, data)
            _atomic_write(self.meta_path, json.dumps(meta, ensure_ascii=False).encode("utf-8"))
        except OSError as exc:
            logger.warning("cannot save the index cache: %s", exc)
            try:
                self.meta_path.unlink(missing_ok=True)
                self.index_path.unlink(missing_ok=True)
            except OSError as exc2:
                if must_replace:
                    raise RegistryError(f"cannot erase the index cache: {exc2}") from exc2


def repair_unreachable(index: Index, keys: np.ndarray, vectors: np.ndarray,
                       rounds: int = 3) -> int:
    """Re-insert the vectors whose approximate search does not find them (or an exact
    duplicate); return how many still do not after ``rounds``. Call after a build."""
    todo = np.arange(len(keys))
    for _ in range(rounds):
        found = index.search(vectors[todo], 1, exact=False)
        # one query gives 1-D results: shape them as one row per query
        nearest = np.asarray(found.keys).reshape(len(todo), -1)[:, 0]
        distances = np.asarray(found.distances).reshape(len(todo), -1)[:, 0]
        hit = (nearest == keys[todo]) | (distances <= 0.0)
        todo = todo[~hit]
        if not len(todo):
            return 0
        logger.info("index build: %d vector(s) unreachable; inserting them again", len(todo))
        for i in todo:
            index.remove(int(keys[i]))
            index.add(int(keys[i]), vectors[i])
    return len(todo)


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
