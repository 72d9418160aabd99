"""The fan-out interface (as Centrifugo's brokers or Socket.IO's adapters).

Event-loop use only. Call order: :meth:`Fanout.start` before serving, then any number
of :meth:`~Fanout.join` / :meth:`~Fanout.publish` / :meth:`~Fanout.stream_closed` /
:meth:`~Fanout.leave`, and :meth:`Fanout.close` at shutdown, after the last finals.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ..errors import StreamerError
from ..hub import Hub

__all__ = ["Fanout", "FanoutError"]


class FanoutError(StreamerError):
    """The broker cannot be reached or did not answer the health probe."""


class Fanout(ABC):
    """Carries this server's room events to every display of the room, wherever it is."""

    #: This server's name (stamped on events in a cluster).
    node: str = ""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def start(self) -> None:
        """Connect to the broker, if any. Raises :class:`FanoutError`."""

    async def close(self) -> None:
        """Send what is pending and disconnect; idempotent."""

    @abstractmethod
    def publish(self, room: str, event: dict[str, Any]) -> None:
        """An event of one of this server's streams: to this server's displays at once
        and to every other server's. Never blocks."""

    @abstractmethod
    def stream_closed(self, room: str, stream: str) -> None:
        """One of this server's streams ended: every server forgets what it was saying."""

    async def join(self, room: str) -> None:
        """A display or microphone of this server uses ``room``. The first one makes this
        server follow the room and learn what the other servers know of it (who is
        speaking, recent finals), bounded by ``cluster.sync_timeout_s``."""

    def leave(self, room: str) -> None:
        """That display or microphone is gone (one :meth:`leave` per :meth:`join`)."""

    async def check(self) -> dict[str, Any]:
        """Health probe: prove delivery through the broker (a round trip of its own).

        Returns facts for ``/healthz``; raises :class:`FanoutError` when it fails.
        """
        return {}

    def metrics(self) -> list[tuple[str, str, str, float]]:
        """Extra ``/metrics`` families: (name, ``counter`` or ``gauge``, help, value)."""
        return []
