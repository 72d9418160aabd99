"""One ingest stream's core: audio in, network jobs out, results in, events out (pure).

Call order, for each connection (the I/O shell in ``server.py`` does this)::

    session = Session(config, search, head, ...)
    session.feed_pcm(bytes)        # or feed(samples) with float32 16 kHz audio
    jobs = session.take_jobs()     # pool each job's frames (StreamEmbedder.stats), then
    session.job_done(job.id, stats)       # (or job_dropped(job.id) for piece jobs)
    queries, k = session.search_requests()  # optional: answer the searches of many
    session.supply_searches(results)        # streams in one call (the shell batches)
    events = session.take_events() # wire-ready dicts, in order
    ...
    session.finish()               # end of stream: closes the open segment
    session.idle                   # True once every job has been answered

How a stream becomes events
---------------------------
Exact VAD frames go through the :class:`~streamer.segmenter.Segmenter`. A segment is
reported only once it reaches ``min_segment_s`` (shorter blips are counted and
ignored), unless it starts within ``join_gap_s`` of the last one: then it may continue
that turn, and while its voice stays within ``change_distance`` of it, its guesses and
final pool the previous turn's pieces too. While it is open it is cut into *pieces*: the first ends
``first_provisional_s`` after the start, then one every ``hop_s``. Each piece passes the
network once (with ``context_s`` of audio before it as context) and comes back as pooled
frame statistics (:class:`~streamer.pooling.Stats`); nothing is embedded twice. The
``head`` turns any run of pieces into an embedding at almost no cost:

* after each piece, a provisional ``speaker`` event for the turn so far;
* the last ``window_s / hop_s`` pieces form a window; a window far (``change_distance``)
  from the turn so far, confirmed by the next ``change_confirm_windows`` windows (far
  too, and near the first far one; with ``change_other_voice`` only windows nearest to
  another enrolled person count), is a speaker change without a pause, cut in the
  middle of the first far window (on a piece boundary, rounding towards its end);
* the change is held until ``change_hold_s`` after the cut (or the segment's end),
  guesses naming the new voice meanwhile. Then the part after the cut *rejoins* the
  turn (no split, one final for the whole turn) when the two parts are within
  ``rejoin_distance`` and either alone would be unknown or both name the same person;
  otherwise the turn is closed at the cut and a new segment starts there, already
  holding the pieces after it. So every segment still gets one start, one final and
  one end, in stream order, and no event is taken back;
* with ``voice_check`` (and a shell that has the speaker-segmentation model: ``voices``)
  the decision first waits for a "voices" job, the model run on up to 10 s of audio up
  to the decision: when it hears one voice across the cut the parts rejoin within
  ``voice_rejoin_distance`` instead, when it hears two they never rejoin
  (:mod:`streamer.voice_change`); with ``voice_split``, every turn's end (a pause,
  ``max_length`` or the stream's end) waits for one too, which may split the turn where
  the model heard one voice give way to another (then decided like a held change);
* each turn ends with one ``final`` event for all its pieces plus the tail after the
  last piece (a small job). A turn closed by a speaker change needs no job at all. If
  a piece was dropped under overload, the final embeds the whole turn instead, so
  dropped work costs guesses, never the final's accuracy; with
  ``segment.final_whole_pass`` every final does (one pass over the turn, as
  ``identify`` embeds a request: nearer the voiceprint on far and phone-line speech);
  with ``segment.final_agree`` such a final is decided twice, on the one pass and on
  the pieces pooled, and keeps its name only when the pieces put that person nearest
  too (:func:`~streamer.identify.agree`).

Final events carry ``closed_by`` (an extension of protocol v1): ``pause`` (the VAD
heard silence), ``change`` (a speaker change), ``max_length`` (``max_segment_s``) or
``end`` (the stream ended).

Determinism
-----------
Everything that happens is put in one ordered queue of items (segment starts, pieces,
turn finals, segment ends) in stream order. Items are released strictly in that order,
each one as soon as its job (if any) is answered, and a turn's final is placed right
after the item that closed it. So the events, and the segments they describe, depend
only on the audio, never on how it was chunked or how fast the network was (except
``ts`` and when provisional work is dropped under overload).

Who a ``speaker`` event names is decided when the event is taken (:meth:`Session.
take_events`), from the embedding fixed when it was released: so the shell can first
answer the searches of many streams in one registry call (:meth:`Session.
search_requests`, :meth:`Session.supply_searches`; :mod:`streamer.search_batch`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from . import voice_change
from .audio import Framer, StreamResampler, pcm_to_float
from .config import Config
from .identify import CandidateLike, Decision, agree, decide_in_room, distance, unit
from .pooling import Stats, total
from .segmenter import SegmentEnd, Segmenter, SegmentStart, VoiceDetector
from .units import MODEL_SAMPLE_RATE, samples_to_seconds, seconds_to_samples

__all__ = ["EmbedJob", "HeadFn", "RosterSearchFn", "SearchFn", "Session"]

#: ``search(unit_embedding, k)`` -> candidates nearest first (the registry's search).
SearchFn = Callable[[np.ndarray, int], Sequence[CandidateLike]]
#: ``roster_search(unit_embedding, k)`` -> the room's roster members nearest first, or
#: None when the room has no roster (asked at each decision: a roster may change).
RosterSearchFn = Callable[[np.ndarray, int], Sequence[CandidateLike] | None]
#: ``head(stats)`` -> embedding of pooled statistics (the stream embedder's head).
HeadFn = Callable[[Stats], np.ndarray]

#: A job's audio is at least this long (context is taken from earlier in the segment),
#: so even a 10 ms tail gives the network enough to work on.
MIN_JOB_SAMPLES = MODEL_SAMPLE_RATE // 10

ClosedBy = Literal["pause", "change", "max_length", "end"]


@dataclass(frozen=True)
class EmbedJob:
    """Pool the frames of samples ``start`` .. ``end``; ``pcm`` ends at ``end`` and may begin
    earlier (context). ``kind`` "piece" may be dropped under load; "final" may not.
    ``kind`` "voices" asks the speaker-segmentation model about ``pcm`` instead (exactly
    ``start`` .. ``end``; answer with :meth:`Session.voices_done`); it may not be dropped."""

    id: int
    kind: Literal["piece", "final", "voices"]
    start: int
    end: int
    pcm: np.ndarray = field(repr=False)

    @property
    def keep_samples(self) -> int:
        """How many samples at the end of ``pcm`` are pooled (the rest is context)."""
        return self.end - self.start

    @property
    def droppable(self) -> bool:
        """True for provisional work that may be dropped when the server is overloaded."""
        return self.kind == "piece"


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


@dataclass(frozen=True)
class _Piece:
    start: int
    end: int
    stats: Stats | None  # None: dropped or failed


@dataclass
class _Item:
    kind: Literal["start", "piece", "final", "end", "voices"]
    seg: _SegmentAudio
    at: int = 0
    job: EmbedJob | None = None
    #: Stats for a piece or final; the model's log-probabilities for "voices"
    result: Any = None
    dropped: bool = False
    closed_by: ClosedBy = "pause"
    #: for "final": the turn it closes
    turn: _Turn | None = None
    #: for a "start" made by a speaker change: the pieces that opened the new turn
    seed: list[_Piece] | None = None
    #: for a "start": the segment began soon after the last one and may continue it
    joins: bool = False
    #: for a "start" made by a held change resolved at the segment's end: the new turn
    #: ends at once, at ``at`` of this pair, closed by its reason
    close: tuple[int, ClosedBy] | None = None
    #: for "voices": what to do with the model's output (None: it failed or was abandoned)
    then: Callable[[np.ndarray | None], None] | None = None

    @property
    def ready(self) -> bool:
        return self.job is None or self.result is not None or self.dropped


@dataclass
class _Held:
    """A confirmed change not split yet: the cut, and the pieces heard since."""

    cut: int
    pieces: list[_Piece]
    #: has the segmentation model been asked (``segment.voice_check``), and what it said
    judged: bool = False
    verdict: voice_change.Verdict = None


@dataclass
class _Turn:
    number: int
    start: int
    pieces: list[_Piece] = field(default_factory=list)
    #: the newest pieces of windows that sounded like someone else (the first far window
    #: first), each with its window's embedding
    pending: list[tuple[_Piece, np.ndarray]] = field(default_factory=list)
    #: a confirmed change waiting for ``change_hold_s`` of the new voice
    held: _Held | None = None
    #: the previous turn's pooled pieces, while this turn sounds like its continuation
    prior: Stats | None = None
    #: has the segmentation model been asked where the turn might split at its end
    #: (``segment.voice_split``)
    split_checked: bool = False

    @property
    def complete(self) -> bool:
        return all(p.stats is not None for p in self.pieces)

    @property
    def covered(self) -> int:
        return self.pieces[-1].end if self.pieces else self.start

    def stats(self) -> Stats | None:
        return total([p.stats for p in self.pieces if p.stats is not None])


@dataclass
class _Look:
    """One embedding a ``speaker`` event is decided on, and the searches made for it."""

    embedding: np.ndarray
    #: The roster's answer, once asked (``roster_asked``), and everyone's, once supplied.
    roster: Sequence[CandidateLike] | None = None
    roster_asked: bool = False
    everyone: Sequence[CandidateLike] | None = None


@dataclass
class _Pending:
    """A ``speaker`` event whose decision is made when it is taken (:meth:`Session.
    take_events`), so the shell can first answer its search among everyone together
    with other streams' (:meth:`Session.search_requests`). A final with
    ``segment.final_agree`` has two looks (the one pass, then the pieces pooled)."""

    event: dict[str, Any]
    looks: list[_Look]


class Session:
    """The pure core of one ingest connection. Not thread-safe: use from one task."""

    def __init__(
        self,
        config: Config,
        search: SearchFn,
        head: HeadFn,
        *,
        room: str,
        mic: str,
        stream: str,
        sample_rate: int = MODEL_SAMPLE_RATE,
        fmt: str = "s16le",
        channels: int = 1,
        clock: Callable[[], float] = time.time,
        roster_search: RosterSearchFn | None = None,
        gallery_size: Callable[[], int] | None = None,
        voices: bool = False,
    ) -> None:
        """``voices``: may "voices" jobs be made (the shell has the segmentation model)?
        They are made when it may and ``segment.voice_check`` or ``voice_split`` is on."""
        self._cfg = config
        self._search = search
        self._roster_search = roster_search
        #: How many people are enrolled, for the large-gallery rule (asked at each
        #: decision); None: the rule never applies.
        self._gallery_size = gallery_size
        self._head = head
        self.room, self.mic, self.stream = room, mic, stream
        #: This room's match threshold (``match.room_max_distance``, else ``max_distance``).
        self._max_distance = config.match.max_distance_for(room)
        self._fmt, self._channels = fmt, channels
        self._clock = clock
        seg = config.segment
        self._min_segment = seconds_to_samples(seg.min_segment_s)
        self._first = seconds_to_samples(seg.first_provisional_s)
        self._hop = seconds_to_samples(seg.hop_s)
        self._context = seconds_to_samples(seg.context_s)
        self._window_pieces = max(2, round(seg.window_s / seg.hop_s))
        self._min_turn = seconds_to_samples(seg.min_turn_s)
        self._hold = None if seg.change_hold_s is None else seconds_to_samples(seg.change_hold_s)
        self._rejoin = seg.change_distance if seg.rejoin_distance is None else seg.rejoin_distance
        self._voices = voices and seg.voice_check
        self._splits = voices and seg.voice_split
        self._split_min = seconds_to_samples(seg.voice_split_min_s)
        self._join_gap = None if seg.join_gap_s is None else seconds_to_samples(seg.join_gap_s)
        self._resampler = StreamResampler(sample_rate, MODEL_SAMPLE_RATE)
        self._vad = VoiceDetector.from_config(config.vad)
        self._framer = Framer(self._vad.frame_samples)
        self._segmenter = Segmenter(config.vad, seconds_to_samples(seg.max_segment_s))
        # the audio kept before any onset: as far back as a segment may start, plus a frame
        self._pad_samples = self._segmenter.look_back_samples + self._vad.frame_samples
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
        self._piece_start = 0
        self._next_piece_end = 0
        self._finishing = False
        self._items: deque[_Item] = deque()
        self._jobs_by_id: dict[int, _Item] = {}
        self._new_jobs: list[EmbedJob] = []
        self._events: list[dict[str, Any] | _Pending] = []
        #: The looks (of pending events) whose searches :meth:`search_requests` handed out.
        self._asked: list[_Look] = []
        self._job_counter = 0
        self._segment_counter = 0
        self._turn: _Turn | None = None
        #: End of the last segment put in the queue (for joining), and the pooled
        #: pieces of the last turn released (what a joining turn may continue).
        self._last_end: int | None = None
        self._last_stats: Stats | None = None
        self._finished = False
        #: Counters reported in ``bye`` stats.
        self.stats: dict[str, int] = {
            "segments": 0, "short_segments": 0, "speaker_changes": 0, "rejoined_changes": 0,
            "jobs": 0, "dropped_jobs": 0, "failed_jobs": 0, "abandoned_jobs": 0, "events": 0,
            "failed_searches": 0, "voice_checks": 0, "vetoed_finals": 0,
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
        self._finishing = True
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
        self._schedule_pieces()

    def _boundary(self, b: SegmentStart | SegmentEnd) -> None:
        if isinstance(b, SegmentStart):
            held = np.concatenate(self._recent) if self._recent else np.zeros(0, np.float32)
            held_start = self._segmenter.position - len(held)
            head = held[max(0, b.start - held_start):]
            self._open = _SegmentAudio(max(b.start, held_start), head)
            self._confirmed = False
            self._piece_start = self._open.start
            self._next_piece_end = self._open.start + self._first
            return
        seg = self._open
        if seg is None:  # pragma: no cover - invariant
            return
        seg.end = b.end
        self._open = None
        if not self._confirmed:
            # A short segment is reported only when it continues the last turn and has
            # audio to analyse: a segment cut at segment.max_segment_s right where the
            # stream ends restarts with no audio at all.
            length = b.end - seg.start
            joins = self._joins(seg.start) and length >= MIN_JOB_SAMPLES
            if length < self._min_segment and not joins:
                self.stats["short_segments"] += 1
                return
            self._items.append(_Item("start", seg, at=seg.start, joins=joins))
        closed_by: ClosedBy = "max_length" if b.forced else "end" if self._finishing else "pause"
        self._items.append(_Item("end", seg, at=b.end, closed_by=closed_by))
        self._last_end = b.end

    def _joins(self, start: int) -> bool:
        """May a segment starting at ``start`` continue the last reported turn?"""
        return (self._join_gap is not None and self._last_end is not None
                and start - self._last_end <= self._join_gap)

    def _schedule_pieces(self) -> None:
        seg = self._open
        if seg is None:
            return
        until = self._segmenter.speech_until
        if not self._confirmed:
            if until - seg.start < self._min_segment:
                return
            self._confirmed = True
            self._items.append(_Item("start", seg, at=seg.start, joins=self._joins(seg.start)))
        while self._next_piece_end <= until:
            start, end = self._piece_start, self._next_piece_end
            job = self._new_job("piece", seg, start, end)
            item = _Item("piece", seg, at=end, job=job)
            self._jobs_by_id[job.id] = item
            self._items.append(item)
            self._piece_start = end
            self._next_piece_end += self._hop

    def _new_job(self, kind: Literal["piece", "final", "voices"], seg: _SegmentAudio, a: int,
                 b: int, context: bool = True) -> EmbedJob:
        lo = min(a - self._context, b - MIN_JOB_SAMPLES) if context else a
        self._job_counter += 1
        job = EmbedJob(self._job_counter, kind, a, b, seg.slice(max(seg.start, lo), b))
        self._new_jobs.append(job)
        self.stats["jobs"] += 1
        return job

    # -- jobs ----------------------------------------------------------------------------

    def take_jobs(self) -> list[EmbedJob]:
        """Return (and forget) the jobs created since the last call, oldest first."""
        jobs, self._new_jobs = self._new_jobs, []
        return jobs

    def job_done(self, job_id: int, stats: Stats) -> None:
        """Give the pooled frames of the piece or final job ``job_id``. Unknown ids (a
        reset stream) are ignored."""
        item = self._jobs_by_id.pop(job_id, None)
        if item is None:
            return
        item.result = stats
        self._drain()

    def voices_done(self, job_id: int, logprobs: np.ndarray) -> None:
        """Give the segmentation model's ``[frames, 7]`` output for the "voices" job
        ``job_id``. Unknown ids (a reset stream) are ignored."""
        self.job_done(job_id, logprobs)  # type: ignore[arg-type]

    def job_dropped(self, job_id: int) -> None:
        """Report that a piece job was dropped (overload). A final job may not be dropped.

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
        """Report that the model failed on ``job_id`` (the caller logs why).

        A piece is skipped like a dropped one; a final is decided on the turn's pieces
        alone, or, without any, released without a decision (``person: null``, no
        candidates), so the segment is still closed for displays; a held change whose
        "voices" job failed is decided by distances alone.
        """
        item = self._jobs_by_id.pop(job_id, None)
        if item is None:
            return
        item.dropped = True
        self.stats["failed_jobs"] += 1
        self._drain()

    def abandon(self) -> int:
        """Stop waiting for every outstanding job (the stream is over and the caller's
        time is up) and release what waited for them: pieces count as dropped, finals are
        decided on the turn's pieces already analysed (or say person null). So every
        segment still gets its final. Returns how many jobs were abandoned."""
        count = 0
        while self._jobs_by_id:
            for item in self._jobs_by_id.values():
                item.dropped = True
                count += 1
            self._jobs_by_id.clear()
            self._new_jobs.clear()
            self._drain()  # may queue the final jobs of turns that end now: loop
        self.stats["abandoned_jobs"] += count
        return count

    def search_requests(self) -> tuple[list[np.ndarray], int]:
        """The searches among everyone that the waiting ``speaker`` events need: unit
        embeddings and ``k``. Optional: answer them (in order, nearest first each) with
        :meth:`supply_searches` before :meth:`take_events`, e.g. in one batched registry
        call for many streams; unanswered ones are searched by :meth:`take_events`.
        Rosters are asked here (they are small and searched exactly)."""
        k = self._search_k()
        self._asked = []
        unanswered = [look for pending in self._events if isinstance(pending, _Pending)
                      for look in pending.looks if look.everyone is None]
        for look in unanswered:
            if not look.roster_asked:
                look.roster = (None if self._roster_search is None
                               else self._roster_search(look.embedding, k))
                look.roster_asked = True
            if not (look.roster and look.roster[0].distance <= self._max_distance):
                self._asked.append(look)
        return [look.embedding for look in self._asked], k

    def supply_searches(self, results: Sequence[Sequence[CandidateLike]]) -> None:
        """Answer the last :meth:`search_requests`, in its order. Raises ``ValueError``
        when the number of results differs."""
        if len(results) != len(self._asked):
            raise ValueError(f"{len(results)} search results for {len(self._asked)} requests")
        for look, found in zip(self._asked, results):
            look.everyone = found
        self._asked = []

    def take_events(self) -> list[dict[str, Any]]:
        """Return (and forget) the events released since the last call, in order; the
        ``speaker`` events among them are decided now (one whose search raises names
        nobody and counts in ``stats["failed_searches"]``)."""
        events, self._events = self._events, []
        self._asked = []
        out = []
        for event in events:
            if isinstance(event, _Pending):
                try:
                    decision = self._decide(event.looks[0])
                    if len(event.looks) > 1:  # a one-pass final and its pieces
                        agreed = agree(decision, self._decide(event.looks[1]))
                        if agreed.person is None and decision.person is not None:
                            self.stats["vetoed_finals"] += 1
                        decision = agreed
                except Exception:  # a failed search must not lose the event: nobody named
                    self.stats["failed_searches"] += 1
                    decision = Decision(None, None, ())
                event.event.update(self._decision_fields(decision))
                event = event.event
            out.append(event)
        return out

    # -- the ordered release -------------------------------------------------------------

    def _drain(self) -> None:
        while self._items and self._items[0].ready:
            item = self._items.popleft()
            if item.kind == "start":
                self._begin_turn(item.at, prior=self._last_stats if item.joins else None)
                self.stats["segments"] += 1
                if item.seed is not None and self._turn is not None:
                    self._turn.pieces.extend(item.seed)
                    if self._turn.stats() is not None:
                        self._provisional(self._turn, item.seed[-1].end)
                if item.close is not None:
                    self._end_turn(item.seg, *item.close)
            elif item.kind == "piece":
                self._on_piece(item)
            elif item.kind == "final":
                self._on_final(item)
            elif item.kind == "voices":
                assert item.then is not None
                item.then(None if item.dropped else item.result)
            else:
                self._end_turn(item.seg, item.at, item.closed_by)

    def _begin_turn(self, start: int, prior: Stats | None = None) -> None:
        self._segment_counter += 1
        self._turn = _Turn(self._segment_counter, start, prior=prior)
        self._emit({"type": "speech_start", "segment": self._turn.number,
                    "t": _s(start)})

    def _end_turn(self, seg: _SegmentAudio, end: int, closed_by: ClosedBy) -> None:
        """Close the current turn at ``end``: queue its final, right at the front.

        The final's job pools the tail after the last piece; the whole turn when a piece
        is missing or with ``segment.final_whole_pass``; none when the pieces already
        reach ``end`` (a speaker change)."""
        turn = self._turn
        if turn is None:  # pragma: no cover - invariant
            return
        self._unpend(turn)  # far windows nobody confirmed: they are this turn's
        if turn.held is not None and not turn.held.judged:
            self._judge(seg, turn.held, end, lambda: self._end_turn(seg, end, closed_by))
            return
        if turn.held is not None and not self._try_rejoin(turn):
            # the change stands: close the turn before it, and the new one right here
            held, turn.held = turn.held, None
            self._split(seg, held.cut, held.pieces, close=(end, closed_by))
            return
        if closed_by != "change" and not turn.split_checked and self._splits:
            turn.split_checked = True
            window = voice_change.split_window(turn.start, end, self._split_min)
            if window is not None:
                self._ask_voices(seg, window, end, lambda logprobs: self._split_by_voices(
                    seg, turn, end, closed_by, window, logprobs))
                return
        end = max(end, turn.start + 1)
        job = None
        if self._whole_final(turn):
            job = self._new_job("final", seg, turn.start, end, context=False)
        elif end > turn.covered:
            job = self._new_job("final", seg, turn.covered, end)
        item = _Item("final", seg, at=end, job=job, turn=turn, closed_by=closed_by)
        if job is not None:
            self._jobs_by_id[job.id] = item
        self._items.appendleft(item)
        self._turn = None

    def _on_final(self, item: _Item) -> None:
        turn, job = item.turn, item.job
        if turn is None:  # pragma: no cover - invariant
            return
        pieces = [p.stats for p in turn.pieces if p.stats is not None]
        whole_turn = job is not None and self._whole_final(turn)
        if whole_turn and item.result is not None:
            parts = [item.result]
        else:  # the pieces plus the tail (or, if the whole-turn job failed, what is left)
            parts = pieces + ([item.result] if item.result is not None else [])
        pooled = total(parts)
        # with final_agree, the pieces are a second look at a one-pass final
        check = total(pieces) if whole_turn and self._cfg.segment.final_agree else None
        short = item.at - turn.start < self._min_segment  # reported because it joins
        if pooled is not None and self._continues(pooled, turn.prior):
            assert turn.prior is not None
            pooled = pooled + turn.prior
            check = None if check is None else check + turn.prior
        elif short:  # too little speech to name anyone on its own
            pooled = None
        self._last_stats = pooled
        event = self._speaker_event(turn, item.at, final=True)
        event["closed_by"] = item.closed_by
        # pooled None: the network failed; the segment still gets its final (nobody)
        self._emit(event, None if pooled is None else self._embed(pooled),
                   None if pooled is None or check is None else self._embed(check))
        self._emit({"type": "speech_end", "segment": turn.number, "t": _s(item.at)})

    def _on_piece(self, item: _Item) -> None:
        turn, job = self._turn, item.job
        if turn is None or job is None or job.start < turn.start:
            return  # pragma: no cover - pieces never straddle a turn's start
        piece = _Piece(job.start, job.end, None if item.dropped else item.result)
        held = turn.held
        if held is not None:  # a change heard, not split yet: the new voice so far
            held.pieces.append(piece)
            if piece.end - held.cut >= (self._hold or 0):  # heard enough: decide
                self._judge(item.seg, held, piece.end,
                            lambda: self._settle(item.seg, turn, piece.end))
                return
            pooled = total([p.stats for p in held.pieces if p.stats is not None])
            if pooled is not None:
                self._provisional(turn, piece.end, embedding=self._embed(pooled))
            return
        if piece.stats is None:
            self._unpend(turn)
            turn.pieces.append(piece)
            return
        change = self._cfg.segment.change_distance
        window, ref = self._window(turn, piece)
        if change is None or window is None or ref is None:
            turn.pieces.append(piece)
            self._provisional(turn, piece.end)
            return
        e, r = self._embed(window), self._embed(ref)
        if not self._far(e, r, change):  # the far windows were a fluke: all this turn's
            self._unpend(turn)
            turn.pieces.append(piece)
            self._provisional(turn, piece.end)
            return
        # Far windows confirm each other only while they sound alike: drop the oldest
        # far pieces into the turn until the new window is near the first far one.
        while turn.pending and distance(e, turn.pending[0][1]) > change:
            turn.pieces.append(turn.pending.pop(0)[0])
        turn.pending.append((piece, e))
        if len(turn.pending) > self._cfg.segment.change_confirm_windows:
            # Cut in the middle of the first far window (on a piece boundary, rounding
            # towards its end): its pieces after the middle open the new turn.
            back = self._window_pieces // 2 - 1
            moved = turn.pieces[len(turn.pieces) - back:] if back else []
            first = turn.pending[0][0]
            cut = moved[0].start if moved else first.start
            if cut - turn.start >= self._min_turn:
                seed = [*moved, *(p for p, _ in turn.pending)]
                del turn.pieces[len(turn.pieces) - len(moved):]
                turn.pending = []
                if self._hold is None:
                    self._split(item.seg, cut, seed)
                    return
                turn.held = _Held(cut, seed)
            else:  # too soon after the turn began: the oldest far piece is the turn's
                turn.pieces.append(turn.pending.pop(0)[0])
        # probably someone else now: say so at once, split when confirmed
        self._provisional(turn, piece.end, embedding=e)

    def _settle(self, seg: _SegmentAudio, turn: _Turn, at: int) -> None:
        """Split or rejoin ``turn``'s held change, heard up to ``at``."""
        held = turn.held
        assert held is not None
        if not self._try_rejoin(turn):
            turn.held = None
            self._split(seg, held.cut, held.pieces)
        elif turn.stats() is not None:
            self._provisional(turn, at)

    def _judge(self, seg: _SegmentAudio, held: _Held, at: int, then: Callable[[], None]) -> None:
        """Run ``then`` once ``held`` is judged: at once when the segmentation model is
        not asked (``segment.voice_check`` off, no model, too little audio), else when
        its "voices" job on the audio up to ``at`` is answered (it goes first in the
        queue, so nothing after it is released before)."""
        window = None
        if self._voices and not held.judged:
            window = voice_change.window_for(seg.start, held.cut, at)
        held.judged = True
        if window is None:
            then()
            return

        def judged(logprobs: np.ndarray | None) -> None:
            if logprobs is not None and window is not None:
                held.verdict = voice_change.verdict(logprobs, window, held.cut)
            then()

        self._ask_voices(seg, window, at, judged)

    def _ask_voices(self, seg: _SegmentAudio, window: tuple[int, int], at: int,
                    then: Callable[[np.ndarray | None], None]) -> None:
        """Queue a "voices" job on the samples ``window`` first in line; ``then`` gets
        the model's output (None if it failed) when it is released."""
        job = self._new_job("voices", seg, *window, context=False)
        self.stats["voice_checks"] += 1
        item = _Item("voices", seg, at=at, job=job, then=then)
        self._jobs_by_id[job.id] = item
        self._items.appendleft(item)

    def _split_by_voices(self, seg: _SegmentAudio, turn: _Turn, end: int, closed_by: ClosedBy,
                         window: tuple[int, int], logprobs: np.ndarray | None) -> None:
        """End ``turn`` at ``end``, first splitting it where the segmentation model heard
        one voice give way to another (``segment.voice_split``): the pieces after the
        nearest piece boundary become a change held to the end, which the distance rule
        then splits off or rejoins (:meth:`_try_rejoin`)."""
        cut = None if logprobs is None else voice_change.best_cut(logprobs, window,
                                                                  self._split_min)
        if cut is not None and turn.complete and turn.held is None:
            bounds = [p.start for p in turn.pieces[1:]]
            if bounds:
                k = 1 + int(np.argmin([abs(b - cut) for b in bounds]))
                at = turn.pieces[k].start
                if at - turn.start >= self._min_turn and end - at >= self._min_turn:
                    turn.held = _Held(at, turn.pieces[k:], judged=True)
                    del turn.pieces[k:]
        self._end_turn(seg, end, closed_by)

    def _unpend(self, turn: _Turn) -> None:
        """The far windows were not confirmed: their pieces belong to the turn."""
        turn.pieces += [p for p, _ in turn.pending]
        turn.pending = []

    def _far(self, window: np.ndarray, ref: np.ndarray, change: float) -> bool:
        """Does a window sound like someone other than the turn before it?"""
        if distance(window, ref) <= change:
            return False
        if not self._cfg.segment.change_other_voice:
            return True
        near_window = self._search(window, 1)
        near_turn = self._search(ref, 1)
        return not near_window or not near_turn or near_window[0].id != near_turn[0].id

    def _try_rejoin(self, turn: _Turn) -> bool:
        """Put the held part of ``turn`` back into it, rather than open a new turn, when
        both parts sound alike (within ``rejoin_distance``; or within
        ``voice_rejoin_distance`` when the segmentation model heard one voice across the
        cut and the same enrolled person is nearest to both) and either would be unknown
        on its own or both name the same person (counted in ``rejoined_changes``). Never
        when the model heard two voices. Returns whether it did; without evidence it
        does not."""
        held = turn.held
        assert held is not None
        before, after = turn.stats(), total([p.stats for p in held.pieces if p.stats is not None])
        if before is None or after is None or self._rejoin is None:  # pragma: no cover - invariant
            return False  # (the window that made the change had pieces on both sides)
        if held.verdict == "different":
            return False
        e_before, e_after = self._embed(before), self._embed(after)
        apart = distance(e_before, e_after)
        if apart > self._rejoin and not (held.verdict == "same"
                                         and apart <= self._cfg.segment.voice_rejoin_distance
                                         and self._nearest_same(e_before, e_after)):
            return False
        one, two = self._decide(_Look(e_before)), self._decide(_Look(e_after))
        if one.person is not None and two.person is not None and one.person.id != two.person.id:
            return False
        turn.pieces += held.pieces
        turn.held = None
        self.stats["rejoined_changes"] += 1
        return True

    def _nearest_same(self, one: np.ndarray, two: np.ndarray) -> bool:
        """Is the enrolled person nearest to ``one`` also nearest to ``two`` (or nobody
        enrolled)?"""
        a, b = self._search(one, 1), self._search(two, 1)
        return not a or not b or a[0].id == b[0].id

    def _window(self, turn: _Turn, piece: _Piece) -> tuple[Stats | None, Stats | None]:
        """The window ending with ``piece`` (the last ``window_s`` of the turn, a pending
        piece included) and the turn before that window, to compare it with. ``None``s
        when a piece in the window was dropped or the turn has no piece before it."""
        before = turn.pieces + [p for p, _ in turn.pending]
        need = self._window_pieces - 1
        inside = before[len(before) - need:] if need else []
        if len(before) <= need or any(p.stats is None for p in inside):
            return None, None
        window = total([p.stats for p in inside if p.stats is not None] + [piece.stats])  # type: ignore[list-item]
        ref = total([p.stats for p in turn.pieces[:len(before) - need] if p.stats is not None])
        return window, ref

    def _split(self, seg: _SegmentAudio, cut: int, seed: list[_Piece],
               close: tuple[int, ClosedBy] | None = None) -> None:
        """Close the current turn at ``cut`` and start the next one there with ``seed``
        (and, with ``close``, end that one at once: the segment ended while the change
        was held).

        Queue order at the front afterwards: the old turn's final, then the new turn's
        start (which also releases the first provisional guess for it).
        """
        self.stats["speaker_changes"] += 1
        self._end_turn(seg, cut, "change")
        final_item = self._items.popleft()
        self._items.appendleft(_Item("start", seg, at=cut, seed=seed, close=close))
        self._items.appendleft(final_item)

    def _whole_final(self, turn: _Turn) -> bool:
        """Does ``turn``'s final embed the whole turn in one pass (rather than pool its
        pieces and the tail)? Always with ``segment.final_whole_pass``; else when a
        piece is missing (dropped under overload or failed)."""
        return self._cfg.segment.final_whole_pass or not turn.complete

    def _continues(self, own: Stats, prior: Stats | None) -> bool:
        """Does a turn that pooled ``own`` sound like the turn before it (``prior``)?"""
        change = self._cfg.segment.change_distance
        return (prior is not None and change is not None
                and distance(self._embed(own), self._embed(prior)) <= change)

    def _embed(self, stats: Stats) -> np.ndarray:
        return unit(self._head(stats))

    def _people(self) -> int:
        return self._gallery_size() if self._gallery_size is not None else 0

    def _search_k(self) -> int:
        """Candidates to search for (:meth:`GalleryRule.candidates`)."""
        return self._cfg.match.gallery_rule.candidates(self._cfg.match.top_k, self._people())

    def _decide(self, look: _Look) -> Decision:
        """Who is ``look``'s embedding (a unit vector), at this room's threshold; in a room
        with a roster, its members first (everyone is searched only when none is close).
        Searches already made for ``look`` are used, not repeated."""
        match = self._cfg.match
        people = self._people()
        rule = match.gallery_rule
        margin = rule.margin_at(people)
        k = self._search_k()
        embedding = look.embedding
        if look.roster_asked:
            roster = look.roster
        else:
            roster = None if self._roster_search is None else self._roster_search(embedding, k)
        if roster and roster[0].distance <= self._max_distance:
            everyone: Sequence[CandidateLike] = ()
        elif look.everyone is not None:
            everyone = look.everyone
        else:
            everyone = self._search(embedding, k)
        threshold = rule.threshold(self._max_distance, people)
        if roster is not None:  # visitors: the stricter of the two
            threshold = min(threshold, match.outside_roster_max_distance)
        return decide_in_room(roster, everyone, self._max_distance, threshold,
                              margin).top(match.top_k)

    def _provisional(self, turn: _Turn, end: int, embedding: np.ndarray | None = None) -> None:
        """Emit a provisional guess: for ``embedding`` (a window that sounds like someone
        else) or, by default, for the turn's pieces pooled."""
        if embedding is None:
            pooled = turn.stats()
            if pooled is None:  # pragma: no cover - invariant
                return
            if turn.prior is not None:
                if self._continues(pooled, turn.prior):
                    pooled = pooled + turn.prior
                else:  # someone else: this turn stands on its own from now on
                    turn.prior = None
            embedding = self._embed(pooled)
        self._emit(self._speaker_event(turn, end, final=False), embedding)

    def _speaker_event(self, turn: _Turn, end: int, final: bool) -> dict[str, Any]:
        """A ``speaker`` event; who it names is filled in by :meth:`take_events`."""
        return {
            "type": "speaker",
            "segment": turn.number,
            "final": final,
            "start": _s(turn.start),
            "end": _s(end),
            **self._decision_fields(Decision(None, None, ())),
        }

    @staticmethod
    def _decision_fields(decision: Decision) -> dict[str, Any]:
        return {
            "person": decision.person_wire(),
            "distance": None if decision.distance is None else round(decision.distance, 4),
            "candidates": decision.candidates_wire(),
            **({} if decision.scope is None else {"scope": decision.scope}),
        }

    def _emit(self, event: dict[str, Any], embedding: np.ndarray | None = None,
              check: np.ndarray | None = None) -> None:
        """Queue ``event``; with ``embedding``, a ``speaker`` event decided when taken
        (with ``check`` too: a second look that may take its name away,
        :func:`~streamer.identify.agree`)."""
        full = {"type": event.pop("type"), "room": self.room, "mic": self.mic,
                "stream": self.stream}
        full.update(event)
        full["ts"] = round(self._clock(), 3)
        if embedding is None:
            self._events.append(full)
        else:
            looks = [_Look(embedding)] + ([] if check is None else [_Look(check)])
            self._events.append(_Pending(full, looks))
        self.stats["events"] += 1


def _s(samples: int) -> float:
    """Stream time in seconds, rounded to the millisecond for the wire."""
    return round(samples_to_seconds(samples), 3)
