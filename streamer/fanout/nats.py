"""Rooms across servers through NATS core pub/sub (``cluster.nats_url``).

Subjects (``P`` is ``cluster.subject_prefix``, ``R`` a room name and ``N`` a node name
in unpadded base64url, so any name makes one subject token):

* ``P.room.R``: every event of the room's streams, with the publishing ``node`` and the
  stream's ``seq``. A server subscribes while one of its displays or microphones uses
  the room, and passes its peers' events to its hub, which merges the room's streams
  (two microphones of one room on two servers give one ``room_state``).
* ``P.sync.R``: request/replies; a server that starts following a room asks its peers
  for their part of it (open segments, recent finals) before answering the display.
* ``P.nodes``: heartbeats every ``cluster.heartbeat_s`` with the sender's live streams,
  a hello from a starting server (answered by a heartbeat at once) and a goodbye at
  shutdown; a stream missing from its server's heartbeat has ended (its
  ``closed`` message was lost), and a peer silent for ``cluster.node_timeout_s``
  (``kill -9``) is taken for dead: their streams leave their rooms, so no ghost speaker
  stays on a display.
* ``P.probe.N``: the ``/healthz`` round trip, to this server itself through NATS.

NATS core is at-most-once: a reconnect or a slow consumer loses messages silently. The
``seq`` of each stream lets a server count the gaps (``/metrics``); speaker guesses are
superseded within a second anyway, and finals carry the whole answer. nats-py
reconnects by itself and re-subscribes; events published meanwhile wait in its buffer,
and after a reconnection a server asks its peers again for the rooms it follows.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Coroutine
from typing import Any

import msgpack
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from ..config import ClusterConfig
from ..hub import Hub
from .base import Fanout, FanoutError
from .peers import LocalStreams, RemoteStreams

__all__ = ["NatsFanout", "subject_token"]

logger = logging.getLogger("streamer.cluster")

#: Seconds ``serve`` waits for NATS at start-up before it gives up with an error.
START_TIMEOUT_S = 5.0
#: Seconds a starting server waits for its peers' answers to its hello.
HELLO_WAIT_S = 0.2


def subject_token(name: str) -> str:
    """``name`` as one NATS subject token (unpadded base64url of its UTF-8)."""
    return base64.urlsafe_b64encode(name.encode("utf-8")).decode("ascii").rstrip("=")


def _pack(message: dict[str, Any]) -> bytes:
    return bytes(msgpack.packb(message, use_bin_type=True))


class NatsFanout(Fanout):
    """Fan-out over NATS; see the module docstring."""

    def __init__(self, hub: Hub, config: ClusterConfig, node: str) -> None:
        super().__init__(hub)
        self.config = config
        self.node = node
        self.local = LocalStreams(node, hub.recent_events)
        self.remote = RemoteStreams()
        self._prefix = config.subject_prefix
        self._nc: Client | None = None
        self._rooms: dict[str, int] = {}  # room -> displays and mics of this server
        self._subs: dict[str, Subscription] = {}
        self._joining: dict[str, asyncio.Future[None]] = {}
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self.counters = {"cross_server_events": 0, "broker_reconnects": 0,
                         "broker_disconnects": 0, "broker_publish_errors": 0,
                         "broker_published": 0}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and subscribe. Raises :class:`FanoutError` when NATS is unreachable."""
        async def disconnected() -> None:
            if self._nc is not None:  # not our own close
                self.counters["broker_disconnects"] += 1
                logger.warning("lost the NATS connection; reconnecting")

        async def reconnected() -> None:
            self.counters["broker_reconnects"] += 1
            logger.info("NATS connection back; catching up with the rooms followed")
            for room in list(self._subs):  # what the peers said meanwhile was lost
                self._spawn(self._resync(room))

        async def error(exc: Exception) -> None:
            logger.debug("NATS: %s", exc)

        servers = [u.strip() for u in (self.config.nats_url or "").split(",")]
        try:
            # nats-py retries an unreachable first server forever with unlimited
            # reconnects: bound the first connection, then let it reconnect forever.
            async with asyncio.timeout(START_TIMEOUT_S):
                self._nc = await nats.connect(
                    servers=servers, name=f"streamer {self.node}", connect_timeout=2,
                    reconnect_time_wait=0.25, max_reconnect_attempts=-1, ping_interval=2,
                    max_outstanding_pings=2, disconnected_cb=disconnected,
                    reconnected_cb=reconnected, error_cb=error)
        except (NatsError, OSError, TimeoutError) as exc:
            why = (f"no connection within {START_TIMEOUT_S:g} s"
                   if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__)
            raise FanoutError(f"cannot connect to NATS at {', '.join(servers)}: {why}") from exc
        nc = self._nc
        p = self._prefix
        await nc.subscribe(f"{p}.nodes", cb=self._on_node)
        await nc.subscribe(f"{p}.sync.*", cb=self._on_sync)
        await nc.subscribe(f"{p}.probe.{subject_token(self.node)}", cb=self._on_probe)
        self._tasks = [asyncio.create_task(self._send_loop()),
                       asyncio.create_task(self._heartbeat_loop())]
        # Ask every peer for a heartbeat now, so that the first display's snapshot can
        # include their state instead of waiting for their next beat.
        await nc.publish(f"{p}.nodes", _pack({"k": "hello", "node": self.node}))
        await asyncio.sleep(min(self.config.heartbeat_s, HELLO_WAIT_S))
        logger.info("joined the cluster as %s through NATS (%d other server(s) heard)",
                    self.node, self.remote.peers)

    async def close(self) -> None:
        """Send pending events and a goodbye, then disconnect. Idempotent."""
        nc, self._nc = self._nc, None
        if nc is None:
            return
        try:
            while not self._outbox.empty():
                subject, data = self._outbox.get_nowait()
                await nc.publish(subject, data)
            await nc.publish(f"{self._prefix}.nodes", _pack({"k": "bye", "node": self.node}))
            await asyncio.wait_for(nc.flush(), timeout=1.0)
        except (NatsError, asyncio.TimeoutError, OSError) as exc:
            logger.warning("could not flush to NATS at shutdown: %s", exc)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await nc.close()

    # -- this server's events ----------------------------------------------------------------

    def publish(self, room: str, event: dict[str, Any]) -> None:
        """See :meth:`Fanout.publish`: stamped with ``node`` and ``seq``."""
        self.local.stamp(room, event)
        self.hub.publish(room, event)
        self._send(f"{self._prefix}.room.{subject_token(room)}",
                   {"k": "event", "node": self.node, "room": room, "event": event})

    def stream_closed(self, room: str, stream: str) -> None:
        """See :meth:`Fanout.stream_closed`."""
        self.local.closed(room, stream)
        self.hub.stream_closed(room, stream)
        self._send(f"{self._prefix}.room.{subject_token(room)}",
                   {"k": "closed", "node": self.node, "room": room, "stream": stream})

    def _send(self, subject: str, message: dict[str, Any]) -> None:
        if self._nc is not None:
            self._outbox.put_nowait((subject, _pack(message)))

    async def _send_loop(self) -> None:
        """One sender keeps each stream's events in order on the wire."""
        while True:
            subject, data = await self._outbox.get()
            nc = self._nc
            if nc is None:
                return
            try:
                await nc.publish(subject, data)
                self.counters["broker_published"] += 1
            except (NatsError, OSError) as exc:
                self.counters["broker_publish_errors"] += 1
                logger.warning("event not published to NATS: %s", exc)

    # -- rooms -------------------------------------------------------------------------------

    async def join(self, room: str) -> None:
        """See :meth:`Fanout.join`."""
        self._rooms[room] = self._rooms.get(room, 0) + 1
        pending = self._joining.get(room)
        if pending is not None:
            await asyncio.shield(pending)
            return
        if room in self._subs or self._nc is None:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._joining[room] = done
        try:
            self._subs[room] = await self._nc.subscribe(
                f"{self._prefix}.room.{subject_token(room)}", cb=self._on_room)
            await self._sync(room)
        except (NatsError, OSError) as exc:
            logger.warning("cannot follow room %s through NATS: %s", room, exc)
        finally:
            del self._joining[room]
            done.set_result(None)

    def leave(self, room: str) -> None:
        """See :meth:`Fanout.leave`."""
        count = self._rooms.get(room, 0) - 1
        if count > 0:
            self._rooms[room] = count
            return
        self._rooms.pop(room, None)
        sub = self._subs.pop(room, None)
        if sub is not None:
            self._spawn(self._unsubscribe(sub))
        for stream in self.remote.forget_room(room):
            self.hub.stream_closed(room, stream)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run a short background task (kept referenced until it ends)."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _resync(self, room: str) -> None:
        try:
            await self._sync(room)
        except (NatsError, OSError) as exc:  # pragma: no cover - lost again meanwhile
            logger.warning("cannot catch up with room %s: %s", room, exc)

    @staticmethod
    async def _unsubscribe(sub: Subscription) -> None:
        try:
            await sub.unsubscribe()
        except (NatsError, OSError):  # pragma: no cover - the connection is gone anyway
            pass

    async def _sync(self, room: str) -> None:
        """Ask the live peers for their part of ``room``; feed the replies to the hub."""
        nc = self._nc
        peers = self.remote.alive(time.monotonic(), self.config.node_timeout_s)
        if nc is None or not peers:
            return
        inbox = nc.new_inbox()
        replies: asyncio.Queue[Msg] = asyncio.Queue()

        async def collect(msg: Msg) -> None:
            replies.put_nowait(msg)

        sub = await nc.subscribe(inbox, cb=collect)
        try:
            await nc.publish(f"{self._prefix}.sync.{subject_token(room)}",
                             _pack({"node": self.node, "room": room}), reply=inbox)
            answered: set[str] = set()
            async with asyncio.timeout(self.config.sync_timeout_s):
                while not peers <= answered:
                    msg = await replies.get()
                    reply = msgpack.unpackb(msg.data, raw=False)
                    answered.add(str(reply.get("node")))
                    for event in reply.get("events", []):
                        self._take(str(reply.get("node")), room, event)
        except TimeoutError:
            logger.info("room %s: %d peer(s) did not send their state within %.1f s",
                        room, len(peers - answered), self.config.sync_timeout_s)
        finally:
            await sub.unsubscribe()

    # -- what arrives from NATS -----------------------------------------------------------

    def _decode(self, msg: Msg) -> dict[str, Any] | None:
        try:
            message = msgpack.unpackb(msg.data, raw=False)
        except (ValueError, msgpack.ExtraData) as exc:
            logger.warning("undecodable NATS message on %s: %s", msg.subject, exc)
            return None
        if not isinstance(message, dict) or message.get("node") == self.node:
            return None  # our own, already delivered to this server's displays
        return message

    async def _on_room(self, msg: Msg) -> None:
        message = self._decode(msg)
        if message is None:
            return
        node, room = str(message.get("node")), str(message.get("room"))
        if room not in self._rooms:
            return
        if message.get("k") == "closed":
            self.remote.closed(node, room, str(message.get("stream")))
            self.hub.stream_closed(room, str(message.get("stream")))
        elif isinstance(message.get("event"), dict):
            self._take(node, room, message["event"])

    def _take(self, node: str, room: str, event: dict[str, Any]) -> None:
        if isinstance(event, dict) and self.remote.accept(node, room, event, time.monotonic()):
            self.counters["cross_server_events"] += 1
            self.hub.publish(room, event)

    async def _on_sync(self, msg: Msg) -> None:
        message = self._decode(msg)
        if message is None or not msg.reply or self._nc is None:
            return
        events = self.local.state(str(message.get("room")))
        try:
            await self._nc.publish(msg.reply, _pack({"node": self.node, "events": events}))
        except (NatsError, OSError) as exc:  # pragma: no cover - connection lost meanwhile
            logger.warning("cannot answer a room sync: %s", exc)

    async def _on_node(self, msg: Msg) -> None:
        message = self._decode(msg)
        if message is None:
            return
        node = str(message.get("node"))
        if message.get("k") == "bye":
            self._peer_gone(node, "left the cluster")
        elif message.get("k") == "hello":  # a new server: tell it we are here
            self.remote.heard(node, time.monotonic())
            self._spawn(self._beat())
        else:
            self.remote.heard(node, time.monotonic())
            live = message.get("streams")
            if isinstance(live, list):  # streams whose "closed" message was lost
                for room, stream in self.remote.reconcile(node, set(map(str, live))):
                    self.hub.stream_closed(room, stream)

    def _peer_gone(self, node: str, why: str) -> None:
        streams = self.remote.gone(node)
        for room, stream in streams:
            self.hub.stream_closed(room, stream)
        logger.info("server %s %s; %d of its stream(s) left their rooms", node, why,
                    len(streams))

    async def _beat(self) -> None:
        nc = self._nc
        if nc is not None and nc.is_connected:
            beat = _pack({"k": "hb", "node": self.node, "streams": self.local.live})
            try:
                await nc.publish(f"{self._prefix}.nodes", beat)
            except (NatsError, OSError):  # pragma: no cover - reconnecting
                pass

    async def _heartbeat_loop(self) -> None:
        while True:
            await self._beat()
            for node in self.remote.silent(time.monotonic(), self.config.node_timeout_s):
                self._peer_gone(node, f"was silent for {self.config.node_timeout_s:g} s")
            await asyncio.sleep(self.config.heartbeat_s)

    async def _on_probe(self, msg: Msg) -> None:
        if msg.reply and self._nc is not None:
            await self._nc.publish(msg.reply, msg.data)

    # -- health and metrics ------------------------------------------------------------------

    async def check(self) -> dict[str, Any]:
        """A request to this server itself through NATS. Raises :class:`FanoutError`."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise FanoutError("not connected to NATS")
        started = time.perf_counter()
        try:
            reply = await nc.request(f"{self._prefix}.probe.{subject_token(self.node)}",
                                     b"probe", timeout=1.0)
        except (NatsError, OSError, asyncio.TimeoutError) as exc:
            raise FanoutError("the NATS round trip failed: "
                              f"{str(exc) or type(exc).__name__}") from exc
        if reply.data != b"probe":  # pragma: no cover - invariant
            raise FanoutError("the NATS round trip returned something else")
        return {"node": self.node, "broker_round_trip_ms":
                round((time.perf_counter() - started) * 1000, 2), "peers": self.remote.peers}

    def metrics(self) -> list[tuple[str, str, str, float]]:
        """See :meth:`Fanout.metrics`: ``streamer_cluster_*``."""
        nc = self._nc
        c = self.counters
        return [
            ("streamer_cluster_cross_server_events_total", "counter",
             "Room events received from other servers.", c["cross_server_events"]),
            ("streamer_cluster_cross_server_gaps_total", "counter",
             "Events that followed a lost one of the same stream (NATS is at-most-once).",
             self.remote.gaps),
            ("streamer_cluster_broker_reconnects_total", "counter", "Reconnections to NATS.",
             c["broker_reconnects"]),
            ("streamer_cluster_broker_disconnects_total", "counter", "Lost NATS connections.",
             c["broker_disconnects"]),
            ("streamer_cluster_broker_published_total", "counter",
             "Messages published to NATS.", c["broker_published"]),
            ("streamer_cluster_broker_publish_errors_total", "counter",
             "Events NATS refused to take.", c["broker_publish_errors"]),
            ("streamer_cluster_broker_connected", "gauge", "1 while connected to NATS.",
             int(nc is not None and nc.is_connected)),
            ("streamer_cluster_peers", "gauge", "Other servers heard of (heartbeats).",
             self.remote.peers),
            ("streamer_cluster_rooms_followed", "gauge", "Rooms followed through NATS.",
             len(self._subs)),
        ]
