"""Typed, validated configuration: frozen dataclasses loaded from ``config.yaml``.

Call :func:`load_config` once in the CLI. Constructing a config has no side effects
(no model loading, no logging set-up, no files touched). Every limit carries its unit
in its name; ``None`` means "disabled" where a field's docstring says so. Unknown YAML
keys are an error. Invalid values raise :class:`~streamer.errors.ConfigError` with the
value, the limit and the unit.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .gallery_rule import GalleryRule
from .room_profiles import RoomProfile, parse_rooms, profile_config

__all__ = [
    "REPO_ROOT",
    "AuthConfig",
    "AuthToken",
    "Config",
    "EnrollConfig",
    "EventsConfig",
    "MatchConfig",
    "ModelConfig",
    "ClusterConfig",
    "RegistryConfig",
    "SegmentConfig",
    "ServerConfig",
    "VadConfig",
    "WorkerConfig",
    "config_from_mapping",
    "load_config",
    "merge_tokens",
    "parse_tokens",
]

#: The checkout this package lives in (in an editable install).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: The model used when ``model.path`` is unset: shipped with the package.
PACKAGED_MODEL = "campplus.onnx"


def packaged_model_dir() -> Path:
    """The folder of the ONNX models shipped with the package: ``streamer/models`` in an
    installed wheel, the checkout's ``models/`` in an editable install."""
    inside = Path(__file__).resolve().parent / "models"
    return inside if inside.is_dir() else REPO_ROOT / "models"

ROLES = ("ingest", "display", "admin")
#: Shortest accepted token.
MIN_TOKEN_CHARS = 8
#: Environment variable with extra tokens, ``{TOKEN: [ROLE, ...]}`` as YAML/JSON.
TOKENS_ENV = "STREAMER_TOKENS"
#: Values of ``enroll.consistency``.
CONSISTENCY_MODES = ("refuse", "warn", "off")
#: Values of ``match.channel``: the line speech arrives through (``wideband`` = the model
#: itself; others = that line's variant of it, :func:`streamer.stream_embedder.channel_paths`).
CHANNELS = ("wideband", "telephone", "far")


def _positive(name: str, value: float, unit: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ConfigError(f"{name} must be a number > 0 {unit}, got {value!r}")


def _integer(name: str, value: object) -> None:
    # YAML ``30.0`` or ``yes`` would pass the range checks but break frame arithmetic,
    # slicing and thread pools later, at the first connection instead of at start-up.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")


def _non_negative(name: str, value: float, unit: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
        raise ConfigError(f"{name} must be a number >= 0 {unit}, got {value!r}")


@dataclass(frozen=True)
class ServerConfig:
    """Network listener and websocket limits."""

    host: str = "127.0.0.1"
    port: int = 8765
    #: Refuse to listen on a non-loopback address without tokens unless this is true.
    allow_unauthenticated_remote: bool = False
    #: Largest websocket message accepted, in bytes (websockets ``max_size``).
    max_message_bytes: int = 16 * 1024 * 1024
    #: Incoming frames buffered per connection (websockets ``max_queue``).
    max_queue_messages: int = 32
    #: High-water mark of the outgoing buffer, bytes (websockets ``write_limit``).
    write_limit_bytes: int = 64 * 1024
    open_timeout_s: float = 10.0
    #: Time a client has to send ``hello`` (ingest) after connecting.
    hello_timeout_s: float = 10.0
    #: Keepalive pings; ``None`` disables them.
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    close_timeout_s: float = 5.0
    #: Time allowed to flush open segments and drain the worker on shutdown.
    shutdown_timeout_s: float = 10.0
    #: Longest audio accepted in one ``/v1/api`` request.
    max_request_audio_s: float = 300.0
    #: Most open websocket connections (ingest, display and API together); beyond it a
    #: new one gets ``overloaded`` and close 1013. ``None``: no limit.
    max_connections: int | None = 512
    #: Most ingest and display connections in one room; ``None``: no limit.
    max_connections_per_room: int | None = 64
    #: An ingest stream may run at most this many times real time once its burst is
    #: used up; the server then waits before reading its next message. ``None``: off.
    max_ingest_speed: float | None = 10.0
    #: Seconds of audio an ingest stream may send ahead of that pace (the burst).
    ingest_burst_s: float = 60.0
    #: An ingest or API connection that sends nothing this long is closed (``timeout``,
    #: 1008 "idle timeout"); displays are exempt. ``None`` disables it.
    idle_timeout_s: float | None = 120.0
    #: A ``people`` request without ``limit`` lists at most this many people; with more
    #: enrolled (or matching its ``query``) it gets ``too_large`` and asks for pages
    #: (``offset``, ``limit``), so one reply stays a few megabytes.
    max_people_reply: int = 10_000

    def __post_init__(self) -> None:
        _integer("server.max_people_reply", self.max_people_reply)
        _positive("server.max_people_reply", self.max_people_reply, "people")
        if (not isinstance(self.port, int) or isinstance(self.port, bool)
                or not 0 <= self.port <= 65535):
            raise ConfigError(f"server.port must be an integer 0..65535, got {self.port!r}")
        for name in ("max_message_bytes", "max_queue_messages", "write_limit_bytes"):
            _integer(f"server.{name}", getattr(self, name))
            _positive(f"server.{name}", getattr(self, name), "bytes or messages")
        for name in ("open_timeout_s", "hello_timeout_s", "close_timeout_s",
                     "shutdown_timeout_s", "max_request_audio_s"):
            _positive(f"server.{name}", getattr(self, name), "seconds")
        for name in ("ping_interval_s", "ping_timeout_s", "idle_timeout_s"):
            if getattr(self, name) is not None:
                _positive(f"server.{name}", getattr(self, name), "seconds")
        for name in ("max_connections", "max_connections_per_room"):
            if getattr(self, name) is not None:
                _integer(f"server.{name}", getattr(self, name))
                _positive(f"server.{name}", getattr(self, name), "connections")
        if self.max_ingest_speed is not None:
            _positive("server.max_ingest_speed", self.max_ingest_speed, "x real time")
        _positive("server.ingest_burst_s", self.ingest_burst_s, "seconds")


@dataclass(frozen=True)
class AuthToken:
    """One bearer token and the roles it grants (``ingest``, ``display``, ``admin``).

    The token is left out of ``repr`` and out of every error message, so a logged or
    printed config never shows it.
    """

    token: str = field(repr=False)
    roles: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.token, str) or len(self.token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"an auth token must be a string of at least {MIN_TOKEN_CHARS} "
                              "characters (the token itself is not shown)")
        if any(c.isspace() or c in "&#" for c in self.token):
            raise ConfigError("an auth token must not contain spaces, '&' or '#' "
                              "(the token itself is not shown)")
        if not self.roles:
            raise ConfigError("an auth token needs at least one role")
        for role in self.roles:
            if role not in ROLES:
                raise ConfigError(f"auth role must be one of {ROLES}, got {role!r}")


@dataclass(frozen=True)
class AuthConfig:
    """Tokens; none means authentication is off (loopback only by default).

    In YAML ``tokens`` is a mapping ``{TOKEN: [ROLE, ...]}``. :func:`load_config` adds
    the tokens of ``tokens_file`` (the same mapping, in its own YAML file, relative to
    the config file) and of the ``STREAMER_TOKENS`` environment variable (the same
    mapping as YAML/JSON text); a token named twice gets the union of its roles.
    """

    tokens: tuple[AuthToken, ...] = ()
    #: Extra tokens file, read by :func:`load_config`; ``None``: no file.
    tokens_file: str | None = None

    @property
    def enabled(self) -> bool:
        """True when at least one token is configured."""
        return bool(self.tokens)


def parse_tokens(raw: Any, where: str) -> tuple[AuthToken, ...]:
    """``{TOKEN: [ROLE, ...]}`` (from YAML) as tokens; ``None`` is none.

    Raises :class:`ConfigError` naming ``where`` but never the token.
    """
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping {{TOKEN: [ROLE, ...]}}, "
                          f"got {type(raw).__name__}")
    built = []
    for token, roles in raw.items():
        if isinstance(roles, str):
            roles = [roles]
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise ConfigError(f"{where}: the roles of a token must be a list of role names")
        try:
            built.append(AuthToken(token=token, roles=tuple(dict.fromkeys(roles))))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return tuple(built)


