"""streamer.worker: embeddings in threads behind a bounded queue, overflow policy, close."""

from __future__ import annotations

import asyncio
import logging
import os
import threading

import numpy as np
import pytest

from streamer.errors import Overloaded
from streamer.pooling import Stats
from streamer.worker import Worker

#: One millisecond, scaled by STREAMER_TESTS_TIMEOUT_FACTOR on slow machines (rule 15(e)).
MS = 0.001 * float(os.environ.get("STREAMER_TESTS_TIMEOUT_FACTOR", "1"))
#: A blocked fake never waits longer than this, so a failing test cannot hang the run.
RELEASE_TIMEOUT_S = 5.0


class FakeEmbedder:
    """Deterministic, checks shapes; optionally blocks until ``release`` is set."""

    def __init__(self, block: bool = False) -> None:
        self.release = threading.Event()
        if not block:
            self.release.set()
        self.started = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def embed(self, pcm: np.ndarray) -> np.ndarray:
        assert pcm.dtype == np.float32 and pcm.ndim == 1 and len(pcm) > 0
        with self._lock:
            self.started += 1
            self.threads.add(threading.current_thread().name)
        self.release.wait(RELEASE_TIMEOUT_S)
        return np.array([float(pcm.sum()), float(len(pcm)), 1.0], np.float32)


def pcm(n: int = 1600, value: float = 0.5) -> np.ndarray:
    return np.full(n, value, np.float32)


async def wait_until(predicate, timeout_s: float = 1000 * MS) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(MS)


async def test_embeds_in_worker_threads() -> None:
    fake = FakeEmbedder()
    worker = Worker(fake, threads=2, max_queued_jobs=4)
    worker.start()
    worker.start()  # idempotent
    try:
        results = await asyncio.gather(*(worker.embed(pcm(100 * (i + 1))) for i in range(6)))
        for i, r in enumerate(results):
            np.testing.assert_allclose(r, [0.5 * 100 * (i + 1), 100 * (i + 1), 1.0])
        assert worker.done == 6 and worker.dropped == 0 and worker.in_flight == 0
        assert worker.busy_s >= 0.0
        assert fake.threads and all(name.startswith("embed") for name in fake.threads)
        assert threading.current_thread().name not in fake.threads
    finally:
        await worker.close(1.0)


async def test_droppable_work_is_refused_when_the_queue_is_full() -> None:
    fake = FakeEmbedder(block=True)
    worker = Worker(fake, threads=1, max_queued_jobs=2)
    worker.start()
    try:
        admitted = [asyncio.create_task(worker.embed(pcm(), droppable=True)) for _ in range(2)]
        await wait_until(lambda: worker.in_flight == 2)
        with pytest.raises(Overloaded) as err:
            await worker.embed(pcm(), droppable=True)
        assert err.value.close_code == 1013 and err.value.code == "overloaded"
        assert worker.dropped == 1
        # final work waits for room instead of failing
        final = asyncio.create_task(worker.embed(pcm(10, 1.0), droppable=False))
        await asyncio.sleep(20 * MS)
        assert not final.done() and worker.in_flight == 2
        fake.release.set()
        np.testing.assert_allclose(await asyncio.wait_for(final, 1.0), [10.0, 10.0, 1.0])
        for task in admitted:
            await asyncio.wait_for(task, 1.0)
        assert worker.done == 3 and worker.dropped == 1 and worker.in_flight == 0
        # room again: droppable work is accepted
        await worker.embed(pcm(), droppable=True)
    finally:
        fake.release.set()
        await worker.close(1.0)


async def test_cancelling_a_waiting_final_frees_nothing_it_did_not_take() -> None:
    fake = FakeEmbedder(block=True)
    worker = Worker(fake, threads=1, max_queued_jobs=1)
    worker.start()
    try:
        first = asyncio.create_task(worker.embed(pcm()))
        await wait_until(lambda: worker.in_flight == 1)
        waiting = asyncio.create_task(worker.embed(pcm()))
        await asyncio.sleep(5 * MS)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert worker.in_flight == 1
        fake.release.set()
        await asyncio.wait_for(first, 1.0)
        assert worker.in_flight == 0
    finally:
        fake.release.set()
        await worker.close(1.0)


