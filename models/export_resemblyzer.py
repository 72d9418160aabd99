"""Export Resemblyzer's GE2E voice encoder (``resemblyzer==0.1.4``) to one PCM-input ONNX graph.

The graph has the same interface as ``models/campplus.onnx``: 16 kHz mono float32 PCM
in [-1, 1], named ``pcm`` with shape ``[batch, samples]``, in; unit-length 256-dim
embeddings named ``embedding`` with shape ``[batch, 256]`` out. Inside the graph:

1. Resemblyzer's front end, ``resemblyzer.audio.wav_to_mel_spectrogram``, which is
   ``librosa.feature.melspectrogram(y, sr=16000, n_fft=400, hop_length=160, n_mels=40)``:
   ``center=True`` (200 zeros padded on each side, librosa >= 0.10's ``pad_mode="constant"``),
   periodic Hann window of 400 samples (25 ms), hop 160 (10 ms), power spectrum of the
   201 bins, Slaney-style mel filter bank (40 bands, 0-8 kHz, ``norm="slaney"``).
   Not a log-mel: the network was trained on linear mel power. Window and DFT fold into
   one Conv1d kernel [402 x 400], stride 160 (rows 0..200 real, 201..401 imaginary part).
2. ``VoiceEncoder.forward``: a 3-layer LSTM (256 units) over all frames of the input, the
   last layer's final hidden state, ``Linear(256, 256)``, ReLU, L2 normalisation. The
   network definition is imported from the unzipped wheel's ``resemblyzer/voice_encoder.py``.

One pass of the LSTM over the whole input, as the project's reference export
``../shared/models/resemblyzer_pcm.onnx`` does. Resemblyzer's own ``embed_utterance``
instead cuts the (zero-padded) utterance into 1.6 s partials at 1.3 per second and
averages their embeddings; that loop is not in the graph. Resemblyzer's
``preprocess_wav`` (volume normalisation to -30 dBFS, increase only, and trimming of long
silences with webrtcvad) is not in the graph either: the reference leaves it out, and the
server's VAD already cuts speech out of silence.

Export-time only: needs ``torch==2.13.0`` and ``onnx`` (``pip install torch==2.13.0 onnx``;
never an unpinned torch). Neither librosa nor webrtcvad is needed: the wheel's
``resemblyzer/audio.py`` is not imported (a stub stands in for it), and the mel bank is
computed here with librosa's formulas and checked against the reference graph's bank.

Usage (from the repository root)::

    python models/export_resemblyzer.py --out models/resemblyzer.onnx
    python models/export_resemblyzer.py --wheel /tmp/Resemblyzer-0.1.4-py3-none-any.whl

Without ``--wheel`` the script runs ``pip download --no-deps resemblyzer==0.1.4`` into a
temporary folder. It checks the result with ``onnx.checker``, compares onnxruntime against
torch, and (when present) against ``--reference``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import tempfile
import types
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_common  # noqa: E402

log = logging.getLogger("export_resemblyzer")

RESEMBLYZER_VERSION = "0.1.4"
WEIGHTS_IN_WHEEL = "resemblyzer/pretrained.pt"
NETWORK_IN_WHEEL = "resemblyzer/voice_encoder.py"
HPARAMS_IN_WHEEL = "resemblyzer/hparams.py"

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms window, no zero padding
HOP = 160  # 10 ms
N_BINS = N_FFT // 2 + 1  # 201
N_MELS = 40
EMBEDDING_DIM = 256
#: Shortest input the Embedder accepts (50 ms, 6 frames; the same floor as CAM++). The
#: graph itself runs on any length >= 1 sample; Resemblyzer's partials are 1.6 s.
MIN_SAMPLES = 800
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "models" / "resemblyzer_pcm.onnx"


# --------------------------------------------------------------------------- front end


def hann_periodic() -> np.ndarray:
    """``scipy.signal.get_window('hann', 400, fftbins=True)`` (librosa's default), float64."""
    n = np.arange(N_FFT, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)


def frame_kernel() -> np.ndarray:
    """The [402, 400] matrix mapping one frame to the real and imaginary parts of its DFT."""
    k = np.arange(N_BINS)[:, None]
    t = np.arange(N_FFT)[None, :]
    angle = 2.0 * np.pi * k * t / N_FFT
    dft = np.concatenate([np.cos(angle), -np.sin(angle)], axis=0)  # [402, 400]
    return dft * hann_periodic()[None, :]


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's auditory-toolbox mel scale (librosa ``htk=False``)."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    mels = f / f_sp
    log_t = f >= min_log_hz
    return np.where(log_t, min_log_hz / f_sp + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep,
                    mels)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def slaney_mel_banks() -> np.ndarray:
    """``librosa.filters.mel(sr=16000, n_fft=400, n_mels=40)`` [40, 201] (float64)."""
    fftfreqs = np.linspace(0.0, SAMPLE_RATE / 2, N_BINS)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    weights = np.zeros((N_MELS, N_BINS))
    for i in range(N_MELS):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2: N_MELS + 2] - mel_f[:N_MELS])
    return weights * enorm[:, None]


