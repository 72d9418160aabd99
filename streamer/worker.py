"""Model work: a sized thread pool behind a bounded queue, with batching across streams.

onnxruntime releases the GIL while it runs, so model work runs in threads and the
event loop never blocks on it (websockets ``docs/faq/asyncio.rst``).

Batching
--------
Live pieces (:meth:`Worker.stats`) wait in one queue. Whenever a thread is free it takes
the oldest final job (or, without one, the oldest piece) and up to ``max_batch - 1``
more *of the same length* (the network pools
over every sample, so padding would change the result) and runs them as one batch. With
idle threads a piece runs at once, alone; when the server is busy, pieces pile up
between runs and go through together, which costs less per piece.

Channels
--------
A line variant of the model (``match.channel``, e.g. ``telephone``) is another
:class:`~streamer.stream_embedder.StreamEmbedder` given in ``channels``; ``embed`` and
``stats`` take the channel, the same threads and queue serve every channel, and a batch
holds pieces of one channel only.

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
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .errors import Overloaded
from .metrics import EMBED_LATENCY_BUCKETS_S, Histogram
from .pooling import Stats

__all__ = ["ChannelFn", "EmbedFn", "SegmentFn", "StatsFn", "Worker"]

logger = logging.getLogger("streamer.worker")


class EmbedFn(Protocol):
    """Anything with the embedder's ``embed`` method."""

    def embed(self, pcm: np.ndarray) -> np.ndarray: ...


class StatsFn(Protocol):
    """Anything with the stream embedder's ``stats_batch`` method."""

    def stats_batch(self, pcms: list[np.ndarray], keeps: list[int | None]) -> list[Stats]: ...


class ChannelFn(StatsFn, EmbedFn, Protocol):
    """A line variant of the model: ``stats_batch`` for live pieces, ``embed`` for requests."""


class SegmentFn(Protocol):
    """Anything with the segmentation model's ``logprobs`` method."""

    def logprobs(self, pcm: np.ndarray) -> np.ndarray: ...


@dataclass(eq=False)  # compared by identity (it holds arrays)
class _Piece:
    pcm: np.ndarray
    keep: int | None
    future: asyncio.Future[Stats]
    final: bool = False
    channel: str | None = None


