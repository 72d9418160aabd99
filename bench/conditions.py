"""Acoustic conditions for the accuracy benchmark: clean close-talk speech made far and noisy.

People enrol from close-talk audio; the room hears them far. Every condition is
deterministic given a string key and a seed (:func:`item_rng`: SHA-256 of seed, condition
and key), so results never depend on processing order. Audio is float mono at 16 kHz;
levels are dBFS = ``20*log10(rms)`` relative to full scale 1.0 (a full-scale sine is
-3.01 dBFS). Units are in the names: ``_s``, ``_ms``, ``_m``, ``_db``, ``_dbfs``.

Conditions (:data:`CONDITIONS`; ranges are uniform draws per item or meeting):

* ``clean``: identity.
* ``room``: far microphone. A shoebox room (:data:`ROOM_SIZES_M`, 4x3x2.7 m up to
  10x7x3.2 m, each side jittered +-5 %), RT60 0.3-0.8 s, talker 1-4 m from the one mic
  (mic 0.8-1.2 m high, heads 1.2-1.6 m, both >= 0.5 m inside the walls); then noise at
  5-20 dB SNR (equal-power sum of real AMI room tone and pink noise); level -40..-25 dBFS.
* ``room_hard``: RT60 0.6-0.8 s, 3-4 m, 0-5 dB SNR, -40..-35 dBFS.
* ``telephone``: pink noise at 20 dB SNR, level -26 dBFS, then :func:`telephone`
  (300-3400 Hz, 8 kHz path, 8-bit mu-law).

Room impulse responses (:func:`room_impulse_response`) are hybrid, direct-path gain 1/d (1 at
1 m, pyroomacoustics' scale): image sources (absorption from ``pra.inverse_sabine``, order capped
at :data:`MAX_ORDER`, complete well past the crossover) up to :data:`MIX_MS` after the
direct path, then a Gaussian tail decaying 60 dB per RT60, energy-matched to the image
sources before it (equal-power crossfade). Why: the full image-source model takes 3.5 s
for 0.8 s in the small room, and in flat rooms it decays slower than asked (10x7x3.2 m at
0.8 s measured T30 1.12 s); the tail makes the measured RT60 the requested one.
:func:`reverberate` removes the direct-path delay so clean timings stay valid.

SNR (:func:`add_noise`) and level (:func:`set_level`) are measured over the speech-active
samples (``speech_mask``: :func:`active_mask` of the *clean* reference, valid for the far
signal because the direct path is aligned), else over the whole signal. Every condition
but ``clean`` (:attr:`Condition.identity`) first takes each clip's DC offset out and, in a
meeting of two or more talkers, brings each clip to one speech level plus its talker's
vocal effort (:func:`as_spoken`), so the SNR and level hold for every talker and not only
for the corpus recorded loudest.

Raises: ``ValueError`` for bad arguments (unknown noise kind, wrong lengths, silent speech
or noise, RT60 impossible for the room); :class:`WouldClipError` (a ``ValueError``) from
:func:`set_level` when the peak would exceed 1.0 -- conditions then lower the level to the
clip-free maximum and report it in ``params["level_reduced_db"]``; ``RuntimeError`` when
no talker position fits the room. ``python bench/conditions.py --demo`` prints a table.
"""

from __future__ import annotations

import hashlib
import math
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyroomacoustics as pra
from scipy import signal

from streamer.evaluation import read_audio, read_rttm

#: Held while pyroomacoustics' global constants are changed and a RIR computed.
_PRA_CONSTANTS = threading.Lock()

SAMPLE_RATE = 16000
SPEED_OF_SOUND_M_S = 343.0
DEFAULT_SPEECH_DIR = Path(__file__).resolve().parents[2] / "shared" / "speech"
ROOM_SIZES_M = ((4.0, 3.0, 2.7), (5.0, 4.0, 2.8), (6.0, 4.5, 3.0), (8.0, 5.0, 3.0), (10.0, 7.0, 3.2))
WALL_MARGIN_M = 0.5
MAX_ORDER = 24  # image sources of order <= 24 cover > 90 ms in the smallest room
MIX_MS = 50.0  # crossover from image sources to the statistical tail, after the direct path
FADE_MS = 10.0
_DIRECT_OFFSET = pra.constants.get("frac_delay_length") // 2  # pyroomacoustics' filter delay
#: Speech level (active RMS, dBFS) of every talker of a meeting before the room, and the
#: range of each talker's own offset from it (vocal effort; drawn once per talker).
TALKER_LEVEL_DBFS = -26.0
VOCAL_EFFORT_DB = (-3.0, 3.0)


