"""Every indexed person's unit vector in float32, beside the approximate index.

The registry replica's HNSW index (:mod:`.registry.replica`) keeps its vectors as int8:
a quarter of the memory and a faster search than float32 at a million people, but
distances only good enough to pick candidates. :class:`VectorStore` keeps the float32 vectors the
registry reports distances from: the index's candidates are re-scored here, small
galleries are searched here exactly, and ``verify`` reads its centroid here.

Erasing a person overwrites their row at once (:meth:`VectorStore.erase`) and the row is
reused by the next person; growing the store zeroes the old buffer before releasing it;
:meth:`VectorStore.wipe` zeroes a store leaving service. So a vector erased from the
store is in no memory the store ever owned.

Not thread-safe: the replica's locks guard it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO

import numpy as np

__all__ = ["VectorStore"]

#: Row keys of free rows (no person's key: those are database row ids).
FREE = np.uint64(2**64 - 1)


class VectorStore:
    """Key (uint64) -> unit vector (float32, ``dim``), in one growable matrix."""

    def __init__(self, dim: int, erased: np.ndarray, capacity: int = 1024) -> None:
        """``erased`` overwrites the row of an erased person: a vector far from every
        unit vector, so a free row never comes near a search's nearest."""
        self.dim = dim
        self._erased = np.asarray(erased, dtype=np.float32).reshape(dim)
        self._matrix = np.zeros((max(1, capacity), dim), np.float32)
        self._row_keys = np.full(max(1, capacity), FREE, np.uint64)
        self._rows: dict[int, int] = {}  # key -> row
        self._free: list[int] = []
        self._used = 0  # rows 0.._used-1 have held a vector

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def keys(self) -> np.ndarray:
        """Every key held, sorted."""
        return np.sort(np.fromiter(self._rows, dtype=np.uint64, count=len(self._rows)))

    def put(self, keys: Iterable[int], vectors: np.ndarray) -> None:
        """Add or replace the vectors of ``keys`` (rows of ``vectors``, same order)."""
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        for key, vector in zip((int(k) for k in keys), vectors):
            row = self._rows.get(key)
            if row is None:
                row = self._take_row()
                self._rows[key] = row
                self._row_keys[row] = key
            self._matrix[row] = vector

    def erase(self, keys: Iterable[int]) -> None:
        """Overwrite the vectors of ``keys`` and free their rows (unknown keys: no-op)."""
        for key in keys:
            row = self._rows.pop(int(key), None)
            if row is not None:
                self._matrix[row] = self._erased
                self._row_keys[row] = FREE
                self._free.append(row)

    def get(self, keys: Iterable[int]) -> np.ndarray:
        """A copy of the vectors of ``keys``, one row each. Raises :class:`KeyError` for
        a key not held."""
        rows = [self._rows[int(key)] for key in keys]
        return self._matrix[np.array(rows, dtype=np.int64)].reshape(len(rows), self.dim)

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, keys) of every row used so far, free rows included (their key is
        :data:`FREE`, their vector far from all): views, valid until the next change."""
        return self._matrix[:self._used], self._row_keys[:self._used]

    def _take_row(self) -> int:
        if self._free:
            return self._free.pop()
        if self._used == len(self._matrix):
            self._grow(2 * len(self._matrix))
        self._used += 1
        return self._used - 1

    def _grow(self, capacity: int) -> None:
        matrix = np.zeros((capacity, self.dim), np.float32)
        matrix[:self._used] = self._matrix[:self._used]
        row_keys = np.full(capacity, FREE, np.uint64)
        row_keys[:self._used] = self._row_keys[:self._used]
        self._matrix[:] = 0  # the old buffer is released holding nothing
        self._matrix, self._row_keys = matrix, row_keys

    def wipe(self) -> None:
        """Zero every vector and forget every key (a store leaving service)."""
        self._matrix[:] = 0
        self._row_keys[:] = FREE
        self._rows, self._free, self._used = {}, [], 0

    # -- the cache file -------------------------------------------------------------------

    def dump_size(self) -> int:
        """Bytes :meth:`dump_into` writes."""
        return len(self._rows) * (8 + 4 * self.dim)

    def dump_into(self, buffer: bytearray, offset: int) -> None:
        """Write every held key (uint64) then their vectors (float32, same order), both
        little-endian, into ``buffer`` from ``offset`` (:meth:`dump_size` bytes)."""
        n = len(self._rows)
        live = self._row_keys[:self._used] != FREE
        keys = np.frombuffer(buffer, dtype="<u8", count=n, offset=offset)
        np.compress(live, self._row_keys[:self._used], out=keys)
        vectors = np.frombuffer(buffer, dtype="<f4", count=n * self.dim,
                                offset=offset + 8 * n).reshape(n, self.dim)
        np.compress(live, self._matrix[:self._used], axis=0, out=vectors)

    @classmethod
    def read(cls, file: IO[bytes], count: int, dim: int, erased: np.ndarray
             ) -> VectorStore:
        """The store :meth:`dump_into` wrote for ``count`` keys, read from ``file`` at
        its position. Raises :class:`ValueError` when the file ends early or repeats a
        key."""
        store = cls(dim, erased, capacity=count)
        keys = np.empty(count, "<u8")
        _read_exactly(file, keys)
        _read_exactly(file, store._matrix[:count])
        store._row_keys[:count] = keys
        store._rows = {int(key): row for row, key in enumerate(keys.tolist())}
        if len(store._rows) != count or int(FREE) in store._rows:
            raise ValueError("the saved vectors repeat a key")
        store._used = count
        return store


def _read_exactly(file: IO[bytes], array: np.ndarray) -> None:
    if not array.size:
        return
    view = memoryview(array).cast("B")
    got = 0
    while got < len(view):
        n = file.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise ValueError("the index file ends before its saved vectors do")
        got += n
