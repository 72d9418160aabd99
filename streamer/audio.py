"""Audio in: PCM conversion, streaming resampling, exact framing and audio files (pure).

Inside the server all audio is float32 mono at 16 kHz
(:data:`~streamer.units.MODEL_SAMPLE_RATE`), values in [-1, 1]. A live stream goes::

    x = pcm_to_float(chunk, hello.format, hello.channels)   # BadAudio on a partial sample
    y = resampler.process(x)                                 # StreamResampler, one per stream
    for frame in framer.push(y): ...                         # Framer: exact VAD frames
    ...
    tail = resampler.flush()                                 # at end of stream

and a request's audio goes through :func:`decode_file` (WAV, FLAC, OGG, MP3) or
:func:`pcm_to_float` + :func:`resample`.

Results never depend on how a stream is cut into chunks: :class:`StreamResampler`
wraps ``soxr.ResampleStream``, whose output for any chunking is bit-identical to
feeding the whole signal at once (checked for 8000, 22050, 24000, 32000, 44100 and
48000 Hz with random chunks of 1..5000 samples, and one sample at a time, in
``tests/test_audio.py``), and :class:`Framer` keeps the remainder between pushes.
:func:`resample` uses the same stream, so whole-file and streamed audio match.
"""

from __future__ import annotations

import io
import math
import os
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from .errors import BadAudio, TooLarge
from .units import MODEL_SAMPLE_RATE

__all__ = [
    "MAX_FILE_CHANNELS",
    "MAX_FILE_RATE",
    "MIN_FILE_RATE",
    "RESAMPLE_QUALITY",
    "SAMPLE_WIDTH",
    "Framer",
    "StreamResampler",
    "decode_file",
    "float_to_s16le",
    "level_dbfs",
    "pcm_to_float",
    "read_file",
    "resample",
]

#: Bytes per sample of each PCM format of the protocol.
SAMPLE_WIDTH = {"s16le": 2, "f32le": 4}
#: soxr quality: "HQ" is 20-bit precision with a steep anti-alias filter, far beyond
#: what a speaker-embedding model can tell apart, at a fraction of "VHQ"'s cost.
RESAMPLE_QUALITY = "HQ"
#: Sample rates (Hz) accepted in audio files; outside this range is not speech audio.
MIN_FILE_RATE = 4000
MAX_FILE_RATE = 384000
#: Most channels accepted in an audio file (they are averaged to mono).
MAX_FILE_CHANNELS = 32

# s16le full scale: -32768 maps to -1.0 exactly, 32767 to 1 - 2**-15.
_S16_SCALE = 32768.0
# Samples (frames x channels) read per block when decoding a file: bounds the memory
# used beyond the mono result to 1 MiB of float32.
_BLOCK_SAMPLES = 1 << 18
_DTYPES: dict[str, np.dtype[Any]] = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}


def pcm_to_float(data: bytes | bytearray | memoryview, fmt: str, channels: int) -> np.ndarray:
    """Convert interleaved PCM to float32 mono in [-1, 1].

    Call it on each ``audio`` chunk (or request ``pcm``) with the format from
    ``hello``. ``s16le`` is divided by 32768; ``f32le`` is checked and clipped to
    [-1, 1]; two channels are averaged. Returns a new array (never a view of ``data``).

    Raises:
        BadAudio: ``len(data)`` is not a multiple of the sample width times
            ``channels``, ``f32le`` holds NaN or infinite values, or ``fmt`` /
            ``channels`` is unsupported.
    """
    dtype = _DTYPES.get(fmt)
    if dtype is None:
        raise BadAudio(f"unsupported sample format {fmt!r}; use s16le or f32le")
    if channels not in (1, 2):
        raise BadAudio(f"unsupported channel count {channels!r}; use 1 or 2")
    size = memoryview(data).nbytes
    frame_bytes = dtype.itemsize * channels
    if size % frame_bytes:
        raise BadAudio(
            f"pcm holds {size} bytes, which is not a multiple of {frame_bytes} bytes "
            f"({fmt} x {channels} channel(s))"
        )
    raw = np.frombuffer(data, dtype=dtype)
    x: np.ndarray
    if fmt == "s16le":
        x = raw.astype(np.float32) / np.float32(_S16_SCALE)
    else:
        if not np.isfinite(raw).all():
            raise BadAudio("f32le pcm holds NaN or infinite samples")
        x = np.clip(raw, -1.0, 1.0).astype(np.float32, copy=False)
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return x


