"""Speaker embeddings from 16 kHz PCM with one ONNX graph (CAM++ or GE2E, see ``models/README.md``).

The graph takes float32 PCM ``pcm [batch, samples]`` and returns unit-length
``embedding [batch, dim]``; the front end (Kaldi fbank for CAM++, a mel spectrogram for
GE2E) is inside it, so this module needs only numpy and onnxruntime. Any graph with this
interface works; ``dim`` is read from the graph and ``min_samples`` from its metadata.

Call order: construct (cheap, no I/O) → :meth:`Embedder.load` once at start-up, before the
server accepts connections (raises :class:`~streamer.errors.ConfigError`) → then
:meth:`Embedder.embed` / :meth:`Embedder.embed_batch` from any number of threads.
One :class:`Embedder` is shared by all sessions: it holds no per-stream state, and
onnxruntime's ``InferenceSession.run`` is thread-safe.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from streamer.errors import ConfigError
from streamer.units import MODEL_SAMPLE_RATE

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "Embedder"]

log = logging.getLogger("streamer.embedder")

#: Name of the graph's input: float32 PCM ``[batch, samples]``, 16 kHz, range [-1, 1].
INPUT_NAME = "pcm"
#: Name of the graph's output: float32 unit vectors ``[batch, dim]``.
OUTPUT_NAME = "embedding"

#: Tolerance on the norm of an output vector before it counts as "not unit length".
_NORM_TOLERANCE = 1e-3


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Embedder:
    """Shared, stateless, thread-safe (onnxruntime's ``run()`` is). Two-phase: construct
    cheaply, then :meth:`load`.

    Attributes valid after :meth:`load`:

    ``model_id``
        ``"<file stem>-<first 12 hex of the file's sha256>"``, e.g. ``campplus-b41cfa3f5ff2``.
        Store it next to every enrolled vector: vectors from different model files
        cannot be compared.
    ``dim``
        Embedding size (192 for CAM++), read from the graph.
    ``sample_rate``
        Sample rate of the input, :data:`streamer.units.MODEL_SAMPLE_RATE` (16000 Hz).
    ``min_samples``
        Shortest input accepted: the graph's ``min_samples`` metadata entry when it has
        one (``models/resemblyzer.onnx``: 800), else :attr:`MIN_SAMPLES`, 800 samples
        (50 ms). CAM++ needs at least 45 ms (3 fbank frames); identification is weak
        below about 1 s anyway, so callers should enforce their own, longer minimum.
    ``load_time_s``
        Seconds :meth:`load` took (hashing + session creation + warm-up).
    """

    #: Shortest accepted input, in samples at :attr:`sample_rate` (50 ms), for graphs
    #: whose metadata gives no ``min_samples``.
    MIN_SAMPLES = 800
    #: Metadata key (``metadata_props``) of a graph's shortest valid input, in samples.
    MIN_SAMPLES_KEY = "min_samples"

    def __init__(self, path: Path, threads: int = 1) -> None:
        """Remember where the model is; nothing is read until :meth:`load`.

        ``threads`` is onnxruntime's ``intra_op_num_threads`` for one ``run()``. Raises
        :class:`ConfigError` if it is below 1.
        """
        if threads < 1:
            raise ConfigError(f"embedder threads must be >= 1, got {threads}")
        self.path = Path(path)
        self.threads = threads
        self.sample_rate = MODEL_SAMPLE_RATE
        self.min_samples = self.MIN_SAMPLES
        self.model_id = ""
        self.dim = 0
        self.load_time_s = 0.0
        self._session: ort.InferenceSession | None = None

    @property
    def loaded(self) -> bool:
        """True once :meth:`load` has succeeded."""
        return self._session is not None

    def load(self) -> None:
        """Open the model, check its inputs and outputs, and run it once.

        Call once at start-up, before serving. Raises :class:`ConfigError` if the file is
        missing or unreadable, is not an ONNX model onnxruntime can load, does not have
        exactly one float input ``pcm [batch, samples]`` and one float output
        ``embedding [batch, dim]`` with a fixed ``dim``, or gives a non-finite or
        non-unit vector on a test input. Calling it again reloads the file.
        """
        start = time.perf_counter()
        path = self.path
        if not path.is_file():
            raise ConfigError(f"embedding model {str(path)!r} does not exist or is not a file")
        try:
            sha = _file_sha256(path)
        except OSError as exc:
            raise ConfigError(f"cannot read embedding model {str(path)!r}: {exc}") from exc

        try:
            session = self.open_graph(path)
        except Exception as exc:  # onnxruntime raises several unrelated types here
            raise ConfigError(
                f"embedding model {str(path)!r} cannot be loaded by onnxruntime: "
                f"{type(exc).__name__}"
            ) from exc

        dim = self._check_io(session, path)
        min_samples = self._min_samples(session, path)
        self._session = session
        self.dim = dim
        self.min_samples = min_samples
        self.model_id = f"{path.stem}-{sha[:12]}"
        # One second of a quiet tone: proves the graph runs and gives unit vectors.
        probe = (0.01 * np.sin(np.arange(self.sample_rate) * 0.05)).astype(np.float32)
        try:
            self.embed(probe)
        except ValueError as exc:
            self._unload()
            raise ConfigError(
                f"embedding model {str(path)!r} fails on a test input: {exc}"
            ) from exc
        except Exception as exc:  # a graph that loads but cannot run this input
            self._unload()
            raise ConfigError(
                f"embedding model {str(path)!r} cannot run on [1, {self.sample_rate}] "
                f"float32 PCM: {type(exc).__name__}"
            ) from exc
        self.load_time_s = time.perf_counter() - start
        log.info(
            "loaded embedding model %s (id %s, dim %d, %d thread(s)) in %.2f s",
            path, self.model_id, self.dim, self.threads, self.load_time_s,
        )

    def open_graph(self, path: Path) -> ort.InferenceSession:
        """An onnxruntime CPU session for ``path`` with this embedder's thread settings
        (``threads`` intra-op, sequential, errors-only logging). Raises what onnxruntime
        raises for a missing or invalid file."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only; ORT's warnings are not ours
        return ort.InferenceSession(str(path), sess_options=options,
                                    providers=["CPUExecutionProvider"])

    def _unload(self) -> None:
        self._session = None
        self.model_id = ""
        self.dim = 0
        self.min_samples = self.MIN_SAMPLES

    @classmethod
    def _min_samples(cls, session: ort.InferenceSession, path: Path) -> int:
        """The graph's ``min_samples`` metadata entry, or :attr:`MIN_SAMPLES` without one."""
        raw = session.get_modelmeta().custom_metadata_map.get(cls.MIN_SAMPLES_KEY)
        if raw is None:
            return cls.MIN_SAMPLES
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise ConfigError(
                f"embedding model {str(path)!r}: metadata {cls.MIN_SAMPLES_KEY}={raw!r} is "
                f"not a positive integer"
            )
        return value

    @staticmethod
    def _check_io(session: ort.InferenceSession, path: Path) -> int:
        """Return ``dim`` after checking the graph's I/O against the model card."""
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME]:
            raise ConfigError(
                f"embedding model {str(path)!r} has inputs {[i.name for i in inputs]}, "
                f"expected [{INPUT_NAME!r}]"
            )
        if [o.name for o in outputs] != [OUTPUT_NAME]:
            raise ConfigError(
                f"embedding model {str(path)!r} has outputs {[o.name for o in outputs]}, "
                f"expected [{OUTPUT_NAME!r}]"
            )
        inp, out = inputs[0], outputs[0]
        if inp.type != "tensor(float)" or len(inp.shape) != 2:
            raise ConfigError(
                f"embedding model {str(path)!r}: input {INPUT_NAME!r} is {inp.type} "
                f"{inp.shape}, expected tensor(float) [batch, samples]"
            )
        if any(isinstance(d, int) for d in inp.shape):
            raise ConfigError(
                f"embedding model {str(path)!r}: input {INPUT_NAME!r} has fixed shape "
                f"{inp.shape}, expected dynamic [batch, samples]"
            )
        if out.type != "tensor(float)" or len(out.shape) != 2:
            raise ConfigError(
                f"embedding model {str(path)!r}: output {OUTPUT_NAME!r} is {out.type} "
                f"{out.shape}, expected tensor(float) [batch, dim]"
            )
        dim = out.shape[1]
        if not isinstance(dim, int) or dim < 1:
            raise ConfigError(
                f"embedding model {str(path)!r}: output {OUTPUT_NAME!r} has no fixed "
                f"dim ({out.shape})"
            )
        return dim

    def _checked(self, pcm: np.ndarray) -> np.ndarray:
        arr = np.asarray(pcm)
        if arr.ndim != 1:
            raise ValueError(f"expected 1-D mono PCM, got shape {arr.shape}")
        if arr.shape[0] < self.min_samples:
            raise ValueError(
                f"audio too short: {arr.shape[0]} samples, need at least {self.min_samples} "
                f"({self.min_samples / self.sample_rate * 1000:.0f} ms at {self.sample_rate} Hz)"
            )
        return np.ascontiguousarray(arr, dtype=np.float32)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        session = self._session
        if session is None:
            raise RuntimeError("Embedder.load() must be called before embedding")
        out = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        if out.shape != (batch.shape[0], self.dim):
            expected = (batch.shape[0], self.dim)
            raise ValueError(f"model returned shape {out.shape}, expected {expected}")
        if not np.all(np.isfinite(out)):
            raise ValueError("model returned a non-finite embedding (silent or invalid audio?)")
        norms = np.linalg.norm(out, axis=1)
        if np.any(np.abs(norms - 1.0) > _NORM_TOLERANCE):
            raise ValueError(
                f"model returned non-unit embeddings (norms {norms.min():.4f}..{norms.max():.4f})"
            )
        return np.asarray(out, dtype=np.float32)

    def embed(self, pcm: np.ndarray) -> np.ndarray:
        """Return the unit float32 embedding ``(dim,)`` of one 16 kHz mono clip in [-1, 1].

        Call after :meth:`load`, from any thread; it blocks for the model run (about
        2 % of the audio's duration on one core), so call it from a worker thread, not
        the event loop. Raises ``ValueError`` if ``pcm`` is not 1-D, is shorter than
        :attr:`min_samples`, or the model gives a non-finite or non-unit vector; ``RuntimeError`` if
        :meth:`load` has not succeeded.
        """
        x = self._checked(pcm)
        vector: np.ndarray = self._run(x[None, :])[0]
        return vector

    def embed_batch(self, pcms: list[np.ndarray]) -> np.ndarray:
        """Return ``(n, dim)`` float32 unit embeddings of ``pcms``, in input order.

        Inputs of equal length run together in one batch; different lengths run
        separately, since zero padding would change the embeddings. Same errors as
        :meth:`embed`, checked for every input before anything runs. An empty list
        gives a ``(0, dim)`` array.
        """
        arrays = [self._checked(p) for p in pcms]
        result = np.empty((len(arrays), self.dim), dtype=np.float32)
        groups: dict[int, list[int]] = {}
        for i, arr in enumerate(arrays):
            groups.setdefault(arr.shape[0], []).append(i)
        for indices in groups.values():
            batch = np.stack([arrays[i] for i in indices])
            result[indices] = self._run(batch)
        return result
