"""streamer.stream_embedder on the real models: the frames + head pair reproduces the whole
graph on one piece, pools pieces close to it, and GE2E falls back to averaging."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from streamer.embedder import Embedder
from streamer.errors import ConfigError
from streamer.pooling import total
from streamer.stream_embedder import (
    FRAME_SAMPLES,
    StreamEmbedder,
    channel_paths,
    pair_paths,
    precision_path,
)
from tests.test_model import MODEL, SPEECH_FILES, first_flac, read

SR = 16000


@pytest.fixture(scope="module")
def pair() -> StreamEmbedder:
    emb = Embedder(MODEL, threads=1)
    emb.load()
    s = StreamEmbedder(emb)
    s.load()
    return s


@pytest.fixture(scope="module")
def clips(speech_dir: Path) -> list[np.ndarray]:
    return [read(first_flac(speech_dir / name)) for name in SPEECH_FILES]


def test_pair_is_loaded_next_to_the_model(pair: StreamEmbedder) -> None:
    assert pair.pooled
    assert pair_paths(MODEL) == (MODEL.with_name("campplus_frames.onnx"),
                                 MODEL.with_name("campplus_head.onnx"))


def test_one_piece_equals_the_whole_graph(pair: StreamEmbedder, clips: list[np.ndarray]) -> None:
    for x in clips:
        got = pair.head(pair.stats(x, None))
        want = pair.embedder.embed(x)
        assert float(np.dot(got, want)) > 0.99999
        assert abs(float(np.linalg.norm(got)) - 1.0) < 1e-5


def test_pieces_with_context_pool_close_to_the_whole(pair: StreamEmbedder,
                                                     clips: list[np.ndarray]) -> None:
    """Pieces of 1 s, each seen with 0.5 s of context, pooled: close to the whole graph,
    much closer than to any other clip (the live pipeline's approximation)."""
    pooled = []
    for x in clips:
        parts = []
        for a in range(0, len(x), SR):
            b = min(len(x), a + SR)
            lo = max(0, min(a - SR // 2, b - SR // 10))
            parts.append(pair.stats(x[lo:b], b - a))
        stats = total(parts)
        assert stats is not None
        assert abs(stats.n - len(x) / FRAME_SAMPLES) <= len(parts)  # each sample pooled once
        pooled.append(pair.head(stats))
    whole = pair.embedder.embed_batch(clips)
    cos = np.array(pooled) @ whole.T
    # (measured: 0.83 for a clip with long silences, which pieces normalise one by one)
    assert np.all(np.diag(cos) > 0.8) and np.median(np.diag(cos)) > 0.95, np.diag(cos)
    off = cos[~np.eye(len(clips), dtype=bool)]
    assert np.diag(cos).min() > off.max() + 0.2


def test_batches_equal_single_runs(pair: StreamEmbedder, clips: list[np.ndarray]) -> None:
    n = 24000
    pieces = [x[:n] for x in clips if len(x) >= n]
    keeps = [16000, None] * len(pieces)
    batch = pair.stats_batch(pieces + [clips[0][:5000]], keeps[: len(pieces)] + [None])
    for p, k, got in zip(pieces, keeps, batch):
        want = pair.stats(p, k)
        frames = -(-(1 + (n - 400) // 160) // 2)  # the graph's frame count for n samples
        assert got.n == want.n == (50 if k else frames)
        np.testing.assert_allclose(got.total, want.total, rtol=1e-4, atol=1e-3)


def test_missing_half_of_the_pair_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "campplus.onnx"
    shutil.copy(MODEL, model)
    shutil.copy(pair_paths(MODEL)[0], pair_paths(model)[0])
    emb = Embedder(model)
    emb.load()
    with pytest.raises(ConfigError, match="both exist"):
        StreamEmbedder(emb).load()


def test_a_pair_from_another_model_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "resemblyzer.onnx"
    shutil.copy(MODEL.with_name("resemblyzer.onnx"), model)
    for src, dst in zip(pair_paths(MODEL), pair_paths(model)):
        shutil.copy(src, dst)
    emb = Embedder(model)
    emb.load()
    with pytest.raises(ConfigError):
        StreamEmbedder(emb).load()


def test_without_a_pair_pieces_average_whole_graph_embeddings(clips: list[np.ndarray]) -> None:
    emb = Embedder(MODEL.with_name("resemblyzer.onnx"))
    emb.load()
    s = StreamEmbedder(emb)
    s.load()
    assert not s.pooled
    x = clips[0]
    a, b = s.stats(x[:SR * 2], None), s.stats(x[SR:SR * 3], SR)
    assert (a.n, b.n) == (100, 50)  # weighted by the pooled length, in 20 ms frames
    e = s.head(a + b)
    want = 2 * emb.embed(x[:SR * 2]) + emb.embed(x[SR:SR * 3])
    np.testing.assert_allclose(e, want / np.linalg.norm(want), atol=1e-5)


@pytest.mark.parametrize("channel", ["telephone", "far"])
def test_each_line_variant_is_its_own_pair(pair: StreamEmbedder, clips: list[np.ndarray],
                                           channel: str) -> None:
    """``match.channel: telephone`` or ``far`` loads the shipped variant next to the
    model: unit embeddings of the model's size, its own numbers, pooled like the model's
    pair."""
    frames, head = channel_paths(MODEL, channel)
    assert (frames.name, head.name) == (f"campplus_{channel}_frames.onnx",
                                        f"campplus_{channel}_head.onnx")
    phone = StreamEmbedder(pair.embedder, channel)
    phone.load()
    assert phone.loaded and phone.pooled and phone.channel == channel
    for x in clips[:2]:
        v = phone.embed(x)
        assert v.shape == (pair.embedder.dim,) and abs(float(np.linalg.norm(v)) - 1) < 1e-4
        assert np.allclose(v, phone.head(phone.stats(x, None)))
        w = pair.embedder.embed(x)
        # the variant keeps wideband speech where the model puts it, but is not the model
        assert 0.8 < float(np.dot(v, w)) < 0.99999


def test_a_missing_variant_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "campplus.onnx"
    shutil.copy(MODEL, model)
    shutil.copy(channel_paths(MODEL, "telephone")[0], channel_paths(model, "telephone")[0])
    emb = Embedder(model)
    emb.load()
    with pytest.raises(ConfigError, match=r"match.channel 'telephone' needs "
                                          r"campplus_telephone_head.onnx next to campplus.onnx"):
        StreamEmbedder(emb, "telephone").load()
    other = tmp_path / "resemblyzer.onnx"
    shutil.copy(MODEL.with_name("resemblyzer.onnx"), other)
    for src, dst in zip(channel_paths(MODEL, "telephone"), channel_paths(other, "telephone")):
        shutil.copy(src, dst)
    ge2e = Embedder(other)
    ge2e.load()
    with pytest.raises(ConfigError, match="do not give unit embeddings of 256"):
        StreamEmbedder(ge2e, "telephone").load()


@pytest.mark.parametrize("channel", [None, "telephone", "far"])
def test_int8_frames_graphs_stay_close_to_float32(pair: StreamEmbedder, clips: list[np.ndarray],
                                                  channel: str | None) -> None:
    """``model.int8_channels`` runs the shipped int8 copy of each frames graph
    (the model's and each variant's), the float32 head, and embeds real speech close to
    the float32 graphs: much closer than to any other clip."""
    fp32 = StreamEmbedder(pair.embedder, channel)
    fp32.load()
    int8 = StreamEmbedder(pair.embedder, channel, precision="int8")
    int8.load()
    assert int8.loaded and int8.pooled
    frames = pair_paths(MODEL)[0] if channel is None else channel_paths(MODEL, channel)[0]
    assert precision_path(frames, "int8").name == frames.name.replace(".onnx", "_int8.onnx")
    assert precision_path(frames, "float32") == frames
    a = np.array([fp32.embed(x) for x in clips])
    b = np.array([int8.embed(x) for x in clips])
    cos = a @ b.T
    # (measured on 3 s of LibriSpeech: 0.993-0.997 for the model and both variants)
    assert np.all(np.diag(cos) > 0.98), np.diag(cos)
    assert np.all(np.diag(cos) < 0.99999)  # it is another graph, not the float32 one
    off = cos[~np.eye(len(clips), dtype=bool)]
    assert np.diag(cos).min() > off.max() + 0.2


def _float32_copy(tmp_path: Path, channel: str) -> Embedder:
    """A loaded embedder of a copy of the model with its float32 pair and ``channel``'s
    variant next to it, but no int8 copies."""
    model = tmp_path / "campplus.onnx"
    shutil.copy(MODEL, model)
    for src, dst in zip(pair_paths(MODEL) + channel_paths(MODEL, channel),
                        pair_paths(model) + channel_paths(model, channel)):
        shutil.copy(src, dst)
    emb = Embedder(model)
    emb.load()
    return emb


def test_a_missing_int8_copy_is_refused(tmp_path: Path) -> None:
    emb = _float32_copy(tmp_path, "far")
    for channel in (None, "far"):
        with pytest.raises(ConfigError, match=r"model.int8_channels has (wideband|far): it needs "
                                              r"campplus_(far_)?frames_int8.onnx next to "
                                              r"campplus.onnx"):
            StreamEmbedder(emb, channel, precision="int8").load()
    StreamEmbedder(emb, "far").load()  # float32 needs no copy


def test_an_int8_copy_of_another_graph_is_refused(tmp_path: Path) -> None:
    """The int8 file must be the quantised copy of the frames graph beside it: the far
    variant's int8 graph standing in for the model's (or the telephone variant's) is
    refused at load."""
    emb = _float32_copy(tmp_path, "telephone")
    far_int8 = precision_path(channel_paths(MODEL, "far")[0], "int8")
    shutil.copy(far_int8, precision_path(pair_paths(emb.path)[0], "int8"))
    shutil.copy(far_int8, precision_path(channel_paths(emb.path, "telephone")[0], "int8"))
    with pytest.raises(ConfigError, match="do not reproduce campplus.onnx"):
        StreamEmbedder(emb, precision="int8").load()
    with pytest.raises(ConfigError, match="does not reproduce campplus_telephone_frames.onnx"):
        StreamEmbedder(emb, "telephone", precision="int8").load()


def test_an_int8_copy_that_cannot_load_is_refused(tmp_path: Path) -> None:
    """Garbage in a variant's int8 file: refused by name, after the variant's own float32
    graphs loaded and passed their check; the float32 variant still loads."""
    emb = _float32_copy(tmp_path, "far")
    broken = precision_path(channel_paths(emb.path, "far")[0], "int8")
    broken.write_bytes(b"not an onnx graph" * 64)
    with pytest.raises(ConfigError, match=r"cannot load campplus_far_frames_int8.onnx: "):
        StreamEmbedder(emb, "far", precision="int8").load()
    plain = StreamEmbedder(emb, "far")
    plain.load()
    assert plain.loaded and plain.pooled


def test_a_model_without_a_pair_runs_its_whole_graph_at_either_precision() -> None:
    """GE2E has no frames graph to quantise: the default ``model.int8_channels`` loads it
    as without, pooling whole-graph embeddings of each piece."""
    emb = Embedder(MODEL.with_name("resemblyzer.onnx"))
    emb.load()
    s = StreamEmbedder(emb, precision="int8")
    s.load()
    assert s.loaded and not s.pooled


async def test_an_app_whose_far_rooms_run_int8_embeds_their_requests_float32(
        tmp_path: Path, clips: list[np.ndarray]) -> None:
    """``model.int8_channels`` with ``far``: the far rooms' live pieces and finals run the
    variant's int8 frames graph, while identify / verify / enrolment checks in those
    rooms embed with its float32 graphs, as when far is not in the list."""
    from streamer.app import App
    from streamer.config import config_from_mapping

    config = config_from_mapping({"rooms": {"table-*": "far"},
                                  "model": {"int8_channels": ["wideband", "far"]}})
    app = App(config, data_dir=tmp_path / "data")
    app.load()
    try:
        assert app.channels["far"].precision == "int8"
        assert app.request_channels["far"].precision == "float32"
        assert set(app.request_channels) == {"far"}  # wideband requests: the whole graph
        assert app.worker is not None
        app.worker.start()
        clip = clips[0]
        want = StreamEmbedder(app.embedder, "far")
        want.load()
        got = await app.worker.embed(clip, channel="far")
        np.testing.assert_allclose(got, want.embed(clip), atol=1e-5)
        live = app.channels["far"].embed(clip)
        assert float(live @ got) < 1 - 1e-6  # the int8 copy differs a little
        await app.worker.close(timeout_s=5.0)
    finally:
        app.close()


def test_a_variant_no_room_streams_loads_float32_only(tmp_path: Path) -> None:
    """The telephone-line variant loaded for phone-line enrolments alone (no phone room)
    runs requests only: float32, without its int8 copy or a second float32 copy."""
    from streamer.app import App
    from streamer.config import config_from_mapping

    app = App(config_from_mapping({}), data_dir=tmp_path / "data")
    app.load()
    try:
        assert app.config.model.precision("telephone") == "int8"  # listed, but not live
        assert app.channels["telephone"].precision == "float32"
        assert app.request_channels == {}
    finally:
        app.close()
