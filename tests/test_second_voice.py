"""The second-voice decision (``streamer.second_voice``), pure: windows, frame counts,
local voices from powerset log-probabilities, and the decision. Fakes only (the model
itself is exercised end to end in ``test_e2e_second_voice.py``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from streamer import second_voice as sv


@dataclass
class Rules:
    second_voice_min_s: float = 1.0
    second_voice_distance: float = 1.1


def test_windows_cover_the_audio_in_ten_second_windows() -> None:
    assert sv.windows(31_999) == []
    assert sv.windows(32_000) == [(0, 32_000)]
    assert sv.windows(160_000) == [(0, 160_000)]
    w = sv.windows(350_000)
    assert w == [(0, 160_000), (160_000, 320_000), (190_000, 350_000)]
    for n in (160_001, 400_000, 1_000_000):
        got = sv.windows(n)
        assert got[0][0] == 0 and got[-1][1] == n
        assert all(b - a == sv.WINDOW_SAMPLES for a, b in got)
        assert all(a2 <= b1 for (_, b1), (a2, _) in zip(got, got[1:]))  # no gaps


def logprobs_for(classes: list[int]) -> np.ndarray:
    """Log-probabilities whose best class per frame is ``classes[frame]``."""
    lp = np.full((len(classes), 7), -10.0, dtype=np.float32)
    lp[np.arange(len(classes)), classes] = -0.01
    return lp


def test_local_voices_count_speech_alone_and_heard_by_the_vad() -> None:
    f = sv.FRAME_SAMPLES
    # 100 frames: speaker 0 alone for 40, both 0 and 1 for 10, speaker 1 alone for 30,
    # nobody for 20
    classes = [1] * 40 + [4] * 10 + [2] * 30 + [0] * 20
    window = (1000, 1000 + 100 * f)
    spans = [(0, 1000 + 90 * f)]  # the VAD misses the last 10 frames of the window
    voices = sv.local_voices(logprobs_for(classes), window, spans)
    assert [v.label for v in voices] == [0, 1]
    assert voices[0].seconds == pytest.approx(40 * f / 16000)
    assert voices[1].seconds == pytest.approx(30 * f / 16000)
    assert voices[0].mask[: 40 * f].all() and not voices[0].mask[40 * f:].any()
    # overlap (class 4) belongs to nobody alone; speech outside the VAD counts for no one
    spans = [(1000 + 60 * f, 1000 + 70 * f)]
    (only,) = sv.local_voices(logprobs_for(classes), window, spans)
    assert only.label == 1 and only.seconds == pytest.approx(10 * f / 16000)
    assert sv.local_voices(logprobs_for(classes), window, []) == []
    with pytest.raises(ValueError, match="log-probabilities"):
        sv.local_voices(np.zeros((5, 3)), window, spans)


def unit(v: list[float]) -> np.ndarray:
    x = np.asarray(v, dtype=np.float64)
    return x / np.linalg.norm(x)


def voice(label: int, seconds: float, window: tuple[int, int] = (0, 160_000)) -> sv.LocalVoice:
    """A local voice heard alone for ``seconds`` from 1 s into its window."""
    mask = np.zeros(window[1] - window[0], bool)
    mask[16_000:16_000 + int(seconds * 16_000)] = True
    return sv.LocalVoice(window, label, mask, seconds)


def test_the_main_pair_needs_enough_speech_from_the_second_voice() -> None:
    rules = Rules(second_voice_min_s=1.5)
    first, second, third = voice(0, 5.0), voice(1, 1.5), voice(2, 1.0)
    assert sv.main_pair([first, second, third], rules) == (first, second)
    assert sv.main_pair([first, third], rules) is None
    assert sv.main_pair([first], rules) is None and sv.main_pair([], rules) is None


def test_assess_refuses_the_farthest_pair_at_or_beyond_the_limit() -> None:
    rules = Rules()
    same = (voice(0, 5.0), voice(1, 1.5), unit([1, 0]), unit([1, 0.5]))  # 0.46 apart
    far_w = (160_000, 320_000)
    other = (voice(0, 4.0, far_w), voice(2, 2.0, far_w), unit([1, 0]), unit([0, 1]))  # 1.41
    r = sv.assess([same, other], rules)
    assert not r.one_speaker and r.checked
    # the second voice of the farthest pair: 2 s from 1 s into the window at 10 s
    assert r.distance == pytest.approx(2 ** 0.5) and r.seconds == 2.0
    assert r.span == (176_000, 208_000)
    wire = r.to_wire()
    assert wire["one_speaker"] is False and wire["start_s"] == 11.0 and wire["end_s"] == 13.0
    assert wire["distance"] == pytest.approx(1.4142, abs=1e-4) and wire["limit"] == 1.1
    assert r.sentence() == ("a second voice speaks between 11.0 s and 13.0 s (2.0 s of speech, "
                            "distance 1.41 from the main voice, limit 1.10); enrol one speaker "
                            "at a time")
    assert sv.assess([same], rules).one_speaker
    # exactly at the limit counts as two voices
    at = (voice(0, 3.0), voice(1, 3.0), np.array([1.0, 0.0]), np.array([-0.1, 0.0]))  # 1.1
    assert not sv.assess([at], Rules(second_voice_distance=1.1)).one_speaker


def test_no_pair_is_one_speaker_and_off_is_not_checked() -> None:
    r = sv.assess([], Rules())
    assert r.checked and r.one_speaker and r.distance is None
    assert "distance" not in r.to_wire()
    off = sv.not_checked(Rules(), "switched off")
    assert not off.checked and off.one_speaker and off.to_wire()["reason"] == "switched off"