class WouldClipError(ValueError):
    """set_level: the scaled signal would peak above full scale (``peak`` = that peak)."""

    def __init__(self, peak: float) -> None:
        super().__init__(f"level would clip: peak {peak:.3f} > 1.0")
        self.peak = peak


def item_rng(key: str, condition: str, seed: int = 0) -> np.random.Generator:
    """A generator seeded from SHA-256 of ``seed``, ``condition`` and ``key``."""
    digest = hashlib.sha256(f"{seed}\0{condition}\0{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


# -- rooms ----------------------------------------------------------------------------------


@dataclass(eq=False)
class Room:
    """A shoebox room, one microphone and talker positions (metres); RIRs cached by talker."""

    dims_m: tuple[float, float, float]
    rt60_s: float
    mic_m: tuple[float, float, float]
    talkers_m: list[tuple[float, float, float]]
    seed: int  # of the late-tail noise
    _rirs: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def distance_m(self, talker: int) -> float:
        return math.dist(self.mic_m, self.talkers_m[talker])


def simulate_room(rng: np.random.Generator, n_talkers: int = 1,
                  rt60_s: tuple[float, float] = (0.3, 0.8),
                  distance_m: tuple[float, float] = (1.0, 4.0)) -> Room:
    """Draw ``n_talkers`` distances uniformly in ``distance_m`` (talkers >= 0.6 m apart),
    then a room of :data:`ROOM_SIZES_M` wide enough for the farthest, RT60 and positions.
    Raises ``RuntimeError`` when the talkers do not fit."""
    dists = rng.uniform(*distance_m, n_talkers)
    fits = [s for s in ROOM_SIZES_M if math.hypot(s[0] - 1.5, s[1] - 1.5) >= dists.max()]
    dims = np.array(fits[rng.integers(len(fits))] if fits else ROOM_SIZES_M[-1])
    dims *= rng.uniform(0.95, 1.05, 3)
    lo, hi = WALL_MARGIN_M, dims - WALL_MARGIN_M
    for _ in range(1000):  # a fresh mic until the talkers fit around it
        mic = np.array([*rng.uniform(lo, hi[:2]), rng.uniform(0.8, 1.2)])
        talkers: list[np.ndarray] = []
        for d in dists:
            for _ in range(50):
                azimuth, head = rng.uniform(0, 2 * np.pi), rng.uniform(1.2, 1.6)
                horizontal = math.sqrt(max(d * d - (head - mic[2]) ** 2, 0.0))
                p = mic + [horizontal * np.cos(azimuth), horizontal * np.sin(azimuth), head - mic[2]]
                if (np.all(p >= lo) and np.all(p <= hi)
                        and all(np.linalg.norm(p - t) >= 0.6 for t in talkers)):
                    talkers.append(p)
                    break
        if len(talkers) == n_talkers:
            return Room(_xyz(dims), float(rng.uniform(*rt60_s)), _xyz(mic),
                        [_xyz(t) for t in talkers], int(rng.integers(2**63)))
    raise RuntimeError(f"{n_talkers} talkers at {dists.round(2)} m do not fit a {dims} m room")


def _xyz(a: np.ndarray) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in np.round(a, 3))
    return x, y, z


