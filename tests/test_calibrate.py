"""``streamer calibrate``: scoring, the recommendation, plots, config editing, the command.

The pure parts run on hand-made distances and vectors, with expectations derived from
the definitions (FAR = share of impostor distances ``<=`` the threshold). The command
itself runs in a subprocess with the real model on a small folder of real speech.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from streamer.calibrate import (
    CalibrationError,
    Item,
    PlotUnavailable,
    Scores,
    Speaker,
    find_speakers,
    format_report,
    recommend,
    report_json,
    save_calibration_png,
    score,
    set_max_distance,
    write_max_distance,
)
from streamer.room_profiles import PRESETS
from streamer.config import load_config

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from streamer.cli import main; main()"]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "STREAMER_LOG": "WARNING"}


def far(values: np.ndarray, t: float) -> float:
    """The definition: share of impostor distances accepted (<= t)."""
    return sum(1 for v in values if v <= t) / len(values)


def frr(values: np.ndarray, t: float) -> float:
    return sum(1 for v in values if v > t) / len(values)


def scores_of(genuine: list[float], nearest: list[float], never: list[float] = (),
              pairs: list[float] | None = None, enrolled: int = 6) -> Scores:
    speakers = [Speaker(f"s{k}", [], []) for k in range(enrolled)]
    return Scores(np.array(genuine, float), np.array(nearest, float), np.array(never, float),
                  np.array(pairs if pairs is not None else list(nearest) + list(never), float),
                  speakers, {f"n{k}": 1 for k in range(len(never))})


# -- recommendation ---------------------------------------------------------------------------


def test_recommendation_is_the_largest_grid_threshold_within_the_target() -> None:
    rng = np.random.default_rng(7)
    genuine = list(rng.normal(0.75, 0.12, 150))
    nearest = list(rng.normal(1.25, 0.08, 180))
    never = list(rng.normal(1.3, 0.06, 120))
    s = scores_of(genuine, nearest, never)
    open_set = s.open_set
    for target in (0.01, 0.02, 0.05, 0.2):
        rec = recommend(s, target, current=1.0, step=0.01)
        t = rec.threshold
        assert math.isclose(t * 100, round(t * 100)), "on the 0.01 grid"
        assert far(open_set, t) <= target
        assert far(open_set, t + 0.01) > target, "the next grid step breaks the target"
        assert rec.far_1n == pytest.approx(far(open_set, t))
        assert rec.frr == pytest.approx(frr(np.array(genuine), t))


def test_never_enrolled_voices_count_as_false_accepts() -> None:
    # 100 nearest-other distances from 1.20 up: at 1 % one may be accepted, so without
    # never-enrolled voices the limit is the second smallest (1.21 -> 1.20). One
    # never-enrolled voice at 1.02 makes the open set 101 trials (still 1 allowed): the
    # limit becomes the second smallest of the union, 1.20 -> 1.19.
    nearest = [1.20 + 0.01 * k for k in range(100)]
    alone = recommend(scores_of([0.6] * 30, nearest), 0.01).threshold
    assert alone == pytest.approx(1.20)
    with_never = recommend(scores_of([0.6] * 30, nearest, never=[1.02]), 0.01).threshold
    assert with_never == pytest.approx(1.19)
    # Two close never-enrolled voices: 102 trials, 1 allowed, limit the second (1.03).
    two = recommend(scores_of([0.6] * 30, nearest, never=[1.02, 1.035]), 0.01).threshold
    assert two == pytest.approx(1.03)


def test_table_spans_the_recommendation_and_the_current_value() -> None:
    nearest = [1.10 + 0.002 * k for k in range(200)]
    rec = recommend(scores_of([0.7] * 40, nearest), 0.01, current=0.8)
    ts = [row["threshold"] for row in rec.rows]
    expected = {round(rec.threshold + 0.025 * k, 3) for k in range(-4, 5)} | {0.8}
    assert ts == sorted(expected)
    for row in rec.rows:
        assert row["far_1n"] == pytest.approx(far(np.array(nearest), row["threshold"]))
    text = format_report(scores_of([0.7] * 40, nearest), rec, 8.0)
    assert re.search(r"0\.800 .*<- current", text)
    assert re.search(rf"{rec.threshold:.3f} .*<- recommended", text)
    assert f"recommended match.max_distance: {rec.threshold:.2f}" in text


def test_too_few_impostor_trials_warns_with_the_number_needed() -> None:
    few = recommend(scores_of([0.6] * 30, [1.2 + 0.01 * k for k in range(40)]), 0.01)
    assert any("only 40 open-set impostor trials" in w and "100" in w and "300" in w
               for w in few.warnings)
    # 1/0.05 = 20 trials needed: 40 are enough for a 5 % target.
    enough = recommend(scores_of([0.6] * 30, [1.2 + 0.01 * k for k in range(40)]), 0.05)
    assert not any("impostor trials" in w for w in enough.warnings)


def test_other_warnings() -> None:
    rec = recommend(scores_of([0.6] * 5, [1.2] * 200, enrolled=2), 0.01)
    text = " ".join(rec.warnings)
    assert "only 2 enrolled speakers" in text
    assert "only 5 genuine trials" in text
    assert "no never-enrolled voices" in text
    # Genuine distances above the first impostor: most are rejected at the recommendation.
    high = recommend(scores_of([1.3] * 30, [1.0 + 0.001 * k for k in range(300)]), 0.01)
    assert any("of genuine files are rejected" in w for w in high.warnings)


def test_no_threshold_meets_the_target() -> None:
    rec = recommend(scores_of([0.2] * 30, [0.005] * 200), 0.01)
    assert rec.threshold == pytest.approx(0.01)
    assert any("no threshold reaches" in w for w in rec.warnings)


def test_eer_is_reported_for_the_1to1_pairs() -> None:
    rec = recommend(scores_of([0.5, 0.6, 0.9], [1.2, 1.3], pairs=[0.8, 1.2, 1.3, 1.4]), 0.5)
    # sorted: genuine 0.5 0.6 0.9, impostor 0.8 ...: at 0.8 FAR 1/4, FRR 1/3 (closest).
    assert rec.eer == pytest.approx((1 / 4 + 1 / 3) / 2)
    assert rec.eer_threshold == pytest.approx(0.8)


def test_bad_target_is_refused() -> None:
    with pytest.raises(ValueError):
        recommend(scores_of([0.6], [1.2]), 0.0)
    with pytest.raises(ValueError):
        recommend(scores_of([0.6], [1.2]), 1.0)


# -- scoring (enrolment split, voiceprints) ---------------------------------------------------


def unit(*v: float) -> np.ndarray:
    a = np.array(v, float)
    return a / np.linalg.norm(a)


def item(speaker: str, name: str, speech_s: float, vector: np.ndarray | None) -> Item:
    return Item(Path(f"{speaker}/{name}.flac"), speaker, speech_s, vector,
                None if vector is not None else "too short")


def test_score_splits_weights_and_labels() -> None:
    items = {
        # a: 5 s + 4 s reach 8 s of speech; the third file is the test.
        "a": [item("a", "1", 5.0, unit(1, 0, 0)), item("a", "2", 4.0, unit(0, 1, 0)),
              item("a", "3", 3.0, unit(1, 1, 0))],
        # b: enrolment never reaches 8 s, but one file is always kept for testing.
        "b": [item("b", "1", 2.0, unit(0, 0, 1)), item("b", "2", 2.0, unit(0, 0, 1)),
              item("b", "3", 2.0, unit(0, 1, 1))],
        # c: one usable file (one too short): used only as a never-enrolled voice.
        "c": [item("c", "1", 9.0, unit(1, 0, 1)), item("c", "2", 0.3, None)],
    }
    s = score(items, enrol_s=8.0)
    assert [x.name for x in s.enrolled] == ["a", "b"]
    assert [i.path.name for i in s.enrolled[0].enrol] == ["1.flac", "2.flac"]
    assert [i.path.name for i in s.enrolled[1].enrol] == ["1.flac", "2.flac"]
    assert s.impostor_only == {"c": 1}
    assert [i.path.name for i in s.skipped] == ["2.flac"]
    # Voiceprints: a = unit(5*x + 4*y), b = z (weighted mean of equal vectors).
    va, vb = unit(5, 4, 0), unit(0, 0, 1)
    ta, tb, tc = unit(1, 1, 0), unit(0, 1, 1), unit(1, 0, 1)
    def d(u: np.ndarray, v: np.ndarray) -> float:
        return float(np.linalg.norm(u - v))

    assert s.genuine == pytest.approx([d(ta, va), d(tb, vb)])
    assert s.nearest_other == pytest.approx([d(ta, vb), d(tb, va)])
    assert s.never_enrolled == pytest.approx([min(d(tc, va), d(tc, vb))])
    assert sorted(s.pairs) == pytest.approx(sorted([d(ta, vb), d(tb, va), d(tc, va), d(tc, vb)]))


def test_score_enrols_line_voiceprints_and_tests_what_the_room_hears() -> None:
    """A phone room's calibration: enrolment files count with the line voiceprint they
    would make (``Item.line_vector``), trials with the variant's vector (``trial_vector``)."""
    def line_item(speaker: str, name: str, vector: np.ndarray, heard: np.ndarray,
                  line: np.ndarray) -> Item:
        return Item(Path(f"{speaker}/{name}.flac"), speaker, 5.0, vector,
                    trial_vector=heard, line_vector=line)

    x, y, z = unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)
    items = {"a": [line_item("a", "1", x, y, z), line_item("a", "2", x, z, y)],
             "b": [line_item("b", "1", y, x, x), line_item("b", "2", y, x, z)]}
    s = score(items, enrol_s=5.0)
    # a's voiceprint is z (its line vector), its trial heard as z: distance 0
    # b's voiceprint is x, its trial heard as x: 0; the other person is sqrt(2) away
    assert s.genuine == pytest.approx([0.0, 0.0])
    assert s.nearest_other == pytest.approx([np.sqrt(2), np.sqrt(2)])
    assert items["a"][0].enrolled is z and items["a"][0].heard is y
    assert item("c", "1", 5.0, x).enrolled is x


