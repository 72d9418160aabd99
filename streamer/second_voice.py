"""Is a second voice in the enrolment? Pure (numpy only, no I/O).

The one-speaker check of :mod:`streamer.consistency` compares 2 s pieces of the
enrolment's speech, so a second voice that fills no piece of its own (a colleague's
sentence between two of yours) is averaged into the pieces and slips through. This check
asks the speaker-segmentation model (pyannote segmentation-3.0, ``models/segmentation.onnx``)
instead: it labels every 16.875 ms frame of a 10 s window with who of up to three *local*
speakers talks. The caller

1. cuts the audio into :func:`windows` and runs the model on each (``[frames, 7]``
   powerset log-probabilities per window, see ``models/export_segmentation.py``);
2. calls :func:`local_voices` per window with the detected speech (the VAD's spans) to
   get each local speaker's frames where they talk alone *and* the VAD heard speech;
3. embeds, per window, the :func:`main_pair` of local speakers, the two with the most
   such speech when both have at least ``second_voice_min_s`` (with the model's channel
   variant, as the pieces are);
4. calls :func:`assess` with those pairs: two voices when a pair is at least
   ``second_voice_distance`` apart (Euclidean distance between unit vectors).

A local speaker is only a label the segmentation model gives; the distance between the
embeddings decides, so one voice split into two labels (a person who changes their tone)
is still one voice unless the speaker model agrees they differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = [
    "FRAME_SAMPLES",
    "MIN_WINDOW_SAMPLES",
    "WINDOW_SAMPLES",
    "LocalVoice",
    "Rules",
    "SecondVoiceResult",
    "assess",
    "local_voices",
    "main_pair",
    "not_checked",
    "single_speaker_frames",
    "windows",
]

#: One segmentation frame is 270 samples at 16 kHz (16.875 ms).
FRAME_SAMPLES = 270
#: The segmentation model was trained on 10 s windows (its front end normalises each).
WINDOW_SAMPLES = 160_000
#: Windows shorter than this are not looked at (the model sees too little context).
MIN_WINDOW_SAMPLES = 32_000
#: The model's powerset classes: which of the local speakers 0, 1, 2 talk in the frame.
_CLASSES: tuple[tuple[int, ...], ...] = ((), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2))


class Rules(Protocol):
    """The ``enroll`` settings the check reads (:class:`streamer.config.EnrollConfig`)."""

    second_voice_min_s: float
    second_voice_distance: float


def windows(samples: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` windows (samples) to run the model on: 10 s windows back to
    back, the last one ending at the end of the audio (so it may overlap the one before);
    one shorter window when the audio is shorter than 10 s; none under 2 s."""
    if samples < MIN_WINDOW_SAMPLES:
        return []
    if samples <= WINDOW_SAMPLES:
        return [(0, samples)]
    starts = list(range(0, samples - WINDOW_SAMPLES, WINDOW_SAMPLES))
    return [(s, s + WINDOW_SAMPLES) for s in starts] + [(samples - WINDOW_SAMPLES, samples)]


@dataclass(frozen=True)
class LocalVoice:
    """One local speaker of one window: ``mask`` is True on the window's samples where
    they talk alone and the VAD heard speech; ``seconds`` is how much of that there is."""

    window: tuple[int, int]
    label: int
    mask: np.ndarray
    seconds: float


def single_speaker_frames(logprobs: np.ndarray) -> np.ndarray:
    """Per frame of the model's ``[frames, 7]`` output: the local speaker (0, 1 or 2)
    who talks alone in it, or -1 (silence or overlap). Raises ``ValueError`` for an
    output of another shape."""
    lp = np.asarray(logprobs)
    if lp.ndim != 2 or lp.shape[1] != len(_CLASSES):
        raise ValueError(f"expected [frames, {len(_CLASSES)}] log-probabilities, got {lp.shape}")
    alone = np.array([who[0] if len(who) == 1 else -1 for who in _CLASSES])
    return alone[lp.argmax(axis=1)]


