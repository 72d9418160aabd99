"""The exported CAM++ model (``models/campplus.onnx``) and its wrapper ``streamer.embedder``."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy next to onnxruntime on 2 cores

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf

from streamer.embedder import Embedder
from streamer.errors import ConfigError

MODEL = Path(__file__).resolve().parents[1] / "models" / "campplus.onnx"

#: Real speech from several corpora and languages (paths under ``shared/speech``).
SPEECH_FILES = [
    "librispeech_testother_10spk/1688/1688-142285-0000.flac",
    "librispeech_testother_10spk/1998/1998-15444-0000.flac",
    "commonvoice_fa/cvfa_00243bfe/common_voice_fa_37027019.flac",
    "aishell1_2spk/S0150/BAC009S0150W0001.flac",
    "vctk_4spk",
    "ami_pyannote_diarization/segments/FEE013/ami_seriously_mixture_018980_022320.flac",
]


def read(path: Path, max_s: float = 6.0) -> np.ndarray:
    pcm, rate = sf.read(str(path), dtype="float32", always_2d=True)
    assert rate == 16000
    return pcm.mean(axis=1)[: int(max_s * rate)]


def first_flac(path: Path) -> Path:
    """``path`` itself if it is a file, else the first FLAC below it (sorted)."""
    return path if path.is_file() else sorted(path.rglob("*.flac"))[0]


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    emb = Embedder(MODEL, threads=1)
    emb.load()
    return emb


@pytest.fixture(scope="module")
def clips(speech_dir: Path) -> list[np.ndarray]:
    return [read(first_flac(speech_dir / name)) for name in SPEECH_FILES]


def test_export_matches_reference(shared_dir: Path, clips: list[np.ndarray]) -> None:
    reference = shared_dir / "models" / "campplus_pcm.onnx"
    assert reference.is_file(), f"reference export {reference} not found"
    ours, ref = session(MODEL), session(reference)
    for pcm in clips:
        a = ours.run(["embedding"], {"pcm": pcm[None]})[0][0]
        b = ref.run(["embedding"], {"pcm": pcm[None]})[0][0]
        cosine = float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b))
        assert cosine >= 0.99999
        assert float(np.max(np.abs(a - b))) < 1e-4


def test_graph_io_matches_model_card() -> None:
    sess = session(MODEL)
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.type, len(inp.shape)) == ("pcm", "tensor(float)", 2)
    assert all(isinstance(d, str) for d in inp.shape)  # dynamic batch and samples
    assert (out.name, out.type, out.shape[1]) == ("embedding", "tensor(float)", 192)


def test_embedder_attributes(embedder: Embedder) -> None:
    assert embedder.dim == 192
    assert embedder.sample_rate == 16000
    assert embedder.min_samples == 800
    assert embedder.model_id.startswith("campplus-")
    assert len(embedder.model_id) == len("campplus-") + 12
    assert embedder.load_time_s > 0


def test_model_id_follows_file_name(tmp_path: Path) -> None:
    other = tmp_path / "other.onnx"
    other.symlink_to(MODEL)
    emb = Embedder(other)
    emb.load()
    assert emb.model_id.startswith("other-")


def test_unit_length_and_dim(embedder: Embedder, clips: list[np.ndarray]) -> None:
    for pcm in clips[:3]:
        v = embedder.embed(pcm)
        assert v.shape == (192,) and v.dtype == np.float32
        assert np.all(np.isfinite(v))
        assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5


def test_shortest_input_is_finite(embedder: Embedder, clips: list[np.ndarray]) -> None:
    v = embedder.embed(clips[0][: embedder.min_samples])
    assert np.all(np.isfinite(v))


def test_batch_of_equal_lengths_equals_single_runs(
    embedder: Embedder, clips: list[np.ndarray]
) -> None:
    n = 32000
    same_length = [c[:n] for c in clips[:3]]
    mixed = [same_length[0], clips[1][:20000], same_length[1], same_length[2], clips[2][:9000]]
    batched = embedder.embed_batch(mixed)
    assert batched.shape == (5, 192) and batched.dtype == np.float32
    singles = np.stack([embedder.embed(p) for p in mixed])
    np.testing.assert_allclose(batched, singles, atol=1e-5)
    assert embedder.embed_batch([]).shape == (0, 192)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Embedder(tmp_path / "nope.onnx").load()


def test_load_garbage_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    emb = Embedder(garbage)
    with pytest.raises(ConfigError):
        emb.load()
    assert not emb.loaded


def test_load_wrong_io(tmp_path: Path) -> None:
    import onnx  # in the test extra (an export-time dependency, not a run-time one)
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["audio"], ["embedding"])],
        "wrong",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", "samples"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "wrong.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ConfigError, match="inputs"):
        Embedder(path).load()


def test_bad_thread_count() -> None:
    with pytest.raises(ConfigError):
        Embedder(MODEL, threads=0)


def test_too_short_or_not_mono(embedder: Embedder) -> None:
    with pytest.raises(ValueError, match="too short"):
        embedder.embed(np.zeros(embedder.min_samples - 1, dtype=np.float32))
    with pytest.raises(ValueError, match="1-D"):
        embedder.embed(np.zeros((2, 16000), dtype=np.float32))
    with pytest.raises(ValueError, match="too short"):
        embedder.embed_batch([np.zeros(16000, dtype=np.float32), np.zeros(10, dtype=np.float32)])


def test_embed_before_load_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        Embedder(MODEL).embed(np.zeros(16000, dtype=np.float32))


def test_same_speaker_closer_than_different(embedder: Embedder, speech_dir: Path) -> None:
    libri = speech_dir / "librispeech_testother_10spk"
    speakers = sorted(p for p in libri.iterdir() if p.is_dir())[:3]
    emb = {
        spk.name: embedder.embed_batch([read(f) for f in sorted(spk.glob("*.flac"))[:3]])
        for spk in speakers
    }

    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)

    same = [dist(e, e)[np.triu_indices(len(e), 1)] for e in emb.values()]
    names = list(emb)
    diff = [dist(emb[a], emb[b]).ravel() for i, a in enumerate(names) for b in names[i + 1 :]]
    same_max, diff_min = float(np.max(np.concatenate(same))), float(np.min(np.concatenate(diff)))
    assert same_max < diff_min
    assert same_max < 1.05 < 1.1 < diff_min  # the model card's observed ranges
