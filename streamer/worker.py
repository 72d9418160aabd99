"""Embedding jobs: a sized thread pool behind a bounded queue.

onnxruntime releases the GIL while it runs, so model work runs in threads and the
event loop never blocks on it (websockets ``docs/faq/asyncio.rst``).

Overflow policy
---------------
At most ``max_queued_jobs`` jobs are admitted (waiting or running). When that many are
in flight:

* droppable (provisional) work is refused at once with
  :class:`~streamer.errors.Overloaded`; the caller counts and drops it, because a late
  "who is speaking" guess is worthless;
* final work waits for room (back-pressure on the stream that submitted it); it is never
  dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from .errors import Overloaded

__all__ = ["EmbedFn", "Worker"]

logger = logging.getLogger("streamer.worker")


class EmbedFn(Protocol):
    """Anything with the embedder's ``embed`` method."""

    def embed(self, pcm: np.ndarray) -> np.ndarray: ...


class Worker:
    """Runs embeddings for every connection. Create once per server; call :meth:`close`."""

    def __init__(self, embedder: EmbedFn, threads: int, max_queued_jobs: int) -> None:
        self._embedder = embedder
        self._threads = threads
        self._max = max_queued_jobs
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight = 0
        self._room: asyncio.Condition | None = None
        #: Counters for metrics and benchmarks.
        self.done = 0
        self.dropped = 0
        self.busy_s = 0.0

    @property
    def in_flight(self) -> int:
        """Jobs admitted and not yet finished (the queue depth)."""
        return self._in_flight

    def start(self) -> None:
        """Create the thread pool. Call from the event loop before the first :meth:`embed`."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="embed")
            self._room = asyncio.Condition()

    async def embed(self, pcm: np.ndarray, droppable: bool = False) -> np.ndarray:
        """Embed ``pcm`` (float32 16 kHz mono) in a worker thread and return the embedding.

        Raises :class:`Overloaded` when ``droppable`` and the queue is full, and
        ``RuntimeError`` after :meth:`close`. Cancelling the await is safe: the result is
        discarded (the thread finishes its current run).
        """
        if self._pool is None or self._room is None:
            raise RuntimeError("worker is not started")
        async with self._room:
            if self._in_flight >= self._max:
                if droppable:
                    self.dropped += 1
                    raise Overloaded("the embedding queue is full")
                await self._room.wait_for(lambda: self._in_flight < self._max)
            self._in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._run, pcm)
        finally:
            async with self._room:
                self._in_flight -= 1
                self._room.notify()

    def _run(self, pcm: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        try:
            return self._embedder.embed(pcm)
        finally:
            self.busy_s += time.perf_counter() - started
            self.done += 1

    async def close(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for admitted jobs, then stop the pool. Idempotent."""
        if self._pool is None:
            return
        deadline = time.monotonic() + timeout_s
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._in_flight:
            logger.warning("closing the worker with %d job(s) unfinished", self._in_flight)
        pool, self._pool = self._pool, None
        pool.shutdown(wait=False, cancel_futures=True)
