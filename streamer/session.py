"""One ingest stream's core: audio in, embedding jobs out, results in, events out (pure).

Call order, for each connection (the I/O shell in ``server.py`` does this)::

    session = Session(...)
    session.feed_pcm(bytes)        # or feed(samples) with float32 16 kHz audio
    jobs = session.take_jobs()     # run each job's pcm through the embedder, then
    session.job_done(job.id, embedding)   # (or job_dropped(job.id) for window jobs)
    events = session.take_events() # wire-ready dicts, in order
    ...
    session.finish()               # end of stream: closes the open segment
    session.idle                   # True once every job has been answered

How a stream becomes events
---------------------------
Exact VAD frames go through the :class:`~streamer.segmenter.Segmenter`. A segment is
reported only once it reaches ``min_segment_s`` (shorter blips are counted and
ignored). While it is open, analysis *windows* of ``window_s`` are embedded every
``hop_s`` (the first ``first_provisional_s`` after the start); each answered window
gives a provisional ``speaker`` event for the mean of the windows of the current turn.
A full window far (``change_distance``) from that turn's mean, confirmed by the next
window, is a speaker change without a pause: the turn is closed in the middle of the
first far window and a new segment begins there. Each turn ends with one embedding of
its whole audio and one ``final`` event.

Determinism
-----------
Everything that happens is put in one ordered queue of items (segment starts, windows,
turn finals, segment ends) in stream order. Items are released strictly in that order,
each one as soon as its embedding (if any) is answered, and a turn's final is placed
right after the item that closed it. So the events, and the segments they describe,
depend only on the audio, never on how it was chunked or how fast the embedder was
(except ``ts`` and when provisional work is dropped under overload).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .audio import Framer, StreamResampler, pcm_to_float
from .config import Config
from .identify import CandidateLike, Decision, decide, distance, unit
from .segmenter import SegmentEnd, Segmenter, SegmentStart, VoiceDetector
from .units import MODEL_SAMPLE_RATE, samples_to_seconds, seconds_to_samples

__all__ = ["EmbedJob", "SearchFn", "Session"]

#: ``search(unit_embedding, k)`` -> candidates nearest first (the registry's search).
SearchFn = Callable[[np.ndarray, int], Sequence[CandidateLike]]


@dataclass(frozen=True)
class EmbedJob:
    """Audio to embed. ``kind`` "window" may be dropped under load; "final" may not."""

    id: int
    kind: Literal["window", "final"]
    start: int
    end: int
    pcm: np.ndarray = field(repr=False)

    @property
    def droppable(self) -> bool:
        """True for provisional work that may be dropped when the server is overloaded."""
        return self.kind == "window"


class _SegmentAudio:
    """The audio of one VAD segment, kept until every item that needs it is released."""

    def __init__(self, start: int, head: np.ndarray) -> None:
        self.start = start
        self.end: int | None = None
        self._chunks = [head]
        self._length = len(head)
        self._joined: np.ndarray | None = None

    def append(self, x: np.ndarray) -> None:
        self._chunks.append(x)
        self._length += len(x)
        self._joined = None

    def slice(self, a: int, b: int) -> np.ndarray:
        """Samples ``a`` .. ``b`` (absolute stream positions), copied."""
        if self._joined is None:
            self._joined = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
            self._chunks = [self._joined]
        return self._joined[a - self.start : b - self.start].copy()


@dataclass
class _Item:
    kind: Literal["start", "window", "final", "end"]
    seg: _SegmentAudio
    at: int = 0
    job: EmbedJob | None = None
    result: np.ndarray | None = None
    dropped: bool = False
    forced: bool = False
    #: for "final": the turn it closes
    turn: _Turn | None = None
    #: for a "start" made by a speaker change: the window that confirmed it
    seed: tuple[np.ndarray, int] | None = None

    @property
    def ready(self) -> bool:
        return self.job is None or self.result is not None or self.dropped


@dataclass
class _Turn:
    number: int
    start: int
    window_sum: np.ndarray | None = None
    full_sum: np.ndarray | None = None
    pending: tuple[_Item, np.ndarray] | None = None
    last_event: dict[str, Any] | None = None


class Session:
    """The pure core of one ingest connection. Not thread-safe: use from one task."""

    def __init__(
        self,
        config: Config,
        search: SearchFn,
        *,
        room: str,
        mic: str,
        stream: str,
        sample_rate: int = MODEL_SAMPLE_RATE,
        fmt: str = "s16le",
        channels: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cfg = config
        self._search = search
        self.room, self.mic, self.stream = room, mic, stream
        self._fmt, self._channels = fmt, channels
        self._clock = clock
        seg = config.segment
        self._min_segment = seconds_to_samples(seg.min_segment_s)
        self._first = seconds_to_samples(seg.first_provisional_s)
        self._window = seconds_to_samples(seg.window_s)
        self._hop = seconds_to_samples(seg.hop_s)
        self._min_turn = seconds_to_samples(seg.min_turn_s)
        self._resampler = StreamResampler(sample_rate, MODEL_SAMPLE_RATE)
        self._vad = VoiceDetector(config.vad.aggressiveness, config.vad.frame_ms)
        self._framer = Framer(self._vad.frame_samples)
        self._segmenter = Segmenter(config.vad, seconds_to_samples(seg.max_segment_s))
        self._pad_samples = seconds_to_samples(config.vad.start_window_ms / 1000) + self._vad.frame_samples
        self.reset()

    # -- state -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything; the next audio is the start of a new stream."""
        self._resampler.reset()
        self._vad.reset()
        self._framer.reset()
        self._segmenter.reset()
        self._recent: deque[np.ndarray] = deque()
        self._recent_len = 0
        self._open: _SegmentAudio | None = None
        self._confirmed = False
        self._next_window_end = 0
        self._items: deque[_Item] = deque()
        self._jobs_by_id: dict[int, _Item] = {}
        self._new_jobs: list[EmbedJob] = []
        self._events: list[dict[str, Any]] = []
        self._job_counter = 0
        self._segment_counter = 0
        self._turn: _Turn | None = None
        self._finished = False
        #: Counters reported in ``bye`` stats.
        self.stats: dict[str, int] = {
            "segments": 0, "short_segments": 0, "speaker_changes": 0,
            "jobs": 0, "dropped_jobs": 0, "failed_jobs": 0, "events": 0,
        }

    @property
    def position_s(self) -> float:
        """Stream time (seconds) of the audio analysed so far."""
        return samples_to_seconds(self._segmenter.position)

    @property
    def idle(self) -> bool:
        """True when no job is outstanding and no event waits to be taken."""
        return not self._items and not self._new_jobs and not self._events

    # -- input -------------------------------------------------------------------------

    def feed_pcm(self, data: bytes) -> None:
        """Feed raw PCM in the format declared by ``hello``.

        Raises :class:`~streamer.errors.BadAudio` for a partial sample or non-finite
        values; nothing of that chunk is used then.
        """
        self.feed(self._resampler.process(pcm_to_float(data, self._fmt, self._channels)))

    def feed(self, samples: np.ndarray) -> None:
        """Feed float32 mono 16 kHz samples (already resampled). Any chunk size."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        for frame in self._framer.push(np.asarray(samples, dtype=np.float32)):
            self._frame(frame, self._vad.is_speech(frame))
        self._drain()

    def finish(self) -> None:
        """End of stream: analyse the last samples and close the open segment."""
        if self._finished:
            return
        tail = self._resampler.flush()
        if len(tail):
            for frame in self._framer.push(tail):
                self._frame(frame, self._vad.is_speech(frame))
        self._finished = True
        for boundary in self._segmenter.flush():
            self._boundary(boundary)
        self._drain()

    def _frame(self, frame: np.ndarray, voiced: bool) -> None:
        # Keep a little audio before any onset (the segmenter's start padding).
        self._recent.append(frame)
        self._recent_len += len(frame)
        while self._recent_len - len(self._recent[0]) >= self._pad_samples:
            self._recent_len -= len(self._recent.popleft())
        if self._open is not None:
            self._open.append(frame)
        for boundary in self._segmenter.step(voiced):
            self._boundary(boundary)
        self._schedule_windows()

    def _boundary(self, b: SegmentStart | SegmentEnd) -> None:
        if isinstance(b, SegmentStart):
            held = np.concatenate(self._recent) if self._recent else np.zeros(0, np.float32)
            held_start = self._segmenter.position - len(held)
            head = held[max(0, b.start - held_start):]
            self._open = _SegmentAudio(max(b.start, held_start), head)
            self._confirmed = False
            self._next_window_end = self._open.start + self._first
            return
        seg = self._open
        if seg is None:  # pragma: no cover - invariant
            return
        seg.end = b.end
        self._open = None
        if not self._confirmed:
            if b.end - seg.start < self._min_segment:
                self.stats["short_segments"] += 1
                return
            self._items.append(_Item("start", seg, at=seg.start))
        self._items.append(_Item("end", seg, at=b.end, forced=b.forced))

    def _schedule_windows(self) -> None:
        seg = self._open
        if seg is None:
            return
        until = self._segmenter.speech_until
        if not self._confirmed:
            if until - seg.start < self._min_segment:
                return
            self._confirmed = True
            self._items.append(_Item("start", seg, at=seg.start))
        while self._next_window_end <= until:
            end = self._next_window_end
            start = max(seg.start, end - self._window)
            job = self._new_job("window", seg, start, end)
            item = _Item("window", seg, at=end, job=job)
            self._jobs_by_id[job.id] = item
            self._items.append(item)
            self._next_window_end += self._hop

    def _new_job(self, kind: Literal["window", "final"], seg: _SegmentAudio, a: int, b: int) -> EmbedJob:
        self._job_counter += 1
        job = EmbedJob(self._job_counter, kind, a, b, seg.slice(a, b))
        self._new_jobs.append(job)
        self.stats["jobs"] += 1
        return job

    # -- jobs ----------------------------------------------------------------------------

    def take_jobs(self) -> list[EmbedJob]:
        """Return (and forget) the jobs created since the last call, oldest first."""
        jobs, self._new_jobs = self._new_jobs, []
        return jobs

    def job_done(self, job_id: int, embedding: np.ndarray) -> None:
        """Give the embedding for ``job_id``. Unknown ids (a reset stream) are ignored."""
        item = self._jobs_by_id.pop(job_id, None)
        if item is None:
            return
        item.result = unit(embedding)
        self._drain()

    def job_dropped(self, job_id: int) -> None:
        """Report that a window job was dropped (overload). A final job may not be dropped.

        Raises ``ValueError`` for a final job.
        """
        item = self._jobs_by_id.get(job_id)
        if item is None:
            return
        if item.job is not None and not item.job.droppable:
            raise ValueError("final jobs may not be dropped")
        del self._jobs_by_id[job_id]
        item.dropped = True
        self.stats["dropped_jobs"] += 1
        self._drain()

    def job_failed(self, job_id: int) -> None:
        """Report that the embedder failed on ``job_id`` (the caller logs why).

        A window is skipped like a dropped one; a final is released without a decision
        (``person: null``, no candidates), so the segment is still closed for displays.
        """
        item = self._jobs_by_id.pop(job_id, None)
        if item is None:
            return
        item.dropped = True
        self.stats["failed_jobs"] += 1
        self._drain()

    def take_events(self) -> list[dict[str, Any]]:
        """Return (and forget) the events released since the last call, in order."""
        events, self._events = self._events, []
        return events

    # -- the ordered release -------------------------------------------------------------

    def _drain(self) -> None:
        while self._items and self._items[0].ready:
            item = self._items.popleft()
            if item.kind == "start":
                self._begin_turn(item.at)
                self.stats["segments"] += 1
                if item.seed is not None and self._turn is not None:
                    embedding, end = item.seed
                    self._add_window(self._turn, embedding, full=True)
                    self._provisional(self._turn, end)
            elif item.kind == "window":
                self._on_window(item)
            elif item.kind == "final":
                self._on_final(item)
            else:
                self._end_turn(item.seg, item.at)

    def _begin_turn(self, start: int) -> None:
        self._segment_counter += 1
        self._turn = _Turn(self._segment_counter, start)
        self._emit({"type": "speech_start", "segment": self._turn.number,
                    "t": _s(start)})

    def _end_turn(self, seg: _SegmentAudio, end: int) -> None:
        """Close the current turn at ``end``: queue its final, right at the front."""
        turn = self._turn
        if turn is None:  # pragma: no cover - invariant
            return
        job = self._new_job("final", seg, turn.start, max(end, turn.start + 1))
        item = _Item("final", seg, at=end, job=job, turn=turn)
        self._jobs_by_id[job.id] = item
        self._items.appendleft(item)
        self._turn = None

    def _on_final(self, item: _Item) -> None:
        turn, job, result = item.turn, item.job, item.result
        if turn is None or job is None:  # pragma: no cover - invariant
            return
        if result is None:  # the embedder failed: the segment still gets its final
            decision = Decision(None, None, ())
        else:
            decision = decide(self._search(result, self._cfg.match.top_k),
                              self._cfg.match.max_distance)
        self._emit(self._speaker_event(turn, decision, job.end, final=True))
        self._emit({"type": "speech_end", "segment": turn.number, "t": _s(job.end)})

    def _on_window(self, item: _Item) -> None:
        turn = self._turn
        if turn is None or item.dropped or item.result is None or item.job is None:
            return
        job, e = item.job, item.result
        if job.start < turn.start:
            return  # straddles a speaker change already made
        full = job.end - job.start >= self._window
        change = self._cfg.segment.change_distance
        if full and change is not None and turn.full_sum is not None:
            ref = unit(turn.full_sum)
            if distance(e, ref) > change:
                pending = turn.pending
                if pending is None:
                    # Probably someone else now: say so at once (provisional), and
                    # split when the next window confirms it.
                    turn.pending = (item, e)
                    self._provisional(turn, job.end, embedding=e)
                    return
                p_item, p_e = pending
                p_end = p_item.job.end if p_item.job is not None else job.end
                cut = p_end - self._window // 2
                if distance(e, p_e) <= change and cut - turn.start >= self._min_turn:
                    self.stats["speaker_changes"] += 1
                    self._split(item.seg, turn, cut, e, job.end)
                    return
                turn.pending = (item, e)
                self._provisional(turn, job.end, embedding=e)
                return
            if turn.pending is not None:
                # the far window was a fluke: it belongs to this turn after all
                self._add_window(turn, turn.pending[1], full=True)
                turn.pending = None
        self._add_window(turn, e, full)
        self._provisional(turn, job.end)

    def _add_window(self, turn: _Turn, e: np.ndarray, full: bool) -> None:
        turn.window_sum = e.copy() if turn.window_sum is None else turn.window_sum + e
        if full:
            turn.full_sum = e.copy() if turn.full_sum is None else turn.full_sum + e

    def _split(self, seg: _SegmentAudio, turn: _Turn, cut: int, e: np.ndarray, end: int) -> None:
        """Close ``turn`` at ``cut`` and start the next one there, seeded with window ``e``.

        Queue order at the front afterwards: the old turn's final, then the new turn's
        start (which also releases the first provisional guess for it).
        """
        self._end_turn(seg, cut)
        final_item = self._items.popleft()
        self._items.appendleft(_Item("start", seg, at=cut, seed=(e, end)))
        self._items.appendleft(final_item)

    def _provisional(self, turn: _Turn, end: int, embedding: np.ndarray | None = None) -> None:
        """Emit a provisional guess: for ``embedding`` (a window that sounds like someone
        else) or, by default, for the mean of the turn's windows."""
        if embedding is None:
            if turn.window_sum is None:  # pragma: no cover - invariant
                return
            embedding = unit(turn.window_sum)
        decision = decide(self._search(embedding, self._cfg.match.top_k),
                          self._cfg.match.max_distance)
        self._emit(self._speaker_event(turn, decision, end, final=False))

    def _speaker_event(self, turn: _Turn, decision: Decision, end: int, final: bool) -> dict[str, Any]:
        return {
            "type": "speaker",
            "segment": turn.number,
            "final": final,
            "start": _s(turn.start),
            "end": _s(end),
            "person": decision.person_wire(),
            "distance": None if decision.distance is None else round(decision.distance, 4),
            "candidates": decision.candidates_wire(),
        }

    def _emit(self, event: dict[str, Any]) -> None:
        full = {"type": event.pop("type"), "room": self.room, "mic": self.mic,
                "stream": self.stream}
        full.update(event)
        full["ts"] = round(self._clock(), 3)
        self._events.append(full)
        self.stats["events"] += 1


def _s(samples: int) -> float:
    """Stream time in seconds, rounded to the millisecond for the wire."""
    return round(samples_to_seconds(samples), 3)
