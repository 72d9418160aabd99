"""streamer.config: defaults, the documented config.yaml, validation, paths, tokens."""

from __future__ import annotations

import re

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamer.config import (
    REPO_ROOT,
    AuthConfig,
    AuthToken,
    Config,
    EventsConfig,
    MatchConfig,
    ModelConfig,
    SegmentConfig,
    ServerConfig,
    VadConfig,
    WorkerConfig,
    config_from_mapping,
    load_config,
)
from streamer.errors import ConfigError, StreamerError
from streamer.room_profiles import PRESETS


def write(tmp_path: Path, raw: Any, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_defaults_are_valid() -> None:
    cfg = Config()
    assert cfg.base_dir is None  # no config file: relative paths are relative to the cwd
    assert cfg.model.path is None  # the packaged model (the checkout's models/ here)
    assert cfg.model_path == (REPO_ROOT / "models" / "campplus.onnx").resolve()
    assert cfg.data_dir == (Path.cwd() / "data").resolve()
    assert not cfg.auth.enabled
    assert cfg.server.host == "127.0.0.1" and cfg.server.port == 8765
    assert load_config(None) == cfg
    assert config_from_mapping(None) == cfg
    assert config_from_mapping({}) == cfg
    # every section None (an empty YAML section) is its defaults
    assert config_from_mapping({name: None for name in ("server", "vad", "auth")}) == cfg


def test_repo_config_yaml_documents_the_defaults() -> None:
    path = REPO_ROOT / "config.yaml"
    cfg = load_config(path)
    assert cfg == Config(base_dir=REPO_ROOT)
    assert cfg.data_dir == REPO_ROOT / "data"  # relative to the file, wherever it is
    # and it lists every key of every section (it is the documentation)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    for name in ("server", "auth", "model", "worker", "vad", "segment", "match", "enroll",
                 "registry", "events"):
        section = getattr(cfg, name)
        assert set(raw[name]) == {f.name for f in dataclasses.fields(section)}, name


def test_config_is_frozen() -> None:
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.server.port = 1  # type: ignore[misc]


def test_replace_sections() -> None:
    cfg = Config().replace(match=MatchConfig(max_distance=0.8))
    assert cfg.match.max_distance == 0.8
    assert cfg.vad == Config().vad


def test_partial_sections_keep_the_other_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, {"match": {"max_distance": 0.9}, "vad": {"frame_ms": 20}}))
    assert cfg.match.max_distance == 0.9
    assert cfg.match.top_k == MatchConfig().top_k
    assert cfg.vad.frame_ms == 20
    assert cfg.server == ServerConfig()


