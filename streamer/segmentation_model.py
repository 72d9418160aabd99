"""The speaker-segmentation model (pyannote segmentation-3.0, ``models/segmentation.onnx``).

One ONNX graph: float32 16 kHz PCM ``pcm [batch, 1, samples]`` in, per-frame powerset
log-probabilities ``logprobs [batch, frames, 7]`` out (``models/export_segmentation.py``).
The enrolment check of :mod:`streamer.second_voice` uses it to hear a second voice.

Call order: construct (cheap, no I/O) → :meth:`SegmentationModel.load` once at start-up
(raises :class:`~streamer.errors.ConfigError`) → :meth:`SegmentationModel.logprobs` from
any number of threads (onnxruntime's ``run`` is thread-safe).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from streamer.errors import ConfigError

__all__ = ["FILE_NAME", "SegmentationModel"]

#: The file's name in the package's model folder (:func:`streamer.config.packaged_model_dir`).
FILE_NAME = "segmentation.onnx"
_CLASSES = 7


class SegmentationModel:
    """Shared and stateless; two-phase: construct, then :meth:`load`."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        """Remember where the model is; nothing is read until :meth:`load`."""
        self.path = Path(path)
        self.threads = threads
        self._session: ort.InferenceSession | None = None

    @property
    def loaded(self) -> bool:
        """Has :meth:`load` succeeded?"""
        return self._session is not None

    def load(self) -> None:
        """Open the graph and check its interface. Raises :class:`ConfigError` when the
        file is missing or is not a segmentation graph."""
        if not self.path.is_file():
            raise ConfigError(f"speaker-segmentation model {str(self.path)!r} does not exist")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(self.path), opts,
                                           providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ConfigError(f"cannot load {self.path}: {exc}") from exc
        inputs = [i.name for i in session.get_inputs()]
        outputs = session.get_outputs()
        if inputs != ["pcm"] or len(outputs) != 1 or outputs[0].shape[-1] != _CLASSES:
            raise ConfigError(f"{self.path} is not a speaker-segmentation graph "
                              f"(inputs {inputs}, want pcm -> [batch, frames, {_CLASSES}])")
        self._session = session

    def logprobs(self, pcm: np.ndarray) -> np.ndarray:
        """The ``[frames, 7]`` log-probabilities of ``pcm`` (float32 16 kHz mono, at most
        about 10 s: run it on :func:`streamer.second_voice.windows`). Raises
        ``RuntimeError`` before :meth:`load`."""
        if self._session is None:
            raise RuntimeError("the segmentation model is not loaded")
        x = np.ascontiguousarray(pcm, dtype=np.float32)[None, None, :]
        return np.asarray(self._session.run(None, {"pcm": x})[0][0])
