"""What a server of a cluster knows about streams, its own and its peers' (pure).

:class:`LocalStreams` stamps this server's events with its ``node`` and a per-stream
``seq`` (1, 2, 3, ... for each stream) and keeps what a peer needs to rebuild a room
when it starts following it: the events of each stream's open segment and the room's
recent finals. :class:`RemoteStreams` follows the peers' streams: it drops a repeated or
older event (a state sync overlapping live events), counts gaps in a stream's ``seq``
(NATS core is at-most-once), and lists the streams of a peer that fell silent.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LocalStreams", "RemoteStreams"]


@dataclass
class _Segment:
    events: list[dict[str, Any]] = field(default_factory=list)


class LocalStreams:
    """This server's streams, per room."""

    def __init__(self, node: str, recent_events: int) -> None:
        self.node = node
        self._recent = max(recent_events, 0)
        self._seq: dict[str, int] = {}
        self._open: dict[str, dict[str, _Segment]] = {}  # room -> stream -> open segment
        self._finals: dict[str, deque[dict[str, Any]]] = {}  # room -> recent finals

    def stamp(self, room: str, event: dict[str, Any]) -> dict[str, Any]:
        """Add ``node`` and the stream's next ``seq`` to ``event`` (in place), remember
        it for :meth:`state`, and return it."""
        stream = str(event.get("stream"))
        seq = self._seq.get(stream, 0) + 1
        self._seq[stream] = seq
        event["node"], event["seq"] = self.node, seq
        kind = event.get("type")
        streams = self._open.setdefault(room, {})
        if kind == "speech_start":
            streams[stream] = _Segment([event])
        elif kind == "speaker" and event.get("final"):
            streams.pop(stream, None)
            if self._recent:
                self._finals.setdefault(room, deque(maxlen=self._recent)).append(event)
        elif kind == "speaker":
            segment = streams.setdefault(stream, _Segment())
            segment.events = [e for e in segment.events if e.get("type") != "speaker"] + [event]
        elif kind == "speech_end":
            streams.pop(stream, None)
        if not streams:
            self._open.pop(room, None)
        return event

    def closed(self, room: str, stream: str) -> None:
        """``stream`` ended: forget its open segment and its sequence."""
        self._seq.pop(stream, None)
        streams = self._open.get(room, {})
        streams.pop(stream, None)
        if not streams:
            self._open.pop(room, None)

    @property
    def live(self) -> list[str]:
        """This server's streams that have published and not closed (for heartbeats)."""
        return sorted(self._seq)

    def state(self, room: str) -> list[dict[str, Any]]:
        """Events that rebuild this server's part of ``room``: recent finals, oldest
        first, then each open segment's start and latest guess."""
        events = list(self._finals.get(room, ()))
        for segment in self._open.get(room, {}).values():
            events.extend(segment.events)
        return events


class RemoteStreams:
    """The peers' streams this server has heard of, and when it last heard each peer."""

    def __init__(self) -> None:
        self._last_seq: dict[tuple[str, str], int] = {}
        self._streams: dict[str, set[tuple[str, str]]] = {}  # node -> {(room, stream)}
        self._seen: dict[str, float] = {}  # node -> monotonic time last heard
        #: Events that arrived after a missing one of the same stream.
        self.gaps = 0

    def heard(self, node: str, now: float) -> None:
        """A heartbeat (or anything) from ``node`` at ``now`` (monotonic seconds)."""
        self._seen[node] = now

    def alive(self, now: float, timeout_s: float) -> set[str]:
        """Peers heard within ``timeout_s``."""
        return {node for node, t in self._seen.items() if now - t <= timeout_s}

    def accept(self, node: str, room: str, event: dict[str, Any], now: float) -> bool:
        """Should ``event`` of peer ``node`` go to the hub? False for a repeat or an
        event older than one already taken. Counts a gap when ``seq`` skips."""
        self.heard(node, now)
        stream = str(event.get("stream"))
        seq = event.get("seq")
        key = (node, stream)
        last = self._last_seq.get(key, 0)
        if isinstance(seq, int) and not isinstance(seq, bool):
            if seq <= last:
                return False
            if last and seq > last + 1:
                self.gaps += 1
            self._last_seq[key] = seq
        self._streams.setdefault(node, set()).add((room, stream))
        return True

    def closed(self, node: str, room: str, stream: str) -> None:
        """Peer ``node`` says ``stream`` ended."""
        self._last_seq.pop((node, stream), None)
        self._streams.get(node, set()).discard((room, stream))

    def gone(self, node: str) -> list[tuple[str, str]]:
        """Forget peer ``node`` (it said goodbye or fell silent); return its streams."""
        self._seen.pop(node, None)
        streams = sorted(self._streams.pop(node, set()))
        for _, stream in streams:
            self._last_seq.pop((node, stream), None)
        return streams

    def reconcile(self, node: str, live: set[str]) -> list[tuple[str, str]]:
        """Peer ``node`` says which of its streams are live (a heartbeat): forget and
        return the others, whose ``closed`` message was lost."""
        ended = sorted(e for e in self._streams.get(node, set()) if e[1] not in live)
        for room, stream in ended:
            self.closed(node, room, stream)
        return ended

    def silent(self, now: float, timeout_s: float) -> list[str]:
        """Peers not heard for longer than ``timeout_s``."""
        return sorted(node for node, t in self._seen.items() if now - t > timeout_s)

    def forget_room(self, room: str) -> list[str]:
        """This server stops following ``room``: forget its peers' streams there."""
        dropped = []
        for node, streams in self._streams.items():
            for entry in [e for e in streams if e[0] == room]:
                streams.discard(entry)
                self._last_seq.pop((node, entry[1]), None)
                dropped.append(entry[1])
        return sorted(dropped)

    @property
    def peers(self) -> int:
        """Peers heard of and not forgotten."""
        return len(self._seen)