class Worker:
    """Runs model work for every connection. Create once per server; call :meth:`close`."""

    def __init__(self, embedder: EmbedFn, threads: int, max_queued_jobs: int,
                 streamer: StatsFn | None = None, max_batch: int = 8,
                 channels: dict[str, ChannelFn] | None = None,
                 segmenter: SegmentFn | None = None,
                 request_channels: dict[str, ChannelFn] | None = None) -> None:
        """``channels``: line variants by ``match.channel`` name (not ``wideband``);
        ``segmenter``: the speaker-segmentation model for :meth:`segment`, if loaded;
        ``request_channels``: float32 copies of variants whose live streams run int8
        (``model.int8_channels``), for :meth:`embed` (``channels`` where absent)."""
        self._embedder = embedder
        self._segmenter = segmenter
        self._streamer = streamer
        self._channels = dict(channels or {})
        self._requests = dict(request_channels or {})
        self._threads = threads
        self._max = max_queued_jobs
        self._max_batch = max(1, max_batch)
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight = 0
        self._room: asyncio.Condition | None = None
        self._waiting: deque[_Piece] = deque()
        self._free = threads
        #: Batches run and pieces in them, for metrics and benchmarks.
        self.batches = 0
        self.batched_pieces = 0
        #: Counters for metrics and benchmarks.
        self.done = 0
        self.dropped = 0
        self.busy_s = 0.0
        #: Seconds from submission to result of each model job that ran (queue wait
        #: included; dropped, failed and cancelled jobs are not counted).
        self.latency_s = Histogram(EMBED_LATENCY_BUCKETS_S)

    @property
    def in_flight(self) -> int:
        """Jobs admitted and not yet finished (the queue depth)."""
        return self._in_flight

    def start(self) -> None:
        """Create the thread pool. Call from the event loop before the first :meth:`embed`."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="embed")
            self._room = asyncio.Condition()

    def has_channel(self, channel: str) -> bool:
        """Can :meth:`embed` take ``channel``? (``wideband`` always.)"""
        return channel == "wideband" or channel in self._channels

    @property
    def has_segmenter(self) -> bool:
        """Can :meth:`segment` run (was the worker given a segmentation model)?"""
        return self._segmenter is not None

    async def segment(self, pcm: np.ndarray) -> np.ndarray:
        """The segmentation model's ``[frames, 7]`` log-probabilities of ``pcm`` (one
        window of at most about 10 s), run in a worker thread as final work (it waits
        for room in the queue, never dropped). Raises ``RuntimeError`` without a
        segmentation model or after :meth:`close`."""
        segmenter = self._segmenter
        if segmenter is None:
            raise RuntimeError("the worker has no speaker-segmentation model")
        return np.asarray(await self._job(False, self._timed, segmenter.logprobs, pcm))

    def _channel(self, channel: str | None) -> str | None:
        """``None`` for the model itself (``wideband``); raises ``RuntimeError`` for a
        channel the worker was not given."""
        if channel is None or channel == "wideband":
            return None
        if channel not in self._channels:
            raise RuntimeError(f"the worker has no {channel!r} variant of the model")
        return channel

    async def embed(self, pcm: np.ndarray, droppable: bool = False,
                    channel: str | None = None) -> np.ndarray:
        """Embed ``pcm`` (float32 16 kHz mono) in a worker thread and return the embedding,
        with the model or its ``channel`` variant (its float32 graphs, also when live
        streams run the variant's int8 copy).

        Raises :class:`Overloaded` when ``droppable`` and the queue is full, and
        ``RuntimeError`` after :meth:`close` or for a channel the worker was not given.
        Cancelling the await is safe: the result is discarded (the thread finishes its
        current run).
        """
        variant = self._channel(channel)
        return await self._job(droppable, self._run, pcm, variant)

    async def _job(self, droppable: bool, fn: Callable[..., np.ndarray],
                   *args: object) -> np.ndarray:
        """Run ``fn(*args)`` in a worker thread once admitted (:meth:`_admit`), and time
        it from submission to result."""
        submitted = time.monotonic()
        await self._admit(droppable)
        try:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._pool, fn, *args)
        finally:
            await self._release()
        self.latency_s.observe(time.monotonic() - submitted)
        return result

    async def _admit(self, droppable: bool) -> None:
        if self._pool is None or self._room is None:
            raise RuntimeError("worker is not started")
        async with self._room:
            if self._in_flight >= self._max:
                if droppable:
                    self.dropped += 1
                    raise Overloaded("the embedding queue is full")
                await self._room.wait_for(lambda: self._in_flight < self._max)
            self._in_flight += 1

    async def _release(self) -> None:
        assert self._room is not None
        async with self._room:
            self._in_flight -= 1
            self._room.notify()

    async def stats(self, pcm: np.ndarray, keep_samples: int | None,
                    droppable: bool = False, channel: str | None = None) -> Stats:
        """Pool the frames of the last ``keep_samples`` of ``pcm`` (see
        :meth:`StreamEmbedder.stats`), batched with other streams' pieces of equal length
        and the same ``channel``.

        Same admission and errors as :meth:`embed`; also ``RuntimeError`` when the worker
        was made without a stream embedder.
        """
        if self._streamer is None:
            raise RuntimeError("worker has no stream embedder")
        variant = self._channel(channel)
        submitted = time.monotonic()
        await self._admit(droppable)
        try:
            future: asyncio.Future[Stats] = asyncio.get_running_loop().create_future()
            self._waiting.append(_Piece(pcm, keep_samples, future, final=not droppable,
                                        channel=variant))
            self._start_batches()
            stats = await future
        finally:
            await self._release()
        self.latency_s.observe(time.monotonic() - submitted)
        return stats

    def _start_batches(self) -> None:
        """Hand waiting pieces to free threads, equal lengths together (event loop only)."""
        loop = asyncio.get_running_loop()
        while self._free > 0 and self._waiting and self._pool is not None:
            # finals first (a final closes a segment someone is waiting for), then the
            # oldest piece
            first = next((p for p in self._waiting if p.final), self._waiting[0])
            self._waiting.remove(first)
            if first.future.done():  # its caller was cancelled
                continue
            batch = [first]
            rest: deque[_Piece] = deque()
            while self._waiting:
                p = self._waiting.popleft()
                if p.future.done():
                    continue
                if (len(batch) < self._max_batch and len(p.pcm) == len(first.pcm)
                        and p.channel == first.channel):
                    batch.append(p)
                else:
                    rest.append(p)
            self._waiting = rest
            self._free -= 1
            done = loop.run_in_executor(self._pool, self._run_batch, batch)
            done.add_done_callback(functools.partial(self._batch_done, batch=batch))

    def _run_batch(self, batch: list[_Piece]) -> list[Stats | Exception]:
        """Run one batch in a pool thread; when it fails, run its pieces one by one, so
        that one bad piece fails alone (its result is then its exception)."""
        assert self._streamer is not None
        channel = batch[0].channel
        streamer = self._streamer if channel is None else self._channels[channel]
        started = time.perf_counter()
        try:
            try:
                return list(streamer.stats_batch([p.pcm for p in batch], [p.keep for p in batch]))
            except Exception:
                if len(batch) == 1:
                    raise
            results: list[Stats | Exception] = []
            for p in batch:
                try:
                    results.append(streamer.stats_batch([p.pcm], [p.keep])[0])
                except Exception as exc:  # noqa: BLE001 - handed to that piece's caller
                    results.append(exc)
            return results
        finally:
            self.busy_s += time.perf_counter() - started
            self.done += len(batch)
            self.batches += 1
            self.batched_pieces += len(batch)

    def _batch_done(self, result: asyncio.Future[list[Stats | Exception]],
                    batch: list[_Piece]) -> None:
        self._free += 1
        exc = None if result.cancelled() else result.exception()
        for i, piece in enumerate(batch):
            if piece.future.done():
                continue
            if result.cancelled():
                piece.future.cancel()
            elif exc is not None:
                piece.future.set_exception(exc)
            else:
                outcome = result.result()[i]
                if isinstance(outcome, Exception):
                    piece.future.set_exception(outcome)
                else:
                    piece.future.set_result(outcome)
        if self._pool is not None:
            self._start_batches()

    def _run(self, pcm: np.ndarray, channel: str | None = None) -> np.ndarray:
        if channel is None:
            model: EmbedFn = self._embedder
        else:
            model = self._requests.get(channel) or self._channels[channel]
        return self._timed(model.embed, pcm)

    def _timed(self, fn: Callable[[np.ndarray], np.ndarray], pcm: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        try:
            return fn(pcm)
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
