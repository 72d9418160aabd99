"""streamer.segmenter: frame decisions -> segment boundaries; speech in whole recordings.

The :class:`Segmenter` is fed synthetic voiced/unvoiced flags (sans-I/O, exact
frames); :func:`find_speech` and :func:`extract_speech` run the real webrtcvad on
real speech from ``shared/speech``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamer.config import VadConfig
from streamer.segmenter import (
    LevelNormaliser,
    SegmentEnd,
    Segmenter,
    SegmentStart,
    VoiceDetector,
    extract_speech,
    find_speech,
)

SR = 16000
#: 30 ms frames; start: 6 of 10 voiced; end: 24 of 26 unvoiced (an 800 ms hang-over; the
#: shipped default is 400 ms, the rules are the same); pad 200 ms.
CFG = VadConfig(end_window_ms=800)
FRAME = 480
PAD = SR * CFG.end_pad_ms // 1000
BIG = 10**9


def feed(seg: Segmenter, flags: Iterable[bool | int]) -> list[tuple[int, SegmentStart | SegmentEnd]]:
    """Step every flag; return (frame index, boundary) for each boundary."""
    out = []
    for i, flag in enumerate(flags):
        out.extend((i, b) for b in seg.step(bool(flag)))
    return out


def frames(spec: str) -> list[bool]:
    """'1' voiced, '.' unvoiced."""
    return [c == "1" for c in spec]


def test_silence_gives_nothing() -> None:
    seg = Segmenter(CFG, BIG)
    assert feed(seg, frames("." * 200)) == []
    assert seg.flush() == []
    assert seg.open_start is None and seg.position == 200 * FRAME


def test_start_after_start_ratio_of_the_window_with_padding() -> None:
    seg = Segmenter(CFG, BIG)
    # 20 unvoiced frames, then voiced: the 6th voiced frame (frame 25) fills 6 of the
    # last 10 frames; the segment starts at the first frame of that window (frame 16).
    out = feed(seg, frames("." * 20 + "1" * 10))
    assert out == [(25, SegmentStart(16 * FRAME))]
    assert seg.open_start == 16 * FRAME


def test_pre_roll_keeps_more_before_the_start_window() -> None:
    # vad.pre_roll_ms: the segment starts that much before the start window (frame 16),
    # so the quiet onset the start decision missed is kept; the decision itself is the same
    seg = Segmenter(dataclasses.replace(CFG, pre_roll_ms=300), BIG)
    assert feed(seg, frames("." * 20 + "1" * 10)) == [(25, SegmentStart(6 * FRAME))]
    # never before the stream's start
    seg = Segmenter(dataclasses.replace(CFG, pre_roll_ms=300), BIG)
    assert feed(seg, frames("." * 4 + "1" * 10)) == [(9, SegmentStart(0))]


def test_look_back_is_as_far_as_a_start_may_reach() -> None:
    # a caller (the session) keeps this much audio before every frame for onsets
    assert Segmenter(CFG, BIG).look_back_samples == 10 * FRAME
    assert Segmenter(dataclasses.replace(CFG, pre_roll_ms=300), BIG).look_back_samples == 20 * FRAME


def test_pre_roll_never_reaches_into_the_last_segment() -> None:
    seg = Segmenter(dataclasses.replace(CFG, pre_roll_ms=3000), BIG)
    out = feed(seg, frames("1" * 20 + "." * 30 + "1" * 10))
    first_end = next(b for _, b in out if isinstance(b, SegmentEnd))
    starts = [b for _, b in out if isinstance(b, SegmentStart)]
    assert len(starts) == 2 and starts[0].start == 0
    assert starts[1].start == first_end.end == 20 * FRAME + PAD


def test_start_counts_voiced_frames_not_a_run() -> None:
    seg = Segmenter(CFG, BIG)
    out = feed(seg, frames("." * 20 + "1.1.1.1.1.1" + "1" * 5))
    # frames 20, 22, ..., 30 are voiced, but 20 leaves the 10-frame window at frame 30;
    # frame 31 is the 6th voiced frame of the window of frames 22..31
    assert out == [(31, SegmentStart(22 * FRAME))]


def test_isolated_voiced_frames_do_not_start() -> None:
    seg = Segmenter(CFG, BIG)
    assert feed(seg, frames(("1" + "." * 4) * 40)) == []


def test_start_at_the_very_beginning_is_not_negative() -> None:
    seg = Segmenter(CFG, BIG)
    assert feed(seg, frames("111111")) == [(5, SegmentStart(0))]


def test_end_after_hangover_with_end_padding() -> None:
    seg = Segmenter(CFG, BIG)
    out = feed(seg, frames("." * 10 + "1" * 50 + "." * 40))
    (i0, start), (i1, end) = out
    assert isinstance(start, SegmentStart) and isinstance(end, SegmentEnd)
    last_voiced_end = 60 * FRAME
    # ended once 24 of the last 26 frames are unvoiced (the 24th unvoiced frame) ...
    assert i1 == 59 + 24
    # ... at the end padding after the last voiced frame
    assert end == SegmentEnd(last_voiced_end + PAD, forced=False)
    assert seg.open_start is None
    assert seg.speech_until == last_voiced_end + PAD


def test_short_pauses_do_not_split() -> None:
    seg = Segmenter(CFG, BIG)
    # pauses of 20 frames (600 ms) are shorter than the 800 ms hang-over
    spec = "." * 10 + ("1" * 30 + "." * 20) * 5 + "1" * 30 + "." * 40
    out = feed(seg, frames(spec))
    assert [type(b) for _, b in out] == [SegmentStart, SegmentEnd]


def test_a_long_pause_splits() -> None:
    seg = Segmenter(CFG, BIG)
    spec = "." * 10 + "1" * 30 + "." * 40 + "1" * 30 + "." * 40
    out = feed(seg, frames(spec))
    assert [type(b) for _, b in out] == [SegmentStart, SegmentEnd, SegmentStart, SegmentEnd]
    first_end = out[1][1]
    second_start = out[2][1]
    assert isinstance(first_end, SegmentEnd) and isinstance(second_start, SegmentStart)
    assert second_start.start >= first_end.end


def test_next_start_never_overlaps_the_previous_end() -> None:
    # The end padding reaches into the next start window: the start is clamped.
    cfg = dataclasses.replace(CFG, end_window_ms=300, end_ratio=0.9, end_pad_ms=600)
    seg = Segmenter(cfg, BIG)
    out = feed(seg, frames("1" * 20 + "." * 9 + "1" * 10))
    kinds = [type(b) for _, b in out]
    assert kinds == [SegmentStart, SegmentEnd, SegmentStart]
    end, start = out[1][1], out[2][1]
    assert isinstance(end, SegmentEnd) and isinstance(start, SegmentStart)
    assert start.start == end.end


def test_speech_until() -> None:
    seg = Segmenter(CFG, BIG)
    feed(seg, frames("." * 10 + "1" * 20))
    assert seg.open_start is not None
    assert seg.speech_until == seg.position  # still voiced
    feed(seg, frames("." * 3))
    assert seg.speech_until == 30 * FRAME + 3 * FRAME  # within the end padding
    feed(seg, frames("." * 10))
    assert seg.speech_until == 30 * FRAME + PAD


def test_max_segment_forced_cut_then_start_at_the_same_sample() -> None:
    max_samples = 100 * FRAME
    seg = Segmenter(CFG, max_samples)
    out = feed(seg, frames("1" * 250 + "." * 40))
    kinds = [(type(b).__name__, getattr(b, "forced", None)) for _, b in out]
    assert kinds == [
        ("SegmentStart", None),
        ("SegmentEnd", True), ("SegmentStart", None),
        ("SegmentEnd", True), ("SegmentStart", None),
        ("SegmentEnd", False),
    ]
    s0 = out[0][1]
    assert isinstance(s0, SegmentStart) and s0.start == 0
    for k in (1, 3):
        (i_end, end), (i_start, start) = out[k], out[k + 1]
        assert isinstance(end, SegmentEnd) and isinstance(start, SegmentStart)
        assert i_end == i_start and end.end == start.start == (i_end + 1) * FRAME
        assert end.end - (out[k - 1][1].start) == max_samples  # type: ignore[union-attr]
    last = out[-1][1]
    assert isinstance(last, SegmentEnd) and last.end == 250 * FRAME + PAD


def test_end_condition_wins_over_the_forced_cut() -> None:
    seg = Segmenter(CFG, 40 * FRAME)
    out = feed(seg, frames("1" * 14 + "." * 26))
    assert [b for _, b in out][-1] == SegmentEnd(14 * FRAME + PAD, forced=False)


def test_flush_closes_the_open_segment() -> None:
    seg = Segmenter(CFG, BIG)
    feed(seg, frames("." * 5 + "1" * 30 + "." * 2))
    assert seg.flush() == [SegmentEnd(35 * FRAME + 2 * FRAME, forced=False)]
    assert seg.open_start is None
    assert seg.flush() == []


def test_flush_end_is_at_most_the_padding() -> None:
    seg = Segmenter(CFG, BIG)
    feed(seg, frames("1" * 30 + "." * 20))
    assert seg.flush() == [SegmentEnd(30 * FRAME + PAD, forced=False)]


def test_reset() -> None:
    seg = Segmenter(CFG, BIG)
    feed(seg, frames("1" * 30))
    seg.reset()
    assert (seg.position, seg.open_start, seg.speech_until) == (0, None, 0)
    assert feed(seg, frames("." * 20 + "1" * 10)) == [(25, SegmentStart(16 * FRAME))]


def test_other_frame_lengths() -> None:
    cfg = VadConfig(frame_ms=10, start_window_ms=100, start_ratio=1.0, end_window_ms=50,
                    end_ratio=1.0, end_pad_ms=0)
    seg = Segmenter(cfg, BIG)
    assert seg.frame_samples == 160
    out = feed(seg, frames("." * 3 + "1" * 10 + "." * 5))
    assert [b for _, b in out] == [SegmentStart(3 * 160), SegmentEnd(13 * 160)]


def test_boundaries_do_not_depend_on_how_flags_are_grouped() -> None:
    rng = np.random.default_rng(0)
    # bursts of speech and silence of random length
    spec = "".join(rng.choice(["1", "."]) * int(rng.integers(1, 60)) for _ in range(200))
    flags = frames(spec)
    one = Segmenter(CFG, 300 * FRAME)
    whole = [b for _, b in feed(one, flags)] + one.flush()
    two = Segmenter(CFG, 300 * FRAME)
    parts: list[SegmentStart | SegmentEnd] = []
    pos = 0
    while pos < len(flags):
        n = int(rng.integers(1, 50))
        for f in flags[pos : pos + n]:
            parts.extend(two.step(f))
        pos += n
    parts.extend(two.flush())
    assert whole == parts
    # starts and ends alternate and are in order
    assert [type(b) for b in whole] == [SegmentStart, SegmentEnd] * (len(whole) // 2)
    points = [b.start if isinstance(b, SegmentStart) else b.end for b in whole]
    assert points == sorted(points)


# -- VoiceDetector ----------------------------------------------------------------------


def test_voice_detector_rejects_wrong_frame_lengths() -> None:
    vad = VoiceDetector(3, 30)
    assert vad.frame_samples == 480
    assert vad.is_speech(np.zeros(480, np.float32)) is False
    for bad in (np.zeros(479, np.float32), np.zeros((2, 480), np.float32)):
        with pytest.raises(ValueError, match="480"):
            vad.is_speech(bad)


def test_voice_detector_clips_and_resets(speech_dir: Path) -> None:
    x, _ = sf.read(speech_dir / LIBRI, dtype="float32")
    vad = VoiceDetector(3, 30)
    first = [vad.is_speech(x[i : i + 480]) for i in range(0, 480 * 100, 480)]
    assert any(first)
    vad.reset()
    assert [vad.is_speech(x[i : i + 480]) for i in range(0, 480 * 100, 480)] == first
    loud = np.full(480, 4.0, np.float32)  # out of range: clipped, no overflow
    assert isinstance(vad.is_speech(loud), bool)


# -- whole recordings -------------------------------------------------------------------

#: one of the shared corpus's recordings with a large DC offset
DC_OFFSET_CLIP = "librispeech_trainclean100_251spk_1utt/1363/1363-135842-0000.flac"
LIBRI = "librispeech_testother_10spk/1688/1688-142285-0004.flac"


@pytest.fixture(scope="module")
def padded(speech_dir: Path) -> tuple[np.ndarray, int]:
    """A LibriSpeech utterance with 1 s of silence before and after."""
    x, rate = sf.read(speech_dir / LIBRI, dtype="float32")
    assert rate == SR
    silence = np.zeros(SR, np.float32)
    return np.concatenate([silence, x, silence]), len(x)


def test_find_speech_keeps_speech_and_drops_silence(padded: tuple[np.ndarray, int]) -> None:
    x, n_speech = padded
    spans = find_speech(x, CFG)
    assert spans
    assert all(a < b for a, b in spans)
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))
    first, last = spans[0][0], spans[-1][1]
    # inside the utterance, give or take the start window and end padding
    assert SR - SR * CFG.start_window_ms // 1000 <= first
    assert last <= SR + n_speech + PAD
    found = sum(b - a for a, b in spans)
    assert found >= 0.8 * n_speech
    assert found <= n_speech + SR * 0.5  # most of the 2 s of silence is excluded


def test_extract_speech_joins_the_spans(padded: tuple[np.ndarray, int]) -> None:
    x, _ = padded
    spans = find_speech(x, CFG)
    speech = extract_speech(x, CFG)
    assert speech.dtype == np.float32
    assert len(speech) == sum(b - a for a, b in spans)
    np.testing.assert_array_equal(speech, np.concatenate([x[a:b] for a, b in spans]))


def test_speech_up_to_the_end_is_closed_by_flush(padded: tuple[np.ndarray, int]) -> None:
    x, n_speech = padded
    cut = x[: SR + n_speech - SR // 4]  # ends while speaking
    spans = find_speech(cut, CFG)
    assert spans and spans[-1][1] >= len(cut) - PAD - FRAME


def test_silence_has_no_speech() -> None:
    silence = np.zeros(3 * SR, np.float32)
    assert find_speech(silence, CFG) == []
    out = extract_speech(silence, CFG)
    assert out.dtype == np.float32 and len(out) == 0
    assert find_speech(np.zeros(100, np.float32), CFG) == []  # shorter than one frame


def test_find_speech_accepts_other_dtypes(padded: tuple[np.ndarray, int]) -> None:
    x, _ = padded
    assert find_speech(x.astype(np.float64), CFG) == find_speech(x, CFG)


# -- LevelNormaliser: the VAD's automatic gain ------------------------------------------


def _tone(dbfs: float, n: int = 480) -> np.ndarray:
    """A sine whose RMS level is ``dbfs``."""
    t = np.arange(n) / 16000
    return (np.sqrt(2) * 10 ** (dbfs / 20) * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_level_normaliser_lifts_quiet_speech_to_the_target() -> None:
    norm = LevelNormaliser(-20.0, 30.0, window_frames=100, gate_dbfs=-75.0, min_contrast_db=20.0)
    quiet, pause = _tone(-40.0), _tone(-65.0)  # speech 25 dB above the pauses
    assert LevelNormaliser.level_dbfs(quiet) == pytest.approx(-40.0, abs=0.05)
    for _ in range(10):
        norm.apply(pause)
        out = norm.apply(quiet)
    assert norm.gain_db == pytest.approx(20.0, abs=0.1)
    assert LevelNormaliser.level_dbfs(out) == pytest.approx(-20.0, abs=0.1)


def test_level_normaliser_never_attenuates_and_caps_the_gain() -> None:
    norm = LevelNormaliser(-20.0, 30.0, window_frames=100, gate_dbfs=-75.0, min_contrast_db=20.0)
    loud = _tone(-6.0)
    assert norm.apply(loud) is loud and norm.gain_db == 0.0
    norm = LevelNormaliser(-20.0, 10.0, window_frames=100, gate_dbfs=-75.0, min_contrast_db=0.0)
    norm.apply(_tone(-50.0))
    assert norm.gain_db == pytest.approx(10.0)


def test_level_normaliser_ignores_digital_silence_and_lifts_noise_less_than_speech() -> None:
    norm = LevelNormaliser(-20.0, 40.0, window_frames=100, gate_dbfs=-75.0, min_contrast_db=20.0)
    silence = np.zeros(480, np.float32)
    assert norm.apply(silence) is silence and norm.gain_db == 0.0
    rng = np.random.default_rng(0)
    for _ in range(50):  # steady noise only: at most target - contrast = -40 dBFS
        out = norm.apply((rng.standard_normal(480) * 10 ** (-60 / 20)).astype(np.float32))
    assert LevelNormaliser.level_dbfs(out) <= -40.0 + 2.0  # frame-to-frame spread
    norm.reset()
    assert norm.gain_db == 0.0


def test_level_normaliser_does_not_count_or_lift_a_dc_offset() -> None:
    # a USB microphone's DC offset is no sound: quiet speech on it reads quiet, is lifted
    # like the same speech without it, and the VAD's 16-bit input is not clipped
    quiet, offset = _tone(-40.0), np.float32(-0.12)
    assert LevelNormaliser.level_dbfs(quiet + offset) == pytest.approx(-40.0, abs=0.05)
    plain = LevelNormaliser(-20.0, 30.0, window_frames=100, gate_dbfs=-75.0, min_contrast_db=0.0)
    shifted = LevelNormaliser(-20.0, 30.0, window_frames=100, gate_dbfs=-75.0, min_contrast_db=0.0)
    for _ in range(5):
        want, out = plain.apply(quiet), shifted.apply(quiet + offset)
    assert shifted.gain_db == pytest.approx(plain.gain_db) == pytest.approx(20.0, abs=0.1)
    assert np.allclose(out, want, atol=1e-4) and np.max(np.abs(out)) < 0.2
    # a constant is digital silence: no level, no gain
    assert LevelNormaliser.level_dbfs(np.full(480, 0.3, np.float32)) == -math.inf


def test_level_normaliser_is_causal_and_chunking_free() -> None:
    rng = np.random.default_rng(1)
    frames = [(rng.standard_normal(480) * 10 ** (rng.uniform(-60, -20) / 20)).astype(np.float32)
              for _ in range(40)]
    a = LevelNormaliser(-20.0, 30.0, window_frames=10, gate_dbfs=-75.0, min_contrast_db=20.0)
    gains = [a.update(f) for f in frames]
    b = LevelNormaliser(-20.0, 30.0, window_frames=10, gate_dbfs=-75.0, min_contrast_db=20.0)
    assert [b.update(f) for f in frames[:25]] == gains[:25]  # the future changes nothing


def test_normalised_detector_finds_quiet_real_speech(speech_dir: Path) -> None:
    x, _ = sf.read(speech_dir / LIBRI, dtype="float32")
    x = x[: 16000 * 8]
    quiet = (x * 10 ** (-40 / 20) / np.sqrt(np.mean(x**2))).astype(np.float32)  # -40 dBFS
    cfg = dataclasses.replace(VadConfig(), normalise=True)
    found_off = sum(b - a for a, b in find_speech(quiet, dataclasses.replace(cfg, normalise=False)))
    found_on = sum(b - a for a, b in find_speech(quiet, cfg))
    found_loud = sum(b - a for a, b in find_speech(x, cfg))
    assert found_on > found_off
    assert found_on >= 0.9 * found_loud
    # the caller's audio is not changed by the detector
    before = quiet.copy()
    VoiceDetector.from_config(cfg).is_speech(quiet[:480])
    assert np.array_equal(quiet, before)


def test_normalised_detector_hears_quiet_speech_on_a_dc_offset(speech_dir: Path) -> None:
    # a real LibriSpeech recording whose DC offset (-0.12) is larger than its speech
    x, _ = sf.read(speech_dir / DC_OFFSET_CLIP, dtype="float32")
    assert abs(np.mean(x)) > np.std(x)
    ac = x - np.mean(x)
    quiet = (ac * 10 ** (-40 / 20) / np.sqrt(np.mean(ac**2))).astype(np.float32)
    cfg = dataclasses.replace(VadConfig(), aggressiveness=1, normalise=True)
    found = sum(b - a for a, b in find_speech(quiet, cfg))
    found_dc = sum(b - a for a, b in find_speech(quiet + np.float32(-0.1), cfg))
    assert found > 0.5 * len(x)
    assert found_dc >= 0.95 * found


def test_a_normalised_detector_forgets_its_gain_on_reset() -> None:
    cfg = dataclasses.replace(VadConfig(), normalise=True)
    vad = VoiceDetector.from_config(cfg)
    assert vad.normaliser is not None
    quiet = (np.sin(np.arange(480) / 3) * 0.003).astype(np.float32)
    for _ in range(20):
        vad.is_speech(quiet)
        vad.is_speech(np.zeros(480, np.float32) + 1e-5)
    assert vad.normaliser.gain_db > 0
    vad.reset()
    assert vad.normaliser.gain_db == 0.0
    assert VoiceDetector.from_config(VadConfig()).normaliser is None  # off by default