@pytest.mark.parametrize(
    "raw, words",
    [
        ({"nonsense": {}}, ["unknown config section", "nonsense"]),
        ({"server": {"prot": 1}}, ["unknown key", "prot", "server"]),
        ({"vad": {"frame_ms": 30, "hangover": 2}}, ["hangover"]),
        ({"auth": {"tokens": [], "users": []}}, ["users"]),
    ],
)
def test_unknown_sections_and_keys_are_errors(raw: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_mapping(raw)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize(
    "raw, shown",
    [
        ({"server": {"port": -1}}, "-1"),
        ({"server": {"port": 70000}}, "70000"),
        ({"server": {"port": "8765"}}, "'8765'"),
        ({"server": {"port": True}}, "True"),
        ({"server": {"max_message_bytes": 0}}, "0"),
        ({"server": {"max_queue_messages": 1.5}}, "1.5"),
        ({"server": {"open_timeout_s": -3}}, "-3"),
        ({"server": {"close_timeout_s": "5"}}, "'5'"),
        ({"server": {"ping_interval_s": 0}}, "0"),
        ({"model": {"threads": 0}}, "0"),
        ({"model": {"int8_channels": "wideband"}}, "'wideband'"),
        ({"model": {"int8_channels": ["radio"]}}, "['radio']"),
        ({"model": {"int8_channels": ["far", "far"]}}, "['far', 'far']"),
        ({"worker": {"threads": -2}}, "-2"),
        ({"worker": {"max_queued_jobs": 2.5}}, "2.5"),
        ({"vad": {"aggressiveness": 4}}, "4"),
        ({"vad": {"aggressiveness": True}}, "True"),
        ({"vad": {"frame_ms": 25}}, "25"),
        ({"vad": {"frame_ms": 30.0}}, "30.0"),
        ({"vad": {"frame_ms": "30"}}, "'30'"),
        ({"vad": {"start_window_ms": -300}}, "-300"),
        ({"vad": {"end_pad_ms": -1}}, "-1"),
        ({"vad": {"end_pad_ms": 200.5}}, "200.5"),
        ({"vad": {"start_ratio": 0}}, "0"),
        ({"vad": {"end_ratio": 1.5}}, "1.5"),
        ({"vad": {"end_ratio": "high"}}, "'high'"),
        ({"segment": {"min_segment_s": -1.0}}, "-1.0"),
        ({"segment": {"window_s": "long"}}, "'long'"),
        ({"segment": {"hop_s": 0.8}}, "0.8"),
        ({"segment": {"change_distance": 2.5}}, "2.5"),
        ({"segment": {"change_distance": 0}}, "0"),
        ({"match": {"max_distance": 0}}, "0"),
        ({"match": {"max_distance": 3}}, "3"),
        ({"match": {"max_distance": "1"}}, "'1'"),
        ({"match": {"top_k": 0}}, "0"),
        ({"match": {"top_k": 2.5}}, "2.5"),
        ({"enroll": {"min_speech_s": 0}}, "0"),
        ({"events": {"max_queued_events": 0}}, "0"),
        ({"events": {"recent_events": -1}}, "-1"),
        ({"server": {"shutdown_timeout_s": float("inf")}}, "inf"),
        ({"segment": {"window_s": float("nan")}}, "nan"),
        ({"registry": {"data_dir": ""}}, "''"),
        ({"match": {"outside_roster_max_distance": 0}}, "0"),
        ({"match": {"large_gallery_from_people": 0}}, "large_gallery_from_people"),
        ({"match": {"large_gallery_from_people": 1.5}}, "integer"),
        ({"match": {"large_gallery_margin": -0.1}}, "large_gallery_margin"),
        ({"match": {"large_gallery_tighten_per_tenfold": "a"}}, "tighten_per_tenfold"),
        ({"registry": {"poll_s": 0}}, "0"),
        ({"registry": {"timeout_s": "5"}}, "'5'"),
        ({"cluster": {"node": " "}}, "' '"),
        ({"cluster": {"heartbeat_s": -1}}, "-1"),
        ({"cluster": {"subject_prefix": "a.b"}}, "'a.b'"),
    ],
)
def test_invalid_values_name_the_value(raw: dict[str, Any], shown: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_mapping(raw)
    (section,) = raw
    (key,) = raw[section]
    message = str(err.value)
    assert shown in message
    assert f"{section}.{key}" in message


def test_window_is_a_whole_number_of_pieces() -> None:
    assert SegmentConfig(window_s=1.5, hop_s=0.75).hop_s == 0.75  # two pieces
    assert SegmentConfig(window_s=1.5, hop_s=0.5).hop_s == 0.5  # three pieces
    with pytest.raises(ConfigError, match=r"window_s \(1\.5 s\).*hop_s \(0\.8 s\)"):
        SegmentConfig(window_s=1.5, hop_s=0.8)  # not a whole multiple
    with pytest.raises(ConfigError, match=r"at least 2 pieces"):
        SegmentConfig(window_s=1.0, hop_s=1.0)


def test_other_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match="max_segment_s"):
        SegmentConfig(min_segment_s=2.0, max_segment_s=3.0)
    with pytest.raises(ConfigError, match="frame_ms"):
        VadConfig(frame_ms=30, start_window_ms=20)
    assert SegmentConfig(change_distance=None).change_distance is None
    assert ServerConfig(ping_interval_s=None, ping_timeout_s=None).ping_interval_s is None


def test_wrong_shapes_are_config_errors() -> None:
    for raw in ([1, 2], {"server": [1]}, {"server": "x"}, {"match": {"max_distance": [1]}},
                {"segment": {"change_distance": "far"}}):
        with pytest.raises(ConfigError):
            config_from_mapping(raw)  # type: ignore[arg-type]
    assert issubclass(ConfigError, StreamerError)


def test_relative_model_path_is_resolved_against_the_config_folder(tmp_path: Path) -> None:
    path = write(tmp_path, {"model": {"path": "weights/m.onnx"}}, name="etc/streamer.yaml")
    cfg = load_config(path)
    assert cfg.base_dir == (tmp_path / "etc").resolve()
    assert cfg.model_path == (tmp_path / "etc" / "weights" / "m.onnx").resolve()
    assert "relative to the config file's folder" in cfg.model_path_origin
    absolute = (tmp_path / "abs.onnx").resolve()
    cfg = load_config(write(tmp_path, {"model": {"path": str(absolute)}}))
    assert cfg.model_path == absolute


def test_one_rule_for_relative_paths_in_a_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, {"registry": {"data_dir": "people"}}, name="etc/streamer.yaml")
    cfg = load_config(path)
    assert cfg.data_dir == (tmp_path / "etc" / "people").resolve()
    assert cfg.model.path is None and cfg.model_path.is_file()  # packaged, from anywhere
    assert "shipped with the package" in cfg.model_path_origin
    with pytest.raises(ConfigError, match="model.path"):
        config_from_mapping({"model": {"path": ""}})


