"""Fan-out of events to room displays, without back-pressure on the microphones.

Each display subscribes to one room and gets a small bounded queue; a relay task in the
server drains it to the websocket (websockets ``docs/topics/broadcast.rst``, "per-client
queues"). :meth:`Hub.publish` never blocks and never awaits. When a display's queue is
full, its oldest provisional ``speaker`` event is dropped (only the latest guess
matters); if nothing droppable is left, the subscriber is marked overflowed and the
server closes it with 1013. The server waits on :meth:`Subscriber.wait_overflowed`
beside its relay, because a relay stuck in a send to a display that stopped reading
never comes back to :meth:`Subscriber.get` to notice. :attr:`Hub.dropped_events`
counts the dropped events for ``/metrics``.

The hub also keeps each room's state for the ``snapshot`` sent on connect: the current
speaker event of every stream that is in a segment, and the last final events. After
every event that changes who is speaking, displays also get a ``room_state`` message
(an extension): the speakers merged over all microphones of the room
(:mod:`streamer.room`). Only the newest ``room_state`` matters, so a display's queue
holds at most one: a new one replaces the one still queued (it moves to the end, after
the events it follows). Like provisional guesses, a queued ``room_state`` is dropped
first when a display's queue is full.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from .room import RoomState, room_state_message

__all__ = ["Hub", "Subscriber"]


class Subscriber:
    """One display's queue. Read with :meth:`get`; check :attr:`overflowed`."""

    def __init__(self, room: str, max_events: int) -> None:
        self.room = room
        self._max = max_events
        self._queue: deque[dict[str, Any]] = deque()
        self._wakeup = asyncio.Event()
        self._overflow = asyncio.Event()
        self.overflowed = False
        self.closing = False
        self.dropped = 0
        #: ``room_state`` messages replaced in the queue by a newer one (not lost news)
        self.replaced = 0

    def close(self) -> None:
        """No more events will come: :meth:`get` returns None once the queue is empty."""
        self.closing = True
        self._wakeup.set()

    def put(self, event: dict[str, Any]) -> None:
        """Queue ``event``; drop stale provisional events when full. Never blocks."""
        if self.overflowed:
            return
        if event.get("type") == "room_state":
            for i, queued in enumerate(self._queue):
                if queued.get("type") == "room_state":
                    del self._queue[i]
                    self.replaced += 1
                    break
        if len(self._queue) >= self._max:
            for i, queued in enumerate(self._queue):
                if _stale_when_queued(queued):
                    del self._queue[i]
                    self.dropped += 1
                    break
            else:
                if _stale_when_queued(event):
                    self.dropped += 1  # the new guess is the only droppable event
                    return
                self.overflowed = True
                self._wakeup.set()
                self._overflow.set()
                return
        self._queue.append(event)
        self._wakeup.set()

    @property
    def pending(self) -> int:
        """Events queued and not yet taken."""
        return len(self._queue)

    async def wait_overflowed(self) -> None:
        """Return once the queue has overflowed (the display must be closed with 1013).

        Cancelling it is safe.
        """
        await self._overflow.wait()

    async def get(self) -> dict[str, Any] | None:
        """Wait for the next event; None once overflowed, or closed and empty."""
        while not self._queue:
            if self.overflowed or self.closing:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.overflowed:
            return None
        return self._queue.popleft()


def _stale_when_queued(event: dict[str, Any]) -> bool:
    """Events a newer one replaces: provisional guesses and room states."""
    kind = event.get("type")
    return kind == "room_state" or (kind == "speaker" and not event.get("final"))


class _Room:
    def __init__(self, name: str, recent: int) -> None:
        self.state = RoomState(name)
        self.subscribers: set[Subscriber] = set()
        self.speaking: dict[str, dict[str, Any]] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=max(recent, 1))
        self.keep_recent = recent > 0


class Hub:
    """Rooms, their subscribers and their state. One per server; event-loop thread only."""

    def __init__(self, max_queued_events: int, recent_events: int) -> None:
        self._max = max_queued_events
        self._recent = recent_events
        #: Final events kept per room for the snapshot (``events.recent_events``).
        self.recent_events = recent_events
        self._rooms: dict[str, _Room] = {}
        self.published = 0
        #: Events dropped from the queues of subscribers already gone.
        self._dropped_gone = 0

    def _room(self, name: str) -> _Room:
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = _Room(name, self._recent)
        return room

    def subscribe(self, room: str) -> Subscriber:
        """Add a display to ``room``; call :meth:`unsubscribe` when it goes."""
        sub = Subscriber(room, self._max)
        self._room(room).subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Remove a display. Idempotent."""
        room = self._rooms.get(sub.room)
        if room is not None and sub in room.subscribers:
            room.subscribers.discard(sub)
            self._dropped_gone += sub.dropped
            self._forget_if_empty(sub.room)

    def snapshot(self, room: str) -> dict[str, Any]:
        """The ``snapshot`` message for a display joining ``room``."""
        state = self._rooms.get(room)
        return {
            "type": "snapshot",
            "room": room,
            "speaking": list(state.speaking.values()) if state else [],
            "recent": list(state.recent) if state and state.keep_recent else [],
        }

    def publish(self, room: str, event: dict[str, Any]) -> None:
        """Update the room's state with ``event`` and queue it for every display."""
        state = self._room(room)
        kind = event.get("type")
        stream = str(event.get("stream"))
        if kind == "speaker":
            if event.get("final"):
                state.speaking.pop(stream, None)
                if state.keep_recent:
                    state.recent.append(event)
            else:
                state.speaking[stream] = event
        elif kind == "speech_end":
            state.speaking.pop(stream, None)
        for sub in list(state.subscribers):
            sub.put(event)
        self.published += 1
        if state.state.update(event):
            self._publish_state(state)

    def _publish_state(self, state: _Room) -> None:
        message = room_state_message(state.state, round(time.time(), 3))
        for sub in list(state.subscribers):
            sub.put(message)

    def room_state(self, room: str) -> dict[str, Any]:
        """The current ``room_state`` message of ``room`` (sent after the snapshot)."""
        state = self._rooms.get(room)
        merged = state.state if state else RoomState(room)
        return room_state_message(merged, round(time.time(), 3))

    def stream_closed(self, room: str, stream: str) -> None:
        """Forget what ``stream`` was saying (its connection is gone)."""
        state = self._rooms.get(room)
        if state is not None:
            state.speaking.pop(stream, None)
            if state.state.stream_closed(stream):
                self._publish_state(state)
            self._forget_if_empty(room)

    def _forget_if_empty(self, name: str) -> None:
        state = self._rooms.get(name)
        if (state and not state.subscribers and not state.speaking and not state.recent
                and not state.state.active):
            del self._rooms[name]

    @property
    def subscriber_count(self) -> int:
        """Displays connected, over all rooms."""
        return sum(len(r.subscribers) for r in self._rooms.values())

    @property
    def room_count(self) -> int:
        """Rooms the hub holds state for (displays, speaking streams or recent finals)."""
        return len(self._rooms)

    @property
    def dropped_events(self) -> int:
        """Stale events dropped from full display queues since start, all displays."""
        return self._dropped_gone + sum(s.dropped for r in self._rooms.values()
                                        for s in r.subscribers)

    def close_all(self) -> None:
        """Shutdown: every subscriber's :meth:`Subscriber.get` returns None once its
        queue is drained, so relays send what is queued (finals included) and stop."""
        for room in self._rooms.values():
            for sub in room.subscribers:
                sub.close()