async def test_embed_errors_propagate_and_free_the_slot() -> None:
    class Broken:
        def embed(self, pcm: np.ndarray) -> np.ndarray:
            raise RuntimeError("model failed")

    worker = Worker(Broken(), threads=1, max_queued_jobs=1)
    worker.start()
    try:
        with pytest.raises(RuntimeError, match="model failed"):
            await worker.embed(pcm())
        assert worker.in_flight == 0 and worker.done == 1
    finally:
        await worker.close(1.0)


async def test_embed_before_start_or_after_close_fails() -> None:
    worker = Worker(FakeEmbedder(), threads=1, max_queued_jobs=1)
    with pytest.raises(RuntimeError, match="not started"):
        await worker.embed(pcm())
    await worker.close(1.0)  # never started: nothing to do
    worker.start()
    await worker.close(1.0)
    await worker.close(1.0)  # idempotent
    with pytest.raises(RuntimeError):
        await worker.embed(pcm())


async def test_close_gives_up_after_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeEmbedder(block=True)
    worker = Worker(fake, threads=1, max_queued_jobs=4)
    worker.start()
    tasks = [asyncio.create_task(worker.embed(pcm())) for _ in range(2)]
    await wait_until(lambda: fake.started == 1)
    with caplog.at_level(logging.WARNING, logger="streamer.worker"):
        await worker.close(20 * MS)
    assert "2 job(s) unfinished" in caplog.text
    assert caplog.records[0].name == "streamer.worker"
    fake.release.set()
    # the running job finishes; the queued one was cancelled with the pool
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 1.0)
    assert isinstance(results[0], np.ndarray)
    assert isinstance(results[1], asyncio.CancelledError)
    assert worker.in_flight == 0
    await worker.close(1.0)


async def test_close_waits_for_admitted_jobs() -> None:
    fake = FakeEmbedder(block=True)
    worker = Worker(fake, threads=1, max_queued_jobs=4)
    worker.start()
    task = asyncio.create_task(worker.embed(pcm()))
    await wait_until(lambda: fake.started == 1)
    asyncio.get_running_loop().call_later(10 * MS, fake.release.set)
    await worker.close(1.0)
    assert task.done() and worker.done == 1


# -- live pieces: pooled statistics, batched across streams ------------------------------


class FakeStreamer:
    """Records the batches it is given; optionally blocks until ``release`` is set."""

    def __init__(self, block: bool = False) -> None:
        self.release = threading.Event()
        if not block:
            self.release.set()
        self.batches: list[list[int]] = []
        self._lock = threading.Lock()

    def stats_batch(self, pcms: list[np.ndarray], keeps: list[int | None]) -> list[Stats]:
        assert len(pcms) == len(keeps) and len({len(p) for p in pcms}) == 1  # equal lengths only
        with self._lock:
            self.batches.append([len(p) for p in pcms])
        self.release.wait(RELEASE_TIMEOUT_S)
        return [Stats.of_vector(np.array([float(p[0]), float(len(p))]), k or len(p))
                for p, k in zip(pcms, keeps)]


async def test_pieces_run_at_once_when_idle_and_in_batches_when_busy() -> None:
    fake = FakeStreamer(block=True)
    worker = Worker(FakeEmbedder(), threads=1, max_queued_jobs=64, streamer=fake, max_batch=3)
    worker.start()
    try:
        first = asyncio.create_task(worker.stats(pcm(1600, 0.1), 800))
        await wait_until(lambda: len(fake.batches) == 1)  # idle: runs alone, at once
        # While the only thread is busy, pieces wait: equal lengths go together (at most
        # max_batch), other lengths in their own batch, oldest first.
        rest = [asyncio.create_task(worker.stats(pcm(n, v), None))
                for n, v in [(1600, 0.2), (2400, 0.3), (1600, 0.4), (1600, 0.5), (1600, 0.6)]]
        await wait_until(lambda: worker.in_flight == 6)
        fake.release.set()
        results = await asyncio.gather(first, *rest)
        assert fake.batches == [[1600], [1600, 1600, 1600], [2400], [1600]]
        assert [round(float(r.mean()[0]), 3) for r in results] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
        assert results[0].n == 800 and results[2].n == 2400  # keep_samples went through
        assert worker.batches == 4 and worker.batched_pieces == 6 and worker.in_flight == 0
    finally:
        fake.release.set()
        await worker.close(timeout_s=1.0)


