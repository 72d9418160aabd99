"""Does the speaker-segmentation model hear a speaker change at a cut? Pure (numpy only).

A live stream's change detector (:mod:`streamer.session`) compares 1.5 s windows of
speaker embeddings. Far from the microphone one person's windows drift apart, so it
also "hears" changes inside one person's turn; the held change's rejoin rule catches
some of them. The segmentation model (pyannote segmentation-3.0, ``models/
segmentation.onnx``) listens differently: it labels every frame of a window of up to
10 s with which of up to three *local* speakers talks, using everything in the window.
On the tune half's far-room meetings (docs/accuracy.md) it labelled the two sides of a
real change differently about half the time and the two sides of a point inside one
turn differently never (0 of 63). So its verdict is asymmetric evidence:

* ``"different"``: the sides' main local speakers differ, a change;
* ``"same"``: one local speaker on both sides; weaker (it misses changes);
* ``None``: too little single-speaker speech on a side to say.

Call :func:`window_for` for the samples to run the model on, then :func:`verdict` with
its ``[frames, 7]`` log-probabilities (``segment.voice_check``); or, at a turn's end,
:func:`split_window` and :func:`best_cut` (``segment.voice_split``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .second_voice import MIN_WINDOW_SAMPLES, WINDOW_SAMPLES, single_speaker_frames

__all__ = ["SIDE_SAMPLES", "MIN_SIDE_SAMPLES", "Verdict", "best_cut", "split_window", "verdict",
           "window_for"]

Verdict = Literal["same", "different"] | None

#: How much audio each side of the cut is judged on (1.5 s at 16 kHz).
SIDE_SAMPLES = 24_000
#: A side needs this much speech of one local speaker alone to be judged (0.3 s).
MIN_SIDE_SAMPLES = 4_800


def _last_window(start: int, end: int, least: int) -> tuple[int, int] | None:
    """The last 10 s of audio from ``start`` to ``end``, or ``None`` under ``least``."""
    a = max(start, end - WINDOW_SAMPLES)
    return (a, end) if end - a >= max(MIN_WINDOW_SAMPLES, least) else None


def window_for(start: int, cut: int, end: int) -> tuple[int, int] | None:
    """The samples to run the model on to judge a cut at ``cut`` in audio that runs
    from ``start`` to ``end`` (absolute positions): the last 10 s up to ``end``, or
    ``None`` when that is under 2 s or leaves no audio on a side of the cut."""
    window = _last_window(start, end, 0)
    return window if window is not None and window[0] < cut < end else None


def split_window(start: int, end: int, min_part: int) -> tuple[int, int] | None:
    """The samples to look for a split in a turn from ``start`` to ``end``: its last
    10 s, or ``None`` when the turn is too short for two parts of ``min_part``."""
    return _last_window(start, end, 2 * min_part)


def verdict(logprobs: np.ndarray, window: tuple[int, int], cut: int) -> Verdict:
    """The model's verdict on a change at ``cut`` (see the module docstring), from its
    ``[frames, 7]`` output for the samples ``window`` (as :func:`window_for` gave): the
    main local speaker of the 1.5 s before the cut against that of the 1.5 s after it.
    Raises ``ValueError`` for an output that is not ``[frames, 7]``."""
    labels = single_speaker_frames(logprobs)
    start, end = window
    per_frame = (end - start) / max(1, len(labels))

    def main(a: int, b: int) -> int | None:
        fa, fb = (int((max(start, x) - start) / per_frame) for x in (a, b))
        side = labels[fa:fb]
        side = side[side >= 0]
        if len(side) * per_frame < MIN_SIDE_SAMPLES:
            return None
        return int(np.bincount(side).argmax())

    before, after = main(cut - SIDE_SAMPLES, cut), main(cut, min(end, cut + SIDE_SAMPLES))
    if before is None or after is None:
        return None
    return "same" if before == after else "different"


def best_cut(logprobs: np.ndarray, window: tuple[int, int], min_part: int) -> int | None:
    """Where in ``window`` (samples, as given to the model) one main local speaker gives
    way to another, or ``None``: the frame boundary that best separates the window's two
    main local speakers (most frames of the first before it, of the second after it, or
    the other way round; the middle of the pause between them when several do), when
    each has at least ``min_part`` samples of speech alone and is the main voice of its
    side. Raises ``ValueError`` for an output that is not
    ``[frames, 7]``."""
    labels = single_speaker_frames(logprobs)
    start, end = window
    per_frame = (end - start) / max(1, len(labels))
    counts = np.bincount(labels[labels >= 0], minlength=3)
    first, second = (int(k) for k in np.argsort(-counts)[:2])
    if counts[second] * per_frame < min_part:
        return None
    best, best_c = 0, None
    for x, y in ((first, second), (second, first)):
        # score of a cut before frame c: frames of x before it + frames of y from it on
        score = np.concatenate([[0], np.cumsum(labels == x)]) + np.concatenate(
            [np.cumsum((labels == y)[::-1])[::-1], [0]])
        best_cs = np.flatnonzero(score == score.max())
        c = int(best_cs[len(best_cs) // 2])  # the middle of the best (a pause between them)
        before, after = labels[:c], labels[c:]
        if ((before == x).sum() * per_frame >= min_part
                and (after == y).sum() * per_frame >= min_part
                and (before == x).sum() > (before == y).sum()
                and (after == y).sum() > (after == x).sum() and score[c] > best):
            best, best_c = int(score[c]), c
    return None if best_c is None else start + int(round(best_c * per_frame))