def merge_tokens(*groups: tuple[AuthToken, ...]) -> tuple[AuthToken, ...]:
    """All tokens of ``groups``; one named more than once gets the union of its roles."""
    merged: dict[str, tuple[str, ...]] = {}
    for group in groups:
        for entry in group:
            merged[entry.token] = tuple(dict.fromkeys(merged.get(entry.token, ()) + entry.roles))
    return tuple(AuthToken(token, roles) for token, roles in merged.items())


@dataclass(frozen=True)
class ModelConfig:
    """The ONNX speaker-embedding model."""

    #: Path to the ``.onnx`` file, relative to the config file's folder (to the working
    #: directory without a config file). ``None``: the CAM++ model shipped with the
    #: package (:func:`packaged_model_dir`).
    path: str | None = None
    #: onnxruntime intra-op threads per inference.
    threads: int = 1
    #: The lines (:data:`CHANNELS`) whose frames graph runs as its int8 copy for live
    #: streams (``*_frames_int8.onnx`` next to it, made by ``models/quantize_frames.py``):
    #: ``wideband`` = the model's own, for ordinary rooms; ``telephone`` / ``far`` = that
    #: variant's, for those rooms' pieces and one-pass finals (a variant no room streams
    #: with is not loaded int8). The others run float32, as exported; requests
    #: (identify, verify, enrolment) always run float32 graphs. All
    #: three by default: the int8 copies run in two thirds of the time, and with far and
    #: phone rooms' one-pass finals and the pieces' veto they named those rooms' meetings
    #: as well as float32 (tune half, 44 meetings: docs/benchmarks.md, "int8 frames graph").
    int8_channels: tuple[str, ...] = ("wideband", "telephone", "far")

    def __post_init__(self) -> None:
        if self.path is not None and (not isinstance(self.path, str) or not self.path):
            raise ConfigError(f"model.path must be a file path or null, got {self.path!r}")
        _integer("model.threads", self.threads)
        _positive("model.threads", self.threads, "threads")
        channels: object = self.int8_channels
        if (not isinstance(channels, (list, tuple))
                or any(not isinstance(c, str) or c not in CHANNELS for c in channels)
                or len(set(channels)) != len(channels)):
            raise ConfigError(f"model.int8_channels must be a list of distinct values of "
                              f"{', '.join(CHANNELS)}, got {channels!r}")
        object.__setattr__(self, "int8_channels", tuple(channels))

    def precision(self, channel: str) -> str:
        """``int8`` or ``float32``: how the frames graph of ``channel`` (a
        ``match.channel`` value) runs."""
        return "int8" if channel in self.int8_channels else "float32"


@dataclass(frozen=True)
class WorkerConfig:
    """Embedding jobs: thread pool and bounded queue."""

    threads: int = 2
    #: Jobs waiting for a thread; beyond it provisional work is dropped (counted) and
    #: final work waits.
    max_queued_jobs: int = 64
    #: Most live pieces of equal length run together in one batch.
    max_batch: int = 8

    def __post_init__(self) -> None:
        _integer("worker.max_batch", self.max_batch)
        _positive("worker.max_batch", self.max_batch, "pieces")
        _integer("worker.threads", self.threads)
        _positive("worker.threads", self.threads, "threads")
        _integer("worker.max_queued_jobs", self.max_queued_jobs)
        _positive("worker.max_queued_jobs", self.max_queued_jobs, "jobs")


