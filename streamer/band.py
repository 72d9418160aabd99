"""Which line did the speech come through? Pure (numpy only, no I/O).

A phone line passes 300-3400 Hz and resamples through 8 kHz, so speech that came
through one has next to nothing above 4 kHz, while speech recorded wideband (a laptop,
a headset, a table microphone 4 m away in a reverberant room) always has some: fricatives
and breath reach 7 kHz. :func:`high_band_db` measures that as one number, the energy of
4.2-7.5 kHz relative to 0.3-3.4 kHz, and :func:`line_of` compares it with
``enroll.telephone_below_db``.

Measured on the tune half of ``../shared/speech`` through the server's 16-bit path
(``bench/heldout.py``'s items, docs/accuracy.md "The telephone band"): wideband speech,
clean or in the room condition, never below -39.3 dB; the telephone condition never
above -43.8 dB. Wideband noise added *after* the line (a speakerphone in a noisy room)
fills the empty band and makes the line look wideband; the check then keeps the model,
which is what happened before it existed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["HIGH_BAND_HZ", "LOW_BAND_HZ", "high_band_db", "line_of"]

#: The band a phone line removes and the band it keeps (Hz).
HIGH_BAND_HZ = (4200.0, 7500.0)
LOW_BAND_HZ = (300.0, 3400.0)
#: Analysis frame (samples at 16 kHz: 32 ms), hopped by half a frame.
_FRAME = 512
#: Returned for silence or speech too short to measure (one frame): "no evidence".
_NO_EVIDENCE_DB = 0.0


def high_band_db(speech: np.ndarray, sample_rate: int = 16000) -> float:
    """Energy of 4.2-7.5 kHz over energy of 0.3-3.4 kHz in ``speech`` (mono float
    samples of detected speech), in dB: around -25 for wideband speech, below -45 after a
    phone line. Speech shorter than one 32 ms frame, or silent, gives 0.0 (wideband).

    Call on the joined speech of a request, not on raw audio (silence would measure the
    noise floor). Raises ``ValueError`` for a sample rate that cannot hold the high band.
    """
    if sample_rate < 2 * HIGH_BAND_HZ[1]:
        raise ValueError(f"a {sample_rate} Hz signal has no {HIGH_BAND_HZ[1]:g} Hz band")
    x = np.asarray(speech, dtype=np.float32)
    frame = max(16, round(_FRAME * sample_rate / 16000))
    if len(x) < frame:
        return _NO_EVIDENCE_DB
    hop = frame // 2
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[::hop] * np.hanning(frame)
    power = np.mean(np.abs(np.fft.rfft(frames, axis=1)) ** 2, axis=0)
    freq = np.fft.rfftfreq(frame, 1.0 / sample_rate)
    high = float(power[(freq >= HIGH_BAND_HZ[0]) & (freq <= HIGH_BAND_HZ[1])].sum())
    low = float(power[(freq >= LOW_BAND_HZ[0]) & (freq <= LOW_BAND_HZ[1])].sum())
    if low <= 0.0:
        return _NO_EVIDENCE_DB
    return 10.0 * float(np.log10(max(high, 1e-30) / low))


def line_of(speech: np.ndarray, below_db: float | None, sample_rate: int = 16000) -> str:
    """``"telephone"`` when ``speech``'s :func:`high_band_db` is at or below ``below_db``
    (``enroll.telephone_below_db``), else ``"wideband"``; always ``"wideband"`` when
    ``below_db`` is None (the check is off)."""
    if below_db is None:
        return "wideband"
    return "telephone" if high_band_db(speech, sample_rate) <= below_db else "wideband"
