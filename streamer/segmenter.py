"""Voice activity segmentation: webrtcvad frame decisions -> speech segments.

Pure (no I/O). Feed one decision per frame with :meth:`Segmenter.step`; it returns the
segment boundaries that the frame settles, in samples of the 16 kHz stream:

* :class:`SegmentStart` when, in the last ``start_window_ms``, at least
  ``start_ratio`` of the frames are voiced. The segment starts at the first frame of
  that window (and ``pre_roll_ms`` before it, never before the last segment's end), so
  the onset of the first word is kept (padding).
* :class:`SegmentEnd` when, in the last ``end_window_ms``, at least ``end_ratio`` of
  the frames are unvoiced (the hang-over: shorter pauses inside a turn do not end it).
  The segment ends ``end_pad_ms`` after its last voiced frame.
* a forced :class:`SegmentEnd` followed by a :class:`SegmentStart` at the same sample
  when a segment reaches ``max_segment_samples``.

Because decisions are made per exact frame, the result does not depend on how the
audio was chunked on the wire (the session cuts exact frames first).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import webrtcvad

from .audio import level_dbfs
from .config import VadConfig
from .units import MODEL_SAMPLE_RATE

__all__ = ["LevelNormaliser", "SegmentEnd", "SegmentStart", "Segmenter", "VoiceDetector",
           "extract_speech", "find_speech", "segments_of"]


@dataclass(frozen=True)
class SegmentStart:
    """Speech began at sample ``start``."""

    start: int


@dataclass(frozen=True)
class SegmentEnd:
    """The open segment ended at sample ``end``; ``forced`` when cut at the maximum length."""

    end: int
    forced: bool = False


class LevelNormaliser:
    """Causal automatic gain for the VAD's input (never for the embedder's audio).

    webrtcvad's speech model expects speech at a normal recording level: quiet speech
    (a table microphone 2 m away, -35..-45 dBFS) is mostly called non-speech. This
    scales each frame so that the speech level estimate sits at ``target_dbfs``:

    * a frame's level is :func:`~streamer.audio.level_dbfs`, the RMS about the frame's
      mean (a microphone's DC offset is no sound), and the frame's mean is removed
      before the gain too: lifted by up to ``max_gain_db`` it would clip webrtcvad's
      16-bit input;
    * frames quieter than ``gate_dbfs`` (digital silence, dither) are ignored by the
      estimate and never change the gain;
    * the speech level is the ``high_percentile`` of the last ``window_frames`` counted
      frame levels (this frame included), the noise floor their ``low_percentile``; the
      speech level is taken at least ``min_contrast_db`` above the noise floor, so that
      noise alone (no speech in the window) is lifted to at most ``target_dbfs -
      min_contrast_db``, not to the speech target;
    * gain = ``target_dbfs - speech level``, clipped to ``0 .. max_gain_db`` dB (loud
      audio is never attenuated; nothing before the first counted frame is changed).

    Pure and causal: the gain of a frame depends only on it and the frames before it,
    so a stream and the same audio offline get the same gains. One per stream.
    """

    def __init__(self, target_dbfs: float, max_gain_db: float, window_frames: int,
                 gate_dbfs: float, min_contrast_db: float, high_percentile: float = 95.0,
                 low_percentile: float = 10.0) -> None:
        self.target_dbfs = float(target_dbfs)
        self.max_gain_db = float(max_gain_db)
        self.window_frames = max(1, int(window_frames))
        self.gate_dbfs = float(gate_dbfs)
        self.min_contrast_db = float(min_contrast_db)
        self._hi = high_percentile / 100.0
        self._lo = low_percentile / 100.0
        self.reset()

    def reset(self) -> None:
        """Forget the level history; the gain starts again at 0 dB."""
        self._levels: deque[float] = deque()
        self._sorted: list[float] = []
        #: Gain (dB) applied to the last frame.
        self.gain_db = 0.0

    level_dbfs = staticmethod(level_dbfs)

    def update(self, frame: np.ndarray) -> float:
        """Count ``frame`` and return the gain (dB) for it."""
        level = self.level_dbfs(frame)
        if level < self.gate_dbfs:
            return self.gain_db
        self._levels.append(level)
        bisect.insort(self._sorted, level)
        if len(self._levels) > self.window_frames:
            old = self._levels.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        last = len(self._sorted) - 1
        speech = self._sorted[round(self._hi * last)]
        floor = self._sorted[round(self._lo * last)]
        speech = max(speech, floor + self.min_contrast_db)
        self.gain_db = min(max(self.target_dbfs - speech, 0.0), self.max_gain_db)
        return self.gain_db

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` scaled by the gain :meth:`update` gives for it."""
        gain_db = self.update(frame)
        if gain_db == 0.0:
            return frame
        return (frame - frame.mean(dtype=np.float32)) * np.float32(10.0 ** (gain_db / 20.0))


class VoiceDetector:
    """webrtcvad on exact frames of float32 16 kHz audio. One per stream (it has state).

    With a :class:`LevelNormaliser` the frames are scaled by it before webrtcvad (the
    caller's audio is not changed). :meth:`from_config` builds both from ``vad:``.
    """

    def __init__(self, aggressiveness: int, frame_ms: int,
                 normaliser: LevelNormaliser | None = None) -> None:
        self._aggressiveness = aggressiveness
        self._vad = webrtcvad.Vad(aggressiveness)
        self.frame_samples = MODEL_SAMPLE_RATE * frame_ms // 1000
        self.normaliser = normaliser

    @classmethod
    def from_config(cls, cfg: VadConfig) -> VoiceDetector:
        """The detector ``cfg`` describes (with level normalisation when ``cfg.normalise``)."""
        normaliser = None
        if cfg.normalise:
            normaliser = LevelNormaliser(
                cfg.target_level_dbfs, cfg.max_gain_db,
                max(1, round(cfg.level_window_ms / cfg.frame_ms)),
                cfg.silence_gate_dbfs, cfg.min_contrast_db)
        return cls(cfg.aggressiveness, cfg.frame_ms, normaliser)

    def reset(self) -> None:
        """Forget the adapted noise/speech model and the level history; the next frame
        starts a new stream."""
        self._vad = webrtcvad.Vad(self._aggressiveness)
        if self.normaliser is not None:
            self.normaliser.reset()

    def is_speech(self, frame: np.ndarray) -> bool:
        """Return webrtcvad's decision for one frame of exactly ``frame_samples`` samples.

        Raises ``ValueError`` for a frame of another length.
        """
        if frame.shape != (self.frame_samples,):
            raise ValueError(f"frame must have {self.frame_samples} samples, got {frame.shape}")
        if self.normaliser is not None:
            frame = self.normaliser.apply(frame)
        pcm = (np.clip(frame, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        return bool(self._vad.is_speech(pcm, MODEL_SAMPLE_RATE))


class Segmenter:
    """Frame decisions -> segment boundaries. Per stream; call :meth:`reset` to reuse."""

    def __init__(self, cfg: VadConfig, max_segment_samples: int) -> None:
        self.frame_samples = MODEL_SAMPLE_RATE * cfg.frame_ms // 1000
        self._start_frames = max(1, cfg.start_window_ms // cfg.frame_ms)
        self._end_frames = max(1, cfg.end_window_ms // cfg.frame_ms)
        self._start_needed = max(1, int(np.ceil(cfg.start_ratio * self._start_frames)))
        self._end_needed = max(1, int(np.ceil(cfg.end_ratio * self._end_frames)))
        self._end_pad = MODEL_SAMPLE_RATE * cfg.end_pad_ms // 1000
        self._pre_roll = MODEL_SAMPLE_RATE * cfg.pre_roll_ms // 1000
        self._max_samples = max_segment_samples
        self.reset()

    def reset(self) -> None:
        """Forget all state; the next frame is sample 0 of a new stream."""
        self.position = 0
        #: Start sample of the open segment, or None between segments.
        self.open_start: int | None = None
        self._last_end = 0
        self._last_voiced_end = 0
        self._ring: deque[bool] = deque()

    @property
    def look_back_samples(self) -> int:
        """How far before the current frame's end a :class:`SegmentStart` may lie at most
        (a full start window and the pre-roll): the audio a caller keeps before any onset."""
        return self._start_frames * self.frame_samples + self._pre_roll

    @property
    def speech_until(self) -> int:
        """Samples up to here are certainly inside the open segment (or, when none is
        open, the end of the last one). A segment never ends before this sample."""
        if self.open_start is None:
            return self._last_end
        return min(self.position, self._last_voiced_end + self._end_pad)

    def step(self, voiced: bool) -> list[SegmentStart | SegmentEnd]:
        """Consume the decision for the next frame; return the boundaries it settles."""
        self.position += self.frame_samples
        if voiced:
            self._last_voiced_end = self.position
        self._ring.append(voiced)
        events: list[SegmentStart | SegmentEnd] = []
        if self.open_start is None:
            while len(self._ring) > self._start_frames:
                self._ring.popleft()
            if sum(self._ring) >= self._start_needed:
                window = len(self._ring) * self.frame_samples  # shorter after a segment
                start = max(self._last_end, self.position - window - self._pre_roll)
                self.open_start = start
                self._ring.clear()
                events.append(SegmentStart(start))
        else:
            while len(self._ring) > self._end_frames:
                self._ring.popleft()
            unvoiced = len(self._ring) - sum(self._ring)
            if len(self._ring) == self._end_frames and unvoiced >= self._end_needed:
                events.append(self._close(forced=False))
            elif self.position - self.open_start >= self._max_samples:
                end = self.position
                events.append(self._close(forced=True, end=end))
                self.open_start = end
                events.append(SegmentStart(end))
        return events

    def flush(self) -> list[SegmentStart | SegmentEnd]:
        """At the end of the stream: close the open segment, if any."""
        if self.open_start is None:
            return []
        return [self._close(forced=False)]

    def _close(self, forced: bool, end: int | None = None) -> SegmentEnd:
        start = self.open_start if self.open_start is not None else 0
        if end is None:
            end = min(self.position, self._last_voiced_end + self._end_pad)
        end = max(end, start)
        self.open_start = None
        self._last_end = end
        self._ring.clear()
        return SegmentEnd(end, forced)


def find_speech(samples: np.ndarray, cfg: VadConfig) -> list[tuple[int, int]]:
    """Return the speech segments ``[(start, end), ...]`` (samples) of a whole recording.

    Uses the same detector and segmenter as live streams, so enrolment audio is cut the
    way live audio is. Trailing samples shorter than one frame are ignored.
    """
    detector = VoiceDetector.from_config(cfg)
    n = detector.frame_samples
    x = np.asarray(samples, dtype=np.float32)
    voiced = (detector.is_speech(x[i * n : (i + 1) * n]) for i in range(len(x) // n))
    return segments_of(voiced, cfg, len(x))


def segments_of(voiced: Iterable[bool], cfg: VadConfig, n_samples: int) -> list[tuple[int, int]]:
    """The speech segments ``[(start, end), ...]`` (samples) that the segmenter makes of
    one voiced/unvoiced decision per frame of a whole recording of ``n_samples`` (no
    forced cut): what :func:`find_speech` does with webrtcvad's decisions, for any other
    detector's."""
    segmenter = Segmenter(cfg, max_segment_samples=n_samples + 1)
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for decision in voiced:
        for b in segmenter.step(bool(decision)):
            if isinstance(b, SegmentStart):
                start = b.start
            elif start is not None:
                spans.append((start, b.end))
                start = None
    for b in segmenter.flush():
        if isinstance(b, SegmentEnd) and start is not None:
            spans.append((start, b.end))
    return spans


def extract_speech(samples: np.ndarray, cfg: VadConfig) -> np.ndarray:
    """Return the speech of a whole recording, its segments joined (float32).

    Call before embedding enrolment or identification audio: silence changes the
    embedding, and ``len(result) / 16000`` is the speech duration that limits check.
    """
    spans = find_speech(samples, cfg)
    if not spans:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([np.asarray(samples[a:b], dtype=np.float32) for a, b in spans])
