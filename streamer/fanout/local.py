"""The embedded default: every display is on this server, events go to the hub."""

from __future__ import annotations

from typing import Any

from .base import Fanout

__all__ = ["LocalFanout"]


class LocalFanout(Fanout):
    """In-process fan-out: :meth:`publish` is :meth:`~streamer.hub.Hub.publish`."""

    def publish(self, room: str, event: dict[str, Any]) -> None:
        """See :meth:`Fanout.publish`."""
        self.hub.publish(room, event)

    def stream_closed(self, room: str, stream: str) -> None:
        """See :meth:`Fanout.stream_closed`."""
        self.hub.stream_closed(room, stream)