def reference_mel(pcm: np.ndarray) -> np.ndarray:
    """Straightforward float64 numpy mel power spectrogram [frames, 40] (librosa's recipe)."""
    x = np.pad(np.asarray(pcm, dtype=np.float64), (N_FFT // 2, N_FFT // 2))
    n_frames = 1 + (len(x) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * hann_periodic()[None, :], axis=1)) ** 2
    return spec @ slaney_mel_banks().T


# --------------------------------------------------------------------------- the wheel


def fetch_wheel(dest: Path) -> Path:
    """Download the resemblyzer wheel (no dependencies) into ``dest`` with pip."""
    return export_common.fetch_wheel("resemblyzer", RESEMBLYZER_VERSION, dest, f"[Rr]esemblyzer-{RESEMBLYZER_VERSION}-*.whl")


def unpack(wheel: Path, dest: Path) -> tuple[Path, Path]:
    """Extract the network definition, its hyper-parameters and the weights from the wheel."""
    with zipfile.ZipFile(wheel) as zf:
        for member in (NETWORK_IN_WHEEL, HPARAMS_IN_WHEEL, WEIGHTS_IN_WHEEL):
            zf.extract(member, dest)
    return dest / NETWORK_IN_WHEEL, dest / WEIGHTS_IN_WHEEL


def load_voice_encoder(network_py: Path) -> type:
    """Import ``VoiceEncoder`` from the unzipped wheel.

    ``voice_encoder.py`` does ``from resemblyzer.hparams import *`` and
    ``from resemblyzer import audio``; ``audio`` needs librosa and webrtcvad, and only its
    preprocessing functions use them, so a bare package with the real ``hparams`` and an
    empty ``audio`` module stands in for the installed package.
    """
    package_dir = network_py.parent
    package = types.ModuleType("resemblyzer")
    package.__path__ = [str(package_dir)]
    sys.modules["resemblyzer"] = package
    sys.modules["resemblyzer.audio"] = types.ModuleType("resemblyzer.audio")
    package.audio = sys.modules["resemblyzer.audio"]  # type: ignore[attr-defined]
    for name, path in (("resemblyzer.hparams", package_dir / "hparams.py"),
                       ("resemblyzer.voice_encoder", network_py)):
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise SystemExit(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    hp = sys.modules["resemblyzer.hparams"]
    expected = (hp.mel_window_length, hp.mel_window_step, hp.mel_n_channels, hp.sampling_rate,
                hp.model_hidden_size, hp.model_embedding_size, hp.model_num_layers)
    if expected != (25, 10, N_MELS, SAMPLE_RATE, 256, EMBEDDING_DIM, 3):
        raise SystemExit(f"resemblyzer's hparams.py changed: {expected}")
    return sys.modules["resemblyzer.voice_encoder"].VoiceEncoder


# --------------------------------------------------------------------------- the model


def build(network_py: Path, weights: Path):
    import torch
    from torch import nn

    voice_encoder_cls = load_voice_encoder(network_py)
    encoder = voice_encoder_cls(device="cpu", verbose=False, weights_fpath=weights)
    # VoiceEncoder loads with strict=False; make sure every parameter came from the file.
    state = torch.load(str(weights), map_location="cpu", weights_only=True)["model_state"]
    missing = set(encoder.state_dict()) - set(state)
    if missing:
        raise SystemExit(f"pretrained.pt lacks {sorted(missing)}")
    encoder.eval()

    class PcmGe2e(nn.Module):
        """pcm [B, S] -> unit embedding [B, 256]."""

        def __init__(self) -> None:
            super().__init__()
            kernel = torch.from_numpy(frame_kernel().astype(np.float32))
            self.register_buffer("dft", kernel.unsqueeze(1))  # [402, 1, 400]
            self.register_buffer("melfb",
                                 torch.from_numpy(slaney_mel_banks().astype(np.float32)))
            self.mel_model = encoder

        def mel(self, pcm: torch.Tensor) -> torch.Tensor:
            x = nn.functional.pad(pcm.unsqueeze(1), (N_FFT // 2, N_FFT // 2))
            spec = nn.functional.conv1d(x, self.dft, stride=HOP)
            re, im = spec[:, :N_BINS], spec[:, N_BINS:]
            power = re * re + im * im  # [B, 201, T]
            return torch.matmul(self.melfb, power).transpose(1, 2)  # [B, T, 40]

        def forward(self, pcm: torch.Tensor) -> torch.Tensor:
            return self.mel_model(self.mel(pcm))  # LSTM, last hidden, linear, ReLU, L2

    return PcmGe2e().eval()


METADATA = {
    "model": "Resemblyzer VoiceEncoder (GE2E d-vector, 3-layer LSTM 256, 40 mel), 256-dim",
    "source": f"PyPI resemblyzer=={RESEMBLYZER_VERSION}, file {WEIGHTS_IN_WHEEL}",
    "license": "Apache-2.0 (Resemblyzer)",
    "sample_rate": str(SAMPLE_RATE),
    "embedding_dim": str(EMBEDDING_DIM),
    "normalised": "L2 (ReLU before norm, all components >= 0)",
    "input": (
        "pcm float32 [batch, samples]: 16 kHz mono in [-1,1]; librosa mel power spectrogram "
        "(400/160, 40 Slaney mels) inside the graph; one LSTM pass over all frames; "
        f">= {MIN_SAMPLES} samples; trained on 1.6 s partials (25600 samples)"
    ),
    "min_samples": str(MIN_SAMPLES),
    "exporter": "models/export_resemblyzer.py",
}


def export(model, out: Path) -> None:  # noqa: ANN001
    export_common.export_onnx(model, out, METADATA, SAMPLE_RATE)


def verify(model, out: Path, reference: Path | None) -> None:
    """Front end vs numpy, onnxruntime vs torch, and (if given) vs the reference export."""
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(1)
    pcm = (rng.standard_normal(SAMPLE_RATE * 2) * 0.1).astype(np.float32)
    with torch.no_grad():
        mel = model.mel(torch.from_numpy(pcm)[None])[0].numpy()
    ref = reference_mel(pcm)
    rel = float(np.max(np.abs(mel - ref)) / np.max(np.abs(ref)))
    log.info("mel: folded conv (float32) vs numpy float64 reference: max rel diff %.2e", rel)
    if rel > 1e-4:
        raise SystemExit(f"front end differs from the reference mel spectrogram by {rel:.2e}")

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    ref_sess = None
    if reference is not None and reference.is_file():
        import onnx
        from onnx import numpy_helper

        ref_init = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(reference)).graph.initializer}
        if "melfb" in ref_init:
            d = float(np.max(np.abs(ref_init["melfb"] - model.melfb.numpy())))
            log.info("mel bank vs the reference graph's: max abs diff %.2e", d)
        ref_sess = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"])
    worst = worst_ref = 0.0
    for batch, samples in [(1, MIN_SAMPLES), (1, 16000), (3, 25_123), (2, 48_000), (1, 160_000)]:
        x = (rng.standard_normal((batch, samples)) * 0.1).astype(np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        got = sess.run(["embedding"], {"pcm": x})[0]
        if got.shape != (batch, EMBEDDING_DIM) or not np.all(np.isfinite(got)):
            raise SystemExit(f"bad output for input {x.shape}: {got.shape}")
        err = float(np.max(np.abs(got - want)))
        worst = max(worst, err)
        msg = f"onnxruntime vs torch, input {x.shape}: max abs diff {err:.2e}"
        if ref_sess is not None:
            other = ref_sess.run(["embedding"], {"pcm": x})[0]
            d = float(np.max(np.abs(got - other)))
            worst_ref = max(worst_ref, d)
            msg += f"; vs reference export {d:.2e}"
        log.info(msg)
    if worst > 1e-4:
        raise SystemExit(f"onnxruntime and torch differ by {worst:.2e}")
    if worst_ref > 1e-4:
        raise SystemExit(f"this export and the reference differ by {worst_ref:.2e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path,
                        help=f"resemblyzer-{RESEMBLYZER_VERSION} wheel (default: pip download it)")
    parser.add_argument("--out", type=Path, default=Path("models/resemblyzer.onnx"))
    parser.add_argument("--reference", type=Path, default=REFERENCE,
                        help="reference export to compare with (skipped if missing)")
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
        verify(model, args.out, args.reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
