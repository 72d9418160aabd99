"""Room profiles: live-stream settings for the rooms that need their own (``rooms:``).

A table microphone 1-4 m from the talkers hears quieter, reverberant speech than a
headset: webrtcvad drops more of it, a 400 ms hang-over cuts one person's turn into
fragments too short to name, and the same person sounds further from their close-talk
voiceprint. ``rooms`` maps a room name or ``fnmatch`` pattern to either the name of a
built-in profile (:data:`PRESETS`) or overrides of the ``vad``, ``segment`` and ``match``
sections::

    rooms:
      boardroom: far                   # the built-in far-field profile
      "lab-*":                         # or your own
        vad: {aggressiveness: 1}
        match: {max_distance: 1.05}
      "hall-*":                        # a built-in profile with some of it changed
        profile: far
        segment: {final_whole_pass: false}

Live streams (``/v1/ingest``) of a matching room use the profile, and so do
``identify`` and ``verify`` requests that name the room; ``enroll`` always uses the
top-level sections. The first pattern that matches wins. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

#: Sections a room profile may override.
SECTIONS = ("vad", "segment", "match")
#: The key of a ``rooms`` entry that starts from a built-in profile and changes some of it.
EXTENDS = "profile"
_UNSET = object()

#: Built-in profiles, chosen on the tune half of ``../shared/speech`` with ``bench/heldout.py``
#: (docs/accuracy.md, "Far rooms get their own VAD settings"). ``far``: a table microphone 1-4 m
#: away (reverberation, noise, -40..-25 dBFS): webrtcvad at aggressiveness 2 (stated, so a top-level
#: change does not reach far rooms; on the real AMI table-array meetings 1 named less, on the tune
#: half's simulated rooms about as much or more: docs/accuracy.md, "One-pass finals" and "Talkers at
#: the condition's SNR"), an 800 ms hang-over keeps one person's turn whole across the dips of far
#: speech, the two parts of a heard speaker change rejoin within 1.2 (far pieces of one voice sit
#: further apart; as far as the segmentation model's word on one voice lets parts rejoin
#: everywhere), and the speech is embedded with the model's far-field variant (``match.channel:
#: far``, ``models/train_far.py``), which puts far speech near the same voice's close-talk
#: voiceprint, at the threshold 1.025, the largest at which it lets no more strangers through than
#: the model did at its 1.1 (docs/accuracy.md, "Far rooms"); each turn's final is embedded in one
#: pass over the turn (``segment.final_whole_pass``; tune half, room meetings named right 78.9 ->
#: 84.4 %, docs/accuracy.md "One-pass finals") and keeps its name only when the turn's pieces pooled
#: put that person nearest too (``segment.final_agree``; right / wrong 84.4 / 3.9 -> 83.9 / 3.5 %;
#: in ``phone`` too: 86.1 / 2.1 % pooled -> 88.6 / 2.2 %). ``phone``: audio that arrives through a
#: phone line (a dial-in bridged into the room): embedded with the model's telephone-line variant
#: (``match.channel``; docs/accuracy.md, "The telephone band"), with the far profile's VAD settings,
#: because webrtcvad's decisions on band-limited speech dip like those on far speech and a 400 ms
#: hang-over cut a phone turn into fragments too short to name; with ``enroll.line_voiceprints``
#: (the default) such rooms search the line voiceprints (:mod:`streamer.line_voiceprints`) at 0.975,
#: the largest threshold at which they let no more strangers through than the wideband voiceprints
#: did at 1.0 (tune half). Both lift the VAD's input towards -20 dBFS (``vad.normalise``; the model
#: hears the raw audio): on the tune half it found speech the VAD missed (room meetings not covered
#: 13.0 -> 7.8 %, named right 60.3 -> 63.8 %; phone lines 72.2 -> 74.8 %), and on the real AMI
#: table-array meetings under these settings it changed nothing that matters (named right 92.3 ->
#: 92.8 % cross-recording, bench/accuracy.py --live-only). Both keep 300 ms more audio before the
#: start window (``vad.pre_roll_ms``: the quiet first syllables the noise hides from the start
#: decision) and 400 ms instead of 200 after the last voiced frame (``end_pad_ms``): tune half, 44
#: meetings each, right / wrong / not covered / first name: far 84.2 / 3.5 / 3.7 % / 1.42 s ->
#: 86.8 / 3.2 / 0.8 % / 1.23 s, phone 89.5 / 1.6 / 2.9 % / 1.41 s -> 93.0 / 1.9 / 0.1 % / 1.29 s
#: (docs/accuracy.md, "Onsets the noise hides").
_FAR_VAD: dict[str, Any] = {"aggressiveness": 2, "end_window_ms": 800, "normalise": True,
                            "pre_roll_ms": 300, "end_pad_ms": 400}
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "far": {
        "vad": dict(_FAR_VAD),
        # finals embed each turn in one pass, as identify does, and keep their name only
        # when the turn's pieces agree (docs/accuracy.md)
        "segment": {"rejoin_distance": 1.2, "voice_check": False, "final_whole_pass": True,
                    "final_agree": True},
        "match": {"max_distance": 1.025, "channel": "far"},
    },
    "phone": {
        "vad": dict(_FAR_VAD),
        # one-pass finals alone named more here but also more wrongly; with the pieces'
        # veto, more and hardly more wrongly (docs/accuracy.md)
        "segment": {"final_whole_pass": True, "final_agree": True},
        "match": {"max_distance": 0.975, "channel": "telephone"},
    },
}


@dataclass(frozen=True)
class RoomProfile:
    """One ``rooms`` entry: the rooms it applies to and what it changes."""

    pattern: str
    #: section -> {key: value}, for the sections in :data:`SECTIONS`
    overrides: Mapping[str, Mapping[str, Any]]
    #: the built-in profile's name when the entry named one
    preset: str | None = None

    def matches(self, room: str) -> bool:
        """Does ``room`` (a hello's room name) fall under this profile? Never raises."""
        return fnmatch.fnmatchcase(room, self.pattern)

    def describe(self) -> str:
        """``far``, ``far with segment.final_whole_pass=False`` or the overrides as
        ``vad.aggressiveness=1, ...``, for logs."""
        base = PRESETS.get(self.preset or "", {})
        own = ", ".join(f"{s}.{k}={v!r}" for s, keys in self.overrides.items()
                        for k, v in keys.items() if base.get(s, {}).get(k, _UNSET) != v)
        if self.preset is None:
            return own
        return f"{self.preset} with {own}" if own else self.preset


def parse_rooms(raw: Any) -> tuple[RoomProfile, ...]:
    """Read the ``rooms`` section (``None``: no profiles).

    Checks the shape only: room patterns are strings, values a preset name or a mapping
    of :data:`SECTIONS` to mappings, optionally with ``profile: PRESET`` to start from
    that preset's settings. Whether the values are valid settings is checked
    when the profile is applied to the configuration (:func:`profile_config`). Raises
    :class:`ConfigError` naming the entry.
    """
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise ConfigError("rooms must be a mapping {room or pattern: profile}")
    out = []
    for pattern, value in raw.items():
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"rooms: room names and patterns must be strings, got {pattern!r}")
        where = f"rooms[{pattern!r}]"
        if isinstance(value, str):
            if value not in PRESETS:
                raise ConfigError(f"{where}: unknown profile {value!r}; built in: "
                                  f"{', '.join(sorted(PRESETS))}")
            out.append(RoomProfile(pattern, PRESETS[value], value))
            continue
        if not isinstance(value, Mapping) or not value:
            raise ConfigError(f"{where} must be a profile name ({', '.join(sorted(PRESETS))}) "
                              f"or a mapping of {', '.join(SECTIONS)} settings")
        value = dict(value)
        base = value.pop(EXTENDS, None)
        if base is not None and (not isinstance(base, str) or base not in PRESETS):
            raise ConfigError(f"{where}.{EXTENDS} must be a built-in profile "
                              f"({', '.join(sorted(PRESETS))}), got {base!r}")
        for section, keys in value.items():
            if section not in SECTIONS:
                raise ConfigError(f"{where}: a room profile sets only {', '.join(SECTIONS)}, "
                                  f"not {section!r}")
            if not isinstance(keys, Mapping):
                raise ConfigError(f"{where}.{section} must be a mapping of settings")
        merged = {s: dict(k) for s, k in PRESETS.get(base, {}).items()}
        for section, keys in value.items():
            merged.setdefault(section, {}).update(keys)
        out.append(RoomProfile(pattern, merged, base))
    return tuple(out)


def profile_config(config: Any, profile: RoomProfile) -> Any:
    """``config`` (a :class:`streamer.config.Config`) with ``profile``'s overrides applied.

    Raises :class:`ConfigError` (prefixed with the entry) for an unknown key or an
    invalid value; the configuration loader calls this for every profile, so a server
    never starts with a profile it cannot apply.
    """
    sections = {}
    for section, keys in profile.overrides.items():
        current = getattr(config, section)
        known = {f.name for f in dataclasses.fields(current)}
        unknown = sorted(set(keys) - known)
        if unknown:
            raise ConfigError(f"rooms[{profile.pattern!r}]: unknown key(s) in {section}: "
                              f"{', '.join(map(str, unknown))}")
        try:
            sections[section] = dataclasses.replace(current, **keys)
        except ConfigError as exc:
            raise ConfigError(f"rooms[{profile.pattern!r}]: {exc}") from None
    return config.replace(**sections)