def level_dbfs(x: np.ndarray) -> float:
    """RMS level of ``x`` about its mean, in dBFS (full scale 1.0); ``-inf`` for empty audio
    or digital silence. Call for any level the server reports or acts on.

    The mean is left out: a DC offset (many USB microphones and sound cards have one)
    carries no sound, and counted it would make quiet speech read as loud.
    """
    if len(x) == 0:
        return -math.inf
    x64 = np.asarray(x, dtype=np.float64)
    power = float(np.mean(np.square(x64 - x64.mean())))
    return 10.0 * math.log10(power) if power > 0.0 else -math.inf


def float_to_s16le(x: np.ndarray) -> bytes:
    """Convert float samples to s16le bytes (clients, tests, stored enrolment audio).

    Values are clipped to [-1, 1], scaled by 32768 and rounded, so ``s16le`` bytes
    survive ``float_to_s16le(pcm_to_float(b, "s16le", 1)) == b``. NaN becomes 0.
    """
    y = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0)
    y = np.clip(np.round(y * _S16_SCALE), -_S16_SCALE, _S16_SCALE - 1)
    return y.astype("<i2").tobytes()


def _mono_f32(x: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"expected a 1-D array of mono samples, got shape {a.shape}")
    return a


class StreamResampler:
    """Resample one stream to ``out_rate`` (16 kHz), independent of chunking.

    One per stream (it has state). Call :meth:`process` on each chunk, then
    :meth:`flush` at the end of the stream for the samples still in the filter.
    The concatenated output equals resampling the whole signal at once, and its
    length is ``round(n_in * out_rate / in_rate)`` (within one sample). When
    ``in_rate == out_rate`` it does nothing: :meth:`process` returns its input.

    Raises:
        ValueError: a rate is not a positive integer (a programming error; rates
            from the wire are validated by :mod:`streamer.wire`).
    """

    def __init__(self, in_rate: int, out_rate: int = MODEL_SAMPLE_RATE) -> None:
        for name, rate in (("in_rate", in_rate), ("out_rate", out_rate)):
            if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
                raise ValueError(f"{name} must be a positive integer (Hz), got {rate!r}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream: Any = None
        if in_rate != out_rate:
            self._stream = soxr.ResampleStream(
                in_rate, out_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY
            )

    @property
    def identity(self) -> bool:
        """True when no resampling happens (the rates are equal)."""
        return self._stream is None

    def process(self, x: np.ndarray) -> np.ndarray:
        """Resample a chunk of float32 mono samples; returns what is ready (maybe empty).

        Raises:
            ValueError: ``x`` is not 1-D.
        """
        x = _mono_f32(x)
        if self._stream is None:
            return x
        out: np.ndarray = self._stream.resample_chunk(x, last=False)
        return out

    def flush(self) -> np.ndarray:
        """End of stream: return the remaining samples and start over.

        After it the resampler is as new (as after :meth:`reset`), ready for another
        stream.
        """
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        out: np.ndarray = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._stream.clear()
        return out

    def reset(self) -> None:
        """Drop buffered samples; the next :meth:`process` starts a new stream."""
        if self._stream is not None:
            self._stream.clear()


class Framer:
    """Cut a stream of samples into exact frames of ``frame_samples``, whatever the chunks.

    One per stream. :meth:`push` returns the whole frames completed so far and keeps
    the remainder (:attr:`pending` samples) for the next push. Frames are new arrays,
    never views of the caller's input.

    Raises:
        ValueError: ``frame_samples`` is not a positive integer.
    """

    def __init__(self, frame_samples: int) -> None:
        if (not isinstance(frame_samples, int) or isinstance(frame_samples, bool)
                or frame_samples <= 0):
            raise ValueError(f"frame_samples must be a positive integer, got {frame_samples!r}")
        self.frame_samples = frame_samples
        self._rest = np.zeros(0, dtype=np.float32)

    @property
    def pending(self) -> int:
        """Samples kept for the next frame (always < ``frame_samples``)."""
        return len(self._rest)

    def push(self, x: np.ndarray) -> np.ndarray:
        """Add samples; return the completed frames, shape ``(n, frame_samples)`` float32.

        ``n`` may be 0. Iterating over the result yields one frame at a time.

        Raises:
            ValueError: ``x`` is not 1-D.
        """
        x = _mono_f32(x)
        buf = np.concatenate((self._rest, x))
        n = len(buf) // self.frame_samples
        cut = n * self.frame_samples
        self._rest = buf[cut:].copy()
        return buf[:cut].reshape(n, self.frame_samples)

    def reset(self) -> None:
        """Drop the pending samples."""
        self._rest = np.zeros(0, dtype=np.float32)


def resample(x: np.ndarray, in_rate: int, out_rate: int = MODEL_SAMPLE_RATE) -> np.ndarray:
    """Resample a whole signal (float32 mono); the same result as a :class:`StreamResampler`.

    Raises:
        ValueError: ``x`` is not 1-D or a rate is not a positive integer.
    """
    stream = StreamResampler(in_rate, out_rate)
    head = stream.process(x)
    if stream.identity:
        return head
    return np.concatenate((head, stream.flush()))


def _open_error(what: str) -> BadAudio:
    return BadAudio(f"could not decode the audio file: {what}")


def _decode(source: Any, max_seconds: float | None) -> np.ndarray:
    try:
        with sf.SoundFile(source) as f:
            rate = int(f.samplerate)
            channels = int(f.channels)
            declared = int(f.frames)
            if not MIN_FILE_RATE <= rate <= MAX_FILE_RATE:
                raise _open_error(
                    f"its sample rate of {rate} Hz is outside {MIN_FILE_RATE}..{MAX_FILE_RATE} Hz"
                )
            if not 1 <= channels <= MAX_FILE_CHANNELS:
                raise _open_error(f"it has {channels} channels, more than {MAX_FILE_CHANNELS}")
            limit = None
            if max_seconds is not None:
                limit = int(max_seconds * rate)
                # The header's length is checked before decoding anything ...
                if declared > limit:
                    raise _too_long(declared / rate, max_seconds)
            parts = []
            total = 0
            block_frames = _BLOCK_SAMPLES // channels
            while True:
                block = f.read(block_frames, dtype="float32", always_2d=True)
                if not len(block):
                    break
                mono = block[:, 0] if channels == 1 else block.mean(axis=1, dtype=np.float32)
                parts.append(mono)
                total += len(block)
                # ... and the decoded length too, in case the header understates it.
                if max_seconds is not None and limit is not None and total > limit:
                    raise _too_long(total / rate, max_seconds)
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError, EOFError):
        # libsndfile's messages name internal objects; the sentence stays generic.
        raise _open_error("it is not a readable WAV, FLAC, OGG or MP3 file") from None
    if total == 0:
        raise _open_error("it holds no samples")
    x = np.concatenate(parts)
    if not np.isfinite(x).all():
        raise _open_error("it holds NaN or infinite samples")
    np.clip(x, -1.0, 1.0, out=x)
    return resample(x, rate, MODEL_SAMPLE_RATE)