@dataclass(frozen=True)
class VadConfig:
    """webrtcvad segmentation."""

    #: webrtcvad aggressiveness 0 (least) .. 3 (most eager to call audio non-speech).
    aggressiveness: int = 2
    #: webrtcvad frame length: 10, 20 or 30 ms.
    frame_ms: int = 30
    #: Look-back window for the start decision; also the padding kept before onset.
    start_window_ms: int = 300
    #: Share of voiced frames in the start window that starts a segment.
    start_ratio: float = 0.6
    #: Non-speech window that ends a segment (hang-over): short pauses inside a turn
    #: shorter than this do not split it.
    end_window_ms: int = 400
    #: Share of unvoiced frames in the end window that ends a segment.
    end_ratio: float = 0.9
    #: Audio kept after the last voiced frame.
    end_pad_ms: int = 200
    #: Audio kept before the start window as well (never before the last segment's
    #: end): the quiet first syllables a far or phone-line onset loses to the noise
    #: (0: the start window alone; the far and phone profiles keep 300). Like the start
    #: window it is part of the segment, so it counts towards ``segment.min_segment_s``
    #: and the first guess comes ``first_provisional_s`` after it.
    pre_roll_ms: int = 0
    #: Level normalisation of the VAD's input (automatic gain; the embedder always gets
    #: the raw audio): quiet far-field speech is scaled up before webrtcvad. See
    #: :class:`streamer.segmenter.LevelNormaliser` and ``docs/vad_level.md``. Off by
    #: default: measured, webrtcvad alone finds close-talk speech down to -45 dBFS, and
    #: the gain bridges the pauses between speakers in real meetings (AMI) as it lifts
    #: their background to speech level.
    normalise: bool = False
    #: Speech level (dBFS, RMS re full scale 1.0) the VAD input is scaled towards.
    target_level_dbfs: float = -20.0
    #: Largest gain (dB) applied to the VAD input; loud audio is never attenuated (>= 0).
    max_gain_db: float = 30.0
    #: History (ms) over which the speech level (95th percentile of 30 ms frame levels)
    #: and the noise floor (10th percentile) are estimated.
    level_window_ms: int = 5000
    #: Frames quieter than this (dBFS: digital silence, dither) are not counted and do
    #: not change the gain.
    silence_gate_dbfs: float = -75.0
    #: The speech level is taken at least this many dB above the noise floor, so noise
    #: alone is lifted to at most ``target_level_dbfs - min_contrast_db``. Measured with
    #: ``bench/vad_level.py`` on the tune half (docs/vad_level.md): 15 dB calls 60 % of
    #: room noise speech, 25 dB gains almost nothing over no normalisation.
    min_contrast_db: float = 20.0

    def __post_init__(self) -> None:
        for name in ("aggressiveness", "frame_ms", "start_window_ms", "end_window_ms",
                     "end_pad_ms", "pre_roll_ms", "level_window_ms"):
            _integer(f"vad.{name}", getattr(self, name))
        if not isinstance(self.normalise, bool):
            raise ConfigError(f"vad.normalise must be true or false, got {self.normalise!r}")
        for name in ("target_level_dbfs", "silence_gate_dbfs"):
            value = getattr(self, name)
            if (not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not math.isfinite(value) or value >= 0):
                raise ConfigError(f"vad.{name} must be a number < 0 dBFS, got {value!r}")
        _non_negative("vad.max_gain_db", self.max_gain_db, "dB")
        _non_negative("vad.min_contrast_db", self.min_contrast_db, "dB")
        if self.level_window_ms < self.frame_ms:
            raise ConfigError(f"vad.level_window_ms must be >= vad.frame_ms ({self.frame_ms} ms)")
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ConfigError(f"vad.aggressiveness must be 0..3, got {self.aggressiveness!r}")
        if self.frame_ms not in (10, 20, 30):
            raise ConfigError(f"vad.frame_ms must be 10, 20 or 30 ms, got {self.frame_ms!r}")
        for name in ("start_window_ms", "end_window_ms"):
            value = getattr(self, name)
            _positive(f"vad.{name}", value, "ms")
            if value < self.frame_ms:
                raise ConfigError(f"vad.{name} must be >= vad.frame_ms ({self.frame_ms} ms)")
        _non_negative("vad.end_pad_ms", self.end_pad_ms, "ms")
        _non_negative("vad.pre_roll_ms", self.pre_roll_ms, "ms")
        for name in ("start_ratio", "end_ratio"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ConfigError(f"vad.{name} must be in (0, 1], got {value!r}")


@dataclass(frozen=True)
class SegmentConfig:
    """How live speech is cut into turns and when they are embedded."""

    #: Shorter VAD segments are ignored (CAM++ is weak under about 1 s).
    min_segment_s: float = 1.0
    #: Longer segments are closed and a new one started (bounds memory and latency).
    max_segment_s: float = 30.0
    #: Stream time after segment start at which the first provisional guess is made
    #: (the end of the first piece of the segment).
    first_provisional_s: float = 1.0
    #: Length of each further piece of a segment: every piece passes the network once
    #: and gives one provisional update.
    hop_s: float = 0.5
    #: Audio before a piece that the network also sees (context, not pooled again).
    context_s: float = 0.5
    #: Window for speaker-change detection: the last ``window_s / hop_s`` pieces
    #: pooled together; a whole multiple of ``hop_s``, at least 2 pieces.
    window_s: float = 1.5
    #: A full window this far from the turn so far (``distance``), confirmed by the
    #: next ``change_confirm_windows`` windows, marks a speaker change inside a segment.
    #: ``None`` disables it.
    change_distance: float | None = 1.0
    #: How many windows after the first far one must also be far from the turn (and
    #: within ``change_distance`` of the first far window) before a change is made:
    #: hysteresis over several windows (1: the next window alone confirms).
    change_confirm_windows: int = 1
    #: A far window counts only when the enrolled person nearest to it is not the one
    #: nearest to the turn so far (or nobody is enrolled): a window of the same voice
    #: that is merely noisy usually still points at the same person.
    change_other_voice: bool = False
    #: After a confirmed change, this much of the new voice (seconds from the cut) is
    #: heard before the split is made. Then, and at the segment's end if it comes first,
    #: the part split off *rejoins* the turn before it (no split, one final for the
    #: whole turn) when the two parts are within ``rejoin_distance`` of each other and
    #: either part alone would be unknown (nobody within ``match.max_distance``) or both
    #: name the same person. Meanwhile guesses name the new voice. ``None``: the split
    #: is made as soon as the change is confirmed, without rejoining. (With 1.5 s windows
    #: the new turn already holds 1.5 s when the change is confirmed, so 1.0 decides at
    #: the next piece. Measured with bench/changes.py, docs/changes.md: tune half,
    #: utterances of one voice cut by a change 14.3 % -> 3.9 %, LibriSpeech
    #: interruptions named right 91.8 % -> 92.8 %.)
    change_hold_s: float | None = 1.0
    #: Largest distance between the two parts of a change that may rejoin; ``None``
    #: uses ``change_distance``. (1.2 rejoined more one-voice cuts but also merged
    #: never-enrolled interrupters into the enrolled turn before them.)
    rejoin_distance: float | None = 1.1
    #: Ask the speaker-segmentation model (``models/segmentation.onnx``, the one the
    #: enrolment's second-voice check uses; :mod:`streamer.voice_change`) about each held
    #: change before it is split or rejoined: when it hears one local speaker on both
    #: sides of the cut, the parts rejoin if within ``voice_rejoin_distance``; when it
    #: hears two, the split stands; otherwise the rule above decides. Costs one model run
    #: on up to 10 s of audio per held change. Needs the model in the package (without
    #: it, the rule above alone decides). (bench/changes.py, docs/changes.md: tune half,
    #: utterances of one voice cut by a change 1.3 -> 0 %, LibriSpeech interruptions
    #: named right 92.2 -> 92.9 %.)
    voice_check: bool = True
    #: Largest distance between the two parts of a held change that rejoin when the
    #: segmentation model hears one voice across the cut and the same enrolled person is
    #: nearest to both parts. (1.3 rejoined more one-voice cuts but also real
    #: interruptions: tune half, interruptions 92.2 -> 89.8 %.)
    voice_rejoin_distance: float = 1.2
    #: At the end of each turn (a pause, ``max_segment_s`` or the stream's end) ask the
    #: segmentation model where in its last 10 s one voice gives way to another, and
    #: split the turn there unless its two parts rejoin by the rule above (distances).
    #: Finds changes the windows missed (two people taking turns across a short pause
    #: that the VAD bridged). Costs one model run per turn of at least twice
    #: ``voice_split_min_s``.
    voice_split: bool = False
    #: Each part of such a split has at least this much speech of its voice alone.
    voice_split_min_s: float = 1.0
    #: A turn created by a speaker change must last at least this long.
    min_turn_s: float = 1.0
    #: A segment that starts within this time after the previous reported one ended
    #: may continue that turn: when its voice is within ``change_distance`` of it, its
    #: guesses and final pool both turns' pieces, and a segment shorter than
    #: ``min_segment_s`` is reported instead of ignored. ``None`` disables joining.
    join_gap_s: float | None = 1.0
    #: A turn's final embeds the whole turn in one network pass (as ``identify`` embeds a
    #: request) instead of pooling the frames of its pieces: each piece's frames were
    #: computed from only the piece and ``context_s`` before it, and CAM++'s
    #: context-aware layers average over their whole input, so the pooled embedding of
    #: far or phone-line speech lies further from the speaker's voiceprint (tune half,
    #: median +0.05). Costs one more pass over every turn's audio; provisional guesses
    #: and change detection still use the pieces. On in the ``far`` and ``phone`` room
    #: profiles.
    final_whole_pass: bool = False
    #: With a one-pass final (above, or after a dropped piece): keep the person it names
    #: only when the turn's pieces pooled put that person nearest too (within the
    #: threshold or not; :func:`streamer.identify.agree`); else nobody. The pieces can
    #: take a name away, never add one. A second search per final, no network work. On
    #: in the ``far`` and ``phone`` room profiles.
    final_agree: bool = False

    def __post_init__(self) -> None:
        for name in ("min_segment_s", "max_segment_s", "first_provisional_s", "window_s",
                     "hop_s", "min_turn_s"):
            _positive(f"segment.{name}", getattr(self, name), "seconds")
        if self.join_gap_s is not None:
            _non_negative("segment.join_gap_s", self.join_gap_s, "seconds")
        _non_negative("segment.context_s", self.context_s, "seconds")
        pieces = self.window_s / self.hop_s
        if pieces < 2 - 1e-9 or abs(pieces - round(pieces)) > 1e-6:
            raise ConfigError(
                f"segment.window_s ({self.window_s} s) must be a whole multiple of "
                f"segment.hop_s ({self.hop_s} s), at least 2 pieces"
            )
        if self.max_segment_s < 2 * self.min_segment_s:
            raise ConfigError("segment.max_segment_s must be at least 2 x min_segment_s")
        for name in ("change_distance", "rejoin_distance", "voice_rejoin_distance"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                      or not 0 < value <= 2):
                raise ConfigError(f"segment.{name} must be in (0, 2] distance, got {value!r}")
        _integer("segment.change_confirm_windows", self.change_confirm_windows)
        _positive("segment.change_confirm_windows", self.change_confirm_windows, "windows")
        _positive("segment.voice_split_min_s", self.voice_split_min_s, "seconds")
        for name in ("change_other_voice", "voice_check", "voice_split"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"segment.{name} must be true or false, got {getattr(self, name)!r}")
        if self.change_hold_s is not None:
            _non_negative("segment.change_hold_s", self.change_hold_s, "seconds")


@dataclass(frozen=True)
class MatchConfig:
    """Identification decisions."""

    #: A person matches when ``distance <= max_distance`` (Euclidean between unit
    #: embeddings). Chosen from measurements on ../shared/speech (see README).
    max_distance: float = 1.0
    #: Candidates reported with each decision.
    top_k: int = 5
    #: Least detected speech for ``identify`` and ``verify`` requests.
    min_request_speech_s: float = 1.0
    #: Live streams of these rooms use their own ``max_distance``: ``{room: distance}``,
    #: a room name or a shell pattern (``board*``); the first that matches wins, other
    #: rooms use ``max_distance``. For rooms whose microphones are far from the talkers
    #: (a table microphone 2-4 m away): their speech lies farther from the close-talk
    #: enrolment than the default allows (measured in the README's held-out tables).
    room_max_distance: Mapping[str, float] = field(default_factory=dict)
    #: In a room with a roster (``set_room``), someone outside it is named only within
    #: this stricter distance: among everyone enrolled, a near voice is more often
    #: someone else (false accepts grow with the gallery). At 76 people 0.9 gives 1.4 %
    #: leave-own-out false accepts against 1.9 % at 1.0, for 7.4 % false rejects
    #: against 4.1 % (docs/accuracy.md). Never looser than the room's own threshold.
    outside_roster_max_distance: float = 0.9
    #: The large-gallery rule (:class:`streamer.identify.GalleryRule`): with more than
    #: ``large_gallery_from_people`` people enrolled, 1:N decisions (``identify``, live
    #: speech, visitors of a room with a roster) tighten the threshold by
    #: ``large_gallery_tighten_per_tenfold`` (distance) for every tenfold of people and
    #: name the nearest only when the second nearest is ``large_gallery_margin``
    #: (distance) farther. Measured on galleries of 1 k to 1 M distinct people
    #: (bench/gallery.py): false identifications of never-enrolled voices stay under
    #: about 0.5 % instead of growing to 59 % at 100 k people. 1:1 ``verify`` and roster
    #: members are not affected.
    large_gallery_from_people: int = 100
    large_gallery_tighten_per_tenfold: float = 0.035
    large_gallery_margin: float = 0.06
    #: The line the speech to identify arrives through (:data:`CHANNELS`). ``telephone``
    #: (a phone bridge, a dial-in): embedded with the model's telephone-line variant
    #: (``models/campplus_telephone_frames.onnx`` + ``_head.onnx``, trained by
    #: ``models/train_telephone.py`` to put phone-line speech where the model puts the
    #: same speech heard wideband), so it is compared with the same voiceprints. ``far``
    #: (a table microphone 1-4 m away): the far-field variant (``campplus_far_*``,
    #: ``models/train_far.py``), trained the same way on far-field copies. Set it per
    #: room (``rooms: {"dial-in-*": phone, boardroom: far}``); voiceprints are always the
    #: model's.
    channel: str = "wideband"

    @property
    def gallery_rule(self) -> GalleryRule:
        """The large-gallery rule of these settings."""
        return GalleryRule(self.large_gallery_from_people,
                           self.large_gallery_tighten_per_tenfold, self.large_gallery_margin)

    def __post_init__(self) -> None:
        _integer("match.large_gallery_from_people", self.large_gallery_from_people)
        _positive("match.large_gallery_from_people", self.large_gallery_from_people, "people")
        for key in ("large_gallery_tighten_per_tenfold", "large_gallery_margin"):
            value = getattr(self, key)
            if (not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not math.isfinite(value) or not 0 <= value <= 0.5):
                raise ConfigError(f"match.{key} must be in [0, 0.5] (distance), got {value!r}")
        value = self.outside_roster_max_distance
        if (not isinstance(value, (int, float)) or isinstance(value, bool)
                or not 0 < value <= 2):
            raise ConfigError("match.outside_roster_max_distance must be in (0, 2] "
                              f"(distance), got {value!r}")
        if not isinstance(self.max_distance, (int, float)) or not 0 < self.max_distance <= 2:
            raise ConfigError(
                f"match.max_distance must be in (0, 2] (distance), got {self.max_distance!r}"
            )
        if not isinstance(self.room_max_distance, Mapping):
            raise ConfigError("match.room_max_distance must be a mapping {room: distance}")
        for room, value in self.room_max_distance.items():
            if not isinstance(room, str) or not room:
                raise ConfigError(f"match.room_max_distance: room names must be strings, got {room!r}")
            if (not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not math.isfinite(value) or not 0 < value <= 2):
                raise ConfigError(
                    f"match.room_max_distance[{room!r}] must be in (0, 2] (distance), got {value!r}")
        if self.channel not in CHANNELS:
            raise ConfigError(f"match.channel must be one of {', '.join(CHANNELS)}, "
                              f"got {self.channel!r}")
        _integer("match.top_k", self.top_k)
        _positive("match.top_k", self.top_k, "people")
        _positive("match.min_request_speech_s", self.min_request_speech_s, "seconds")

    def max_distance_for(self, room: str) -> float:
        """The match threshold for live streams of ``room`` (``room_max_distance``, else
        ``max_distance``). Call once per stream; never raises."""
        for pattern, value in self.room_max_distance.items():
            if fnmatch.fnmatchcase(room, pattern):
                return float(value)
        return self.max_distance


@dataclass(frozen=True)
class EnrollConfig:
    """Enrolment rules (measured with ``bench/enrolment.py``; docs/enrolment.md)."""

    #: Enrolment with less detected speech is refused with ``too_little_speech``. Above it
    #: an enrolment is graded, not refused (``quality.percent``, ``quality.warnings``).
    #: Measured (bench/enrolment.py, tune half, 36 people of five corpora enrolled
    #: together, 126 held-out items): share of genuine items within match.max_distance
    #: 57 % at 1 s of enrolment speech, 74 % at 1.5 s, 87 % at 2 s, 92 % at 3 s, 96 %
    #: from 4 s; top-1 90 / 95 / 95 / 96 / 98 %. Below 2 s the voiceprint is unreliable.
    min_speech_s: float = 2.0
    #: Below this, ``quality.warnings`` says how much more speech would help (top-1 was
    #: 99 % at 7 s of speech against 98 % at 4-5 s).
    recommended_speech_s: float = 7.0
    #: Keep the enrolment audio (16 kHz PCM) in the database so voiceprints can be
    #: rebuilt for a new model. Deleted with the person.
    keep_audio: bool = False
    #: Is the enrolment audio one speaker? Its speech is cut into consecutive pieces
    #: (``streamer.consistency``), each is embedded, and the pieces vote:
    #: two groups of >= 2 pieces further apart than ``consistency_split_distance``
    #: refuse; a single piece further than ``consistency_max_distance`` from the others
    #: (with >= 3 pieces, the rest agreeing) is left out of the voiceprint with a warning;
    #: 2-3 pieces that do not agree refuse. ``"refuse"``: a refusal is ``not_one_speaker``
    #: (nothing stored); ``"warn"``: enrolled with a warning in ``quality.warnings``;
    #: ``"off"``: not checked.
    consistency: str = "refuse"
    #: Length of one piece, seconds of detected speech; shorter (down to 1.0 s) when the
    #: speech is short, so that there are ``consistency_min_pieces`` pieces. Shorter
    #: pieces separate voices worse (CAM++ on 1-1.5 s is noisy): at <= 1 % of single
    #: speakers refused, 1.0-1.5 s pieces caught at most ~45 % of mixes, 2.0 s ~57 %.
    consistency_piece_s: float = 2.0
    consistency_min_pieces: int = 2
    #: Largest leave-one-out distance of a piece (``distance`` from the unit mean of the
    #: other pieces) that still counts as the same speaker.
    #:
    #: Measured with CAM++ (bench/enrolment.py --half tune; docs/enrolment.md): 157
    #: single-speaker enrolments (7-8 s of audio, seven corpora incl. AMI far-field solo
    #: segments) and 160 two-speaker mixes (~4 s + ~4 s) and 75 three-voice turns (~3 s
    #: each), clean and far-field (RT60 0.5 s, pink noise 10 dB SNR, -35 dBFS). The old
    #: 2.5 s / 1.15 refused 2.5 % of clean single speakers (20 % of Speech Commands)
    #: and 5.1 % far. At 1.22 with 2.0 s pieces: 0 % clean, 0.6 % far refused;
    #: mixes caught 54 % clean, 59 % far (3 voices 87 % / 76 %). At 1.18: 1.9 % of
    #: single speakers refused, 69 % of mixes caught.
    consistency_max_distance: float = 1.22
    #: Largest distance between the mean voices of two groups of >= 2 pieces that
    #: still counts as one speaker (needs >= 4 pieces; caught 3-voice turns 87 % vs
    #: 84 % without it, no single speaker refused more on the tune half).
    consistency_split_distance: float = 1.1
    #: ``consistency_max_distance`` for speech that came through a phone line (embedded
    #: with the telephone-line variant, ``telephone_below_db``), whose voices sit
    #: closer together. Tune half, the same enrolments through the benchmark's phone line
    #: (bench/enrolment.py's 150 single speakers and 160 two-speaker mixes, plus
    #: bench/heldout.py's 35 and 34): at 1.22 35-47 % of mixes caught; 1.15: one single
    #: speaker of 185 refused, 55-68 % of mixes caught; 1.10: 1.3 % of singles refused.
    #: bench/enrolment.py's telephone condition at 1.15, test half: 0.7 % of single
    #: speakers refused, 58 % of two-speaker mixes caught.
    consistency_telephone_max_distance: float = 1.15
    #: Enrolment speech whose 4.2-7.5 kHz energy is at or below this many dB of its
    #: 0.3-3.4 kHz energy (:func:`streamer.band.high_band_db`) came through a phone line:
    #: its pieces are compared with the telephone-line variant of the model (loaded when
    #: the model has one; without it the check is off), under
    #: ``consistency_telephone_max_distance``; the model itself
    #: puts every voice heard through a line close together (it caught 1-9 % of
    #: phone-line mixes, tune half). The voiceprint is still the model's. Tune half, 16-bit: wideband speech
    #: (clean or far) >= -39.3 dB, the telephone condition <= -43.8 dB. null: never.
    telephone_below_db: float | None = -41.5
    #: Listen for a second voice with the speaker-segmentation model shipped with the
    #: package (``segmentation.onnx``, :mod:`streamer.second_voice`): a second local
    #: speaker with at least ``second_voice_min_s`` of speech alone whose voice is at least
    #: ``second_voice_distance`` from the first's is handled like a failed one-speaker
    #: check (``consistency`` decides: refuse, warn; ``off`` turns both checks off).
    #: Costs the model (6 MB) and one pass over each 10 s of enrolment audio.
    #: Chosen on the tune half (bench/enrolment.py and bench/heldout.py's enrolments;
    #: docs/enrolment.md): at 1.5 s and 1.1 no single speaker refused more, two-speaker
    #: mixes refused 56 -> 73 % clean, 56 -> 63 % far, 54 -> 56 % through a phone line.
    #: 1.0 s also refused none there, but CAM++ on 1 s of a voice is too noisy for 1.1
    #: (same-speaker distance p90 1.13 at 1 s, 1.05 at 1.5 s).
    second_voice: bool = True
    second_voice_min_s: float = 1.5
    second_voice_distance: float = 1.1
    #: When some room embeds with the telephone-line variant (``match.channel:
    #: telephone``, the ``phone`` profile), also store a line voiceprint of every
    #: enrolment (the speech through three random phone lines, embedded by the variant;
    #: :mod:`streamer.line_voiceprints`), which those rooms search instead of the
    #: wideband voiceprints. Costs three more embeddings per enrolment. Measured
    #: (bench/narrowband.py, test half): true accepts at 1 % false accepts 80 -> 91 %.
    line_voiceprints: bool = True

    @property
    def listens_for_second_voice(self) -> bool:
        """Does enrolment run the second-voice check (``second_voice`` on, and the
        one-speaker checks not ``consistency: off``)?"""
        return self.second_voice and self.consistency != "off"

    def limits_for(self, channel: str) -> EnrollConfig:
        """These settings as the one-speaker check applies them to speech of
        ``channel`` (``telephone``: ``consistency_telephone_max_distance``)."""
        if channel == "telephone":
            return dataclasses.replace(
                self, consistency_max_distance=self.consistency_telephone_max_distance)
        return self

    def __post_init__(self) -> None:
        _positive("enroll.min_speech_s", self.min_speech_s, "seconds")
        _positive("enroll.recommended_speech_s", self.recommended_speech_s, "seconds")
        if self.recommended_speech_s < self.min_speech_s:
            raise ConfigError(
                "enroll.recommended_speech_s must be at least enroll.min_speech_s "
                f"({self.min_speech_s!r} seconds), got {self.recommended_speech_s!r}"
            )
        mode: object = self.consistency
        if mode is False:  # YAML 1.1 reads an unquoted ``off`` as false
            object.__setattr__(self, "consistency", "off")
        if self.consistency not in CONSISTENCY_MODES:
            raise ConfigError(
                f"enroll.consistency must be one of {', '.join(CONSISTENCY_MODES)}, "
                f"got {self.consistency!r}"
            )
        _positive("enroll.consistency_piece_s", self.consistency_piece_s, "seconds")
        if self.consistency_piece_s < 1.0:
            raise ConfigError(
                "enroll.consistency_piece_s must be at least 1.0 seconds (CAM++ is weak "
                f"on shorter speech), got {self.consistency_piece_s!r}"
            )
        pieces = self.consistency_min_pieces
        if not isinstance(pieces, int) or isinstance(pieces, bool) or not 2 <= pieces <= 8:
            raise ConfigError(
                f"enroll.consistency_min_pieces must be a whole number from 2 to 8, got {pieces!r}"
            )
        for key in ("consistency_max_distance", "consistency_split_distance",
                    "consistency_telephone_max_distance", "second_voice_distance"):
            value = getattr(self, key)
            if (not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not 0 < value <= 2):
                raise ConfigError(f"enroll.{key} must be in (0, 2] (distance), got {value!r}")
        value = self.telephone_below_db
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                  or not math.isfinite(value) or not -120 <= value <= 0):
            raise ConfigError("enroll.telephone_below_db must be null or in [-120, 0] (dB), "
                              f"got {value!r}")
        for name in ("second_voice", "line_voiceprints"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"enroll.{name} must be true or false, got {getattr(self, name)!r}")
        _positive("enroll.second_voice_min_s", self.second_voice_min_s, "seconds")


