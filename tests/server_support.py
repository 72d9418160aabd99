"""Helpers for the end-to-end tests: a real server on 127.0.0.1:0, API calls, audio.

``running_server(tmp_path, **sections)`` starts :class:`~streamer.server.StreamerServer`
over a fresh :class:`~streamer.app.App` whose data dir is ``tmp_path / "data"``
(``data_dir=`` picks another). Keyword arguments replace whole config sections, or a
few fields of one section when given as a dict::

    async with running_server(tmp_path, server={"max_message_bytes": 4096}) as server:
        reply = await api_call(server.url, {"type": "people", "id": 1})

The CAM++ model is loaded once per test session and shared by every App (the embedder
is stateless and thread-safe); ``App.load()`` is still called and still opens the
registry and builds the worker.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import dataclasses
import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import soundfile as sf
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from streamer import wire
from streamer.app import App, variant_channels
from streamer.config import Config, packaged_model_dir
from streamer.embedder import Embedder
from streamer.server import StreamerServer
from streamer.segmentation_model import FILE_NAME as SEGMENTATION_FILE
from streamer.segmentation_model import SegmentationModel
from streamer.stream_embedder import StreamEmbedder

__all__ = [
    "AMI_DIR",
    "IMPOSTOR_DIR",
    "LIBRI_DIR",
    "SPEECH_DIR",
    "ApiClient",
    "api_call",
    "api_client",
    "audio_fields",
    "make_config",
    "manifest",
    "pcm_fields",
    "read_flac",
    "read_until_closed",
    "running_server",
    "shared_embedder",
    "shared_segmenter",
    "to_file_bytes",
    "to_s16le",
    "wav_bytes",
]

#: ``shared/speech`` beside the repository (see tests/conftest.py).
SPEECH_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "speech"
LIBRI_DIR = SPEECH_DIR / "librispeech_testother_10spk"
IMPOSTOR_DIR = SPEECH_DIR / "librispeech_trainclean100_251spk_1utt"
AMI_DIR = SPEECH_DIR / "ami_pyannote_diarization"

RATE = 16000


class _SharedEmbedder(Embedder):
    """An embedder whose :meth:`load` is a no-op once loaded (shared between Apps)."""

    def load(self) -> None:
        if not self.loaded:
            super().load()


_EMBEDDERS: dict[tuple[Path, int], _SharedEmbedder] = {}
_STREAMERS: dict[tuple[Any, ...], StreamEmbedder] = {}


def shared_embedder(config: Config) -> Embedder:
    """The session's embedder for ``config``'s model file and thread count."""
    key = (config.model_path, config.model.threads)
    if key not in _EMBEDDERS:
        emb = _SharedEmbedder(config.model_path, threads=config.model.threads)
        emb.load()
        _EMBEDDERS[key] = emb
    return _EMBEDDERS[key]


def shared_streamer(config: Config) -> StreamEmbedder:
    """The session's stream embedder (frames + head pair) for ``config``'s model, at its
    ``model.int8_channels``."""
    emb = shared_embedder(config)
    precision = config.model.precision("wideband")
    key = (config.model_path, config.model.threads, precision)
    if key not in _STREAMERS:
        s = StreamEmbedder(emb, precision=precision)
        s.load()
        _STREAMERS[key] = s
    return _STREAMERS[key]


def shared_channels(config: Config) -> dict[str, StreamEmbedder]:
    """The session's line variants of ``config``'s model: those ``App.load`` loads
    (:func:`streamer.app.variant_channels`)."""
    emb = shared_embedder(config)
    out = {}
    for channel in variant_channels(config, config.model_path):
        precision = config.model.precision(channel)
        key = (config.model_path, config.model.threads, precision, channel)
        if key not in _STREAMERS:
            s = StreamEmbedder(emb, channel, precision)
            s.load()
            _STREAMERS[key] = s
        out[channel] = _STREAMERS[key]
    return out


_SEGMENTER: list[SegmentationModel] = []


def shared_segmenter() -> SegmentationModel:
    """The session's speaker-segmentation model (``App.load`` loads it for the
    enrolment's second-voice check unless the config turns that off)."""
    if not _SEGMENTER:
        model = SegmentationModel(packaged_model_dir() / SEGMENTATION_FILE)
        model.load()
        _SEGMENTER.append(model)
    return _SEGMENTER[0]


def make_config(**sections: Any) -> Config:
    """Default config with sections replaced: a section object, or a dict of fields."""
    config = Config()
    replaced = {}
    for name, value in sections.items():
        current = getattr(config, name)
        if isinstance(value, dict):
            value = dataclasses.replace(current, **value)
        replaced[name] = value
    return config.replace(**replaced)