def _too_long(seconds: float, max_seconds: float) -> TooLarge:
    return TooLarge(
        f"the audio lasts {seconds:.1f} s, longer than the limit of {max_seconds:g} s"
    )


def decode_file(data: bytes, max_seconds: float | None = None) -> np.ndarray:
    """Decode a WAV, FLAC, OGG or MP3 file's bytes to float32 mono 16 kHz in [-1, 1].

    Call it on request audio (``"audio"``). Channels are averaged; any rate in
    ``MIN_FILE_RATE..MAX_FILE_RATE`` is resampled with :func:`resample`.

    Args:
        data: the whole file.
        max_seconds: longest audio accepted; ``None`` disables the limit. The header's
            length is checked before decoding, and decoding stops at the limit.

    Raises:
        BadAudio: the bytes are empty, not a supported file, corrupt, hold no samples
            or non-finite samples, or have an unsupported sample rate or more than
            ``MAX_FILE_CHANNELS`` channels.
        TooLarge: the audio is longer than ``max_seconds``.
    """
    if not data:
        raise _open_error("it is empty")
    return _decode(io.BytesIO(data), max_seconds)


def read_file(path: str | os.PathLike[str], max_seconds: float | None = None) -> np.ndarray:
    """Read an audio file from disk like :func:`decode_file` (clients, CLI, tests).

    Raises:
        BadAudio, TooLarge: as :func:`decode_file`.
        OSError: the file cannot be opened (missing, no permission).
    """
    with open(path, "rb") as fh:
        return _decode(fh, max_seconds)
