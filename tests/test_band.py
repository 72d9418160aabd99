"""streamer.band: telling speech that came through a phone line from wideband speech.

Real speech (LibriSpeech test-other, Common Voice, Speech Commands from
``../shared/speech``) as recorded, and the same speech through the benchmark's G.712-like
phone line (``bench.conditions.telephone``) and the server's 16-bit samples.
"""

from __future__ import annotations

import numpy as np
import pytest
from server_support import SPEECH_DIR, manifest, read_flac

from bench.conditions import as_received, telephone
from streamer.band import high_band_db, line_of
from streamer.config import EnrollConfig, load_config
from streamer.segmenter import find_speech

LIMIT_DB = EnrollConfig().telephone_below_db
SETS = ("librispeech_testother_10spk", "commonvoice_fa", "speechcommands_v002test_80spk")


def speech_of(x: np.ndarray) -> np.ndarray:
    """The detected speech, after the server's 16-bit samples."""
    x = as_received(x)
    spans = find_speech(x, load_config(None).vad)
    return np.concatenate([x[a:b] for a, b in spans])


def phone(x: np.ndarray) -> np.ndarray:
    """``x`` at a -6 dBFS peak through the phone line (its filter may overshoot)."""
    return telephone(0.5 * x / np.max(np.abs(x)))


def recordings(per_set: int = 4) -> list[np.ndarray]:
    out = []
    for name in SETS:
        rows = manifest(SPEECH_DIR / name)
        step = max(1, len(rows) // per_set)
        out += [read_flac(path) for path, _, _ in rows[::step][:per_set]]
    return out


def test_phone_line_speech_is_told_from_wideband_speech() -> None:
    assert LIMIT_DB is not None
    for x in recordings():
        wide, narrow = high_band_db(speech_of(x)), high_band_db(speech_of(phone(x)))
        assert wide > LIMIT_DB + 2, wide
        assert narrow < LIMIT_DB - 2, narrow
        assert narrow < wide - 10
        assert line_of(speech_of(x), LIMIT_DB) == "wideband"
        assert line_of(speech_of(phone(x)), LIMIT_DB) == "telephone"
        assert line_of(speech_of(phone(x)), None) == "wideband"  # the check is off


def test_silence_and_scraps_are_no_evidence() -> None:
    assert high_band_db(np.zeros(0, np.float32)) == 0.0
    assert high_band_db(np.zeros(16000, np.float32)) == 0.0
    assert high_band_db(np.ones(100, np.float32)) == 0.0  # shorter than one frame
    assert line_of(np.zeros(16000, np.float32), LIMIT_DB) == "wideband"


def test_a_rate_without_the_high_band_is_an_error() -> None:
    with pytest.raises(ValueError, match="8000 Hz"):
        high_band_db(np.zeros(8000, np.float32), sample_rate=8000)
