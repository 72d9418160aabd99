"""Live decisions of many streams answered by one registry search per event-loop turn.

USearch holds the GIL while it searches, so a search blocks the event loop whether it
runs on the loop or in a thread; with a million people one takes about 1.7 ms. Instead
of one search per ``speaker`` event, the I/O shell collects, for one turn of the loop,
every stream that has events to publish, asks each session for the searches its events
need (:meth:`~streamer.session.Session.search_requests`), answers all of them with one
:meth:`~streamer.registry.base.Registry.search_many` call on two threads, and then
publishes. A failed batch costs nothing but the batch: each session then searches for
itself when its events are taken.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np

from .registry import Registry
from .session import Session

__all__ = ["SearchBatcher"]

logger = logging.getLogger("streamer.server")


class SearchBatcher:
    """Publishes streams' events after one batched search per loop turn.

    Call :meth:`publish_soon` from the event loop instead of publishing at once; the
    publish callbacks run on the loop, in the order the streams asked.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._waiting: dict[Session, tuple[Callable[[], None], Registry]] = {}
        self._scheduled = False
        #: Searches answered in batches, and the batches (for ``/metrics``).
        self.searches = 0
        self.batches = 0

    def publish_soon(self, session: Session, publish: Callable[[], None],
                     registry: Registry | None = None) -> None:
        """Run ``publish`` (which takes ``session``'s events) later in this loop turn,
        after the searches of every stream waiting by then are answered together: one
        batch per registry searched (``registry``: the one the session searches, e.g. a
        phone line's voiceprints; default the server's)."""
        self._waiting[session] = (publish, registry or self._registry)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, {}
        self._scheduled = False
        by_registry: dict[int, tuple[Registry, list[tuple[Session, list[np.ndarray], int]]]] = {}
        for session, (_, registry) in waiting.items():
            try:
                queries, k = session.search_requests()
            except Exception:  # its events are then decided (and searched) when taken
                logger.exception("a stream's search requests failed")
                continue
            by_registry.setdefault(id(registry), (registry, []))[1].append((session, queries, k))
        for registry, asked in by_registry.values():
            self._answer(registry, asked)
        for publish, _ in waiting.values():
            try:
                publish()
            except Exception:  # one stream's failure must not hold back the others'
                logger.exception("publishing a stream's events failed")

    def _answer(self, registry: Registry,
                asked: list[tuple[Session, list[np.ndarray], int]]) -> None:
        """One ``search_many`` for the queries of the sessions in ``asked``."""
        queries = [q for _, qs, _ in asked for q in qs]
        if not queries:
            return
        k = max(k for _, qs, k in asked if qs)
        try:
            results = registry.search_many(np.stack(queries), k)
        except Exception:  # each session searches for itself when its events are taken
            logger.exception("batched search of %d queries failed", len(queries))
            return
        self.searches += len(queries)
        self.batches += 1
        at = 0
        for session, qs, k_session in asked:
            found = results[at:at + len(qs)]
            at += len(qs)
            session.supply_searches([f[:k_session] for f in found])