def local_voices(logprobs: np.ndarray, window: tuple[int, int],
                 spans: Sequence[tuple[int, int]], sample_rate: int = 16000) -> list[LocalVoice]:
    """The local speakers of one window, most speech first (see the module docstring).

    ``logprobs`` is the model's ``[frames, 7]`` output for the window's samples;
    ``spans`` are the VAD's speech spans in samples of the *whole* audio. Raises
    ``ValueError`` for an output that is not ``[frames, 7]``.
    """
    best = single_speaker_frames(logprobs)
    start, end = window
    n = end - start
    speech = np.zeros(n, dtype=bool)
    for a, b in spans:
        a, b = max(a, start) - start, min(b, end) - start
        if b > a:
            speech[a:b] = True
    out = []
    for label in range(3):
        frames = best == label
        mask = np.repeat(frames, FRAME_SAMPLES)[:n]
        mask = np.pad(mask, (0, n - len(mask))) & speech
        seconds = float(mask.sum()) / sample_rate
        if seconds > 0:
            out.append(LocalVoice(window, label, mask, seconds))
    return sorted(out, key=lambda v: -v.seconds)


def main_pair(voices: Sequence[LocalVoice], rules: Rules) -> tuple[LocalVoice, LocalVoice] | None:
    """The two local voices of a window to compare (``voices`` as :func:`local_voices`
    returns them, most speech first): the first two, when the second has at least
    ``second_voice_min_s`` of speech alone; else ``None``."""
    if len(voices) >= 2 and voices[1].seconds >= rules.second_voice_min_s:
        return voices[0], voices[1]
    return None


@dataclass(frozen=True)
class SecondVoiceResult:
    """What :func:`assess` decided. ``distance`` is the largest distance between the
    two main local voices of a window (``None`` when no window had two with enough
    speech); ``seconds`` is the second voice's speech alone in that window and ``span``
    the first and last sample of it (samples of the whole audio)."""

    checked: bool
    one_speaker: bool
    limit: float
    min_s: float
    distance: float | None = None
    seconds: float | None = None
    span: tuple[int, int] | None = None
    reason: str = ""

    def to_wire(self, sample_rate: int = 16000) -> dict[str, Any]:
        """The ``quality.second_voice`` object of an ``enrolled`` reply."""
        out: dict[str, Any] = {"checked": self.checked, "one_speaker": self.one_speaker,
                               "limit": self.limit, "min_s": self.min_s}
        if self.distance is not None:
            out["distance"] = round(self.distance, 4)
            out["seconds"] = round(float(self.seconds or 0.0), 2)
        if self.span is not None:
            out["start_s"] = round(self.span[0] / sample_rate, 2)
            out["end_s"] = round(self.span[1] / sample_rate, 2)
        if self.reason:
            out["reason"] = self.reason
        return out

    def sentence(self, sample_rate: int = 16000) -> str:
        """Why the enrolment is refused, in words (only for a two-voice result)."""
        assert self.span is not None and self.distance is not None
        a, b = (w / sample_rate for w in self.span)
        return (f"a second voice speaks between {a:.1f} s and {b:.1f} s ({self.seconds:.1f} s "
                f"of speech, distance {self.distance:.2f} from the main voice, limit "
                f"{self.limit:.2f}); enrol one speaker at a time")


def not_checked(rules: Rules, reason: str) -> SecondVoiceResult:
    """A result for an enrolment the check did not look at (switched off, no model)."""
    return SecondVoiceResult(False, True, float(rules.second_voice_distance),
                             float(rules.second_voice_min_s), reason=reason)


def assess(pairs: Sequence[tuple[LocalVoice, LocalVoice, np.ndarray, np.ndarray]],
           rules: Rules) -> SecondVoiceResult:
    """Decide from each window's two main local voices and their embeddings.

    ``pairs``: ``(first, second, first_vector, second_vector)`` for every window whose two
    main local voices both had at least ``second_voice_min_s`` of speech (unit vectors).
    Two voices when any pair is at least ``second_voice_distance`` apart; the result
    names the farthest pair. An empty ``pairs`` is one speaker (checked).
    """
    limit, min_s = float(rules.second_voice_distance), float(rules.second_voice_min_s)
    if not pairs:
        return SecondVoiceResult(True, True, limit, min_s,
                                 reason="no window had two voices with enough speech")
    dists = [float(np.linalg.norm(np.asarray(a) - np.asarray(b))) for _, _, a, b in pairs]
    k = int(np.argmax(dists))
    _, second, _, _ = pairs[k]
    heard = np.flatnonzero(second.mask)
    span = ((second.window[0] + int(heard[0]), second.window[0] + int(heard[-1]) + 1)
            if len(heard) else second.window)
    return SecondVoiceResult(True, dists[k] < limit, limit, min_s, dists[k], second.seconds,
                             span)
