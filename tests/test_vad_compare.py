"""The far-field VAD comparison runs (small) and ``models/segmentation.onnx`` answers sanely.

``bench/vad_compare.py --small`` is run in a subprocess and its figures checked for
range only (no timing assertions, no expected values). The ONNX test checks the graph's
contract on real speech: (frames, 7) powerset log-probabilities, one frame per 270
samples, that sum to 1 per frame after ``exp``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from streamer.evaluation import read_audio

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "segmentation.onnx"


def test_vad_compare_runs_small(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "vad_compare.py"), "--small", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "single clips" in out and "meetings" in out and "real-time factor" in out
    for name in (
        "webrtcvad",
        "pyannote step 0.5 s, latency 0.5 s",
        "pyannote whole file",
        "OR -> segmenter (latency 0.5 s)",
    ):
        assert name in out
    data = json.loads((tmp_path / "vad_compare-tune-small.json").read_text())
    assert data["small"] and data["half"] == "tune"
    assert data["sets"]["single clips"] > 0 and data["sets"]["meetings"] > 0
    conditions = {r["condition"] for r in data["rows"]}
    assert {"clean", "room"} <= conditions
    for row in data["rows"]:
        for key in ("recall", "false_alarm", "noise_alone", "pauses_kept"):
            v = row[key]
            assert v is None or 0.0 <= v <= 1.0, (row["detector"], row["condition"], key, v)
        assert row["speech"] > 0 and row["recall"] is not None
    by = {(r["set"], r["condition"], r["detector"]): r for r in data["rows"]}
    # close-talk speech is found by both detectors (a broken frame alignment would not be)
    assert by[("single clips", "clean", "webrtcvad")]["recall"] > 0.8
    assert by[("single clips", "clean", "pyannote whole file")]["recall"] > 0.8
    # the union can only add speech frames to webrtcvad's
    for cond in conditions:
        union = by[("meetings", cond, "OR -> segmenter (latency 0.5 s)")]
        web = by[("meetings", cond, "webrtcvad")]
        assert union["speech_hit"] >= web["speech_hit"] * 0.99
    cpu = data["cpu"]
    assert cpu["window_ms"] > 0 and 0 < cpu["stream_0.5s_rtf"] and 0 < cpu["whole_file_rtf"]


def test_segmentation_onnx_on_real_speech(speech_dir: Path) -> None:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(MODEL), opts, providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("pcm", "logprobs")
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["sample_rate"] == "16000" and meta["frame_step_samples"] == "270"
    files = sorted((speech_dir / "librispeech_testother_10spk").rglob("*.flac"))[:2]
    files += sorted((speech_dir / "ami_pyannote_diarization" / "recordings").glob("*.flac"))[:1]
    assert files
    for path in files:
        x = read_audio(path)[: 10 * 16000]
        logp = session.run(None, {"pcm": x[None, None, :]})[0]
        assert logp.dtype == np.float32 and logp.ndim == 3 and logp.shape[0] == 1
        frames = logp[0]
        assert frames.shape[1] == 7
        assert abs(frames.shape[0] - len(x) / 270) < 5  # 59.26 frames per second
        assert np.all(np.isfinite(frames)) and np.all(frames <= 1e-5)
        np.testing.assert_allclose(np.exp(frames).sum(axis=1), 1.0, atol=1e-4)
        speech = 1.0 - np.exp(frames[:, 0])
        assert speech.max() > 0.9  # real speech is somewhere in every file
    # batch of two equal-length inputs == two single runs
    a, b = (read_audio(f)[:24000] for f in files[:2])
    both = session.run(None, {"pcm": np.stack([a, b])[:, None, :]})[0]
    single = session.run(None, {"pcm": b[None, None, :]})[0]
    np.testing.assert_allclose(both[1], single[0], atol=1e-4)
