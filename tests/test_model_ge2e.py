"""The second model, GE2E (``models/resemblyzer.onnx``), its wrapper and ``config-ge2e.yaml``."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy next to onnxruntime on 2 cores

from pathlib import Path

import numpy as np
import pytest

from test_model import first_flac, read, session

from streamer.config import load_config
from streamer.embedder import Embedder

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "resemblyzer.onnx"
CAMPPLUS = ROOT / "models" / "campplus.onnx"

#: Real speech from several corpora and languages (paths under ``shared/speech``).
SPEECH_FILES = [
    "librispeech_testother_10spk/1688/1688-142285-0000.flac",
    "librispeech_testother_10spk/1998/1998-15444-0000.flac",
    "commonvoice_fa/cvfa_00243bfe/common_voice_fa_37027019.flac",
    "aishell1_2spk/S0150/BAC009S0150W0001.flac",
    "vctk_4spk",
    "ami_pyannote_diarization/segments/FEE013/ami_seriously_mixture_018980_022320.flac",
    "speechcommands_v002test_80spk",
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    emb = Embedder(MODEL, threads=1)
    emb.load()
    return emb


@pytest.fixture(scope="module")
def clips(speech_dir: Path) -> list[np.ndarray]:
    return [read(first_flac(speech_dir / name)) for name in SPEECH_FILES]


def test_export_matches_reference(shared_dir: Path, clips: list[np.ndarray]) -> None:
    reference = shared_dir / "models" / "resemblyzer_pcm.onnx"
    assert reference.is_file(), f"reference export {reference} not found"
    assert len(clips) >= 5
    ours, ref = session(MODEL), session(reference)
    for pcm in clips:
        for x in (pcm, pcm[:16000]):  # whole clip (<= 6 s) and its first second
            a = ours.run(["embedding"], {"pcm": x[None]})[0][0]
            b = ref.run(["embedding"], {"pcm": x[None]})[0][0]
            cosine = float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b))
            assert cosine >= 0.99999
            assert float(np.max(np.abs(a - b))) < 1e-4


def test_graph_io_and_metadata() -> None:
    sess = session(MODEL)
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.type, len(inp.shape)) == ("pcm", "tensor(float)", 2)
    assert all(isinstance(d, str) for d in inp.shape)  # dynamic batch and samples
    assert (out.name, out.type, out.shape[1]) == ("embedding", "tensor(float)", 256)
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["min_samples"] == "800"
    assert meta["embedding_dim"] == "256"
    assert "resemblyzer==0.1.4" in meta["source"]
    assert meta["license"].startswith("Apache-2.0")


def test_embedder_attributes(embedder: Embedder) -> None:
    assert embedder.dim == 256
    assert embedder.sample_rate == 16000
    assert embedder.min_samples == 800  # from the graph's metadata
    assert embedder.model_id.startswith("resemblyzer-")
    assert len(embedder.model_id) == len("resemblyzer-") + 12


def test_model_ids_differ_between_models(embedder: Embedder) -> None:
    campplus = Embedder(CAMPPLUS)
    campplus.load()
    assert campplus.model_id != embedder.model_id
    assert (campplus.dim, campplus.min_samples) == (192, 800)  # no metadata entry: default


def test_unit_length_dim_and_non_negative(embedder: Embedder, clips: list[np.ndarray]) -> None:
    for pcm in clips:
        v = embedder.embed(pcm)
        assert v.shape == (256,) and v.dtype == np.float32
        assert np.all(np.isfinite(v))
        assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
        assert float(v.min()) >= 0.0  # ReLU before the L2 norm


def test_shortest_input_and_silence_are_finite(embedder: Embedder,
                                               clips: list[np.ndarray]) -> None:
    v = embedder.embed(clips[0][: embedder.min_samples])
    assert np.all(np.isfinite(v))
    v = embedder.embed(np.zeros(16000, dtype=np.float32))
    assert np.all(np.isfinite(v)) and abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    with pytest.raises(ValueError, match="too short"):
        embedder.embed(np.zeros(embedder.min_samples - 1, dtype=np.float32))


def test_batch_equals_single_runs(embedder: Embedder, clips: list[np.ndarray]) -> None:
    n = 32000
    same_length = [c[:n] for c in clips[:3]]
    mixed = [same_length[0], clips[1][:20000], same_length[1], same_length[2], clips[2][:9000]]
    batched = embedder.embed_batch(mixed)
    assert batched.shape == (5, 256) and batched.dtype == np.float32
    singles = np.stack([embedder.embed(p) for p in mixed])
    np.testing.assert_allclose(batched, singles, atol=1e-5)
    assert embedder.embed_batch([]).shape == (0, 256)


def test_same_speaker_closer_than_different(embedder: Embedder, speech_dir: Path) -> None:
    """On clean read speech, 3 s crops: same-speaker pairs sit lower than different ones."""
    libri = speech_dir / "librispeech_testother_10spk"
    speakers = sorted(p for p in libri.iterdir() if p.is_dir())[:4]
    emb = {
        spk.name: embedder.embed_batch([read(f, 3.0) for f in sorted(spk.glob("*.flac"))[:3]])
        for spk in speakers
    }

    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)

    same = np.concatenate([dist(e, e)[np.triu_indices(len(e), 1)] for e in emb.values()])
    names = list(emb)
    diff = np.concatenate([dist(emb[a], emb[b]).ravel()
                           for i, a in enumerate(names) for b in names[i + 1:]])
    assert float(np.median(same)) < float(np.median(diff))
    assert float(np.max(diff)) < 2 ** 0.5 + 1e-6  # non-negative vectors: cos >= 0


def test_config_ge2e_selects_the_model() -> None:
    cfg = load_config(ROOT / "config-ge2e.yaml")
    assert cfg.model_path == MODEL.resolve()
    default = load_config(ROOT / "config.yaml")
    assert default.model_path == CAMPPLUS.resolve()
    assert cfg.match.max_distance < default.match.max_distance  # GE2E distances sit lower
    # Everything else is the default configuration.
    assert cfg.segment.change_distance < default.segment.change_distance
    assert cfg.enroll.consistency_max_distance < default.enroll.consistency_max_distance
    assert cfg.replace(model=default.model, match=default.match, segment=default.segment,
                       enroll=default.enroll) == default
    assert cfg.match.top_k == default.match.top_k