@dataclass(frozen=True)
class RegistryConfig:
    """Where people and voiceprints are stored."""

    #: Folder for ``registry.sqlite3`` and the derived index; relative to the config
    #: file's folder (to the working directory without a config file). ``--data-dir``
    #: overrides it. With ``url`` set it holds only this server's index cache.
    data_dir: str = "data"
    #: PostgreSQL URL (``postgresql://user:password@host:5432/dbname``). Unset: SQLite in
    #: ``data_dir`` (the embedded default). Set: PostgreSQL is the source of truth and
    #: every server of a cluster uses the same one (needs no extension).
    url: str | None = None
    #: With ``url``: seconds between polls of the database generation, so a lost
    #: notification costs at most this long.
    poll_s: float = 2.0
    #: With ``url``: seconds a connection attempt or statement may take before the
    #: request fails with an error naming the database.
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.data_dir, str) or not self.data_dir:
            raise ConfigError(f"registry.data_dir must be a folder path, got {self.data_dir!r}")
        if self.url is not None and (
                not isinstance(self.url, str)
                or not self.url.startswith(("postgresql://", "postgres://"))):
            raise ConfigError("registry.url must be a postgresql:// URL or null")
        for key in ("poll_s", "timeout_s"):
            _positive(f"registry.{key}", getattr(self, key), "seconds")