async def test_a_full_queue_drops_pieces_but_never_finals() -> None:
    fake = FakeStreamer(block=True)
    worker = Worker(FakeEmbedder(), threads=1, max_queued_jobs=2, streamer=fake)
    worker.start()
    try:
        held = [asyncio.create_task(worker.stats(pcm(), None)) for _ in range(2)]
        await wait_until(lambda: worker.in_flight == 2)
        with pytest.raises(Overloaded):
            await worker.stats(pcm(), None, droppable=True)
        final = asyncio.create_task(worker.stats(pcm(), None, droppable=False))
        await asyncio.sleep(20 * MS)
        assert not final.done()  # waits for room instead of being dropped
        fake.release.set()
        await asyncio.gather(*held, final)
        assert worker.dropped == 1
    finally:
        fake.release.set()
        await worker.close(timeout_s=1.0)


async def test_a_failed_batch_fails_each_of_its_pieces() -> None:
    class Broken(FakeStreamer):
        def stats_batch(self, pcms: list[np.ndarray], keeps: list[int | None]) -> list[Stats]:
            raise ValueError("model exploded")

    worker = Worker(FakeEmbedder(), threads=1, max_queued_jobs=8, streamer=Broken())
    worker.start()
    try:
        results = await asyncio.gather(*(worker.stats(pcm(), None) for _ in range(3)),
                                       return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in results)
        assert worker.in_flight == 0
        assert (await asyncio.gather(worker.embed(pcm())))  # the worker still works
    finally:
        await worker.close(timeout_s=1.0)


async def test_one_bad_piece_fails_alone() -> None:
    """A batch that fails is run again piece by piece: only the bad piece fails."""
    class Picky(FakeStreamer):
        def stats_batch(self, pcms: list[np.ndarray], keeps: list[int | None]) -> list[Stats]:
            if any(not np.isfinite(p).all() for p in pcms):
                raise ValueError("audio holds NaN")
            return super().stats_batch(pcms, keeps)

    fake = Picky(block=True)
    worker = Worker(FakeEmbedder(), threads=1, max_queued_jobs=8, streamer=fake, max_batch=4)
    worker.start()
    try:
        first = asyncio.create_task(worker.stats(pcm(), None))  # occupies the only thread
        await wait_until(lambda: len(fake.batches) == 1)
        bad = pcm()
        bad[10] = np.nan
        rest = [asyncio.create_task(worker.stats(x, None)) for x in (pcm(), bad, pcm())]
        await asyncio.sleep(0.05)
        fake.release.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        assert [type(r).__name__ for r in results] == ["Stats", "Stats", "ValueError", "Stats"]
        assert [len(b) for b in fake.batches] == [1, 1, 1]  # the two good ones, one by one
        assert worker.in_flight == 0
    finally:
        fake.release.set()
        await worker.close(timeout_s=1.0)


async def test_stats_without_a_stream_embedder_is_an_error() -> None:
    worker = Worker(FakeEmbedder(), threads=1, max_queued_jobs=8)
    worker.start()
    try:
        with pytest.raises(RuntimeError, match="stream embedder"):
            await worker.stats(pcm(), None)
    finally:
        await worker.close(timeout_s=1.0)


async def test_finals_run_before_older_pieces() -> None:
    fake = FakeStreamer(block=True)
    worker = Worker(FakeEmbedder(), threads=1, max_queued_jobs=64, streamer=fake, max_batch=8)
    worker.start()
    try:
        busy = asyncio.create_task(worker.stats(pcm(800), None))
        await wait_until(lambda: len(fake.batches) == 1)
        pieces = [asyncio.create_task(worker.stats(pcm(1600), None, droppable=True))
                  for _ in range(3)]
        final = asyncio.create_task(worker.stats(pcm(2400), None, droppable=False))
        await wait_until(lambda: worker.in_flight == 5)
        fake.release.set()
        await asyncio.gather(busy, final, *pieces)
        assert fake.batches == [[800], [2400], [1600, 1600, 1600]]
    finally:
        fake.release.set()
        await worker.close(timeout_s=1.0)


class FakeChannel(FakeStreamer):
    """A line variant: its own stats (marked by a third value) and whole embeddings."""

    def stats_batch(self, pcms: list[np.ndarray], keeps: list[int | None]) -> list[Stats]:
        with self._lock:
            self.batches.append([len(p) for p in pcms])
        self.release.wait(RELEASE_TIMEOUT_S)
        return [Stats.of_vector(np.array([float(p[0]), float(len(p)), 7.0]), k or len(p))
                for p, k in zip(pcms, keeps)]

    def embed(self, pcm: np.ndarray) -> np.ndarray:
        return np.array([7.0, float(len(pcm)), 7.0], np.float32)


