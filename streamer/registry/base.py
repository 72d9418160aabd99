"""The registry interface: enrolled people, their voiceprints and search over them.

Two implementations keep the same promises and pass one shared test suite
(``tests/test_registry_contract.py``): :class:`~streamer.registry.sqlite.SqliteRegistry`
(the embedded default, one process) and
:class:`~streamer.registry.postgres.PostgresRegistry` (several servers on one PostgreSQL
database). The database is the truth; each server searches its own in-memory
:class:`~streamer.registry.replica.Replica`, which a write updates before it returns
(read-your-writes on the server that took it). The replica's cache files follow in the
background, except that a deletion removes the file holding the person's vector before
it returns.

Call order: construct (cheap, no I/O), :meth:`Registry.open` before serving, call from
any thread (the server calls from worker threads), :meth:`Registry.close` at shutdown.
"""

from __future__ import annotations

import json
import math
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, UnknownPerson
from .replica import Candidate, Replica

__all__ = ["Person", "Registry"]


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


class Registry(ABC):
    """People, voiceprints and a nearest-neighbour index for one embedding model.

    Args:
        model_id: Identifies the embedder; only its voiceprints are compared.
        dim: Embedding length of that model.
        keep_audio: Store enrolment PCM so voiceprints can be rebuilt for a new model.
    """

    #: Where the index cache lives (set by the implementation).
    replica: Replica

    def __init__(self, model_id: str, dim: int, keep_audio: bool = False) -> None:
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"model_id must be a non-empty string, got {model_id!r}")
        self.model_id = model_id
        self.dim = dim
        self.keep_audio = keep_audio
        #: The database generation this server's index reflects; increments with every
        #: committed change.
        self.generation = 0
        #: Random id of the database; ties the index cache to it.
        self.db_id = ""

    # -- the interface -------------------------------------------------------------------

    @abstractmethod
    def open(self) -> None:
        """Open or create the database and bring the index up to date (from the cache,
        caught up with the database, or rebuilt). Call once before serving. Raises
        :class:`~streamer.errors.RegistryError` when the database cannot be opened,
        :class:`ConfigError` when stored voiceprints of ``model_id`` do not have ``dim``
        values."""

    @abstractmethod
    def close(self) -> None:
        """Write a pending index cache save, stop the background work and let go of
        the database; idempotent."""

    @abstractmethod
    def check(self) -> int:
        """Health probe: read the database's generation and return it. Call from a worker
        thread. Raises :class:`~streamer.errors.RegistryError` when it cannot be read."""

    @abstractmethod
    def add_person(self, name: str, info: dict[str, Any] | None, embedding: np.ndarray,
                   speech_s: float, audio: np.ndarray | None = None) -> Person:
        """Enrol a new person with one voiceprint; return it once committed and indexed.

        Raises :class:`ValueError` for a bad name, info, embedding or ``speech_s``, and
        :class:`~streamer.errors.RegistryError` when the write fails.
        """

    @abstractmethod
    def add_voiceprint(self, person_id: str, embedding: np.ndarray, speech_s: float,
                       audio: np.ndarray | None = None) -> Person:
        """Add another enrolment to ``person_id`` and re-weight their centroid.

        Raises :class:`UnknownPerson`, :class:`ValueError`, ``RegistryError``.
        """

    @abstractmethod
    def add_first_voiceprints(self, entries: list[tuple[str, np.ndarray, float]]) -> int:
        """Give each ``(person_id, embedding, speech_s)`` whose person exists and has no
        voiceprint of this model yet that embedding as their first, all in one
        transaction; skip the others. Returns how many were added. For filling in a
        derived index (line voiceprints) for many people at once.

        Raises :class:`ValueError` for a bad embedding or ``speech_s`` (nothing is
        written), ``RegistryError`` when the write fails.
        """

    @abstractmethod
    def update_person(self, person_id: str, name: str | None = None,
                      info: dict[str, Any] | None = None) -> Person:
        """Change the name and/or info (``None`` keeps a field). Raises :class:`UnknownPerson`."""

    @abstractmethod
    def delete_person(self, person_id: str) -> None:
        """Erase a person, all their voiceprints (every model) and their audio, from the
        database and this server's index and cache files, before returning. Raises
        :class:`UnknownPerson`, ``RegistryError`` when a copy could not be erased."""

    @abstractmethod
    def get(self, person_id: str) -> Person:
        """Return one person. Raises :class:`UnknownPerson`."""

    @abstractmethod
    def people(self) -> list[Person]:
        """Return everyone, oldest enrolment first (including people of other models)."""

    @abstractmethod
    def people_page(self, offset: int, limit: int,
                    query: str | None = None) -> tuple[list[Person], int]:
        """One page of :meth:`people`: at most ``limit`` people after the first
        ``offset``, of those whose name contains ``query`` (any case) or whose id is
        ``query``; and how many match. Answered by the database (one page is read)."""

    @abstractmethod
    def set_room(self, room: str, people: list[str] | None) -> tuple[str, ...] | None:
        """Give ``room`` a roster (person ids, duplicates dropped, order kept), or remove
        it (None). Returns the roster stored. A deleted person leaves every roster.

        Raises :class:`UnknownPerson` for an id nobody has, :class:`ValueError` for a bad
        room name or list, :class:`~streamer.errors.RegistryError` when the write fails.
        """

    def rooms(self) -> dict[str, tuple[str, ...]]:
        """Every room with a roster (from memory: works while the database is down)."""
        return self.replica.rosters()

    def search_roster(self, room: str, embedding: np.ndarray,
                      k: int) -> list[Candidate] | None:
        """The ``k`` members of ``room``'s roster nearest to ``embedding`` (exact), or
        None when the room has no roster. Raises :class:`ValueError` like :meth:`search`."""
        roster = self.replica.roster(room)
        if roster is None:
            return None
        return self.replica.search_among(roster, self._unit(embedding), k)

    @property
    def lag(self) -> int:
        """Generations this server's index is behind the newest it has heard of."""
        return 0

    def metrics(self) -> list[tuple[str, str, str, float]]:
        """Extra ``/metrics`` families: (name, ``counter`` or ``gauge``, help, value)."""
        return []

    # -- another registry object on the same database changed it -----------------------

    def follow_delete(self, person_id: str) -> None:
        """``person_id`` was deleted through another registry object on the same database
        (this one holds another model's voiceprints, e.g. a phone line's:
        :mod:`streamer.line_voiceprints`): erase their vector from this server's index and
        this model's cache files before returning. No-op for someone not indexed. Raises
        :class:`~streamer.errors.RegistryError` when the files cannot be removed."""
        entry = self.replica.vector_of(person_id)
        if entry is None:
            return
        self.replica.hide(entry[0])
        self.replica.erase({entry[0]})
        self.replica.discard_files()
        self.replica.mark(self.db_id, self.generation)

    def follow_rename(self, person_id: str, name: str) -> None:
        """``person_id`` was renamed through another registry object on the same
        database: searches here report ``name``. Never raises."""
        entry = self.replica.vector_of(person_id)
        if entry is not None:
            self.replica.rename(entry[0], name)

    def follow_roster(self, room: str, roster: tuple[str, ...] | None) -> None:
        """``room``'s roster was set (None: removed) through another registry object on
        the same database. Never raises."""
        self.replica.set_roster(room, roster)

    # -- shared by every implementation ------------------------------------------------

    def __len__(self) -> int:
        """Number of people with at least one voiceprint of ``model_id``."""
        return len(self.replica)

    def search(self, embedding: np.ndarray, k: int) -> list[Candidate]:
        """Return up to ``k`` people nearest to ``embedding``, nearest first.

        Needs no database: searches go on while it is unreachable. Exact up to
        :data:`~streamer.registry.replica.EXACT_SEARCH_MAX_VECTORS` people, HNSW beyond.
        Returns ``[]`` when nobody is enrolled. Raises :class:`ValueError` for a bad
        embedding or ``k``.
        """
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        return self.replica.search(self._unit(embedding), k)

    def search_many(self, embeddings: np.ndarray, k: int) -> list[list[Candidate]]:
        """:meth:`search` for each row of ``embeddings`` in one call (the live batch of
        many streams' decisions: the index holds the GIL while it searches, so one call
        for many queries blocks the event loop once, on two threads). Raises
        :class:`ValueError` for a bad embedding or ``k``."""
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        rows = np.asarray(embeddings)
        if rows.ndim != 2:
            raise ValueError(f"embeddings must be one per row, got shape {rows.shape}")
        if not len(rows):
            return []
        return self.replica.search_many(np.stack([self._unit(row) for row in rows]), k)

    def require_indexed(self, person_id: str) -> None:
        """Raise :class:`UnknownPerson` unless ``person_id`` has a voiceprint of this
        model in the index. Needs no database (``verify`` works while it is down)."""
        if person_id not in self.replica:
            raise UnknownPerson(person_id)

    def distance_to(self, person_id: str, embedding: np.ndarray) -> float:
        """Return ``distance`` from ``embedding`` to one person, as :meth:`search` scores it.

        Raises :class:`UnknownPerson` (also when the person has no voiceprint of this
        model) and :class:`ValueError` for a bad embedding.
        """
        distance = self.replica.distance_to(person_id, self._unit(embedding))
        if distance is None:
            raise UnknownPerson(person_id)
        return distance

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
                          audio: np.ndarray | None) -> tuple[np.ndarray, bytes | None]:
        """Validate one enrolment: (unit vector, int16 PCM bytes to keep or None)."""
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
        return vector, pcm

    def _centroid(self, vectors: list[np.ndarray], weights: list[float]) -> np.ndarray:
        """Speech-weighted mean of unit voiceprints, renormalised. ConfigError on bad dim."""
        for vector in vectors:
            if vector.shape != (self.dim,):
                raise ConfigError(f"stored voiceprints of model {self.model_id!r} have "
                                  f"{vector.shape[0]} values, the model gives {self.dim}")
        w = np.array(weights, dtype=np.float64)
        mean = w @ np.array(vectors, dtype=np.float64)
        norm = float(np.linalg.norm(mean))
        if norm < 1e-9:  # voiceprints cancel out exactly: keep the best-supported one
            mean, norm = np.asarray(vectors[int(np.argmax(w))], np.float64), 1.0
        return (mean / norm).astype(np.float32)


