"""streamer.audio: PCM conversion, chunking-invariant resampling and framing, audio files.

Real speech comes from ``../shared/speech`` (16 kHz FLAC). Other input rates are made
by resampling that speech, since the corpus has only 16 kHz files.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given
from hypothesis import strategies as st

from streamer import audio
from streamer.audio import Framer, StreamResampler, level_dbfs
from streamer.errors import BadAudio, TooLarge

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"
# 15.0 s of read English, 16 kHz mono FLAC.
SPEECH_FILE = SPEECH / "librispeech_testother_10spk" / "1688" / "1688-142285-0000.flac"
RATES = (8000, 22050, 24000, 32000, 44100, 48000)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    assert SPEECH_FILE.exists(), f"real speech not found at {SPEECH_FILE}"
    x, rate = sf.read(SPEECH_FILE, dtype="float32")
    assert rate == 16000 and x.ndim == 1
    return np.asarray(x, dtype=np.float32)


def random_chunks(x: np.ndarray, rng: np.random.Generator, low: int = 1, high: int = 5000
                  ) -> list[np.ndarray]:
    """Cut ``x`` at random points into chunks of ``low..high`` samples."""
    chunks, i = [], 0
    while i < len(x):
        n = int(rng.integers(low, high + 1))
        chunks.append(x[i:i + n])
        i += n
    return chunks


def stream(resampler: StreamResampler, chunks: list[np.ndarray]) -> np.ndarray:
    """Feed chunks through a stream resampler and flush, as a session does."""
    out = [resampler.process(c) for c in chunks]
    out.append(resampler.flush())
    return np.concatenate(out)


def encode_file(x: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def bad_audio(fn: Any, *args: Any, **kwargs: Any) -> BadAudio:
    with pytest.raises(BadAudio) as info:
        fn(*args, **kwargs)
    err = info.value
    assert err.code == "bad_audio" and err.close_code == 1003
    assert "\n" not in str(err)
    return err


# -- PCM conversion ---------------------------------------------------------------------


class TestPcm:
    def test_s16le_values(self) -> None:
        ints = np.array([-32768, -16384, -1, 0, 1, 16384, 32767], dtype="<i2")
        x = audio.pcm_to_float(ints.tobytes(), "s16le", 1)
        assert x.dtype == np.float32
        np.testing.assert_array_equal(x, ints.astype(np.float64) / 32768)
        assert x[0] == -1.0 and x[-1] == np.float32(32767 / 32768)

    def test_f32le_values_are_clipped(self) -> None:
        vals = np.array([0.5, -0.25, 0.0, 2.0, -3.0, 1.0], dtype="<f4")
        x = audio.pcm_to_float(vals.tobytes(), "f32le", 1)
        assert x.dtype == np.float32
        np.testing.assert_array_equal(x, [0.5, -0.25, 0.0, 1.0, -1.0, 1.0])

    def test_stereo_downmix(self) -> None:
        frames = np.array([[1000, 3000], [-32768, 32767], [0, -2]], dtype="<i2")
        x = audio.pcm_to_float(frames.tobytes(), "s16le", 2)  # interleaved L R L R ...
        np.testing.assert_allclose(x, frames.mean(axis=1) / 32768, rtol=0, atol=1e-7)
        f = np.array([[0.5, -0.5], [0.25, 0.75]], dtype="<f4")
        np.testing.assert_array_equal(audio.pcm_to_float(f.tobytes(), "f32le", 2), [0.0, 0.5])

    def test_empty_and_buffer_types(self) -> None:
        assert audio.pcm_to_float(b"", "s16le", 2).shape == (0,)
        data = np.array([1, 2], dtype="<i2").tobytes()
        for buf in (bytearray(data), memoryview(data)):
            np.testing.assert_array_equal(audio.pcm_to_float(buf, "s16le", 1),
                                          [1 / 32768, 2 / 32768])

    def test_result_is_writable_and_independent(self) -> None:
        data = np.array([0.5], dtype="<f4").tobytes()
        x = audio.pcm_to_float(data, "f32le", 1)
        x[0] = 0.0  # frombuffer views are read-only; the result must be a new array
        assert audio.pcm_to_float(data, "f32le", 1)[0] == 0.5

    @pytest.mark.parametrize(
        "size, fmt, channels, frame_bytes",
        [(3, "s16le", 1, 2), (1, "s16le", 1, 2), (6, "s16le", 2, 4), (2, "f32le", 1, 4),
         (12, "f32le", 2, 8)],
    )
    def test_partial_sample(self, size: int, fmt: str, channels: int, frame_bytes: int) -> None:
        err = bad_audio(audio.pcm_to_float, b"\x00" * size, fmt, channels)
        assert f"{size} bytes" in str(err) and f"{frame_bytes} bytes" in str(err)

    @pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
    def test_non_finite_f32(self, value: float) -> None:
        data = np.array([0.0, value, 0.1], dtype="<f4").tobytes()
        err = bad_audio(audio.pcm_to_float, data, "f32le", 1)
        assert "NaN" in str(err)

    def test_unsupported_format_and_channels(self) -> None:
        bad_audio(audio.pcm_to_float, b"\x00\x00", "s24le", 1)
        bad_audio(audio.pcm_to_float, b"\x00\x00" * 3, "s16le", 3)

    def test_float_to_s16le(self) -> None:
        data = audio.float_to_s16le(np.array([0.0, 0.5, -1.0, 2.0, -2.0, np.nan, 1.0]))
        np.testing.assert_array_equal(np.frombuffer(data, "<i2"),
                                      [0, 16384, -32768, 32767, -32768, 0, 32767])

    @given(st.binary(max_size=200).filter(lambda b: len(b) % 2 == 0))
    def test_s16le_roundtrip(self, data: bytes) -> None:
        assert audio.float_to_s16le(audio.pcm_to_float(data, "s16le", 1)) == data


# -- resampling -------------------------------------------------------------------------


class TestStreamResampler:
    @pytest.mark.parametrize("rate", RATES)
    def test_chunking_invariance_on_speech(self, speech: np.ndarray, rate: int) -> None:
        x = audio.resample(speech, 16000, rate)
        assert len(x) == round(len(speech) * rate / 16000)
        whole = stream(StreamResampler(rate), [x])
        rng = np.random.default_rng(rate)
        for _ in range(3):
            cut = stream(StreamResampler(rate), random_chunks(x, rng))
            # soxr's stream is exactly chunking-invariant: bit-identical output.
            np.testing.assert_array_equal(cut, whole)
        assert whole.dtype == np.float32
        assert abs(len(whole) - round(len(x) * 16000 / rate)) <= 1
        # the whole-signal function gives the same samples
        np.testing.assert_array_equal(audio.resample(x, rate), whole)

    @pytest.mark.parametrize("rate", [8000, 44100])
    def test_one_sample_at_a_time(self, speech: np.ndarray, rate: int) -> None:
        x = audio.resample(speech[:8000], 16000, rate)
        whole = stream(StreamResampler(rate), [x])
        single = stream(StreamResampler(rate), [x[i:i + 1] for i in range(len(x))])
        np.testing.assert_array_equal(single, whole)

    @given(st.sampled_from(RATES), st.integers(0, 30000), st.integers(0, 2**32 - 1))
    def test_length_and_invariance_any_size(self, rate: int, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        x = (rng.standard_normal(n) * 0.1).astype(np.float32)
        whole = stream(StreamResampler(rate), [x])
        assert abs(len(whole) - round(n * 16000 / rate)) <= 1
        np.testing.assert_array_equal(stream(StreamResampler(rate), random_chunks(x, rng)), whole)

    def test_identity_at_16k(self) -> None:
        r = StreamResampler(16000)
        assert r.identity
        x = np.arange(10, dtype=np.float32)
        assert r.process(x) is x  # no copy, no work
        assert r.flush().shape == (0,)
        r.reset()
        assert audio.resample(x, 16000) is x

    def test_identity_converts_dtype(self) -> None:
        out = StreamResampler(16000).process(np.arange(3, dtype=np.float64))
        assert out.dtype == np.float32

    def test_flush_and_reset_start_a_new_stream(self, speech: np.ndarray) -> None:
        x = audio.resample(speech[:16000], 16000, 44100)
        r = StreamResampler(44100)
        first = stream(r, [x])
        assert not r.identity
        np.testing.assert_array_equal(stream(r, [x]), first)  # reusable after flush
        r.process(x[:5000])
        r.reset()
        np.testing.assert_array_equal(stream(r, [x]), first)

    @pytest.mark.parametrize(
        "in_rate, tone_hz", [(8000, 1000.0), (22050, 440.0), (44100, 3000.0), (48000, 7000.0)]
    )
    def test_sine_keeps_its_frequency(self, in_rate: int, tone_hz: float) -> None:
        t = np.arange(in_rate * 2) / in_rate
        x = (0.5 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
        y = audio.resample(x, in_rate)
        assert len(y) == 32000
        spectrum = np.abs(np.fft.rfft(y[4000:-4000] * np.hanning(24000)))
        peak_hz = np.argmax(spectrum) * 16000 / 24000
        assert abs(peak_hz - tone_hz) <= 16000 / 24000
        rms = np.sqrt(np.mean(y[4000:-4000] ** 2))
        assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.01)

    def test_tone_above_nyquist_is_removed(self) -> None:
        t = np.arange(48000) / 48000
        x = (0.5 * np.sin(2 * np.pi * 12000 * t)).astype(np.float32)  # > 8 kHz
        y = audio.resample(x, 48000)
        assert np.sqrt(np.mean(y[2000:-2000] ** 2)) < 1e-3  # no aliasing to 4 kHz

    def test_programming_errors(self) -> None:
        for rate in (0, -16000, 16000.0, True):
            with pytest.raises(ValueError):
                StreamResampler(rate)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            StreamResampler(16000, out_rate=0)
        with pytest.raises(ValueError):
            StreamResampler(44100).process(np.zeros((10, 2), dtype=np.float32))


class TestFramer:
    def test_exact_frames_and_remainder(self) -> None:
        f = Framer(480)
        out = f.push(np.arange(1000, dtype=np.float32))
        assert out.shape == (2, 480) and out.dtype == np.float32
        assert f.pending == 40
        np.testing.assert_array_equal(out[1], np.arange(480, 960))
        out = f.push(np.arange(1000, 1440, dtype=np.float32))
        assert out.shape == (1, 480)
        np.testing.assert_array_equal(out[0], np.arange(960, 1440))
        assert f.pending == 0
        assert f.push(np.zeros(10, dtype=np.float32)).shape == (0, 480)
        f.reset()
        assert f.pending == 0

    def test_frames_do_not_alias_the_input(self) -> None:
        f = Framer(4)
        x = np.arange(8, dtype=np.float32)
        frames = f.push(x)
        x[:] = -1
        np.testing.assert_array_equal(frames.ravel(), np.arange(8))

    @given(st.integers(1, 1000), st.integers(0, 20000), st.integers(0, 2**32 - 1))
    def test_chunking_invariance(self, frame: int, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(n).astype(np.float32)
        f = Framer(frame)
        got = [f.push(c) for c in random_chunks(x, rng, 1, 3 * frame)]
        frames = np.concatenate(got) if got else np.zeros((0, frame), np.float32)
        whole = n // frame * frame
        np.testing.assert_array_equal(frames, x[:whole].reshape(-1, frame))
        assert f.pending == n - whole

    def test_speech_through_resampler_and_framer(self, speech: np.ndarray) -> None:
        x = audio.resample(speech, 16000, 48000)
        rng = np.random.default_rng(7)

        def run(chunks: list[np.ndarray]) -> np.ndarray:
            r, f = StreamResampler(48000), Framer(480)
            frames = [f.push(r.process(c)) for c in chunks] + [f.push(r.flush())]
            return np.concatenate(frames)

        np.testing.assert_array_equal(run(random_chunks(x, rng)), run([x]))

    def test_programming_errors(self) -> None:
        for bad in (0, -1, 1.5, True):
            with pytest.raises(ValueError):
                Framer(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            Framer(10).push(np.zeros((2, 5), dtype=np.float32))


# -- files ------------------------------------------------------------------------------


def _can_write(fmt: str, subtype: str | None) -> bool:
    try:
        encode_file(np.zeros(1600, dtype=np.float32), 16000, fmt, subtype)
    except (sf.LibsndfileError, ValueError, TypeError):  # pragma: no cover - build-dependent
        return False
    return True


class TestDecodeFile:
    @pytest.mark.parametrize("fmt, subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16")])
    def test_lossless(self, speech: np.ndarray, fmt: str, subtype: str) -> None:
        y = audio.decode_file(encode_file(speech, 16000, fmt, subtype))
        assert y.dtype == np.float32
        np.testing.assert_array_equal(y, speech)  # 16-bit speech survives bit for bit

    @pytest.mark.parametrize("fmt, subtype", [("OGG", "VORBIS"), ("MP3", None)])
    def test_lossy(self, speech: np.ndarray, fmt: str, subtype: str | None) -> None:
        if not _can_write(fmt, subtype):  # pragma: no cover - build-dependent
            pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {fmt}")
        y = audio.decode_file(encode_file(speech, 16000, fmt, subtype))
        assert y.dtype == np.float32 and np.abs(y).max() <= 1.0
        assert abs(len(y) - len(speech)) <= 1152  # at most one MP3 frame of padding
        n = min(len(y), len(speech))
        assert np.corrcoef(y[:n], speech[:n])[0, 1] > 0.95  # aligned, same signal

    def test_44k_stereo_to_16k_mono(self, speech: np.ndarray) -> None:
        left = audio.resample(speech, 16000, 44100)
        right = 0.5 * left
        data = encode_file(np.stack([left, right], axis=1), 44100, "WAV", "FLOAT")
        y = audio.decode_file(data)
        assert y.dtype == np.float32 and y.ndim == 1
        assert abs(len(y) - round(len(left) * 16000 / 44100)) <= 1
        assert abs(len(y) - len(speech)) <= 1
        np.testing.assert_allclose(y, audio.resample(0.75 * left, 44100), atol=1e-6)

    def test_long_file_is_read_in_blocks(self) -> None:
        rng = np.random.default_rng(3)
        x = (rng.standard_normal(300_000) * 0.1).astype(np.float32)  # > one block
        y = audio.decode_file(encode_file(x, 16000, "WAV", "FLOAT"))
        np.testing.assert_array_equal(y, x)

    def test_float_file_is_clipped(self) -> None:
        y = audio.decode_file(encode_file(np.array([2.0, -3.0, 0.5] * 100), 16000, "WAV", "FLOAT"))
        np.testing.assert_array_equal(y[:3], [1.0, -1.0, 0.5])

    def test_nan_in_float_file(self) -> None:
        x = np.zeros(1000, dtype=np.float32)
        x[10] = np.nan
        err = bad_audio(audio.decode_file, encode_file(x, 16000, "WAV", "FLOAT"))
        assert str(err) == "could not decode the audio file: it holds NaN or infinite samples"

    @pytest.mark.parametrize(
        "data",
        [b"garbage" * 100, b"RIFF" + bytes(40), b"ID3" + bytes(100), b"\xff\xfb" + bytes(200),
         b"fLaC" + bytes(50), b"OggS" + bytes(50)],
        ids=["garbage", "riff", "id3", "mpeg", "flac", "ogg"],
    )
    def test_undecodable(self, data: bytes) -> None:
        err = bad_audio(audio.decode_file, data)
        message = str(err)
        assert message.startswith("could not decode the audio file: ")
        assert "<" not in message and "BytesIO" not in message  # no raw exception text

    def test_empty(self) -> None:
        err = bad_audio(audio.decode_file, b"")
        assert str(err) == "could not decode the audio file: it is empty"

    def test_no_samples(self) -> None:
        err = bad_audio(audio.decode_file, encode_file(np.zeros(0), 16000, "WAV", "PCM_16"))
        assert str(err) == "could not decode the audio file: it holds no samples"

    @pytest.mark.parametrize("rate", [1000, 400_000])
    def test_unsupported_rate(self, rate: int) -> None:
        err = bad_audio(audio.decode_file, encode_file(np.zeros(2000), rate, "WAV", "PCM_16"))
        assert f"{rate} Hz" in str(err)

    def test_too_many_channels(self) -> None:
        data = encode_file(np.zeros((100, 33)), 16000, "WAV", "PCM_16")
        err = bad_audio(audio.decode_file, data)
        assert "33 channels" in str(err)

    def test_truncated_files_decode_or_raise_bad_audio(self, speech: np.ndarray) -> None:
        for fmt, subtype in [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")]:
            data = encode_file(speech[:32000], 16000, fmt, subtype)
            for cut in (12, 44, 100, len(data) // 2, len(data) - 1):
                try:
                    y = audio.decode_file(data[:cut])
                except BadAudio:
                    continue
                assert y.dtype == np.float32 and len(y) <= 32000 + 1

    def test_too_long_from_header(self, speech: np.ndarray) -> None:
        data = encode_file(speech, 16000, "FLAC", "PCM_16")  # 15 s
        with pytest.raises(TooLarge) as info:
            audio.decode_file(data, max_seconds=10.0)
        assert info.value.code == "too_large" and info.value.close_code == 1009
        assert str(info.value) == "the audio lasts 15.0 s, longer than the limit of 10 s"
        assert len(audio.decode_file(data, max_seconds=15.0)) == len(speech)

    def test_too_long_when_the_header_understates(self, speech: np.ndarray,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
        real = sf.SoundFile
        data = encode_file(speech, 16000, "WAV", "PCM_16")

        class Lying:
            """A SoundFile whose header claims no frames (as a broken stream might)."""

            frames = 0

            def __init__(self, source: Any) -> None:
                self._f = real(source)

            def __getattr__(self, name: str) -> Any:
                return getattr(self._f, name)

            def __enter__(self) -> Lying:
                return self

            def __exit__(self, *exc: object) -> None:
                self._f.close()

        monkeypatch.setattr(sf, "SoundFile", Lying)
        with pytest.raises(TooLarge):
            audio.decode_file(data, max_seconds=10.0)

    @given(st.binary(max_size=300))
    def test_fuzz_bytes(self, data: bytes) -> None:
        try:
            y = audio.decode_file(data)
        except BadAudio:
            return
        assert y.dtype == np.float32 and y.ndim == 1  # pragma: no cover - rarely valid

    @given(st.data())
    def test_fuzz_corrupted_wav(self, data: st.DataObject) -> None:
        wav = bytearray(encode_file(np.linspace(-0.5, 0.5, 200), 16000, "WAV", "PCM_16"))
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, 60))  # mostly the header
            wav[i] = data.draw(st.integers(0, 255))
        try:
            y = audio.decode_file(bytes(wav), max_seconds=60.0)
        except (BadAudio, TooLarge):
            return
        assert y.dtype == np.float32 and y.ndim == 1 and np.isfinite(y).all()


class TestReadFile:
    def test_reads_real_speech(self, speech: np.ndarray) -> None:
        np.testing.assert_array_equal(audio.read_file(SPEECH_FILE), speech)

    def test_path_in_tmp(self, tmp_path: Path, speech: np.ndarray) -> None:
        path = tmp_path / "s.ogg"
        path.write_bytes(encode_file(speech[:16000], 16000, "OGG", "VORBIS"))
        assert abs(len(audio.read_file(str(path))) - 16000) <= 1
        with pytest.raises(TooLarge):
            audio.read_file(path, max_seconds=0.5)

    def test_errors(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            audio.read_file(tmp_path / "missing.wav")
        bad = tmp_path / "bad.wav"
        bad.write_bytes(b"not audio")
        bad_audio(audio.read_file, bad)
        empty = tmp_path / "empty.wav"
        empty.write_bytes(b"")
        bad_audio(audio.read_file, empty)


def test_level_dbfs_leaves_a_dc_offset_out() -> None:
    t = np.arange(16000) / 16000
    sine = (np.sqrt(2) * 0.01 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # -40 dBFS
    assert level_dbfs(sine) == pytest.approx(-40.0, abs=0.01)
    assert level_dbfs(sine + np.float32(0.2)) == pytest.approx(-40.0, abs=0.01)
    assert level_dbfs(np.full(480, 0.2, np.float32)) == -math.inf  # a constant is no sound
    assert level_dbfs(np.zeros(480, np.float32)) == -math.inf
    assert level_dbfs(np.zeros(0, np.float32)) == -math.inf
