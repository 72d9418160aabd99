"""Connection counting and the ingest rate allowance: the arithmetic of the server's limits.

Pure code: no asyncio, no sockets, no clock of its own (the caller passes ``now``), so
every decision can be tested by feeding numbers. The server (the I/O shell) asks:

- :class:`ConnectionLimits` when a websocket connection opens (``server.max_connections``)
  and when its room becomes known (``server.max_connections_per_room``: from ``hello``
  on ``/v1/ingest``, from ``?room=`` on ``/v1/events``). A refusal raises
  :class:`~streamer.errors.Overloaded` (``overloaded``, close 1013 "try again later"),
  whose message names the limit. Every admitted connection holds an :class:`Admission`
  that must be released on every exit path (``try``/``finally``).
- :class:`IngestAllowance`, after each audio message of an ingest stream, how long to
  wait before reading the next one (``server.max_ingest_speed``,
  ``server.ingest_burst_s``). While the server waits it reads nothing from that
  connection, so websockets' bounded receive queue fills and TCP backpressure slows the
  client down; other connections are served as usual.
"""

from __future__ import annotations

from .errors import Overloaded

__all__ = ["Admission", "ConnectionLimits", "IngestAllowance"]


class ConnectionLimits:
    """Open websocket connections, counted in total and per room.

    Call :meth:`admit` when a connection opens (after authentication), then
    :meth:`Admission.enter_room` once its room is known, and :meth:`Admission.release`
    when it ends, whatever the reason. Not thread-safe: use from the event loop only.

    Args:
        max_total: most connections of any kind at once; ``None``: no limit.
        max_per_room: most connections (ingest and display together) in one room at
            once; ``None``: no limit.
    """

    def __init__(self, max_total: int | None, max_per_room: int | None) -> None:
        self.max_total = max_total
        self.max_per_room = max_per_room
        #: Connections admitted and not yet released.
        self.total = 0
        #: Connections refused (either limit) since start, for ``/metrics``.
        self.refused = 0
        self._rooms: dict[str, int] = {}

    def in_room(self, room: str) -> int:
        """Connections currently counted in ``room``."""
        return self._rooms.get(room, 0)

    @property
    def rooms(self) -> dict[str, int]:
        """A copy of the per-room counts (rooms with no connection are absent)."""
        return dict(self._rooms)

    def admit(self) -> Admission:
        """Count a new connection. Call when it opens; keep the result and release it.

        Raises:
            Overloaded: ``max_total`` connections are already open; nothing is counted.
        """
        if self.max_total is not None and self.total >= self.max_total:
            self.refused += 1
            raise Overloaded(
                f"the server already has {self.total} open connections, its limit "
                f"(server.max_connections); try again later"
            )
        self.total += 1
        return Admission(self)

    def _enter(self, room: str) -> None:
        count = self._rooms.get(room, 0)
        if self.max_per_room is not None and count >= self.max_per_room:
            self.refused += 1
            raise Overloaded(
                f"room {room!r} already has {count} open connections, its limit "
                f"(server.max_connections_per_room); try again later"
            )
        self._rooms[room] = count + 1

    def _leave(self, room: str) -> None:
        count = self._rooms[room] - 1
        if count:
            self._rooms[room] = count
        else:
            del self._rooms[room]


class Admission:
    """One admitted connection's place in :class:`ConnectionLimits`.

    Made by :meth:`ConnectionLimits.admit`; :meth:`release` frees it (idempotent).
    """

    def __init__(self, limits: ConnectionLimits) -> None:
        self._limits = limits
        self._released = False
        #: The room this connection is counted in, once :meth:`enter_room` succeeded.
        self.room: str | None = None

    def enter_room(self, room: str) -> None:
        """Count this connection in ``room``. Call once, when the room becomes known.

        Raises:
            Overloaded: ``room`` is full; this connection still holds its place in the
                total until :meth:`release`.
            RuntimeError: already in a room, or released (a bug in the caller).
        """
        if self._released or self.room is not None:
            raise RuntimeError("enter_room() on a released admission or twice")
        self._limits._enter(room)
        self.room = room

    def release(self) -> None:
        """Free this connection's places (total and room). Safe to call more than once."""
        if self._released:
            return
        self._released = True
        self._limits.total -= 1
        if self.room is not None:
            self._limits._leave(self.room)


class IngestAllowance:
    """How far one ingest stream may run ahead of real time (a token bucket of audio).

    The stream starts with ``burst_s`` seconds of audio in hand; the allowance refills at
    ``speed`` seconds of audio per wall-clock second, up to ``burst_s``. A client may
    thus send ``burst_s`` seconds at once, and then keep up ``speed`` times real time.
    Over ``T`` wall-clock seconds a stream gets at most ``burst_s + speed * T`` seconds
    of audio read, so ``N`` seconds take at least ``(N - burst_s) / speed`` seconds.

    After each audio message, call :meth:`consume` with its length and the current
    monotonic time; wait the returned delay before reading the next message.

    Args:
        speed: refill rate in seconds of audio per second (times real time); ``None``
            disables throttling (:meth:`consume` always returns 0).
        burst_s: seconds of audio a stream may be ahead (the bucket's size).
        now: monotonic time at which the stream starts (``time.monotonic()``).
    """

    def __init__(self, speed: float | None, burst_s: float, now: float) -> None:
        self.speed = speed
        self.burst_s = burst_s
        self._credit_s = burst_s
        self._last = now
        #: Total delay asked for so far (seconds of wall-clock time held back).
        self.throttled_s = 0.0

    def consume(self, audio_s: float, now: float) -> float:
        """Take ``audio_s`` seconds of audio, received at ``now``; return the delay.

        The delay (seconds, >= 0) is how long to wait before reading the stream's next
        message; after waiting it, the stream is back within its allowance. It is also
        added to :attr:`throttled_s`.
        """
        if self.speed is None:
            return 0.0
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._credit_s = min(self.burst_s, self._credit_s + elapsed * self.speed) - audio_s
        if self._credit_s >= 0:
            return 0.0
        delay = -self._credit_s / self.speed
        self.throttled_s += delay
        return delay