def room_impulse_response(room: Room, talker: int) -> np.ndarray:
    """The (cached) hybrid RIR from ``talker`` to the mic, direct gain 1/d (see module doc)."""
    if talker in room._rirs:
        return room._rirs[talker]
    absorption, order = pra.inverse_sabine(room.rt60_s, room.dims_m)  # ValueError if impossible
    shoebox = pra.ShoeBox(room.dims_m, fs=SAMPLE_RATE, materials=pra.Material(absorption),
                          max_order=min(order, MAX_ORDER), air_absorption=False, ray_tracing=False)
    shoebox.add_source(room.talkers_m[talker])
    shoebox.add_microphone(room.mic_m)
    # pyroomacoustics' constants are global: rooms rendered in several threads at once
    # (bench/heldout.py renders meetings with asyncio.to_thread) must not see each
    # other's setting, or a RIR is sometimes computed with the high-pass on.
    with _PRA_CONSTANTS:
        hpf = pra.constants.get("rir_hpf_enable")
        pra.constants.set("rir_hpf_enable", False)  # its zero-phase 10 Hz high-pass rings
        try:  # before the direct path (up to 6 % of the peak); nothing may arrive before it
            shoebox.compute_rir()
        finally:
            pra.constants.set("rir_hpf_enable", hpf)
    early = np.asarray(shoebox.rir[0][0], dtype=np.float64)  # pyroomacoustics: gain 1/d
    direct = direct_path_index(room, talker)
    mix, fade = direct + int(MIX_MS * SAMPLE_RATE / 1000), int(FADE_MS * SAMPLE_RATE / 1000)
    n = mix + int(room.rt60_s * 70 / 60 * SAMPLE_RATE)  # tail down to -70 dB
    early = np.pad(early, (0, max(0, n - len(early))))[:n]
    t_s = (np.arange(n) - mix) / SAMPLE_RATE
    envelope = 10 ** (-3 * t_s / room.rt60_s)  # amplitude: -60 dB per RT60
    ref = slice(mix - 3 * fade, mix)  # match the tail's energy to the image sources there
    gain = math.sqrt(np.mean(early[ref] ** 2) / np.mean(envelope[ref] ** 2))
    tail = gain * envelope * np.random.default_rng([room.seed, talker]).standard_normal(n)
    ramp = np.clip((np.arange(n) - (mix - fade // 2)) / fade, 0.0, 1.0) * (np.pi / 2)
    rir = early * np.cos(ramp) + tail * np.sin(ramp)  # equal-power crossfade
    room._rirs[talker] = rir
    return rir


def direct_path_index(room: Room, talker: int) -> int:
    """Sample index of the direct-path arrival in :func:`room_impulse_response`."""
    return round(room.distance_m(talker) / SPEED_OF_SOUND_M_S * SAMPLE_RATE) + _DIRECT_OFFSET


def direct_peak_index(rir: np.ndarray) -> int:
    """The direct-path peak of any RIR: the largest sample in the 1 ms from the first one
    reaching 10 % of the maximum (coincident reflections can outgrow the direct path)."""
    a = np.abs(np.asarray(rir))
    onset = int(np.argmax(a >= 0.1 * a.max()))
    return onset + int(np.argmax(a[onset:onset + SAMPLE_RATE // 1000]))


def _aligned(x: np.ndarray, rir: np.ndarray, n_out: int) -> np.ndarray:
    """x convolved with rir, advanced by the direct-path peak, ``n_out`` samples long."""
    shift = direct_peak_index(rir)
    y = signal.fftconvolve(np.asarray(x, dtype=np.float64), rir)[shift:shift + n_out]
    return np.pad(y, (0, n_out - len(y)))


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``x`` through ``rir``, as long as ``x``, the direct path aligned with ``x``."""
    return _aligned(x, rir, len(x))


# -- measurements ---------------------------------------------------------------------------


def rt60_schroeder(rir: np.ndarray, fs: int = SAMPLE_RATE) -> tuple[float, float]:
    """(T20, T30) in seconds: Schroeder backward integration, line fitted on -5..-25 dB and
    -5..-35 dB of the decay curve, extrapolated to -60 dB."""
    energy = np.cumsum(np.asarray(rir, dtype=np.float64)[::-1] ** 2)[::-1]
    curve_db = 10 * np.log10(energy / energy[0] + 1e-300)
    t_s = np.arange(len(rir)) / fs
    out = []
    for low_db in (-25.0, -35.0):
        sel = (curve_db <= -5.0) & (curve_db >= low_db)
        out.append(-60.0 / np.polyfit(t_s[sel], curve_db[sel], 1)[0])
    return out[0], out[1]


def drr_db(rir: np.ndarray, fs: int = SAMPLE_RATE, window_ms: float = 2.5) -> float:
    """Direct-to-reverberant ratio: energy within +-``window_ms`` of the peak vs the rest."""
    peak, half = int(np.argmax(np.abs(rir))), int(window_ms * fs / 1000)
    e = np.asarray(rir, dtype=np.float64) ** 2
    direct = e[max(0, peak - half):peak + half + 1].sum()
    return float(10 * np.log10(direct / (e.sum() - direct)))


def active_mask(x: np.ndarray, frame_ms: float = 20.0, floor_db: float = 30.0) -> np.ndarray:
    """Per-sample speech-activity: frames within ``floor_db`` of the loud (99th pct) frames."""
    n = int(frame_ms * SAMPLE_RATE / 1000)
    frames = np.pad(np.asarray(x, np.float64), (0, -len(x) % n)).reshape(-1, n)
    level_db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-20)
    return np.repeat(level_db >= np.percentile(level_db, 99) - floor_db, n)[: len(x)]


def measure_dbfs(x: np.ndarray, speech_mask: np.ndarray | None = None) -> float:
    """RMS of ``x`` (over ``speech_mask``) in dBFS; -inf for silence."""
    sel = np.asarray(x, np.float64) if speech_mask is None else np.asarray(x, np.float64)[speech_mask]
    if sel.size == 0:
        raise ValueError("empty speech mask")
    return float(10 * np.log10(np.mean(sel ** 2))) if np.any(sel) else -math.inf


# -- noise, level, telephone ----------------------------------------------------------------

NOISE_KINDS = ("white", "pink", "brown", "room")


def noise(kind: str, n: int, rng: np.random.Generator, tone: np.ndarray | None = None) -> np.ndarray:
    """``n`` samples of unit-RMS noise: ``white``, ``pink`` (1/f power), ``brown`` (1/f^2;
    both flat below 20 Hz, no DC), or ``room`` (a random excerpt of ``tone``, wrapping)."""
    if kind == "room":
        if tone is None or not np.any(tone):
            raise ValueError("room noise needs a non-silent room tone (room_tone())")
        y = np.take(tone, rng.integers(len(tone)) + np.arange(n), mode="wrap").astype(np.float64)
    elif kind in ("white", "pink", "brown"):
        spectrum = np.fft.rfft(rng.standard_normal(n))
        f_hz = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 20.0)
        spectrum *= f_hz ** -{"white": 0.0, "pink": 0.5, "brown": 1.0}[kind]
        spectrum[0] = 0.0
        y = np.fft.irfft(spectrum, n)
    else:
        raise ValueError(f"unknown noise kind {kind!r}; one of {NOISE_KINDS}")
    return y / np.sqrt(np.mean(y ** 2))


def room_tone_stretches(speech_dir: Path = DEFAULT_SPEECH_DIR, min_gap_s: float = 0.5,
                        margin_s: float = 0.2) -> list[tuple[Path, float, float]]:
    """(recording, start_s, end_s) of the AMI stretches no RTTM turn covers: gaps of at
    least ``min_gap_s`` (file edges count as turn edges), less ``margin_s`` at each end."""
    root = Path(speech_dir) / "ami_pyannote_diarization"
    out = []
    for rec in sorted((root / "recordings").glob("*.flac")):
        end_s = len(read_audio(rec)) / SAMPLE_RATE
        covered = 0.0  # end of the speech covered so far
        for turn in [*read_rttm(root / "rttm" / f"{rec.stem}.rttm"), None]:
            start = end_s if turn is None else turn.start
            if start - covered >= min_gap_s:
                out.append((rec, covered + margin_s, start - margin_s))
            covered = max(covered, end_s if turn is None else turn.end)
    return out


@lru_cache(maxsize=4)
def room_tone(speech_dir: Path = DEFAULT_SPEECH_DIR) -> np.ndarray:
    """Real meeting-room background: :func:`room_tone_stretches` joined (5 ms fades)."""
    parts, fade = [], np.sin(np.linspace(0, np.pi / 2, SAMPLE_RATE // 200)) ** 2
    for rec, start_s, end_s in room_tone_stretches(speech_dir):
        y = read_audio(rec)[round(start_s * SAMPLE_RATE):round(end_s * SAMPLE_RATE)].astype(np.float64)
        y[: len(fade)] *= fade[: len(y)]
        y[len(y) - len(fade):] *= fade[::-1][-len(y):]
        parts.append(y)
    if not parts:
        raise ValueError(f"no room tone found under {speech_dir}")
    return np.concatenate(parts)


def add_noise(x: np.ndarray, noise: np.ndarray, snr_db: float,
              speech_mask: np.ndarray | None = None) -> np.ndarray:
    """``x`` + scaled ``noise`` (same length) so that the power ratio over ``speech_mask``
    (else everything) is ``snr_db``. Raises ``ValueError`` for silent speech or noise."""
    if len(noise) != len(x):
        raise ValueError(f"noise has {len(noise)} samples, speech {len(x)}")
    p_x, p_n = 10 ** (measure_dbfs(x, speech_mask) / 10), 10 ** (measure_dbfs(noise, speech_mask) / 10)
    if p_x == 0 or p_n == 0:
        raise ValueError("silent speech or noise: SNR undefined")
    return np.asarray(x, np.float64) + np.asarray(noise, np.float64) * math.sqrt(p_x / p_n / 10 ** (snr_db / 10))


def set_level(x: np.ndarray, dbfs: float, speech_mask: np.ndarray | None = None) -> np.ndarray:
    """``x`` scaled so its RMS over ``speech_mask`` (else everything) is ``dbfs``. Raises
    ``ValueError`` for silence and :class:`WouldClipError` if the peak would exceed 1.0."""
    current = measure_dbfs(x, speech_mask)
    if not math.isfinite(current):
        raise ValueError("cannot set the level of silence")
    y = np.asarray(x, np.float64) * 10 ** ((dbfs - current) / 20)
    if np.max(np.abs(y)) > 1.0:
        raise WouldClipError(float(np.max(np.abs(y))))
    return y


def as_received(x: np.ndarray) -> np.ndarray:
    """``x`` (float, -1..1) in 16-bit samples as a server receives it, back as float32:
    the quantisation noise fills the empty band above a phone line's 3.4 kHz."""
    return (np.round(np.clip(x, -1.0, 1.0) * 32767) / 32768).astype(np.float32)


def mu_law_codec(y: np.ndarray) -> np.ndarray:
    """``y`` coded to 8-bit mu-law (mu=255, 256 levels) and decoded again. Raises
    ``ValueError`` if ``y`` exceeds full scale."""
    if np.max(np.abs(y), initial=0.0) > 1.0:
        raise ValueError("mu-law input exceeds full scale")
    code = np.round((np.sign(y) * np.log1p(255 * np.abs(y)) / np.log1p(255) + 1) * 127.5)
    c = code / 127.5 - 1  # 256 levels
    out: np.ndarray = np.sign(c) * np.expm1(np.abs(c) * np.log1p(255)) / 255
    return out


def telephone(x: np.ndarray, mu_law: bool = True) -> np.ndarray:
    """G.712-like channel: 300-3400 Hz (8th-order Butterworth, zero-phase), 16k -> 8k ->
    16 kHz (``resample_poly``), optional 8-bit mu-law (mu=255) at 8 kHz. Raises
    ``ValueError`` if mu-law input exceeds full scale."""
    sos = signal.butter(8, [300.0, 3400.0], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    y = signal.resample_poly(signal.sosfiltfilt(sos, np.asarray(x, np.float64)), 1, 2)
    if mu_law:
        y = mu_law_codec(y)
    return signal.resample_poly(y, 2, 1)[: len(x)]


# -- far microphone, meetings, the registry -------------------------------------------------


def _finish(y: np.ndarray, noise: np.ndarray | None, snr_db: float | None,
            level_dbfs: float | None, speech_mask: np.ndarray | None) -> np.ndarray:
    if noise is not None and snr_db is not None:
        y = add_noise(y, noise, snr_db, speech_mask)
    return y if level_dbfs is None else set_level(y, level_dbfs, speech_mask)


def far(x: np.ndarray, room: Room, talker: int, noise: np.ndarray | None = None,
        snr_db: float | None = None, level_dbfs: float | None = None,
        speech_mask: np.ndarray | None = None) -> np.ndarray:
    """``x`` heard at the room's mic from ``talker``: reverberated (direct path aligned),
    plus ``noise`` at ``snr_db``, at ``level_dbfs`` (each step skipped when None)."""
    return _finish(reverberate(x, room_impulse_response(room, talker)), noise, snr_db,
                   level_dbfs, speech_mask)


def as_spoken(clips: Sequence[np.ndarray], talker_of_clip: Sequence[int], key: str,
              condition: str, seed: int = 0) -> list[np.ndarray]:
    """The clips as sound their talkers make in one room, before the room: each clip's mean
    (a DC offset of its recording: one LibriSpeech train-clean clip has -0.12, above its
    speech) removed, and with two or more talkers each clip scaled to
    :data:`TALKER_LEVEL_DBFS` plus its talker's vocal effort (uniform in
    :data:`VOCAL_EFFORT_DB`, one draw per talker from a generator of its own, so the room,
    noise and level draws of ``key`` stay as they were). Why: the source corpora were
    recorded up to 20 dB apart (AISHELL-1 -33..-37 dBFS, VCTK and Speech Commands
    -17..-20), which a room would not add, and a noise level set against the whole mix
    would leave the quietest corpus's talkers far below the condition's SNR; a DC offset
    would count as speech level. One talker: only the mean is removed (what follows sets
    the level). Silent clips stay silent."""
    clips = [x - x.mean() if len(x) else x for x in (np.asarray(c, np.float64) for c in clips)]
    if len(set(talker_of_clip)) < 2:
        return clips
    rng = item_rng(key, condition + ":effort", seed)
    effort_db = {t: float(rng.uniform(*VOCAL_EFFORT_DB)) for t in sorted(set(talker_of_clip))}
    out = []
    for clip, talker in zip(clips, talker_of_clip, strict=True):
        level = measure_dbfs(clip, active_mask(clip)) if len(clip) else -math.inf
        gain_db = TALKER_LEVEL_DBFS + effort_db[talker] - level
        out.append(clip * 10 ** (gain_db / 20) if math.isfinite(level) else clip)
    return out


def far_meeting(clips: Sequence[np.ndarray], starts_samples: Sequence[int],
                talker_of_clip: Sequence[int], room: Room, n_samples: int | None = None,
                noise: np.ndarray | None = None, snr_db: float | None = None,
                level_dbfs: float | None = None,
                speech_mask: np.ndarray | None = None) -> np.ndarray:
    """A stitched meeting at the mic: each clip through its talker's RIR, placed at its start
    (direct path aligned, so the clean timings stay valid), reverb tails running on into
    what follows; the timeline is ``n_samples`` long (default: to the last clip's end).
    Then ``noise`` (``n_samples`` long) at ``snr_db`` and ``level_dbfs`` on the whole."""
    n = n_samples or max(s + len(c) for c, s in zip(clips, starts_samples, strict=True))
    y = np.zeros(n)
    for clip, start, talker in zip(clips, starts_samples, talker_of_clip, strict=True):
        if start < n:
            y[start:] += _aligned(clip, room_impulse_response(room, talker), n - start)
    return _finish(y, noise, snr_db, level_dbfs, speech_mask)


class Rendered(NamedTuple):
    audio: np.ndarray  # float32
    params: dict[str, Any]  # what was drawn: rt60_s, distance_m, snr_db, level_dbfs, ...


@dataclass(frozen=True)
class Condition:
    """Ranges (lo, hi) drawn uniformly per item or meeting; None skips that step."""

    name: str
    rt60_s: tuple[float, float] | None = None
    distance_m: tuple[float, float] = (1.0, 4.0)
    snr_db: tuple[float, float] | None = None
    level_dbfs: tuple[float, float] | None = None
    noise_kinds: tuple[str, ...] = ()
    phone: bool = False

    @property
    def identity(self) -> bool:
        """True for a condition that changes nothing (``clean``)."""
        return (self.rt60_s is None and self.snr_db is None and self.level_dbfs is None
                and not self.phone)

    def apply(self, x: np.ndarray, key: str, seed: int = 0,
              tone: np.ndarray | None = None) -> Rendered:
        """One utterance (``key``: e.g. its path) under this condition; same length."""
        return self.apply_meeting([x], [0], [0], key, len(x), seed, tone)

    def apply_meeting(self, clips: Sequence[np.ndarray], starts_samples: Sequence[int],
                      talker_of_clip: Sequence[int], key: str, n_samples: int | None = None,
                      seed: int = 0, tone: np.ndarray | None = None) -> Rendered:
        """A stitched meeting (see :func:`far_meeting`); one room for all its talkers.
        ``tone`` defaults to :func:`room_tone` of :data:`DEFAULT_SPEECH_DIR`."""
        rng = item_rng(key, self.name, seed)
        n = n_samples or max(s + len(c) for c, s in zip(clips, starts_samples, strict=True))
        if not self.identity:
            clips = as_spoken(clips, talker_of_clip, key, self.name, seed)
        clean, mask = np.zeros(n), np.zeros(n, dtype=bool)
        for clip, start in zip(clips, starts_samples, strict=True):
            clean[start:start + len(clip)] += clip[: n - start]
            mask[start:start + len(clip)] |= active_mask(clip)[: n - start]
        params: dict[str, Any] = {}
        y = clean
        if self.rt60_s is not None:
            room = simulate_room(rng, max(talker_of_clip) + 1, self.rt60_s, self.distance_m)
            y = far_meeting(clips, starts_samples, talker_of_clip, room, n)
            params |= {"room_m": room.dims_m, "rt60_s": round(room.rt60_s, 3),
                       "distance_m": [round(room.distance_m(t), 2)
                                      for t in range(len(room.talkers_m))]}
        if self.snr_db is not None:
            if "room" in self.noise_kinds and tone is None:
                tone = room_tone()
            mix = sum(noise(kind, n, rng, tone) for kind in self.noise_kinds)
            params["snr_db"] = round(float(rng.uniform(*self.snr_db)), 2)
            y = add_noise(y, np.asarray(mix), params["snr_db"], mask)
        if self.level_dbfs is not None:
            params["level_dbfs"] = round(float(rng.uniform(*self.level_dbfs)), 2)
            try:
                y = set_level(y, params["level_dbfs"], mask)
            except WouldClipError as e:
                params["level_reduced_db"] = 20 * math.log10(e.peak / 0.999)
                params["level_dbfs"] -= params["level_reduced_db"]
                y = set_level(y, params["level_dbfs"], mask)
        if self.phone:
            y = telephone(y)
        return Rendered(y.astype(np.float32), params)


CONDITIONS: dict[str, Condition] = {c.name: c for c in (
    Condition("clean"),
    Condition("room", (0.3, 0.8), (1.0, 4.0), (5.0, 20.0), (-40.0, -25.0), ("room", "pink")),
    Condition("room_hard", (0.6, 0.8), (3.0, 4.0), (0.0, 5.0), (-40.0, -35.0), ("room", "pink")),
    Condition("telephone", None, (1.0, 4.0), (20.0, 20.0), (-26.0, -26.0), ("pink",), True),
)}


def _demo(speech_dir: Path = DEFAULT_SPEECH_DIR, n_items: int = 6) -> None:
    """Print requested vs measured RT60, DRR, SNR and level for a few LibriSpeech items."""
    from streamer.evaluation import load_manifest

    tone, cond = room_tone(speech_dir), CONDITIONS["room"]
    print("| item | room m | dist m | RT60 s asked | T20 / T30 s | DRR dB | SNR dB asked / got"
          " | level dBFS asked / got |\n|---|---|---|---|---|---|---|---|")
    for utt in load_manifest(speech_dir / "librispeech_testother_10spk")[::17][:n_items]:
        x, key = read_audio(utt.path), utt.path.name
        rng = item_rng(key, cond.name)
        room = simulate_room(rng, 1, cond.rt60_s, cond.distance_m)
        rir, mask = room_impulse_response(room, 0), active_mask(x)
        snr, level = rng.uniform(*cond.snr_db), rng.uniform(*cond.level_dbfs)
        wet = reverberate(x, rir)
        noisy = add_noise(wet, noise("room", len(x), rng, tone) + noise("pink", len(x), rng),
                          snr, mask)
        out = set_level(noisy, level, mask)
        got_snr = measure_dbfs(wet, mask) - measure_dbfs(noisy - wet, mask)
        t20, t30 = rt60_schroeder(rir)
        print(f"| {key} | {'x'.join(f'{d:.1f}' for d in room.dims_m)} | {room.distance_m(0):.2f}"
              f" | {room.rt60_s:.2f} | {t20:.2f} / {t30:.2f} | {drr_db(rir):+.1f}"
              f" | {snr:.1f} / {got_snr:.1f} | {level:.1f} / {measure_dbfs(out, mask):.1f} |")


if __name__ == "__main__":
    if "--demo" not in sys.argv[1:]:
        sys.exit(__doc__)
    _demo()