@dataclass(frozen=True)
class ClusterConfig:
    """Several servers as one (README "Running several servers"); unset by default."""

    #: NATS URL (``nats://127.0.0.1:4222``; several separated by commas). Set: room
    #: events span the servers of the cluster. Unset: an in-process hub.
    nats_url: str | None = None
    #: This server's name in events (``node``) and logs; default ``host:pid``.
    node: str | None = None
    #: Seconds between this server's heartbeats; a server silent for
    #: ``node_timeout_s`` is taken for dead and its microphones leave their rooms.
    heartbeat_s: float = 1.0
    node_timeout_s: float = 3.0
    #: When a server first serves a room, how long it waits for the other servers'
    #: state of that room (who is speaking, recent finals) before answering a display.
    sync_timeout_s: float = 0.5
    #: First token of every NATS subject, so several clusters can share one NATS.
    subject_prefix: str = "streamer"

    def __post_init__(self) -> None:
        if self.nats_url is not None and (
                not isinstance(self.nats_url, str) or not all(
                    u.strip().startswith(("nats://", "tls://", "ws://", "wss://"))
                    for u in self.nats_url.split(","))):
            raise ConfigError("cluster.nats_url must be a nats:// URL (or several, "
                              "comma-separated) or null")
        if self.node is not None and (not isinstance(self.node, str) or not self.node.strip()):
            raise ConfigError(f"cluster.node must be a non-empty string or null, got {self.node!r}")
        for key in ("heartbeat_s", "node_timeout_s", "sync_timeout_s"):
            _positive(f"cluster.{key}", getattr(self, key), "seconds")
        if self.node_timeout_s <= self.heartbeat_s:
            raise ConfigError("cluster.node_timeout_s must be longer than cluster.heartbeat_s")
        prefix = self.subject_prefix
        if (not isinstance(prefix, str) or not prefix
                or any(c in prefix for c in " .*>\t\r\n")):
            raise ConfigError("cluster.subject_prefix must be one NATS subject token "
                              f"(no spaces, dots, * or >), got {prefix!r}")


