"""The segmentation model's verdict on a live change (``streamer.voice_change``), pure:
the window it runs on and the verdict from powerset log-probabilities. Fakes only (the
model itself runs in ``test_e2e_voice_change.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from streamer import second_voice as sv
from streamer import voice_change as vc

F = sv.FRAME_SAMPLES


def logprobs_for(classes: list[int]) -> np.ndarray:
    """Log-probabilities whose best class per frame is ``classes[frame]``."""
    lp = np.full((len(classes), 7), -10.0, dtype=np.float32)
    lp[np.arange(len(classes)), classes] = -0.01
    return lp


def test_single_speaker_frames_leave_out_silence_and_overlap() -> None:
    got = sv.single_speaker_frames(logprobs_for([0, 1, 2, 3, 4, 5, 6, 1]))
    assert got.tolist() == [-1, 0, 1, 2, -1, -1, -1, 0]
    with pytest.raises(ValueError, match="log-probabilities"):
        sv.single_speaker_frames(np.zeros((4, 3)))


def test_the_window_is_the_last_ten_seconds_with_audio_on_both_sides() -> None:
    assert vc.window_for(0, 50_000, 100_000) == (0, 100_000)
    assert vc.window_for(0, 250_000, 300_000) == (140_000, 300_000)  # at most 10 s
    assert vc.window_for(5_000, 20_000, 36_999) is None               # under 2 s of audio
    assert vc.window_for(0, 130_000, 300_000) is None                 # the cut is before it
    assert vc.window_for(0, 100_000, 100_000) is None                 # nothing after the cut


def verdict(classes: list[int], cut_frame: int) -> vc.Verdict:
    n = len(classes)
    return vc.verdict(logprobs_for(classes), (1_000, 1_000 + n * F), 1_000 + cut_frame * F)


def test_the_verdict_compares_the_main_voices_either_side() -> None:
    # 1.5 s is about 89 frames; 0.3 s of one voice alone about 18
    assert verdict([1] * 200 + [2] * 100, 200) == "different"
    assert verdict([1] * 200 + [1] * 100, 200) == "same"
    # the main voice of each side wins: a little of the other voice does not decide
    assert verdict([1] * 170 + [2] * 30 + [2] * 20 + [1] * 80, 200) == "same"
    # overlap and silence count for nobody; a side with too little speech alone: no say
    assert verdict([1] * 200 + [4] * 90 + [2] * 10, 200) is None
    assert verdict([0] * 200 + [2] * 100, 200) is None
    # only the 1.5 s either side count
    assert verdict([2] * 100 + [1] * 200 + [1] * 100, 300) == "same"
    with pytest.raises(ValueError):
        vc.verdict(np.zeros((10, 5)), (0, 10 * F), 5 * F)


def test_the_split_window_needs_room_for_two_parts() -> None:
    assert vc.split_window(0, 100_000, 16_000) == (0, 100_000)
    assert vc.split_window(0, 300_000, 16_000) == (140_000, 300_000)  # the last 10 s
    assert vc.split_window(0, 31_000, 8_000) is None                  # under 2 s
    assert vc.split_window(0, 40_000, 24_000) is None                 # no two 1.5 s parts


def best_cut(classes: list[int], min_frames: int = 50) -> int | None:
    got = vc.best_cut(logprobs_for(classes), (1_000, 1_000 + len(classes) * F), min_frames * F)
    return None if got is None else (got - 1_000) // F


def test_the_best_cut_separates_the_two_main_voices() -> None:
    assert best_cut([1] * 200 + [2] * 100) == 200
    assert best_cut([2] * 100 + [1] * 200) == 100             # either order
    assert best_cut([1] * 200 + [0] * 20 + [2] * 100) == 210  # the middle of the pause
    # a little of the other voice near the change does not move the cut far
    assert best_cut([1] * 180 + [2] * 10 + [1] * 10 + [2] * 100) in (180, 200)
    # one voice, or a second one with too little speech alone: no cut
    assert best_cut([1] * 300) is None
    assert best_cut([1] * 200 + [2] * 40) is None
    # overlap counts for nobody
    assert best_cut([1] * 200 + [4] * 100) is None
