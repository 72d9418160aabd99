"""One room's "who is speaking now", merged over all its microphones (pure).

Several microphones in one room hear the same people. Each ingest stream reports its
own segments; a display wants one answer per room. :class:`RoomState` follows the
events of every stream of a room and :meth:`RoomState.speaking` merges them:

* only streams inside a segment count (between ``speech_start`` and ``speech_end``);
* entries naming the same person are merged into one (the nearest guess wins; the mics
  that hear them are listed);
* an unknown-speaker entry is dropped while some enrolled person is being named in the
  room (a far microphone that cannot name a voice another one names is hearing the same
  voice); several unknown entries merge into one;
* a stream in a segment that has no guess yet counts as ``pending`` (speech heard, no
  name yet), shown only when nothing else is;
* an event of a segment that its stream has already ended (or of an older segment) is
  ignored, so a late or repeated event cannot leave a ghost speaker behind.

Every entry has the same keys: ``person`` (``{"id", "name"}`` or None), ``distance``,
``final``, ``pending``, ``candidates``, ``start``, ``end`` (stream time of the chosen
guess), ``mics`` and ``streams``.

The result goes to displays as the ``room_state`` message, an extension of protocol v1
(a new message type; nothing renamed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RoomState", "room_state_message"]


@dataclass
class _Stream:
    mic: str
    segment: int | None = None
    event: dict[str, Any] | None = None


def _segment_number(event: dict[str, Any]) -> int | None:
    segment = event.get("segment")
    return segment if isinstance(segment, int) and not isinstance(segment, bool) else None


@dataclass
class RoomState:
    """The speaking state of one room. Feed every event of the room to :meth:`update`."""

    room: str
    _streams: dict[str, _Stream] = field(default_factory=dict)
    #: per stream, the highest segment number it has ended (speech_end seen)
    _ended: dict[str, int] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """True while some stream of the room is inside a segment."""
        return bool(self._streams)

    def _stale(self, stream_id: str, segment: int | None) -> bool:
        ended = self._ended.get(stream_id)
        return ended is not None and segment is not None and segment <= ended

    def update(self, event: dict[str, Any]) -> bool:
        """Apply one event; return True when :meth:`speaking` may have changed."""
        kind = event.get("type")
        if kind not in ("speech_start", "speaker", "speech_end"):
            return False
        stream_id = str(event.get("stream"))
        segment = _segment_number(event)
        if self._stale(stream_id, segment):
            return False  # late event of a segment that is over
        stream = self._streams.get(stream_id)
        if kind == "speech_start":
            self._streams[stream_id] = _Stream(str(event.get("mic")), segment)
            return True
        if kind == "speaker":
            if (stream is not None and segment is not None and stream.segment is not None
                    and segment < stream.segment):
                return False  # a guess for an older segment than the open one
            if stream is None or stream.segment != segment:
                stream = self._streams[stream_id] = _Stream(str(event.get("mic")), segment)
            stream.event = event
            return True
        # speech_end
        if segment is not None:
            self._ended[stream_id] = segment
        if stream is not None and (segment is None or stream.segment is None
                                   or stream.segment <= segment):
            del self._streams[stream_id]
            return True
        return False

    def stream_closed(self, stream_id: str) -> bool:
        """Forget a stream whose connection is gone; True if it was speaking."""
        self._ended.pop(stream_id, None)
        return self._streams.pop(stream_id, None) is not None

    def speaking(self) -> list[dict[str, Any]]:
        """Who is speaking in the room now, merged over microphones, nearest first."""
        named: dict[str, dict[str, Any]] = {}
        unknown: dict[str, Any] | None = None
        pending: list[str] = []
        pending_streams: list[str] = []
        for stream_id, s in sorted(self._streams.items()):
            e = s.event
            if e is None:
                if s.mic not in pending:
                    pending.append(s.mic)
                pending_streams.append(stream_id)
                continue
            person = e.get("person")
            key = person["id"] if person else None
            target = named.get(key) if key else unknown
            entry = {
                "person": person,
                "distance": e.get("distance"),
                "final": bool(e.get("final")),
                "pending": False,
                "candidates": e.get("candidates", []),
                "start": e.get("start"),
                "end": e.get("end"),
                "mics": [s.mic],
                "streams": [stream_id],
            }
            if target is None:
                if key:
                    named[key] = entry
                else:
                    unknown = entry
                continue
            if s.mic not in target["mics"]:
                target["mics"].append(s.mic)
            target["streams"].append(stream_id)
            if _nearer(entry, target):
                for k in ("distance", "final", "candidates", "start", "end"):
                    target[k] = entry[k]
        result = sorted(named.values(), key=_sort_key)
        if not result and unknown is not None:
            result = [unknown]
        if not result and pending:
            result = [{"person": None, "distance": None, "final": False, "pending": True,
                       "candidates": [], "start": None, "end": None, "mics": pending,
                       "streams": pending_streams}]
        return result


def _nearer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    da, db = a.get("distance"), b.get("distance")
    return da is not None and (db is None or da < db)


def _sort_key(entry: dict[str, Any]) -> float:
    d = entry.get("distance")
    return float(d) if d is not None else 9.0


def room_state_message(state: RoomState, ts: float) -> dict[str, Any]:
    """The ``room_state`` message for displays."""
    return {"type": "room_state", "room": state.room, "speaking": state.speaking(), "ts": ts}