@dataclass(frozen=True)
class EventsConfig:
    """Fan-out to room displays."""

    #: Events buffered per display; beyond it stale provisional events are dropped, and
    #: a display that still cannot keep up is closed with 1013.
    max_queued_events: int = 256
    #: Final speaker events kept per room for the ``snapshot`` sent on connect.
    recent_events: int = 20

    def __post_init__(self) -> None:
        _integer("events.max_queued_events", self.max_queued_events)
        _positive("events.max_queued_events", self.max_queued_events, "events")
        _integer("events.recent_events", self.recent_events)
        _non_negative("events.recent_events", self.recent_events, "events")


@dataclass(frozen=True)
class Config:
    """The whole configuration. Relative paths in it are relative to ``base_dir``, the
    config file's folder (``None``: no config file, the working directory)."""

    server: ServerConfig = field(default_factory=ServerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    enroll: EnrollConfig = field(default_factory=EnrollConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    #: Room profiles for live streams (``rooms:``, :mod:`streamer.room_profiles`).
    rooms: tuple[RoomProfile, ...] = ()
    base_dir: Path | None = None

    def resolve(self, path: str | Path) -> Path:
        """``path`` as an absolute path: relative ones are relative to ``base_dir``."""
        return (Path(self.base_dir or Path.cwd()) / path).resolve()

    @property
    def model_path(self) -> Path:
        """The model file: ``model.path`` resolved, or the packaged model."""
        if self.model.path is None:
            return packaged_model_dir() / PACKAGED_MODEL
        return self.resolve(self.model.path)

    @property
    def model_path_origin(self) -> str:
        """How :attr:`model_path` was found, for error messages."""
        if self.model.path is None:
            return "model.path is unset: the model shipped with the package"
        if Path(self.model.path).is_absolute():
            return f"model.path {self.model.path!r}"
        where = f"the config file's folder {self.base_dir}" if self.base_dir else "the working directory"
        return f"model.path {self.model.path!r}, relative to {where}"

    @property
    def data_dir(self) -> Path:
        """``registry.data_dir`` resolved (relative to ``base_dir``)."""
        return self.resolve(self.registry.data_dir)

    def for_room(self, room: str) -> Config:
        """The configuration a live stream of ``room`` runs with: the first ``rooms``
        profile matching it applied, else this one. Call once per stream; never raises
        (every profile was applied once when the configuration was loaded)."""
        for profile in self.rooms:
            if profile.matches(room):
                return profile_config(self, profile)
        return self

    def channels(self) -> tuple[str, ...]:
        """Every ``match.channel`` this configuration uses (top level and every room
        profile), in :data:`CHANNELS` order: the model variants a server must load.
        (``enroll.telephone_below_db`` also uses the telephone variant, when the model
        has one: :meth:`streamer.app.App.load`.)"""
        used = {self.match.channel} | {profile_config(self, p).match.channel for p in self.rooms}
        return tuple(c for c in CHANNELS if c in used)

    def checks_voices_live(self) -> bool:
        """Does any live stream ask the segmentation model about its turns
        (``segment.voice_check`` or ``voice_split``, at the top level or in a room
        profile)?"""
        return any(c.segment.voice_check or c.segment.voice_split
                   for c in (self, *(profile_config(self, p) for p in self.rooms)))

    def room_profile(self, room: str) -> RoomProfile | None:
        """The ``rooms`` profile a live stream of ``room`` uses, or None."""
        return next((p for p in self.rooms if p.matches(room)), None)

    def replace(self, **sections: Any) -> Config:
        """Return a copy with whole sections replaced (used for CLI overrides and tests)."""
        return dataclasses.replace(self, **sections)


_SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "auth": AuthConfig,
    "model": ModelConfig,
    "worker": WorkerConfig,
    "vad": VadConfig,
    "segment": SegmentConfig,
    "match": MatchConfig,
    "enroll": EnrollConfig,
    "registry": RegistryConfig,
    "events": EventsConfig,
    "cluster": ClusterConfig,
}


def _build_section(name: str, cls: type, raw: Any) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config section {name!r} must be a mapping, got {type(raw).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) in section {name!r}: {', '.join(map(str, unknown))}")
    if cls is AuthConfig:
        tokens_file = raw.get("tokens_file")
        if tokens_file is not None and not isinstance(tokens_file, str):
            raise ConfigError("auth.tokens_file must be a path string or null")
        return AuthConfig(tokens=parse_tokens(raw.get("tokens"), "auth.tokens"),
                          tokens_file=tokens_file)
    try:
        return cls(**raw)
    except TypeError as exc:  # pragma: no cover - every field is type-checked first; kept for new ones
        raise ConfigError(f"config section {name!r}: {exc}") from None


def config_from_mapping(raw: Mapping[str, Any] | None, base_dir: Path | None = None) -> Config:
    """Build a :class:`Config` from parsed YAML. Raises :class:`ConfigError`."""
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise ConfigError("the configuration must be a mapping of sections")
    unknown = sorted(set(raw) - set(_SECTIONS) - {"rooms"})
    if unknown:
        raise ConfigError(f"unknown config section(s): {', '.join(map(str, unknown))}")
    sections = {name: _build_section(name, cls, raw.get(name)) for name, cls in _SECTIONS.items()}
    _check_finite(sections)
    config = Config(base_dir=base_dir, rooms=parse_rooms(raw.get("rooms")), **sections)
    for profile in config.rooms:  # every profile applies cleanly, or the server does not start
        profile_config(config, profile)  # (vad, segment and match check every value's range)
    return config


def _check_finite(sections: Mapping[str, Any]) -> None:
    for name, value in sections.items():
        for f in fields(value):
            v = getattr(value, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{name}.{f.name} must be finite, got {v!r}")


def load_config(path: str | Path | None,
                environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate ``path``; ``None`` gives the defaults (relative paths relative to
    the working directory, the packaged model).

    Also reads ``auth.tokens_file`` and the ``STREAMER_TOKENS`` variable of ``environ``
    (default ``os.environ``) and adds their tokens. Raises :class:`ConfigError` for
    unreadable files, YAML errors, unknown keys and invalid values.
    """
    environ = os.environ if environ is None else environ
    if path is None:
        config = Config()
    else:
        path = Path(path)
        config = config_from_mapping(_read_yaml(path, "config file"),
                                     base_dir=path.resolve().parent)
    auth = config.auth
    extra: list[tuple[AuthToken, ...]] = []
    if auth.tokens_file is not None:
        file = config.resolve(auth.tokens_file)
        extra.append(parse_tokens(_read_yaml(file, "tokens file"), f"tokens file {file}"))
    if environ.get(TOKENS_ENV, "").strip():
        try:
            raw = yaml.safe_load(environ[TOKENS_ENV])
        except yaml.YAMLError:
            raise ConfigError(f"{TOKENS_ENV} is not valid YAML/JSON") from None
        extra.append(parse_tokens(raw, TOKENS_ENV))
    if extra:
        config = config.replace(auth=dataclasses.replace(
            auth, tokens=merge_tokens(auth.tokens, *extra)))
    return config


def _read_yaml(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # Not the parser's message: it quotes the offending line, which may hold a token.
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{what} {path} is not valid YAML{where}") from None