async def test_channel_variants_run_their_own_model_and_batch_apart() -> None:
    model, phone = FakeStreamer(block=True), FakeChannel()
    worker = Worker(FakeEmbedder(), threads=1, max_queued_jobs=64, streamer=model,
                    max_batch=4, channels={"telephone": phone})
    worker.start()
    try:
        first = asyncio.create_task(worker.stats(pcm(1600, 0.1), None))
        await wait_until(lambda: len(model.batches) == 1)
        # equal lengths, but a telephone piece never joins a wideband batch
        rest = [asyncio.create_task(worker.stats(pcm(1600, v), None, channel=c))
                for v, c in [(0.2, None), (0.3, "telephone"), (0.4, "wideband"),
                             (0.5, "telephone")]]
        await wait_until(lambda: worker.in_flight == 5)
        model.release.set()
        results = await asyncio.gather(first, *rest)
        assert model.batches == [[1600], [1600, 1600]] and phone.batches == [[1600, 1600]]
        assert [len(r.mean()) for r in results] == [2, 2, 3, 2, 3]
        # whole embeddings: the model itself, or the variant
        assert (await worker.embed(pcm(800), channel="telephone"))[0] == 7.0
        assert (await worker.embed(pcm(800), channel="wideband"))[0] == 400.0
        with pytest.raises(RuntimeError, match="no 'phone' variant"):
            await worker.embed(pcm(800), channel="phone")
        with pytest.raises(RuntimeError, match="no 'phone' variant"):
            await worker.stats(pcm(800), None, channel="phone")
        assert worker.in_flight == 0
    finally:
        model.release.set()
        await worker.close(timeout_s=1.0)


class FloatChannel(FakeChannel):
    """The float32 graphs of a variant whose live streams run its int8 copy."""

    def embed(self, pcm: np.ndarray) -> np.ndarray:
        return np.array([32.0, float(len(pcm)), 7.0], np.float32)


async def test_requests_embed_with_a_variants_float32_graphs_when_live_runs_int8() -> None:
    """``request_channels``: identify / verify / enrolment embeds of a variant whose live
    pieces run the int8 copy use its float32 graphs; live pieces and finals stay int8;
    a variant without a float32 copy embeds requests with itself."""
    live, whole, far = FakeChannel(), FloatChannel(), FakeChannel()
    worker = Worker(FakeEmbedder(), threads=1, max_queued_jobs=8, streamer=FakeStreamer(),
                    channels={"telephone": live, "far": far},
                    request_channels={"telephone": whole})
    worker.start()
    try:
        assert (await worker.embed(pcm(800), channel="telephone"))[0] == 32.0
        assert (await worker.embed(pcm(800), channel="far"))[0] == 7.0
        got = await worker.stats(pcm(1600), None, channel="telephone")
        assert live.batches == [[1600]] and len(got.mean()) == 3
        got = await worker.stats(pcm(1600), 800, droppable=False, channel="telephone")
        assert live.batches == [[1600], [1600]]  # a final job too: the live graphs
    finally:
        await worker.close(timeout_s=1.0)


class FakeSegmenter:
    """Powerset log-probabilities of the right shape, from a worker thread."""

    def __init__(self) -> None:
        self.threads: set[str] = set()

    def logprobs(self, pcm: np.ndarray) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        return np.zeros((len(pcm) // 270, 7), np.float32)


async def test_segments_in_worker_threads_as_final_work() -> None:
    seg = FakeSegmenter()
    blocked = FakeEmbedder(block=True)
    worker = Worker(blocked, threads=1, max_queued_jobs=1, segmenter=seg)
    assert worker.has_segmenter and not Worker(blocked, 1, 1).has_segmenter
    worker.start()
    try:
        busy = asyncio.create_task(worker.embed(pcm()))
        await wait_until(lambda: blocked.started == 1)
        # the queue is full: a segmentation job waits for room (never dropped) ...
        waiting = asyncio.create_task(worker.segment(pcm(2700)))
        await asyncio.sleep(20 * MS)
        assert not waiting.done() and worker.dropped == 0
        blocked.release.set()
        await busy
        out = await waiting  # ... and runs once there is
        assert out.shape == (10, 7) and seg.threads and all(
            t.startswith("embed") for t in seg.threads)
        assert worker.done == 2
    finally:
        blocked.release.set()
        await worker.close(1.0)
    with pytest.raises(RuntimeError, match="no speaker-segmentation model"):
        await Worker(FakeEmbedder(), 1, 1).segment(pcm())