def test_score_needs_an_enrolable_speaker_and_an_impostor() -> None:
    with pytest.raises(CalibrationError, match="2 usable files"):
        score({"a": [item("a", "1", 5.0, unit(1, 0))], "b": [item("b", "1", 5.0, unit(0, 1))]})
    with pytest.raises(CalibrationError, match="impostor"):
        score({"a": [item("a", "1", 5.0, unit(1, 0)), item("a", "2", 5.0, unit(1, 0))]})


def test_find_speakers(tmp_path: Path) -> None:
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "b.WAV").write_bytes(b"")
    (tmp_path / "bob" / "a.flac").write_bytes(b"")
    (tmp_path / "bob" / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    found = find_speakers(tmp_path)
    assert list(found) == ["bob"]
    assert [p.name for p in found["bob"]] == ["a.flac", "b.WAV"]
    with pytest.raises(CalibrationError, match="not a directory"):
        find_speakers(tmp_path / "missing")
    with pytest.raises(CalibrationError, match="no speakers"):
        find_speakers(tmp_path / "empty")


# -- plots -----------------------------------------------------------------------------------


def test_plot_writes_a_png(tmp_path: Path) -> None:
    import matplotlib  # noqa: F401 - in the test extra; the plot must really be drawn
    rng = np.random.default_rng(1)
    s = scores_of(list(rng.normal(0.8, 0.1, 60)), list(rng.normal(1.2, 0.1, 60)),
                  list(rng.normal(1.3, 0.05, 20)))
    out = save_calibration_png(tmp_path / "det.png", s, {"current": 1.0, "recommended": 0.95})
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000


def test_plot_without_matplotlib_says_how_to_install(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    with pytest.raises(PlotUnavailable, match=re.escape("pip install -e '.[tools]'")):
        save_calibration_png(tmp_path / "x.png", scores_of([0.5], [1.2]), {})
    assert not (tmp_path / "x.png").exists()


def test_the_server_never_imports_matplotlib() -> None:
    code = ("import sys, streamer.app, streamer.server, streamer.cli, streamer.calibrate; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env=ENV, timeout=60)


def test_report_json_holds_the_distances() -> None:
    s = scores_of([0.5, 0.6], [1.2, 1.3], [1.25])
    data = json.loads(json.dumps(report_json(s, recommend(s, 0.3), folder="x")))
    assert data["folder"] == "x"
    assert data["distances"]["genuine"] == [0.5, 0.6]
    assert data["distances"]["never_enrolled"] == [1.25]
    assert data["recommended_max_distance"] == recommend(s, 0.3).threshold


# -- config editing --------------------------------------------------------------------------


def test_edit_changes_only_the_max_distance_line() -> None:
    text = (REPO / "config.yaml").read_text()
    out, old = set_max_distance(text, 0.93)
    assert old == "1.0"
    before, after = text.splitlines(), out.splitlines()
    assert len(before) == len(after)
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(changed) == 1
    a, b = changed[0]
    assert b.startswith("  max_distance: 0.93")
    assert b.index("#") == a.index("#"), "the comment stays in its column"
    assert a[a.index("#"):] == b[b.index("#"):]
    raw_before, raw_after = yaml.safe_load(text), yaml.safe_load(out)
    raw_before["match"]["max_distance"] = 0.93
    assert raw_after == raw_before


def test_edited_file_loads(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    shutil.copy(REPO / "config.yaml", cfg)
    message = write_max_distance(cfg, 1.07)
    assert "1.0 -> 1.07" in message
    assert load_config(cfg).match.max_distance == pytest.approx(1.07)
    assert load_config(cfg).match.top_k == 5


def test_key_added_when_missing() -> None:
    text = "# mine\nmatch:\n    top_k: 3   # three\n\nenroll:\n    min_speech_s: 5.0\n"
    out, old = set_max_distance(text, 0.9)
    assert old is None
    assert out == ("# mine\nmatch:\n    max_distance: 0.9\n    top_k: 3   # three\n\n"
                   "enroll:\n    min_speech_s: 5.0\n")


def test_key_found_after_other_keys_and_comments() -> None:
    text = "match:\n  top_k: 3\n  # note\n  max_distance: 1.2\nserver:\n  port: 1\n"
    out, old = set_max_distance(text, 0.95)
    assert old == "1.2"
    assert out == "match:\n  top_k: 3\n  # note\n  max_distance: 0.95\nserver:\n  port: 1\n"


def test_section_added_when_missing(tmp_path: Path) -> None:
    out, old = set_max_distance("server:\n  port: 9000  # here\n", 1.05)
    assert old is None
    assert out == "server:\n  port: 9000  # here\n\nmatch:\n  max_distance: 1.05\n"
    cfg = tmp_path / "new.yaml"
    assert "added" in write_max_distance(cfg, 0.98)
    assert load_config(cfg).match.max_distance == pytest.approx(0.98)


def test_other_sections_and_commented_keys_are_untouched() -> None:
    text = ("segment:\n  change_distance: 1.0\nmatch:\n  # max_distance: 2.0 (old)\n"
            "  max_distance: 1.0\n")
    out, _ = set_max_distance(text, 0.9)
    assert out == text.replace("  max_distance: 1.0", "  max_distance: 0.9")


def test_flow_style_section_is_refused() -> None:
    with pytest.raises(ValueError, match="by hand"):
        set_max_distance("match: {max_distance: 1.0}\n", 0.9)


# -- the command -----------------------------------------------------------------------------


def run(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture
def folder(tmp_path: Path, speech_dir: Path) -> Path:
    """6 LibriSpeech test-other speakers x 4 files + 4 never-enrolled voices (1 file)."""
    root = tmp_path / "voices"
    libri = speech_dir / "librispeech_testother_10spk"
    for spk in sorted(p for p in libri.iterdir() if p.is_dir())[:6]:
        (root / spk.name).mkdir(parents=True)
        for f in sorted(spk.glob("*.flac"))[:4]:
            (root / spk.name / f.name).symlink_to(f)
    never = speech_dir / "librispeech_trainclean100_251spk_1utt"
    for spk in sorted(p for p in never.iterdir() if p.is_dir())[:4]:
        (root / spk.name).mkdir()
        for f in sorted(spk.glob("*.flac")):
            (root / spk.name / f.name).symlink_to(f)
    return root


@pytest.mark.slow
def test_calibrate_command_end_to_end(tmp_path: Path, folder: Path) -> None:
    cfg = tmp_path / "config.yaml"
    shutil.copy(REPO / "config.yaml", cfg)
    assert "path: null" in cfg.read_text()  # the packaged model, from any folder
    # Too few impostor trials for a 1 % target: the config is not written without --force.
    refused = run(tmp_path, "calibrate", str(folder), "--config", str(cfg), "--write-config")
    assert refused.returncode == 2 and "not writing the config" in refused.stderr
    assert load_config(cfg).match.max_distance == pytest.approx(1.0)
    proc = run(tmp_path, "calibrate", str(folder), "--config", str(cfg), "--plot", "det.png",
               "--json", "out.json", "--write-config", "--force")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    m = re.search(r"recommended match\.max_distance: (\d+\.\d+)", out)
    assert m, out
    value = float(m.group(1))
    assert 0.5 <= value <= 1.4
    assert "enrolled: 6 speakers" in out
    assert "impostor-only" in out and "4 speakers" in out
    assert "EER (1:1)" in out and "<- current" in out
    assert "fewer than 1/target = 100" in out  # ~18 open-set trials for a 1 % target
    png = (tmp_path / "det.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["recommended_max_distance"] == pytest.approx(value)
    assert len(data["enrolled"]) == 6 and len(data["impostor_only"]) == 4
    assert data["distances"]["genuine"] and data["distances"]["never_enrolled"]
    # --write-config without a path edits the --config file.
    assert re.search(r"match\.max_distance 1\.0 -> \d", out), out
    assert load_config(cfg).match.max_distance == pytest.approx(value)


@pytest.mark.slow
def test_calibrate_for_a_room_uses_its_profile(tmp_path: Path, folder: Path) -> None:
    """--room measures with the room's profile (its VAD, and its line variant of the
    model for the trials: enrolled by the model, heard as that room hears them) and
    marks its threshold as the current value; --write-config would set the top-level
    one, so it is refused."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text("rooms:\n  boardroom: far\n")
    proc = run(tmp_path, "calibrate", str(folder), "--config", str(cfg), "--room", "boardroom",
               "--json", "room.json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ("vad.aggressiveness 2, room 'boardroom': profile far; trials heard by its far "
            "variant") in proc.stdout
    data = json.loads((tmp_path / "room.json").read_text())
    far = PRESETS["far"]["match"]["max_distance"]
    assert data["current_max_distance"] == pytest.approx(far)
    assert re.search(rf"\n\s*{far:.3f} .*<- current", proc.stdout), proc.stdout
    plain = run(tmp_path, "calibrate", str(folder), "--config", str(cfg), "--room", "kitchen",
                "--json", "plain.json")
    assert "vad.aggressiveness 2, room 'kitchen': no profile)" in plain.stdout
    plain_data = json.loads((tmp_path / "plain.json").read_text())
    assert plain_data["current_max_distance"] == 1.0
    # the same files, the same enrolments: the far room's trials are other distances
    assert data["distances"]["genuine"] != plain_data["distances"]["genuine"]
    refused = run(tmp_path, "calibrate", str(folder), "--config", str(cfg), "--room",
                  "boardroom", "--write-config", timeout=60)
    assert refused.returncode == 2 and "set the max_distance of its profile" in refused.stderr
    assert cfg.read_text() == "rooms:\n  boardroom: far\n"
    cfg.write_text("rooms:\n  dial-in: phone\n")
    phone = run(tmp_path, "calibrate", str(folder), "--config", str(cfg), "--room", "dial-in",
                timeout=120)
    assert phone.returncode == 0, phone.stderr[-2000:]
    assert ("trials heard by its telephone variant, enrolments as its line voiceprints"
            in phone.stdout)


@pytest.mark.slow
def test_calibrate_bad_dir_exits_2(tmp_path: Path) -> None:
    proc = run(tmp_path, "calibrate", str(tmp_path / "nowhere"), timeout=60)
    assert proc.returncode == 2
    assert "is not a directory" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = run(tmp_path, "calibrate", str(tmp_path / "empty"), timeout=60)
    assert proc.returncode == 2
    assert "no speakers" in proc.stderr