def person_from_row(row: tuple[Any, ...]) -> Person:
    """A :class:`Person` from a row (id, name, info JSON, created, speech_s)."""
    person_id, name, info, created, speech_s = row
    return Person(person_id, name, json.loads(info), float(speech_s), float(created))


def check_roster(room: str, people: list[str] | None) -> tuple[str, ...] | None:
    """Validate a ``set_room`` request: a room name and person ids (duplicates dropped,
    order kept), or None. Raises :class:`ValueError`."""
    if not isinstance(room, str) or not room.strip():
        raise ValueError("room must be a non-empty string")
    if people is None:
        return None
    if not isinstance(people, (list, tuple)) or not all(isinstance(p, str) for p in people):
        raise ValueError("people must be a list of person ids or null")
    return tuple(dict.fromkeys(people))


def new_person_id(taken: Callable[[str], bool]) -> str:
    """A fresh ``p_`` + 12 hex id; ``taken(id)`` says whether the database has it."""
    for _ in range(3):  # 48 random bits: a collision is all but impossible
        person_id = "p_" + secrets.token_hex(6)
        if not taken(person_id):
            break
    return person_id


def check_name(name: str) -> str:
    """A person's name: a non-empty string. Raises :class:`ValueError`."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("name must be a non-empty string")
    return name


def info_json(info: dict[str, Any]) -> str:
    """``info`` as JSON text. Raises :class:`ValueError` unless a JSON object."""
    if not isinstance(info, dict):
        raise ValueError("info must be a JSON object (dict)")
    try:
        return json.dumps(info, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"info must be JSON-serialisable: {exc}") from None
