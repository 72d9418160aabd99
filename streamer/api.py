"""The ``/v1/api`` requests: enrol, identify, verify and manage people.

Used by the server for ``/v1/api`` and by the offline CLI commands. Each handler takes
a parsed request from :mod:`streamer.wire` and returns the reply map of the protocol.
Audio decoding, voice activity detection and registry writes run in threads; the
embedding runs on the shared :class:`~streamer.worker.Worker` (as final work, never
dropped). Errors are raised as :class:`~streamer.errors.StreamerError` subclasses:
``BadAudio``, ``TooLarge``, ``TooLittleSpeech``, ``NotOneSpeaker``, ``UnknownPerson``.

Enrolment also checks that its audio is one speaker (``enroll.consistency``): the
speech is cut into pieces (:mod:`streamer.consistency`), each piece is embedded on the
worker, and two groups of pieces that sound like two people refuse the enrolment
(``NotOneSpeaker``) or add a warning, before anything is stored. A single piece that
disagrees with an agreeing majority is left out of the voiceprint, with a warning.
With the speaker-segmentation model loaded (``enroll.second_voice``), a second voice
that fills no piece of its own is listened for as well (:mod:`streamer.second_voice`)
and handled the same way.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from . import band, consistency, phone_line, second_voice, wire
from .audio import decode_file, level_dbfs, pcm_to_float, resample
from .config import Config
from .errors import NotOneSpeaker, RegistryError, TooLarge, TooLittleSpeech, format_shortfall
from .identify import decide, verify_decision
from .line_voiceprints import Lines, searched
from .phone_line import line_voiceprint
from .registry import Person, Registry
from .segmenter import find_speech
from .units import MODEL_SAMPLE_RATE, samples_to_seconds
from .worker import Worker

__all__ = ["PHONE_LINE_WARNING", "Api", "audio_quality", "length_advice", "percent_complete",
           "with_channel"]

logger = logging.getLogger("streamer.api")


def _level_dbfs(x: np.ndarray) -> float:
    """:func:`~streamer.audio.level_dbfs` of ``x``, at least -120 (empty or digital
    silence)."""
    return max(level_dbfs(x), -120.0)


def percent_complete(speech_s: float, recommended_speech_s: float) -> int:
    """Progress of an enrolment recording: ``min(100, round(100 * speech / recommended))``."""
    if recommended_speech_s <= 0:
        return 100
    return min(100, round(100 * speech_s / recommended_speech_s))


def _joined(samples: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """The speech of ``spans`` joined (what ``extract_speech`` returns)."""
    if not spans:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([np.asarray(samples[a:b], dtype=np.float32) for a, b in spans])


def _find_and_join(samples: np.ndarray, cfg: Config) -> tuple[list[tuple[int, int]], np.ndarray]:
    spans = find_speech(samples, cfg.vad)
    return spans, _joined(samples, spans)


def length_advice(speech_s: float, recommended_s: float) -> str:
    """The warning for an enrolment under ``recommended_s`` seconds of speech.

    Says how much more speech would help; the seconds found are rounded down and the
    seconds missing up (:func:`~streamer.errors.format_shortfall`), so 6.96 s never
    reads as 7.0 s. Measured (``bench/enrolment.py``, docs/enrolment.md): with less
    speech the voiceprint is named less often at the match threshold.
    """
    found, target = format_shortfall(speech_s, recommended_s)
    more = max(0.1, float(target) - float(found))
    return (
        f"only {found} s of speech: about {more:.1f} s more ({target} s in all) "
        "gives a more reliable voiceprint"
    )


def audio_quality(samples: np.ndarray, speech: np.ndarray, cfg: Config,
                  *, advise_length: bool = True) -> dict[str, Any]:
    """The ``quality`` report of an enrolment: speech seconds, level and clipping.

    ``level_dbfs`` is the RMS level of the detected speech or, when none was found, of
    the whole audio. ``percent`` is :func:`percent_complete` of the speech against
    ``enroll.recommended_speech_s`` (for a progress bar). ``advise_length=False`` leaves out the "more speech gives a more
    reliable voiceprint" warning (``analyze`` measures short chunks of a recording).
    """
    speech_s = samples_to_seconds(len(speech))
    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    clipped = float(np.mean(np.abs(samples) >= 0.999)) if len(samples) else 0.0
    level_dbfs = _level_dbfs(speech if len(speech) else samples)
    warnings = []
    if advise_length and speech_s < cfg.enroll.recommended_speech_s:
        warnings.append(length_advice(speech_s, cfg.enroll.recommended_speech_s))
    if not advise_length and speech_s == 0:
        warnings.append("no speech detected")
    if level_dbfs < -40:
        warnings.append("the recording is very quiet")
    if clipped > 0.001:
        warnings.append("the recording is clipping")
    return {
        "speech_s": round(speech_s, 2),
        "audio_s": round(samples_to_seconds(len(samples)), 2),
        "min_speech_s": cfg.enroll.min_speech_s,
        "recommended_speech_s": cfg.enroll.recommended_speech_s,
        "percent": percent_complete(speech_s, cfg.enroll.recommended_speech_s),
        "level_dbfs": round(float(level_dbfs), 1),
        "peak": round(peak, 3),
        "clipped_share": round(clipped, 4),
        "warnings": warnings,
    }


def with_channel(reply: dict[str, Any], channel: str) -> dict[str, Any]:
    """``reply`` with ``channel`` (extension) added when it was decided with a line variant
    of the model (``match.channel`` of the room: ``ready``, ``identified``, ``verified``);
    wideband replies are as before. Changes and returns ``reply``."""
    if channel != "wideband":
        reply["channel"] = channel
    return reply


#: The enrolment warning for speech that came through a phone line.
PHONE_LINE_WARNING = (
    "the speech has no sound above 4 kHz, as through a phone line; a recording from a "
    "computer or a phone's own microphone makes a better voiceprint"
)


class Api:
    """Request handlers over one registry, worker and config. Event-loop use only."""

    def __init__(self, config: Config, registry: Registry, worker: Worker,
                 lines: Lines | None = None) -> None:
        """``lines``: the server's line voiceprints (:mod:`streamer.line_voiceprints`),
        kept in step with ``registry`` by every change made here; None: none kept."""
        self._cfg = config
        self._registry = registry
        self._worker = worker
        self._lines = lines

    async def handle(self, request: wire.Request) -> dict[str, Any]:
        """Answer one parsed request; raises a ``StreamerError`` for a request error.

        A reply to a change (``enrolled``, ``person``, ``deleted``) is returned only after
        the registry call returned, that is after its SQLite transaction committed (and,
        for a deletion, after the data was erased from the files and the index), so an
        acknowledged change survives ``kill -9``. Cancelling this coroutine while a
        registry write runs in its thread does not stop the write: it still commits or
        fails as a whole, unacknowledged.
        """
        if isinstance(request, wire.Enroll):
            return await self.enroll(request)
        if isinstance(request, wire.Identify):
            return await self.identify(request)
        if isinstance(request, wire.Verify):
            return await self.verify(request)
        if isinstance(request, wire.People):
            return await self.people(request)
        if isinstance(request, wire.UpdatePerson):
            person = await asyncio.to_thread(self._update_person, request.person,
                                             request.name, request.info)
            return {"type": "person", "id": request.id, "person": person.to_wire()}
        if isinstance(request, wire.DeletePerson):
            await asyncio.to_thread(self._delete_person, request.person)
            return {"type": "deleted", "id": request.id, "person": request.person}
        if isinstance(request, wire.Analyze):
            return await self.analyze(request)
        if isinstance(request, wire.SetRoom):
            people = None if request.people is None else list(request.people)
            roster = await asyncio.to_thread(self._set_room, request.room, people)
            return {"type": "room", "id": request.id, "room": request.room,
                    "people": None if roster is None else list(roster)}
        if isinstance(request, wire.Rooms):
            rooms = self._registry.rooms()
            return {"type": "rooms", "id": request.id, "rooms": [
                {"room": room, "people": list(people)} for room, people in sorted(rooms.items())]}
        raise TypeError(f"unhandled request {type(request).__name__}")  # pragma: no cover

    # -- registry changes, passed on to the line voiceprints (worker threads) -----------

    def _update_person(self, person_id: str, name: str | None,
                       info: dict[str, Any] | None) -> Person:
        person = self._registry.update_person(person_id, name, info)
        if self._lines is not None and name is not None:
            self._lines.renamed(person_id, person.name)
        return person

    def _delete_person(self, person_id: str) -> None:
        self._registry.delete_person(person_id)
        if self._lines is not None:
            self._lines.deleted(person_id)

    def _set_room(self, room: str, people: list[str] | None) -> tuple[str, ...] | None:
        roster = self._registry.set_room(room, people)
        if self._lines is not None:
            self._lines.roster_set(room, roster)
        return roster

    def _searched(self, channel: str) -> Registry:
        """The registry a request of ``channel`` (``match.channel``) searches."""
        return searched(self._registry, self._lines, channel)

    async def _line_voiceprints(self, speech: np.ndarray) -> dict[str, np.ndarray]:
        """Channel -> the line voiceprint of enrolment ``speech`` for every line kept."""
        channels = () if self._lines is None else self._lines.kept()
        if not channels:
            return {}
        copies = await asyncio.to_thread(phone_line.line_copies, speech)
        out = {}
        for channel in channels:
            vectors = await asyncio.gather(
                *(self._worker.embed(copy, channel=channel) for copy in copies))
            out[channel] = line_voiceprint(vectors)
        return out

    # -- audio -------------------------------------------------------------------------

    def _samples(self, audio: wire.AudioInput) -> np.ndarray:
        """Decode request audio to float32 16 kHz mono (runs in a thread)."""
        max_s = self._cfg.server.max_request_audio_s
        if isinstance(audio, wire.AudioFile):
            return decode_file(audio.data, max_seconds=max_s)
        width = 2 if audio.format == "s16le" else 4
        seconds = len(audio.data) / (width * audio.channels * audio.sample_rate)
        if seconds > max_s:
            raise TooLarge(f"the audio lasts {seconds:.0f} s; the limit is {max_s:.0f} s")
        x = pcm_to_float(audio.data, audio.format, audio.channels)
        return resample(x, audio.sample_rate, MODEL_SAMPLE_RATE)

    async def speech_of(self, audio: wire.AudioInput, needed_s: float,
                        cfg: Config | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Decode ``audio`` and keep its speech (the VAD of ``cfg``, default the server's
        configuration); raise ``TooLittleSpeech`` under ``needed_s``.

        Returns ``(all_samples, speech_samples)``.
        """
        samples, _, speech = await self._speech_spans(audio, needed_s, cfg)
        return samples, speech

    async def _speech_spans(self, audio: wire.AudioInput, needed_s: float,
                            cfg: Config | None = None
                            ) -> tuple[np.ndarray, list[tuple[int, int]], np.ndarray]:
        """Like :meth:`speech_of`, also returning the speech spans (samples of the audio)."""
        samples = await asyncio.to_thread(self._samples, audio)
        spans, speech = await asyncio.to_thread(_find_and_join, samples, cfg or self._cfg)
        found_s = samples_to_seconds(len(speech))
        if found_s < needed_s:
            raise TooLittleSpeech(found_s, needed_s)
        return samples, spans, speech

    async def _consistency(self, spans: list[tuple[int, int]], speech: np.ndarray,
                           channel: str) -> consistency.ConsistencyResult:
        """Embed the pieces of the speech (final work, with the model's ``channel``
        variant) and check they are one speaker."""
        cfg = self._cfg.enroll.limits_for(channel)
        limit = cfg.consistency_max_distance
        if cfg.consistency == "off":
            return consistency.not_checked(limit, 0, "switched off (enroll.consistency: off)")
        pieces = consistency.plan(spans, cfg, MODEL_SAMPLE_RATE)
        if len(pieces) < 2:
            return consistency.not_checked(
                limit, len(pieces),
                f"{samples_to_seconds(len(speech)):.1f} s of speech is too little to compare "
                f"two pieces of {consistency.MIN_PIECE_S:g} s or more",
            )
        vectors = await asyncio.gather(*(
            self._worker.embed(speech[p.speech_start:p.speech_end], channel=channel)
            for p in pieces
        ))
        return consistency.assess(np.stack(vectors), pieces, cfg, MODEL_SAMPLE_RATE)

    async def _second_voice(self, samples: np.ndarray, spans: list[tuple[int, int]],
                            channel: str) -> second_voice.SecondVoiceResult:
        """Listen for a second voice with the segmentation model (final work): per window,
        embed the two main local voices (with the model's ``channel`` variant) when both
        have enough speech alone, and compare them (:mod:`streamer.second_voice`)."""
        cfg = self._cfg.enroll
        if not cfg.listens_for_second_voice:
            return second_voice.not_checked(cfg, "switched off")
        if not self._worker.has_segmenter:
            return second_voice.not_checked(cfg, "no speaker-segmentation model loaded")
        pairs = []
        for window in second_voice.windows(len(samples)):
            part = samples[window[0]:window[1]]
            logprobs = await self._worker.segment(part)
            voices = await asyncio.to_thread(second_voice.local_voices, logprobs, window,
                                             spans, MODEL_SAMPLE_RATE)
            pair = second_voice.main_pair(voices, cfg)
            if pair is not None:
                vectors = await asyncio.gather(
                    *(self._worker.embed(part[v.mask], channel=channel) for v in pair))
                pairs.append((*pair, *vectors))
        return second_voice.assess(pairs, cfg)

    def _not_one_speaker(self, sentence: str, quality: dict[str, Any]) -> None:
        """A check heard more than one voice: raise :class:`NotOneSpeaker` (nothing is
        stored) under ``enroll.consistency: refuse``, else add the sentence to the
        reply's warnings."""
        if self._cfg.enroll.consistency == "refuse":
            logger.info("enrolment refused: %s", sentence)
            raise NotOneSpeaker(sentence[0].upper() + sentence[1:])
        quality["warnings"].append(sentence)

    # -- requests ----------------------------------------------------------------------

    async def enroll(self, request: wire.Enroll) -> dict[str, Any]:
        """Create a person, or add speech to ``request.person``; reply ``enrolled``."""
        if request.person is not None:
            await asyncio.to_thread(self._registry.get, request.person)  # UnknownPerson early
        samples, spans, speech = await self._speech_spans(request.audio,
                                                          self._cfg.enroll.min_speech_s)
        # pieces of phone-line speech are compared with the telephone-line variant (the
        # model puts every voice heard through a line close together), when the model has
        # one; the voiceprint is always the model's
        below_db = (self._cfg.enroll.telephone_below_db
                    if self._worker.has_channel("telephone") else None)
        channel = await asyncio.to_thread(band.line_of, speech, below_db)
        # the pieces and the whole are embedded together; nothing is stored before the
        # consistency decision
        check, second, embedding = await asyncio.gather(
            self._consistency(spans, speech, channel),
            self._second_voice(samples, spans, channel),
            self._worker.embed(speech))
        quality = audio_quality(samples, speech, self._cfg)
        quality["consistency"] = check.to_wire(MODEL_SAMPLE_RATE)
        if second.checked:
            quality["second_voice"] = second.to_wire(MODEL_SAMPLE_RATE)
        if channel != "wideband":
            quality["channel"] = channel
            quality["warnings"].append(PHONE_LINE_WARNING)
        if check.checked and not check.one_speaker:
            self._not_one_speaker(consistency.describe_disagreement(check, MODEL_SAMPLE_RATE),
                                  quality)
        if not second.one_speaker:
            self._not_one_speaker(second.sentence(MODEL_SAMPLE_RATE), quality)
        if check.dropped:
            # the voiceprint is made of the agreeing pieces only
            quality["warnings"].append(consistency.describe_dropped(check, MODEL_SAMPLE_RATE))
            speech = np.concatenate([speech[p.speech_start:p.speech_end] for p in check.kept()])
            embedding = await self._worker.embed(speech)
        speech_s = samples_to_seconds(len(speech))
        keep = speech if self._cfg.enroll.keep_audio else None
        line_vectors = await self._line_voiceprints(speech)
        if request.person is None:
            person = await asyncio.to_thread(
                self._registry.add_person, request.name or "", request.info, embedding, speech_s, keep
            )
        else:
            person = await asyncio.to_thread(
                self._registry.add_voiceprint, request.person, embedding, speech_s, keep
            )
            if request.name is not None or request.info is not None:
                person = await asyncio.to_thread(
                    self._update_person, person.id, request.name, request.info
                )
        if line_vectors and self._lines is not None:
            try:
                await asyncio.to_thread(self._lines.add, person.id, line_vectors, speech_s)
            except RegistryError:  # enrolled all the same: the server's next start fills in
                logger.exception("the line voiceprints of %s were not stored", person.id)
        logger.info("enrolled %s (%.1f s of speech, %s)", person.id, speech_s, channel)
        return {
            "type": "enrolled",
            "id": request.id,
            "person": person.to_wire(),
            "quality": quality,
        }

    async def people(self, request: wire.People) -> dict[str, Any]:
        """Reply ``people``: everyone (up to ``server.max_people_reply``, else
        :class:`TooLarge`), or the page ``offset``/``limit`` of those matching ``query``."""
        most = self._cfg.server.max_people_reply
        limit = request.limit if request.limit is not None else most + 1
        people, total = await asyncio.to_thread(self._registry.people_page, request.offset,
                                                limit, request.query)
        if request.limit is None and len(people) > most:
            raise TooLarge(f"{total} people match; ask for them in pages of at most "
                           f"{wire.MAX_PEOPLE_PAGE} (offset and limit; "
                           "server.max_people_reply)")
        return wire.people_message(request.id, [p.to_wire() for p in people], total,
                                   request.offset)

    def _for_request(self, room: str | None) -> tuple[Config, float]:
        """The configuration and threshold a request decides with: the server's, or with
        ``room`` those of that room's live streams (its ``rooms`` profile)."""
        if room is None:
            return self._cfg, self._cfg.match.max_distance
        cfg = self._cfg.for_room(room)
        return cfg, cfg.match.max_distance_for(room)

    async def identify(self, request: wire.Identify) -> dict[str, Any]:
        """1:N: reply ``identified`` with the match (or null) and the ranked results."""
        cfg, max_distance = self._for_request(request.room)
        _, speech = await self.speech_of(request.audio, cfg.match.min_request_speech_s, cfg)
        embedding = await self._worker.embed(speech, channel=cfg.match.channel)
        registry = self._searched(cfg.match.channel)
        people = len(registry)
        rule = cfg.match.gallery_rule
        threshold = rule.threshold(max_distance, people)
        margin = rule.margin_at(people)
        candidates = await asyncio.to_thread(registry.search, embedding,
                                             rule.candidates(request.top_k, people))
        decision = decide(candidates, threshold, margin).top(request.top_k)
        match = None
        if decision.person is not None:
            match = {**decision.person_wire(), "distance": round(float(decision.person.distance), 4)}  # type: ignore[dict-item]
        return with_channel({
            "type": "identified",
            "id": request.id,
            "match": match,
            "results": decision.candidates_wire(),
            "threshold": threshold,
            "margin": margin,
        }, cfg.match.channel)

    async def verify(self, request: wire.Verify) -> dict[str, Any]:
        """1:1: reply ``verified`` with accepted, distance and threshold."""
        cfg, threshold = self._for_request(request.room)
        registry = self._searched(cfg.match.channel)
        registry.require_indexed(request.person)  # UnknownPerson early, no database
        _, speech = await self.speech_of(request.audio, cfg.match.min_request_speech_s, cfg)
        embedding = await self._worker.embed(speech, channel=cfg.match.channel)
        dist = await asyncio.to_thread(registry.distance_to, request.person, embedding)
        return with_channel({
            "type": "verified",
            "id": request.id,
            "person": request.person,
            "accepted": verify_decision(dist, threshold),
            "distance": round(float(dist), 4),
            "threshold": threshold,
        }, cfg.match.channel)

    async def analyze(self, request: wire.Analyze) -> dict[str, Any]:
        """Measure audio (speech seconds, level, clipping) without embedding or storing it.

        Replies ``analyzed`` with the fields of :func:`audio_quality` (no length advice;
        ``"no speech detected"`` when VAD found none). Any amount of speech is fine.
        """
        samples = await asyncio.to_thread(self._samples, request.audio)
        _, speech = await asyncio.to_thread(_find_and_join, samples, self._cfg)
        quality = audio_quality(samples, speech, self._cfg, advise_length=False)
        return wire.analyzed(request.id, quality)
