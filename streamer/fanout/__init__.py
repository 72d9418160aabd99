"""Room events to displays: one interface, an in-process and a NATS implementation.

The server hands every event of its own microphones to :meth:`Fanout.publish` and tells
it which rooms its displays and microphones use (:meth:`Fanout.join`,
:meth:`Fanout.leave`); displays read from the :class:`~streamer.hub.Hub`, which merges
each room's streams (:mod:`streamer.room`) and never learns where an event came from.
:func:`create_fanout` picks the implementation at start-up: :class:`LocalFanout` (the
embedded default) without ``cluster.nats_url``, :class:`~.nats.NatsFanout` with it.
"""

from __future__ import annotations

import os
import socket

from ..config import Config
from ..hub import Hub
from .base import Fanout, FanoutError
from .local import LocalFanout

__all__ = ["Fanout", "FanoutError", "LocalFanout", "create_fanout", "default_node"]


def default_node() -> str:
    """This server's default name in a cluster: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def create_fanout(config: Config, hub: Hub) -> Fanout:
    """The fan-out the config asks for (not yet started)."""
    cluster = config.cluster
    if cluster.nats_url:
        from .nats import NatsFanout  # nats-py is only needed in this mode

        return NatsFanout(hub, cluster, cluster.node or default_node())
    return LocalFanout(hub)