def test_loading_creates_no_files(tmp_path: Path) -> None:
    path = write(tmp_path, {"registry": {"data_dir": str(tmp_path / "data")}})
    before = sorted(tmp_path.rglob("*"))
    cfg = load_config(path)
    assert cfg.registry.data_dir == str(tmp_path / "data")
    assert sorted(tmp_path.rglob("*")) == before


def test_auth_tokens_are_parsed(tmp_path: Path) -> None:
    raw = {"auth": {"tokens": {
        "a-long-admin-token": ["admin"],
        "mic-and-screen-token": ["ingest", "display"],
        "just-a-display-token": "display",
    }}}
    cfg = load_config(write(tmp_path, raw), environ={})
    assert cfg.auth.enabled
    assert sorted(cfg.auth.tokens, key=lambda t: t.token) == [
        AuthToken("a-long-admin-token", ("admin",)),
        AuthToken("just-a-display-token", ("display",)),
        AuthToken("mic-and-screen-token", ("ingest", "display")),
    ]
    assert config_from_mapping({"auth": {"tokens": None}}).auth == AuthConfig()
    assert config_from_mapping({"auth": {"tokens": {}}}).auth == AuthConfig()


def test_tokens_file_and_environment_add_tokens(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    write(tmp_path / "secrets", {"file-token-123": ["ingest"], "a-long-admin-token": ["display"]},
          "tokens.yaml")
    path = write(tmp_path, {"auth": {"tokens": {"a-long-admin-token": ["admin"]},
                                     "tokens_file": "secrets/tokens.yaml"}})
    env = {"STREAMER_TOKENS": '{"env-token-4567": ["display", "ingest"], "file-token-123": [admin]}'}
    cfg = load_config(path, environ=env)
    assert dict((t.token, t.roles) for t in cfg.auth.tokens) == {
        "a-long-admin-token": ("admin", "display"),
        "file-token-123": ("ingest", "admin"),
        "env-token-4567": ("display", "ingest"),
    }
    # the environment alone turns auth on for the defaults
    assert load_config(None, environ=env).auth.enabled
    assert not load_config(None, environ={"STREAMER_TOKENS": " "}).auth.enabled
    with pytest.raises(ConfigError, match="cannot read tokens file"):
        load_config(write(tmp_path, {"auth": {"tokens_file": "nope.yaml"}}), environ={})
    with pytest.raises(ConfigError, match="STREAMER_TOKENS is not valid"):
        load_config(None, environ={"STREAMER_TOKENS": "{unclosed-secret-token"})
    with pytest.raises(ConfigError, match="tokens_file must be a path"):
        config_from_mapping({"auth": {"tokens_file": ["a.yaml"]}})
    with pytest.raises(ConfigError, match="STREAMER_TOKENS must be a mapping"):
        load_config(None, environ={"STREAMER_TOKENS": "[x]"})


SECRET = "do-not-show-this-secret"


@pytest.mark.parametrize(
    "tokens, match",
    [
        ([{"token": SECRET, "roles": ["admin"]}], "must be a mapping"),
        ("x", "must be a mapping"),
        ({"short": ["admin"]}, "8 characters"),
        ({12345678901: ["admin"]}, "8 characters"),
        ({SECRET: ["root"]}, "'root'"),
        ({SECRET: []}, "at least one role"),
        ({SECRET: None}, "list of role names"),
        ({SECRET: [1]}, "list of role names"),
        ({SECRET + " x": ["admin"]}, "spaces"),
        ({SECRET + "&x": ["admin"]}, "spaces"),
    ],
)
def test_bad_auth_tokens(tokens: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        config_from_mapping({"auth": {"tokens": tokens}})
    assert SECRET not in str(info.value)


def test_a_token_never_shows_in_repr_or_yaml_errors(tmp_path: Path) -> None:
    cfg = config_from_mapping({"auth": {"tokens": {SECRET: ["admin"]}}})
    assert SECRET not in repr(cfg) and SECRET not in str(cfg.auth)
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"auth:\n  tokens: {{{SECRET}: [admin]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(bad, environ={})
    assert SECRET not in str(info.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "server: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))
    assert load_config(write(tmp_path, "")) == Config(base_dir=tmp_path.resolve())


def test_sections_construct_directly() -> None:
    assert WorkerConfig(threads=4).threads == 4
    assert ModelConfig(threads=2).path is None
    assert EventsConfig(recent_events=0).recent_events == 0


def test_unquoted_off_in_yaml_means_off(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "enroll:\n  consistency: off\n"), environ={})
    assert cfg.enroll.consistency == "off"
    with pytest.raises(ConfigError, match="enroll.consistency"):
        config_from_mapping({"enroll": {"consistency": True}})


@pytest.mark.parametrize("rooms, message", [
    ([1.1], "mapping"),
    ({"": 1.1}, "room names"),
    ({"a": 0}, "room_max_distance"),
    ({"a": 2.5}, "room_max_distance"),
    ({"a": True}, "room_max_distance"),
    ({"a": "1.1"}, "room_max_distance"),
])
def test_room_max_distance_is_validated(rooms: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_mapping({"match": {"room_max_distance": rooms}})


def test_room_max_distance_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("match:\n  room_max_distance: {boardroom: 1.1, 'lab-*': 1.05}\n")
    match = load_config(path).match
    assert match.max_distance_for("boardroom") == 1.1
    assert match.max_distance_for("lab-3") == 1.05
    assert match.max_distance_for("kitchen") == match.max_distance == 1.0


def test_room_profiles_apply_to_the_first_matching_room(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("rooms:\n  boardroom: far\n  'lab-*':\n    vad: {aggressiveness: 3}\n"
                    "    segment: {join_gap_s: null}\n  '*': {match: {max_distance: 0.9}}\n")
    cfg = load_config(path, environ={})
    far = cfg.for_room("boardroom")
    assert far.vad.aggressiveness == PRESETS["far"]["vad"]["aggressiveness"]
    assert far.vad.end_window_ms == PRESETS["far"]["vad"]["end_window_ms"]
    assert far.match.max_distance_for("boardroom") == PRESETS["far"]["match"]["max_distance"]
    assert far.segment.rejoin_distance == PRESETS["far"]["segment"]["rejoin_distance"]
    assert far.segment.final_whole_pass and not cfg.segment.final_whole_pass
    assert far.vad.frame_ms == cfg.vad.frame_ms  # the rest is kept
    assert far.segment.change_distance == cfg.segment.change_distance
    lab = cfg.for_room("lab-2")
    assert (lab.vad.aggressiveness, lab.segment.join_gap_s) == (3, None)
    assert lab.match == cfg.match
    assert cfg.for_room("kitchen").match.max_distance == 0.9  # the catch-all, last
    assert cfg.room_profile("boardroom").describe() == "far"
    assert cfg.room_profile("lab-2").describe() == "vad.aggressiveness=3, segment.join_gap_s=None"
    # the top-level sections (identify, verify, enroll) are untouched
    assert cfg.vad == VadConfig() and cfg.match.max_distance == 1.0


def test_channels_lists_every_line_the_configuration_uses() -> None:
    assert config_from_mapping({}).channels() == ("wideband",)
    cfg = config_from_mapping({"rooms": {"dial-in-*": "phone", "b*": "far"}})
    assert cfg.channels() == ("wideband", "telephone", "far")
    assert config_from_mapping({"rooms": {"b*": "far"}}).channels() == ("wideband", "far")
    phone = cfg.for_room("dial-in-3")
    assert phone.match.channel == "telephone"
    # a phone line's speech dips through webrtcvad like far speech: the far VAD settings
    assert (phone.vad.aggressiveness, phone.vad.end_window_ms, phone.vad.normalise) == (2, 800,
                                                                                      True)
    far = cfg.for_room("boardroom")
    assert (far.vad.aggressiveness, far.vad.end_window_ms, far.vad.normalise) == (2, 800, True)
    # both keep more audio around far and phone-line speech than close-talk rooms do
    for room in (far, phone):
        assert (room.vad.pre_roll_ms, room.vad.end_pad_ms) == (300, 400)
    assert (cfg.vad.pre_roll_ms, cfg.vad.end_pad_ms) == (0, 200)
    # the profiles state their aggressiveness: a top-level change does not reach them
    eager = config_from_mapping({"vad": {"aggressiveness": 3}, "rooms": {"b*": "far"}})
    assert eager.for_room("boardroom").vad.aggressiveness == 2
    assert cfg.vad.normalise is False  # close-talk rooms: the gain would bridge turn pauses
    # phone rooms search the line voiceprints, at their own threshold (tune half)
    assert phone.match.max_distance == 0.975
    # far and phone-line finals embed each turn in one pass and keep their name only when
    # the turn's pieces agree (tune half, accuracy.md); close-talk rooms pool the pieces
    for room in (far, phone):
        assert room.segment.final_whole_pass and room.segment.final_agree
    assert not (cfg.segment.final_whole_pass or cfg.segment.final_agree)
    assert cfg.for_room("boardroom").match.channel == "far"
    assert cfg.match.channel == "wideband"
    only_phone = config_from_mapping({"match": {"channel": "telephone"}})
    assert only_phone.channels() == ("telephone",)
    with pytest.raises(ConfigError, match="match.channel must be one of"):
        config_from_mapping({"match": {"channel": None}})


def test_a_room_profile_can_start_from_a_built_in_one() -> None:
    """``{profile: far, segment: {...}}``: the far profile with some of it changed, the
    rest of the preset kept (so it follows later changes of the preset)."""
    cfg = config_from_mapping({"rooms": {
        "hall-*": {"profile": "far", "segment": {"final_whole_pass": False},
                   "match": {"max_distance": 1.0}},
        "dial-*": {"profile": "phone"},
        "boardroom": "far"}})
    hall, far = cfg.for_room("hall-2"), cfg.for_room("boardroom")
    assert not hall.segment.final_whole_pass and far.segment.final_whole_pass
    assert hall.match.max_distance_for("hall-2") == 1.0
    assert hall.vad == far.vad and hall.match.channel == far.match.channel == "far"
    assert hall.segment.rejoin_distance == far.segment.rejoin_distance
    plain_phone = config_from_mapping({"rooms": {"dial-*": "phone"}}).for_room("dial-1")
    assert (cfg.for_room("dial-1").vad, cfg.for_room("dial-1").segment,
            cfg.for_room("dial-1").match) == (plain_phone.vad, plain_phone.segment,
                                              plain_phone.match)
    assert cfg.room_profile("hall-2").describe() == (
        "far with segment.final_whole_pass=False, match.max_distance=1.0")
    assert cfg.room_profile("dial-1").describe() == "phone"
    assert PRESETS["far"]["segment"]["final_whole_pass"] is True  # the preset is untouched
    assert cfg.channels() == ("wideband", "telephone", "far")


def test_without_profiles_a_room_runs_the_top_level_config() -> None:
    cfg = config_from_mapping({})
    assert cfg.rooms == () and cfg.for_room("anything") is cfg and cfg.room_profile("x") is None


def test_room_max_distance_still_wins_inside_a_profile() -> None:
    cfg = config_from_mapping({"rooms": {"b*": "far"},
                               "match": {"room_max_distance": {"boardroom": 1.05}}})
    assert cfg.for_room("boardroom").match.max_distance_for("boardroom") == 1.05
    far = PRESETS["far"]["match"]["max_distance"]
    assert cfg.for_room("bistro").match.max_distance_for("bistro") == far


@pytest.mark.parametrize("rooms, message", [
    ([1], r"rooms must be a mapping"),
    ({1: "far"}, r"room names and patterns must be strings"),
    ({"": "far"}, r"room names and patterns must be strings"),
    ({"a": "near"}, r"rooms\['a'\]: unknown profile 'near'; built in: far, phone"),
    ({"a": {}}, r"rooms\['a'\] must be a profile name"),
    ({"a": 1.1}, r"rooms\['a'\] must be a profile name"),
    ({"a": {"server": {"port": 1}}}, r"sets only vad, segment, match, not 'server'"),
    ({"a": {"vad": 3}}, r"rooms\['a'\]\.vad must be a mapping"),
    ({"a": {"vad": {"agressiveness": 1}}}, r"unknown key\(s\) in vad: agressiveness"),
    ({"a": {"vad": {"aggressiveness": 7}}}, r"rooms\['a'\]: vad.aggressiveness must be 0..3"),
    ({"a": {"segment": {"hop_s": -1}}}, r"rooms\['a'\]: segment.hop_s"),
    ({"a": {"match": {"max_distance": float("nan")}}}, r"rooms\['a'\]: match.max_distance"),
    ({"a": {"match": {"top_k": float("inf")}}}, r"rooms\['a'\]: match.top_k"),
    ({"a": {"segment": {"window_s": float("nan")}}}, r"rooms\['a'\]: segment.window_s"),
    ({"a": {"match": {"channel": "radio"}}},
     r"rooms\['a'\]: match.channel must be one of wideband, telephone, far, got 'radio'"),
    ({"a": {"profile": "near", "vad": {}}},
     r"rooms\['a'\]\.profile must be a built-in profile \(far, phone\), got 'near'"),
    ({"a": {"profile": ["far"]}}, r"rooms\['a'\]\.profile must be a built-in profile"),
    ({"a": {"profile": "far", "enroll": {}}}, r"sets only vad, segment, match, not 'enroll'"),
    ({"a": {"profile": "far", "segment": {"final_whole_pas": True}}},
     r"unknown key\(s\) in segment: final_whole_pas"),
])
def test_room_profiles_are_validated_at_load(rooms: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_mapping({"rooms": rooms})


@pytest.mark.parametrize("section, values, message", [
    ("vad", {"normalise": "yes"}, "vad.normalise"),
    ("vad", {"target_level_dbfs": 3}, "vad.target_level_dbfs"),
    ("vad", {"silence_gate_dbfs": "loud"}, "vad.silence_gate_dbfs"),
    ("vad", {"level_window_ms": 10, "frame_ms": 30}, "vad.level_window_ms"),
    ("vad", {"max_gain_db": -1}, "vad.max_gain_db"),
    ("enroll", {"min_speech_s": 3.0, "recommended_speech_s": 2.0}, "recommended_speech_s"),
    ("enroll", {"consistency_min_pieces": 9}, "consistency_min_pieces"),
    ("enroll", {"consistency_min_pieces": True}, "consistency_min_pieces"),
])
def test_new_limits_are_validated(section: str, values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_mapping({section: values})


def test_model_path_origin_names_what_a_path_was_relative_to(tmp_path: Path) -> None:
    absolute = str(tmp_path / "m.onnx")
    assert load_config(write(tmp_path, {"model": {"path": absolute}})).model_path_origin == (
        f"model.path {absolute!r}")
    cfg = config_from_mapping({"model": {"path": "m.onnx"}})
    assert "relative to the working directory" in cfg.model_path_origin
    assert cfg.model_path == (Path.cwd() / "m.onnx").resolve()


@pytest.mark.parametrize("raw, words", [
    ({"registry": {"url": "mysql://x/y"}}, ["registry.url", "postgresql://"]),
    ({"registry": {"url": 5}}, ["registry.url"]),
    ({"cluster": {"nats_url": "http://127.0.0.1:4222"}}, ["cluster.nats_url", "nats://"]),
    ({"cluster": {"nats_url": "nats://a:4222,redis://b"}}, ["cluster.nats_url"]),
    ({"cluster": {"heartbeat_s": 2.0, "node_timeout_s": 1.0}},
     ["node_timeout_s", "heartbeat_s"]),
])
def test_cluster_settings_are_checked(raw: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_mapping(raw)
    for word in words:
        assert word in str(err.value)


def test_cluster_settings_are_unset_by_default_and_accepted_when_set() -> None:
    default = config_from_mapping({})
    assert default.registry.url is None and default.cluster.nats_url is None
    config = config_from_mapping({
        "registry": {"url": "postgresql://u:p@db:5432/streamer", "poll_s": 1},
        "cluster": {"nats_url": "nats://n1:4222, nats://n2:4222", "node": "room-server-1"}})
    assert config.registry.url == "postgresql://u:p@db:5432/streamer"
    assert config.cluster.node == "room-server-1" and config.registry.poll_s == 1


def test_phone_line_enrolments_have_their_own_one_speaker_limit() -> None:
    enroll = config_from_mapping({}).enroll
    assert enroll.telephone_below_db == -41.5
    assert enroll.consistency_telephone_max_distance < enroll.consistency_max_distance
    phone = enroll.limits_for("telephone")
    assert phone.consistency_max_distance == enroll.consistency_telephone_max_distance
    assert phone.consistency_split_distance == enroll.consistency_split_distance
    assert enroll.limits_for("wideband") is enroll
    for bad in ("-40", 3.0, -200, float("nan"), True):
        with pytest.raises(ConfigError, match="enroll.telephone_below_db must be null or in"):
            config_from_mapping({"enroll": {"telephone_below_db": bad}})
    with pytest.raises(ConfigError, match="consistency_telephone_max_distance must be in"):
        config_from_mapping({"enroll": {"consistency_telephone_max_distance": 0}})


def test_the_second_voice_check_has_explicit_checked_limits() -> None:
    enroll = config_from_mapping({}).enroll
    assert enroll.second_voice is True
    assert enroll.second_voice_min_s == 1.5 and enroll.second_voice_distance == 1.1
    off = config_from_mapping({"enroll": {"second_voice": False}}).enroll
    assert off.second_voice is False
    assert enroll.listens_for_second_voice and not off.listens_for_second_voice
    # consistency: off turns both one-speaker checks off
    unchecked = config_from_mapping({"enroll": {"consistency": "off"}}).enroll
    assert not unchecked.listens_for_second_voice
    for key, bad, words in (("second_voice", "yes", "must be true or false"),
                            ("second_voice_min_s", 0, "must be a number > 0 seconds"),
                            ("second_voice_min_s", True, "must be a number > 0 seconds"),
                            ("second_voice_distance", 2.5, "must be in (0, 2]"),
                            ("second_voice_distance", "1", "must be in (0, 2]")):
        with pytest.raises(ConfigError, match=re.escape(f"enroll.{key} {words}")):
            config_from_mapping({"enroll": {key: bad}})


def test_line_voiceprints_are_kept_for_phone_rooms_only() -> None:
    """App.load keeps a line's own voiceprints when a room uses that line's variant,
    ``enroll.line_voiceprints`` is on (the default) and the variant is loaded."""
    from streamer.app import line_channels

    variants = {"telephone": object(), "far": object()}
    assert config_from_mapping({}).enroll.line_voiceprints is True
    assert line_channels(config_from_mapping({}), variants) == []
    phone = {"rooms": {"dial-in-*": "phone", "b*": "far"}}
    assert line_channels(config_from_mapping(phone), variants) == ["telephone"]
    assert line_channels(config_from_mapping(phone), {"far": object()}) == []
    off = config_from_mapping({**phone, "enroll": {"line_voiceprints": False}})
    assert line_channels(off, variants) == []
    # far rooms search the wideband voiceprints (far-field copies gained little)
    assert line_channels(config_from_mapping({"rooms": {"b*": "far"}}), variants) == []
    with pytest.raises(ConfigError, match=re.escape("enroll.line_voiceprints must be true or "
                                                    "false, got 'yes'")):
        config_from_mapping({"enroll": {"line_voiceprints": "yes"}})


def test_live_voice_checks_are_found_at_the_top_level_or_in_a_room() -> None:
    """App.load loads the segmentation model when any live stream may ask it."""
    assert config_from_mapping({}).checks_voices_live()  # voice_check is on by default
    off = {"segment": {"voice_check": False}}
    assert not config_from_mapping(off).checks_voices_live()
    # the far profile turns it off; a room of one's own may turn it (or the split) on
    assert not config_from_mapping({**off, "rooms": {"b*": "far"}}).checks_voices_live()
    assert config_from_mapping({**off, "rooms": {"lab": {"segment": {"voice_split": True}}}}
                               ).checks_voices_live()


def test_int8_channels_say_which_frames_graphs_run_int8() -> None:
    """By default every line's live frames graph runs its int8 copy (the model's own for
    ordinary rooms, the variants' for far and phone rooms); a line left out runs float32."""
    cfg = config_from_mapping({})
    assert cfg.model.int8_channels == ("wideband", "telephone", "far")
    assert {cfg.model.precision(c) for c in ("wideband", "telephone", "far")} == {"int8"}
    only = config_from_mapping({"model": {"int8_channels": ["wideband"]}})
    assert [only.model.precision(c) for c in ("wideband", "telephone", "far")] == [
        "int8", "float32", "float32"]
    every = config_from_mapping({"model": {"int8_channels": ["far", "telephone", "wideband"]}})
    assert every.model.int8_channels == ("far", "telephone", "wideband")  # a list becomes a tuple
    assert {every.model.precision(c) for c in ("wideband", "telephone", "far")} == {"int8"}
    none = config_from_mapping({"model": {"int8_channels": []}})
    assert none.model.precision("wideband") == "float32"
