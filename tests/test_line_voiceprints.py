"""Line voiceprints: the phone-line copies (pure), the voiceprint of their embeddings, and
:class:`~streamer.line_voiceprints.Lines` keeping a line's registry in step with the main
one (two real SQLite registry objects on one database; vectors made up, no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamer.errors import UnknownPerson
from streamer.line_voiceprints import Lines, line_model_id, searched
from streamer.phone_line import LINE_COPIES, line_copies, line_voiceprint, phone_line
from streamer.registry import Registry, SqliteRegistry

DIM = 8
MODEL = "test-model"


def _speech(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Noise with a voiced-like band structure, at about -20 dBFS."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    x = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate((150, 450, 1200, 5000)))
    x = x + 0.3 * rng.standard_normal(len(t))
    return (0.1 * x / np.max(np.abs(x))).astype(np.float32)


def _band_db(x: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    return float(10 * np.log10(spectrum[(f >= low) & (f < high)].sum() + 1e-30))


def test_a_phone_line_keeps_the_line_band_and_the_length() -> None:
    x = _speech()
    y = phone_line(x, np.random.default_rng(1))
    assert y.dtype == np.float32 and len(y) == len(x)
    # the 5 kHz tone is gone (quantisation and dither only), the speech band stays
    assert _band_db(x, 4500, 7500) - _band_db(x, 400, 3000) > -10
    assert _band_db(y, 4500, 7500) - _band_db(y, 400, 3000) < -40
    assert np.all(np.abs(y) <= 1.0)
    # 16-bit samples, as a server receives them
    assert np.allclose(y * 32768, np.round(y * 32768))
    # a random level between -32 and -20 dBFS before the line's noise
    level = 10 * np.log10(np.mean(y.astype(np.float64) ** 2))
    assert -36 < level < -16


def test_line_copies_are_different_lines_and_the_same_every_time() -> None:
    x = _speech()
    copies = line_copies(x)
    assert len(copies) == LINE_COPIES
    assert not np.array_equal(copies[0], copies[1])
    again = line_copies(x.copy())
    assert all(np.array_equal(a, b) for a, b in zip(copies, again, strict=True))
    other = line_copies(_speech(seed=3))
    assert not np.array_equal(copies[0], other[0])
    assert len(line_copies(x, copies=1)) == 1
    assert [len(c) for c in line_copies(np.zeros(1, np.float32))] == [1] * LINE_COPIES


def test_line_voiceprint_is_the_renormalised_mean() -> None:
    a, b = np.eye(DIM)[0], np.eye(DIM)[1]
    v = line_voiceprint([a, b])
    assert v.dtype == np.float32
    assert np.allclose(v, (a + b) / np.sqrt(2), atol=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        line_voiceprint([])
    with pytest.raises(ValueError, match="cancel out"):
        line_voiceprint([a, -a])


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM)
    out: np.ndarray = (v / np.linalg.norm(v)).astype(np.float32)
    return out


def _lines(data_dir: Path, channels: tuple[str, ...] = ("telephone",)) -> Lines:
    main = SqliteRegistry(data_dir, MODEL, DIM)
    main.open()
    made: list[Registry] = []

    def open_line(model_id: str) -> Registry:
        registry = SqliteRegistry(data_dir, model_id, DIM)
        made.append(registry)
        return registry

    lines = Lines(main, open_line, channels)
    lines.open()
    assert [r.model_id for r in made] == [line_model_id(MODEL, c) for c in channels]
    return lines


def _close(lines: Lines) -> None:
    lines.close()
    lines.main.close()


def test_people_enrolled_before_get_their_wideband_voiceprint_once(tmp_path: Path) -> None:
    main = SqliteRegistry(tmp_path, MODEL, DIM)
    main.open()
    ann = main.add_person("Ann", None, _unit(1), 7.0)
    bob = main.add_person("Bob", None, _unit(2), 5.0)
    main.close()

    lines = _lines(tmp_path)
    try:
        line = lines.registry("telephone")
        assert line is not lines.main and lines.registry("far") is lines.main
        assert lines.kept() == ("telephone",)
        assert len(line) == 2
        found = line.search(_unit(1), 2)
        assert found[0].id == ann.id and found[0].distance == pytest.approx(0.0, abs=1e-3)
        assert line.distance_to(bob.id, _unit(2)) == pytest.approx(0.0, abs=1e-3)
        assert lines.fill_in("telephone") == 0  # stored: nothing left to fill in
        # the person's own record still counts the model's speech only
        assert lines.main.get(ann.id).speech_s == pytest.approx(7.0)
    finally:
        _close(lines)
    lines = _lines(tmp_path)  # a restart fills in nobody again
    try:
        assert len(lines.registry("telephone")) == 2
        assert lines.fill_in("telephone") == 0
    finally:
        _close(lines)


def test_line_voiceprints_follow_the_main_registry(tmp_path: Path) -> None:
    lines = _lines(tmp_path)
    try:
        main, line = lines.main, lines.registry("telephone")
        assert line is not main and searched(main, lines, "telephone") is line
        assert searched(main, lines, "wideband") is main
        ann = main.add_person("Ann", None, _unit(1), 7.0)
        lines.add(ann.id, {"telephone": _unit(11)}, 7.0)
        cid = main.add_person("Cid", None, _unit(3), 6.0)
        lines.add(cid.id, {"telephone": _unit(13)}, 6.0)
        assert line.search(_unit(11), 1)[0].id == ann.id
        assert main.search(_unit(11), 1)[0].distance > 0.1  # the line's own vector
        # another enrolment of Ann: the line voiceprint is re-weighted by speech
        main.add_voiceprint(ann.id, _unit(1), 7.0)
        lines.add(ann.id, {"telephone": _unit(21)}, 7.0)
        both = line_voiceprint([_unit(11), _unit(21)])
        assert line.distance_to(ann.id, both) == pytest.approx(0.0, abs=1e-3)

        main.update_person(ann.id, name="Ann B.")
        lines.renamed(ann.id, "Ann B.")
        assert line.search(both, 1)[0].name == "Ann B."

        roster = main.set_room("dial-in-1", [cid.id])
        lines.roster_set("dial-in-1", roster)
        assert [c.id for c in line.search_roster("dial-in-1", _unit(11), 5) or []] == [cid.id]
        lines.roster_set("dial-in-1", None)
        assert line.search_roster("dial-in-1", _unit(11), 5) is None

        needle = both.astype("<f4").tobytes()[:16]
        line.replica.flush()  # the line's cache file now holds Ann's line voiceprint
        assert any(needle in path.read_bytes() for path in tmp_path.glob("index-*"))
        main.delete_person(ann.id)
        lines.deleted(ann.id)
        assert ann.id not in line.replica
        assert [c.id for c in line.search(both, 5)] == [cid.id]
        with pytest.raises(UnknownPerson):
            line.distance_to(ann.id, both)
        lines.deleted(ann.id)  # nobody indexed: nothing to do
        lines.renamed(ann.id, "gone")
        # the line's cache files hold no vector of Ann's
        for path in tmp_path.glob("index-*"):
            assert needle not in path.read_bytes(), path.name
    finally:
        _close(lines)
    lines = _lines(tmp_path)  # what a restart loads: Cid only, with the line's vector
    try:
        line = lines.registry("telephone")
        assert len(line) == 1 and line.search(_unit(13), 1)[0].id == cid.id
        assert line.search(_unit(13), 1)[0].distance == pytest.approx(0.0, abs=1e-3)
    finally:
        _close(lines)


def test_no_line_kept_searches_the_main_registry(tmp_path: Path) -> None:
    lines = _lines(tmp_path, channels=())
    try:
        assert lines.kept() == () and lines.registry("telephone") is lines.main
        assert searched(lines.main, lines, "telephone") is lines.main
        assert searched(lines.main, None, "telephone") is lines.main
        person = lines.main.add_person("Ann", None, _unit(1), 7.0)
        lines.deleted(person.id)  # no line: nothing to follow
    finally:
        _close(lines)


def test_a_line_that_cannot_open_closes_what_was_opened(tmp_path: Path) -> None:
    main = SqliteRegistry(tmp_path, MODEL, DIM)
    main.open()
    opened: list[SqliteRegistry] = []

    def open_line(model_id: str) -> Registry:
        if opened:
            raise RuntimeError("second line fails")
        registry = SqliteRegistry(tmp_path, model_id, DIM)
        opened.append(registry)
        return registry

    lines = Lines(main, open_line, ("telephone", "far"))
    with pytest.raises(RuntimeError, match="second line"):
        lines.open()
    assert lines.kept() == ()
    assert opened[0]._db is None  # closed again
    main.close()
