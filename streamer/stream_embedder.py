"""Live-stream embeddings from pooled frame statistics (the frames + head graph pair).

``models/campplus.onnx`` comes with two companion graphs made by the same export
(``models/export_campplus.py``): ``campplus_frames.onnx`` (PCM -> frame features, all of
the network before its statistics pooling) and ``campplus_head.onnx`` (pooled mean and
standard deviation -> unit embedding). A live stream runs each piece of its speech
through the frames graph once, keeps the pooled :class:`~streamer.pooling.Stats`, and gets
the embedding of any run of pieces from the head, which costs next to nothing. For one
piece, ``head(pool(frames(x)))`` equals the whole graph's embedding of ``x`` (checked at
load); for a segment pooled piece by piece it is close to it, not equal (each piece's
frames see only that piece plus ``segment.context_s`` of audio before it, and CAM++'s
context-aware layers average over their input: ``bench/stream_fidelity.py`` measures how
close; ``segment.final_whole_pass`` embeds a turn's final in one pass instead).

A model without the pair (the GE2E graph) still works: a piece's "frames" are then the
whole graph's embedding of the piece, weighted by its length, and the head is the
normalised mean; this is how Resemblyzer itself averages partial embeddings.

Call order: construct with a loaded :class:`~streamer.embedder.Embedder` -> :meth:`load`
once at start-up (raises :class:`~streamer.errors.ConfigError`) -> :meth:`stats`,
:meth:`stats_batch` from worker threads, :meth:`head` from anywhere (it is fast).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .embedder import Embedder
from .errors import ConfigError
from .pooling import Stats

__all__ = ["FRAME_SAMPLES", "StreamEmbedder", "channel_paths", "pair_paths", "precision_path"]

log = logging.getLogger("streamer.stream_embedder")

#: Samples per frame of the frames graph (its ``frame_samples`` metadata): 20 ms.
FRAME_SAMPLES = 320
#: Lowest cosine between the pair's and the whole graph's embedding of one test clip, by
#: precision (``model.int8_channels``): float32 reproduces the whole graph; the int8 copy gives
#: 0.989 on the probe (0.993-0.997 on 3 s of LibriSpeech speech), a pair of another
#: model far less.
_PAIR_MIN_COSINE = {"float32": 0.9999, "int8": 0.98}


def pair_paths(model_path: Path) -> tuple[Path, Path]:
    """``models/campplus.onnx`` -> (``models/campplus_frames.onnx``, ``models/campplus_head.onnx``)."""
    return (model_path.with_name(f"{model_path.stem}_frames.onnx"),
            model_path.with_name(f"{model_path.stem}_head.onnx"))


def precision_path(frames_path: Path, precision: str) -> Path:
    """The frames graph to run at ``precision`` (``model.int8_channels``):
    ``campplus_frames.onnx`` itself for ``float32``, its int8 copy
    ``campplus_frames_int8.onnx`` for ``int8``."""
    if precision == "float32":
        return frames_path
    return frames_path.with_name(f"{frames_path.stem}_{precision}.onnx")


def _probe() -> np.ndarray:
    """1.5 s of a modulated tone: the input a pair is checked on at load."""
    return (0.05 * np.sin(np.arange(24_000) * 0.03)
            * np.sin(np.arange(24_000) * 0.0007)).astype(np.float32)


def channel_paths(model_path: Path, channel: str) -> tuple[Path, Path]:
    """The pair of the model's variant for a line (``match.channel``):
    ``models/campplus.onnx``, ``telephone`` -> (``campplus_telephone_frames.onnx``,
    ``campplus_telephone_head.onnx``) next to the model."""
    return pair_paths(model_path.with_name(f"{model_path.stem}_{channel}.onnx"))


def missing_variant_files(model_path: Path, channel: str) -> list[str]:
    """Names of the two graphs of the model's ``channel`` variant that are not next to
    it (:func:`channel_paths`); empty when the model has the variant."""
    return [p.name for p in channel_paths(model_path, channel) if not p.is_file()]


class StreamEmbedder:
    """Shared by all streams; thread-safe like onnxruntime's ``run``.

    With ``channel`` (a ``match.channel`` other than ``wideband``) it runs that line's
    variant of the model instead (:func:`channel_paths`; both files must exist): the
    same frames/head shapes, trained to embed that line's speech into the model's space,
    so its output is compared with the model's voiceprints. A variant has no whole
    graph: :meth:`embed` pools all of its input.

    ``precision`` ``int8`` (``model.int8_channels``) runs the int8 copy of the frames
    graph (:func:`precision_path`) instead; the head stays float32.
    """

    def __init__(self, embedder: Embedder, channel: str | None = None,
                 precision: str = "float32") -> None:
        self.embedder = embedder
        self.channel = channel
        self.precision = precision
        self.frame_samples = FRAME_SAMPLES
        self._frames: ort.InferenceSession | None = None
        self._head: ort.InferenceSession | None = None
        #: True once :meth:`load` has succeeded (with the pair or the fallback).
        self.loaded = False

    @property
    def pooled(self) -> bool:
        """True when the frames/head pair is loaded (else the whole-graph fallback)."""
        return self._frames is not None

    def load(self) -> None:
        """Open the pair next to the embedder's model, if it exists (its frames graph at
        ``precision``), and check it against the whole graph; without a pair (GE2E) pieces
        are embedded by the whole graph at any precision. Call after ``embedder.load()``.
        Raises :class:`ConfigError` when only one of the two files exists, the int8 copy
        asked for is missing, either cannot be loaded, or they disagree with the whole
        graph; for a ``channel`` variant, when either file (or the int8 copy asked for) is
        missing, cannot be loaded, does not give unit embeddings of the model's size, or
        its int8 copy disagrees with it."""
        if self.channel is not None:
            self._load_variant()
            return
        frames_path, head_path = pair_paths(self.embedder.path)
        present = [frames_path.is_file(), head_path.is_file()]
        if not any(present):  # (a model without a pair has no frames graph to run in int8)
            log.info("no %s: live streams pool whole-graph embeddings of each piece", frames_path.name)
            self.loaded = True
            return
        run_path = precision_path(frames_path, self.precision)
        if not all(present):
            raise ConfigError(f"{frames_path.name} and {head_path.name} must both exist next to "
                              f"{self.embedder.path.name}, or neither")
        if not run_path.is_file():
            raise ConfigError(self._missing_copy(run_path))
        self._open(run_path, head_path)
        if not self._agrees(self.embedder.embed(_probe())):
            raise ConfigError(f"{run_path.name} + {head_path.name} do not reproduce "
                              f"{self.embedder.path.name}: export them together")
        self.loaded = True

    def _agrees(self, want: np.ndarray) -> bool:
        """Whether the opened graphs embed the probe like ``want`` (the float32 graphs'
        embedding of it) within :data:`_PAIR_MIN_COSINE`; forgets them if not."""
        try:
            got = self.embed(_probe())
            agree = (got.shape == want.shape
                     and float(np.dot(got, want)) >= _PAIR_MIN_COSINE[self.precision])
        except Exception:  # noqa: BLE001 - a pair that cannot even run on the probe is refused
            agree = False
        if not agree:
            self._frames = self._head = None
        return agree

    def _missing_copy(self, run_path: Path) -> str:
        line = self.channel or "wideband"
        return (f"model.int8_channels has {line}: it needs {run_path.name} next to "
                f"{self.embedder.path.name} (models/quantize_frames.py makes it); take "
                f"{line} out of model.int8_channels or add the file")

    def _load_variant(self) -> None:
        assert self.channel is not None
        frames_path, head_path = channel_paths(self.embedder.path, self.channel)
        missing = missing_variant_files(self.embedder.path, self.channel)
        if missing:
            raise ConfigError(
                f"match.channel {self.channel!r} needs {' and '.join(missing)} next to "
                f"{self.embedder.path.name} (models/train_telephone.py and train_far.py "
                "make them for the shipped model); remove the setting or add the files")
        run_path = precision_path(frames_path, self.precision)
        if not run_path.is_file():
            raise ConfigError(self._missing_copy(run_path))
        self._open(frames_path, head_path)
        try:
            got = self.embed(_probe())
            ok = got.shape == (self.embedder.dim,) and abs(float(np.linalg.norm(got)) - 1) < 1e-3
        except Exception:  # noqa: BLE001 - a variant that cannot even run on the probe is refused
            ok = False
        if not ok:
            self._frames = self._head = None
            raise ConfigError(f"{frames_path.name} + {head_path.name} do not give unit "
                              f"embeddings of {self.embedder.dim} values like "
                              f"{self.embedder.path.name}")
        if run_path != frames_path:
            self._open(run_path)
            if not self._agrees(got):
                raise ConfigError(f"{run_path.name} does not reproduce {frames_path.name}: "
                                  "quantise the variant's own frames graph")
        self.loaded = True

    def _open(self, frames_path: Path, head_path: Path | None = None) -> None:
        """Open the two graphs (``head_path`` None: only the frames graph, next to the head
        graph already open); raises :class:`ConfigError` when one cannot be loaded."""
        names = frames_path.name if head_path is None else f"{frames_path.name} / {head_path.name}"
        try:
            frames = self.embedder.open_graph(frames_path)
            head = self._head if head_path is None else self.embedder.open_graph(head_path)
        except Exception as exc:  # onnxruntime raises several unrelated types here
            raise ConfigError(f"cannot load {names}: {type(exc).__name__}") from exc
        self._frames, self._head = frames, head

    def embed(self, pcm: np.ndarray) -> np.ndarray:
        """The unit embedding of all of ``pcm`` (the head of its pooled frames). Blocks for
        a model run: call from a worker thread. Raises ``ValueError`` for bad input."""
        return self.head(self.stats(pcm, None))

    def _keep(self, n_samples: int, keep_samples: int | None, n_frames: int) -> int:
        if keep_samples is None or keep_samples >= n_samples:
            return n_frames
        return min(n_frames, max(1, round(keep_samples / self.frame_samples)))

    def stats(self, pcm: np.ndarray, keep_samples: int | None) -> Stats:
        """Pool the frames of the last ``keep_samples`` of ``pcm`` (all when ``None``); the
        samples before them are context only. Blocks for a model run: call from a worker
        thread. Raises ``ValueError`` like :meth:`Embedder.embed` for bad input."""
        return self.stats_batch([pcm], [keep_samples])[0]

    def stats_batch(self, pcms: list[np.ndarray], keeps: list[int | None]) -> list[Stats]:
        """:meth:`stats` for several pieces; pieces of equal length run as one batch (zero
        padding would change the frames, so unequal lengths run separately)."""
        arrays = [self.embedder._checked(p) for p in pcms]
        out: list[Stats | None] = [None] * len(arrays)
        if self._frames is None:
            vectors = self.embedder.embed_batch(arrays)
            for i, (arr, keep) in enumerate(zip(arrays, keeps)):
                weight = self._keep(len(arr), keep, max(1, len(arr) // self.frame_samples))
                out[i] = Stats.of_vector(vectors[i], weight)
            return [s for s in out if s is not None]
        groups: dict[int, list[int]] = {}
        for i, arr in enumerate(arrays):
            groups.setdefault(len(arr), []).append(i)
        for indices in groups.values():
            batch = np.stack([arrays[i] for i in indices])
            frames = self._frames.run(["frames"], {"pcm": batch})[0]
            if not np.all(np.isfinite(frames)):
                raise ValueError("the frames graph returned non-finite values")
            for row, i in enumerate(indices):
                keep = self._keep(len(arrays[i]), keeps[i], frames.shape[2])
                out[i] = Stats.of_frames(frames[row, :, frames.shape[2] - keep:])
        return [s for s in out if s is not None]

    def head(self, stats: Stats) -> np.ndarray:
        """The unit embedding ``(dim,)`` of pooled ``stats``. Fast (a 1024 x 192 product)."""
        if self._head is None:
            v = stats.mean()
            return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)
        out = self._head.run(["embedding"], {"stats": stats.mean_std()[None, :]})[0][0]
        return np.asarray(out, dtype=np.float32)