@asynccontextmanager
async def running_server(tmp_path: Path, data_dir: Path | None = None,
                         **sections: Any) -> AsyncIterator[StreamerServer]:
    """A loaded App and a StreamerServer on 127.0.0.1, port 0 (``server.url``)."""
    config = make_config(**sections)
    app = App(config, data_dir=data_dir if data_dir is not None else tmp_path / "data")
    app.embedder = shared_embedder(config)
    app.streamer = shared_streamer(config)
    app.channels = shared_channels(config)
    app.segmenter = shared_segmenter()
    app.load()
    try:
        async with StreamerServer(app, "127.0.0.1", 0) as server:
            assert server.port != 0
            yield server
    finally:
        app.close()


# -- /v1/api -----------------------------------------------------------------------------


def _encode(message: dict[str, Any], encoding: wire.Encoding) -> str | bytes:
    if encoding is wire.Encoding.JSON:
        out = {k: base64.b64encode(v).decode("ascii") if isinstance(v, bytes) else v
               for k, v in message.items()}
        return wire.encode(out, encoding)
    return wire.encode(message, encoding)


class ApiClient:
    """One open ``/v1/api`` connection; :meth:`call` sends a request and returns the reply.

    Checks that each reply comes back in the request's encoding (text frame for JSON,
    binary for msgpack).
    """

    def __init__(self, ws: Any, encoding: wire.Encoding) -> None:
        self.ws = ws
        self.encoding = encoding

    async def call(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.ws.send(_encode(message, self.encoding))
        raw = await self.ws.recv()
        expected = str if self.encoding is wire.Encoding.JSON else bytes
        assert isinstance(raw, expected), f"reply frame {type(raw).__name__} for {self.encoding}"
        reply, encoding = wire.decode(raw)
        assert encoding is self.encoding
        return reply


@asynccontextmanager
async def api_client(url: str, encoding: wire.Encoding = wire.Encoding.MSGPACK,
                     **connect_kwargs: Any) -> AsyncIterator[ApiClient]:
    async with connect(url.rstrip("/") + "/v1/api", max_size=None, **connect_kwargs) as ws:
        yield ApiClient(ws, encoding)


async def api_call(url: str, message: dict[str, Any],
                   encoding: wire.Encoding = wire.Encoding.MSGPACK) -> dict[str, Any]:
    """Send one request on a new ``/v1/api`` connection and return the reply.

    ``bytes`` values are sent as msgpack ``bin`` or, for JSON, as base64 strings.
    """
    async with api_client(url, encoding) as client:
        return await client.call(message)


async def read_until_closed(ws: ClientConnection, timeout_s: float = 15.0
                            ) -> list[tuple[dict[str, Any], type]]:
    """Every message until the server closes, as ``[(message, frame type)]``; raises
    ``TimeoutError`` when the server has not closed within ``timeout_s``."""
    got: list[tuple[dict[str, Any], type]] = []
    async with asyncio.timeout(timeout_s):
        try:
            while True:
                raw = await ws.recv()
                got.append((wire.decode(raw)[0], type(raw)))
        except ConnectionClosed:
            pass
    return got


# -- audio -------------------------------------------------------------------------------


def manifest(dataset_dir: Path) -> list[tuple[Path, str, float]]:
    """``(path, speaker, seconds)`` rows of a dataset's MANIFEST.tsv, in file order."""
    with (dataset_dir / "MANIFEST.tsv").open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [(dataset_dir / r["path"], r["speaker"], float(r["seconds"])) for r in rows]


def read_flac(path: Path) -> np.ndarray:
    """A 16 kHz mono file as float32 in [-1, 1]."""
    x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    assert rate == RATE, f"{path}: {rate} Hz"
    return x.mean(axis=1).astype(np.float32)


def to_s16le(x: np.ndarray) -> bytes:
    """float32 [-1, 1] -> little-endian int16 bytes."""
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def to_file_bytes(x: np.ndarray, fmt: str, rate: int = RATE) -> bytes:
    """Encode float32 mono (or [n, channels]) as a WAV, FLAC, OGG or MP3 file's bytes."""
    buf = io.BytesIO()
    subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}[fmt]
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def wav_bytes(x: np.ndarray, rate: int = RATE) -> bytes:
    return to_file_bytes(x, "WAV", rate)


def pcm_fields(x: np.ndarray) -> dict[str, Any]:
    """Request fields for raw 16 kHz s16le PCM."""
    return {"pcm": to_s16le(x), "sample_rate": RATE, "format": "s16le"}


def audio_fields(x: np.ndarray, fmt: str = "WAV") -> dict[str, Any]:
    """Request fields for a file's bytes."""
    return {"audio": to_file_bytes(x, fmt)}
