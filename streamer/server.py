"""The websockets I/O shell: routes, auth, the three endpoints, HTTP pages, shutdown.

Everything that decides lives in the pure core (``wire``, ``session``, ``identify``);
this module moves bytes between sockets and that core. Known errors
(:class:`~streamer.errors.StreamerError`) become an ``error`` message and, for broken
streams, a close with the error's code and fixed reason. Anything else propagates and
websockets closes the connection with 1011 and logs it ("connection handler failed").
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from . import pages, wire
from .api import Api, with_channel
from .app import App
from .auth import RedactTokens, authorize
from .errors import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_TRY_AGAIN,
    HelloTimeout,
    IdleTimeout,
    Overloaded,
    PolicyError,
    RegistryError,
    StreamerError,
    Unauthorized,
    WireError,
)
from .fanout import FanoutError
from .hub import Subscriber
from .limits import Admission, ConnectionLimits, IngestAllowance
from .metrics import FINAL_LAG_BUCKETS_S, ArrivalClock, Family, Histogram, render
from .search_batch import SearchBatcher
from .session import EmbedJob, Session

__all__ = ["StreamerServer"]

logger = logging.getLogger("streamer.server")

ROUTE_ROLES = {"/v1/ingest": "ingest", "/v1/events": "display", "/v1/api": "admin"}


def _error(err: StreamerError, request_id: Any = None) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "error", "code": err.code, "message": str(err)}
    if request_id is not None:
        message["id"] = request_id
    return message


class _Outbox:
    """One ordered sender per connection, fed without blocking (a hub subscriber)."""

    def __init__(self, ws: ServerConnection, encoding: wire.Encoding, max_events: int) -> None:
        self.ws = ws
        self.encoding = encoding
        self.queue = Subscriber("", max_events)

    async def run(self) -> None:
        """Send queued messages until the queue overflows (then close 1013) or cancel."""
        while True:
            message = await self.queue.get()
            if message is None:
                if self.queue.overflowed:
                    await self.ws.close(CLOSE_TRY_AGAIN, "try again later")
                return
            await self.ws.send(wire.encode(message, self.encoding))


class StreamerServer:
    """Serves one :class:`App`. ``async with StreamerServer(app, host, port) as s:``."""

    def __init__(self, app: App, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        cfg = app.config
        self._cfg = cfg
        if app.registry is None or app.worker is None:
            raise RuntimeError("call app.load() before StreamerServer(app, ...)")
        self.registry = app.registry
        self.worker = app.worker
        self.api = Api(cfg, app.registry, app.worker, app.lines)
        #: Live decisions of all streams searched together, once per loop turn.
        self.search_batch = SearchBatcher(app.registry)
        self.stopping = asyncio.Event()
        self._ingest_done: set[asyncio.Event] = set()
        self._server: Server | None = None
        self.streams: dict[str, Session] = {}
        self.connections: dict[str, int] = {"ingest": 0, "display": 0, "api": 0}
        #: Final event lag: from the arrival of the audio at a segment's end to the
        #: publication of its final event, seconds (``/metrics``).
        self.final_lag_s = Histogram(FINAL_LAG_BUCKETS_S)
        #: ``server.max_connections`` / ``max_connections_per_room`` (streamer.limits).
        self.limits = ConnectionLimits(cfg.server.max_connections,
                                       cfg.server.max_connections_per_room)

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> StreamerServer:
        self.app.check_listen(self.host)
        await self.app.fanout.start()
        self.worker.start()
        s = self._cfg.server
        self._server = await serve(
            self._handler,
            self.host,
            self.port,
            process_request=self._process_request,
            max_size=s.max_message_bytes,
            max_queue=s.max_queue_messages,
            write_limit=s.write_limit_bytes,
            compression=None,
            open_timeout=s.open_timeout_s,
            ping_interval=s.ping_interval_s,
            ping_timeout=s.ping_timeout_s,
            close_timeout=s.close_timeout_s,
            logger=self._websockets_logger(),
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        logger.info("listening on ws://%s:%d", self.host, self.port)
        return self

    def _websockets_logger(self) -> logging.Logger:
        """The logger websockets writes to, with tokens redacted (DEBUG logs headers)."""
        ws_logger = logging.getLogger("streamer.websockets")
        redact = next((f for f in ws_logger.filters if isinstance(f, RedactTokens)), None)
        if redact is None:
            redact = RedactTokens()
            ws_logger.addFilter(redact)
        redact.add(self._cfg.auth)  # every server's tokens, when one process runs several
        return ws_logger

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    @property
    def url(self) -> str:
        """Base websocket URL, e.g. ``ws://127.0.0.1:8765``."""
        return f"ws://{self.host}:{self.port}"

    async def shutdown(self) -> None:
        """Stop accepting, finish open segments (finals sent), close everyone with 1001.

        Bounded by ``server.shutdown_timeout_s``. Idempotent; shielded from cancellation.
        """
        if self._server is None:
            return
        server, self._server = self._server, None
        await asyncio.shield(self._shutdown(server))

    async def _shutdown(self, server: Server) -> None:
        # One deadline for the whole shutdown: shutdown_timeout_s, plus close_timeout_s
        # for the last close handshakes; then whatever is left is aborted.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._cfg.server.shutdown_timeout_s
        self.stopping.set()
        server.close(close_connections=False)  # stop accepting now
        # 1. Ingest streams close their open segments, send the finals (to the hub too)
        #    and close with 1001 themselves.
        waits = [asyncio.create_task(e.wait()) for e in list(self._ingest_done)]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=max(0.0, deadline - loop.time()))
            for task in pending:
                task.cancel()
            if pending:
                logger.warning("%d ingest stream(s) did not finish in time", len(pending))
        # The finals went to the other servers' displays too: flush, say goodbye.
        await self.app.fanout.close()
        # 2. Displays send what is queued (those finals), then close with 1001 themselves;
        #    every other connection is closed with 1001 now.
        self.app.hub.close_all()
        closing = [asyncio.create_task(self._close_bounded(c, CLOSE_GOING_AWAY,
                                                           "server shutting down"))
                   for c in server.connections if _path(c) != "/v1/events"]
        # 3. Wait for every handler; abort the connections still open after that.
        try:
            async with asyncio.timeout_at(deadline + self._cfg.server.close_timeout_s):
                await server.wait_closed()
        except TimeoutError:
            logger.warning("%d connection(s) still open at the shutdown deadline: aborted",
                           len(server.connections))
            for connection in server.connections:
                connection.transport.abort()
        await asyncio.gather(*closing, return_exceptions=True)
        await self.worker.close(max(0.0, deadline - loop.time()))
        logger.info("server stopped")

    # -- HTTP and routing ----------------------------------------------------------------

    async def _process_request(self, connection: ServerConnection,
                               request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if request.headers.get("Upgrade", "").lower() == "websocket" and path in ROUTE_ROLES:
            return None
        if path == "/healthz":
            return await self._healthz()
        if path == "/metrics":
            return _response(200, self._metrics(), "text/plain; version=0.0.4")
        page = pages.resolve(path)
        if page is not None:
            content, content_type = page
            return _response(200, content, content_type)
        return _response(404, "not found\n", "text/plain")

    async def _healthz(self) -> Response:
        """``/healthz``: 200 when the model is loaded, the registry answers a read of its
        database's generation (in a thread, bounded by ``server.open_timeout_s`` like any
        HTTP request) and, in a cluster, a message from this server to itself came back
        through NATS; else 503. The JSON body says which part failed."""
        model_loaded = self.app.embedder.loaded and self.app.streamer.loaded
        facts: dict[str, Any] = {}
        try:
            facts["generation"] = await asyncio.to_thread(self.registry.check)
            registry_open = True
        except RegistryError as err:
            registry_open = False
            facts["registry_error"] = str(err)
        ok = model_loaded and registry_open
        if self.app.fanout.node:  # a cluster: prove the broker delivers
            try:
                facts.update(await self.app.fanout.check())
                facts["broker_ok"] = True
            except FanoutError as err:
                facts.update(node=self.app.fanout.node, broker_ok=False, broker_error=str(err))
                ok = False
        body = json.dumps({
            "status": "ok" if ok else "unavailable",
            "model": self.app.embedder.model_id,
            "model_loaded": model_loaded,
            "registry_open": registry_open,
            "people": len(self.registry),
            "replica_generation": self.registry.generation,
            "replica_lag": self.registry.lag,
            **facts,
        })
        return _response(200 if ok else 503, body, "application/json")

    def _metrics(self) -> str:
        """The ``/metrics`` page (Prometheus text format 0.0.4, :mod:`streamer.metrics`)."""
        worker, hub = self.worker, self.app.hub
        counters = {"display_overload_closes": 0, "ingest_dropped_events": 0,
                    **self.app.counters}
        live_segments = sum(s.stats["segments"] for s in self.streams.values())
        segments = counters.pop("segments", 0) + live_segments
        single = Family.single
        families = [
            single("streamer_ingest_connections", "gauge", "Open ingest streams.",
                   self.connections["ingest"]),
            single("streamer_display_connections", "gauge", "Open displays.",
                   self.connections["display"]),
            single("streamer_api_connections", "gauge", "Open API connections.",
                   self.connections["api"]),
            Family.labelled("streamer_connections", "gauge", "Open connections by kind.",
                            "kind", self.connections),
            single("streamer_streams", "gauge", "Live ingest streams (sessions).",
                   len(self.streams)),
            single("streamer_rooms", "gauge", "Rooms with displays, speakers or recent finals.",
                   hub.room_count),
            single("streamer_people", "gauge", "Enrolled people.", len(self.registry)),
            single("streamer_queue_depth", "gauge", "Embedding jobs in flight.",
                   worker.in_flight),
            single("streamer_embeddings_total", "counter", "Model runs (pieces count one each).",
                   worker.done),
            single("streamer_batches_total", "counter", "Batches of live pieces run.",
                   worker.batches),
            single("streamer_batched_pieces_total", "counter",
                   "Live pieces run in batches (divide by batches_total for the mean batch).",
                   worker.batched_pieces),
            single("streamer_dropped_jobs_total", "counter",
                   "Provisional jobs dropped by the worker (queue full).", worker.dropped),
            single("streamer_embed_seconds_total", "counter", "Thread time spent embedding.",
                   round(worker.busy_s, 3)),
            single("streamer_events_total", "counter", "Events published.", hub.published),
            single("streamer_live_searches_total", "counter",
                   "Live decisions' searches among everyone answered in batches.",
                   self.search_batch.searches),
            single("streamer_live_search_batches_total", "counter",
                   "Batched registry searches of live decisions (one per loop turn at most).",
                   self.search_batch.batches),
            single("streamer_refused_connections_total", "counter",
                   "Connections refused by server.max_connections or "
                   "server.max_connections_per_room.", self.limits.refused),
            single("streamer_display_dropped_events_total", "counter",
                   "Stale events dropped from the queues of slow displays.",
                   hub.dropped_events),
            single("streamer_segments_total", "counter",
                   "Speech segments reported (ended and live streams).", segments),
            worker.latency_s.family(
                "streamer_embedding_latency_seconds",
                "Model job latency, submission to result (queue wait included)."),
            self.final_lag_s.family(
                "streamer_final_event_lag_seconds",
                "Final event lag: arrival of the audio at the segment's end to publication."),
        ]
        families += [
            single("streamer_registry_generation", "gauge",
                   "Database generation this server's index reflects.",
                   self.registry.generation),
            single("streamer_replica_lag_generations", "gauge",
                   "Generations this server's index is behind the newest it heard of.",
                   self.registry.lag),
        ]
        for name, kind, text, value in (*self.app.fanout.metrics(), *self.registry.metrics()):
            families.append(single(name, kind, text, value))
        for name, value in sorted(counters.items()):
            families.append(single(f"streamer_{name}_total", "counter",
                                   f"Count of {name.replace('_', ' ')}.", value))
        return render(families)

    def _authorize(self, ws: ServerConnection, role: str) -> None:
        """Raise ``Unauthorized`` / ``Forbidden`` unless the request carries a fitting token."""
        request = ws.request
        if request is None:  # pragma: no cover - websockets sets it before the handler
            raise Unauthorized("a valid token is required")
        authorize(self._cfg.auth, request.headers, request.path, role)

    async def _handler(self, ws: ServerConnection) -> None:
        if ws.request is None:  # pragma: no cover - websockets sets it before the handler
            return
        url = urlsplit(ws.request.path)
        role = ROUTE_ROLES[url.path]
        try:
            self._authorize(ws, role)
        except PolicyError as err:
            await ws.close(err.close_code, err.close_reason)
            return
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            admission = self.limits.admit()
        except Overloaded as err:
            await self._fail(ws, err, _first_encoding(query))
            return
        kind = {"ingest": "ingest", "display": "display", "admin": "api"}[role]
        self.connections[kind] += 1
        self.app.count(f"{kind}_connections")
        try:
            if role == "ingest":
                await self._ingest(ws, admission, query)
            elif role == "display":
                await self._events(ws, query, admission)
            else:
                await self._api(ws)
        except ConnectionClosed:
            pass
        finally:
            self.connections[kind] -= 1
            admission.release()

    # -- /v1/events ------------------------------------------------------------------------

    async def _events(self, ws: ServerConnection, query: dict[str, str],
                      admission: Admission) -> None:
        encoding = _first_encoding(query)
        room = query.get("room", "")
        if not room:
            await ws.send(wire.encode(_error(WireError("the room query parameter is required")),
                                      encoding))
            await ws.close(1008, "room required")
            return
        try:
            admission.enter_room(room)
        except Overloaded as err:
            await self._fail(ws, err, encoding)
            return
        await self.app.fanout.join(room)
        sub = self.app.hub.subscribe(room)
        try:
            # Both taken now, before any await: whatever happens later is queued in
            # ``sub`` (a newer room_state included) and sent after them.
            snapshot, state = self.app.hub.snapshot(room), self.app.hub.room_state(room)
            roster = self.registry.replica.roster_people(room)
            if roster is not None:  # who is expected here (an extension)
                snapshot["roster"] = roster
            await ws.send(wire.encode(snapshot, encoding))
            await ws.send(wire.encode(state, encoding))
            outbox = _Outbox(ws, encoding, self._cfg.events.max_queued_events)
            outbox.queue = sub
            # Displays need not send anything; whatever they send is read and ignored so
            # that pings and closes are processed.
            reader = asyncio.create_task(self._drain_reader(ws))
            sender = asyncio.create_task(outbox.run())
            # A relay stuck in a send to a display that stopped reading never gets back
            # to the queue to see it overflow: watch for that beside it.
            overflow = asyncio.create_task(sub.wait_overflowed())
            tasks = (reader, sender, overflow)
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            if sub.overflowed:
                self.app.count("display_overload_closes")
                logger.warning("display in room %s cannot keep up: closed with 1013", room)
                await self._close_bounded(ws, CLOSE_TRY_AGAIN, "try again later")
            elif self.stopping.is_set():  # the hub closed the queue: finals were sent
                await self._close_bounded(ws, CLOSE_GOING_AWAY, "server shutting down")
        finally:
            self.app.hub.unsubscribe(sub)
            self.app.fanout.leave(room)

    async def _close_bounded(self, ws: ServerConnection, code: int, reason: str) -> None:
        """Close with ``code``; abort the TCP connection when the peer has not taken the
        close frame within ``server.close_timeout_s`` (a peer that stopped reading:
        websockets' own close would wait for its buffer to drain forever)."""
        try:
            async with asyncio.timeout(self._cfg.server.close_timeout_s):
                await ws.close(code, reason)
        except TimeoutError:
            ws.transport.abort()

    @staticmethod
    async def _drain_reader(ws: ServerConnection) -> None:
        async for _ in ws:
            pass

    async def _recv_or_idle(self, ws: ServerConnection) -> str | bytes:
        """``ws.recv()`` bounded by ``server.idle_timeout_s`` (cancelling recv is safe).

        Raises:
            IdleTimeout: nothing arrived in time.
            ConnectionClosed: the connection closed.
        """
        timeout = self._cfg.server.idle_timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await ws.recv()
        except TimeoutError:
            raise IdleTimeout(_idle_message(timeout)) from None

    # -- /v1/api ---------------------------------------------------------------------------

    async def _api(self, ws: ServerConnection) -> None:
        encoding: wire.Encoding | None = None
        while True:
            try:
                raw = await self._recv_or_idle(ws)
            except IdleTimeout as err:
                self.app.count("idle_timeouts")
                await self._fail(ws, err, encoding or wire.Encoding.JSON)
                return
            request_id = None
            try:
                message, enc = wire.decode(raw)
                encoding = encoding or enc
                request = wire.parse_request(message, enc)
                request_id = request.id  # only a valid id is echoed (str <= 128 chars or int)
                reply = await self.api.handle(request)
                self.app.count(f"api_{message['type']}")
            except StreamerError as err:
                if request_id is None:
                    request_id = wire.request_id_of(err)
                reply = _error(err, request_id)
                self.app.count("api_errors")
            await ws.send(wire.encode(reply, encoding or _guess_encoding(raw)))

    # -- /v1/ingest ------------------------------------------------------------------------

    async def _ingest(self, ws: ServerConnection, admission: Admission,
                      query: dict[str, str]) -> None:
        done = asyncio.Event()
        self._ingest_done.add(done)
        try:
            await self._ingest_stream(ws, admission, query)
        finally:
            done.set()
            self._ingest_done.discard(done)

    async def _ingest_stream(self, ws: ServerConnection, admission: Admission,
                             query: dict[str, str]) -> None:
        cfg = self._cfg
        encoding = wire.Encoding.JSON
        try:
            async with asyncio.timeout(cfg.server.hello_timeout_s):
                raw = await ws.recv()
        except TimeoutError:
            self.app.count("hello_timeouts")
            await self._fail(ws, HelloTimeout(
                f"no hello within {cfg.server.hello_timeout_s:g} s (server.hello_timeout_s)"
            ), _first_encoding(query))
            return
        try:
            message, encoding = wire.decode(raw)
            hello = wire.parse_hello(message)
            admission.enter_room(hello.room)
        except StreamerError as err:
            await self._fail(ws, err, encoding if isinstance(raw, str) else wire.Encoding.MSGPACK)
            return
        stream_id = "s_" + secrets.token_hex(6)
        room = hello.room
        room_cfg = cfg.for_room(room)  # the room's profile (``rooms:``), if it has one
        channel = room_cfg.match.channel  # the line the room's audio arrives through
        registry = self.app.searched(channel)  # a phone line's own voiceprints, if kept
        session = Session(
            room_cfg, registry.search, self.app.head(channel), room=room, mic=hello.mic,
            stream=stream_id,
            sample_rate=hello.sample_rate, fmt=hello.format, channels=hello.channels,
            roster_search=lambda embedding, k: registry.search_roster(room, embedding, k),
            gallery_size=registry.__len__, voices=self.worker.has_segmenter,
        )
        self.streams[stream_id] = session
        outbox = _Outbox(ws, encoding, cfg.events.max_queued_events)
        ready = with_channel({
            "type": "ready", "stream": stream_id, "sample_rate": 16000,
            "model": self.app.embedder.model_id,
            "threshold": room_cfg.match.max_distance_for(room),
        }, channel)
        await ws.send(wire.encode(ready, encoding))
        profile = cfg.room_profile(room)
        logger.info("ingest %s opened: room=%s mic=%s rate=%d%s", stream_id, hello.room,
                    hello.mic, hello.sample_rate,
                    "" if profile is None else f" profile={profile.describe()}")
        expected_seq = 0
        seq_gaps = 0
        jobs: set[asyncio.Task[None]] = set()
        sender = asyncio.create_task(outbox.run())
        close_code, close_reason = CLOSE_NORMAL, ""
        ended = False

        # when the audio of each stream position arrived (for the final event lag)
        clock = ArrivalClock(room_cfg.segment.max_segment_s + FINAL_LAG_BUCKETS_S[-1])

        def publish() -> None:
            for event in session.take_events():
                self.app.fanout.publish(hello.room, event)
                outbox.queue.put(event)
                if event["type"] == "speaker" and event["final"]:
                    self._observe_final_lag(clock, event)

        def dispatch(batch: bool = True) -> None:
            for job in session.take_jobs():
                task = asyncio.create_task(run_job(job))
                jobs.add(task)
                task.add_done_callback(jobs.discard)
            if batch:  # with other streams' searches, later in this loop turn
                self.search_batch.publish_soon(session, publish, registry)
            else:
                publish()

        async def run_job(job: EmbedJob) -> None:
            try:
                if job.kind == "voices":
                    result: Any = await self.worker.segment(job.pcm)
                    done: Callable[[int, Any], None] = session.voices_done
                else:
                    result = await self.worker.stats(job.pcm, job.keep_samples,
                                                     droppable=job.droppable, channel=channel)
                    done = session.job_done
            except Overloaded:
                session.job_dropped(job.id)
            except Exception:
                # One bad job must not stall the stream: log it, release the segment.
                logger.exception("model job failed for stream %s (%s job of samples %d..%d, "
                                 "%d samples of audio)", stream_id, job.kind, job.start,
                                 job.end, len(job.pcm))
                self.app.count("failed_jobs")
                session.job_failed(job.id)
            else:
                done(job.id, result)
            dispatch()

        allowance = IngestAllowance(cfg.server.max_ingest_speed, cfg.server.ingest_burst_s,
                                    time.monotonic())
        stop_wait = asyncio.create_task(self.stopping.wait())
        await self.app.fanout.join(hello.room)
        try:
            while True:
                recv = asyncio.create_task(ws.recv())
                await asyncio.wait([recv, stop_wait, sender], timeout=cfg.server.idle_timeout_s,
                                   return_when=asyncio.FIRST_COMPLETED)
                idle = not (recv.done() or stop_wait.done() or sender.done())
                if not recv.done():
                    recv.cancel()
                    await asyncio.gather(recv, return_exceptions=True)
                    if not idle:
                        close_code, close_reason = CLOSE_GOING_AWAY, "server shutting down"
                        break
                try:
                    frame = None if idle else recv.result()
                except ConnectionClosed:
                    break
                try:
                    if frame is None:
                        self.app.count("idle_timeouts")
                        raise IdleTimeout(_idle_message(cfg.server.idle_timeout_s))
                    message, _ = wire.decode(frame)
                    item = wire.parse_ingest(message, encoding)
                    if isinstance(item, wire.Hello):
                        raise PolicyError("hello was already received on this stream")
                    if isinstance(item, wire.End):
                        ended = True
                        break
                    if item.seq != expected_seq:
                        seq_gaps += 1
                    expected_seq = item.seq + 1
                    before_s = session.position_s
                    arrived = time.monotonic()
                    session.feed_pcm(item.pcm)
                    clock.record(session.position_s, arrived)
                    dispatch()
                    # Ahead of its allowance: read nothing for a while, so the client is
                    # slowed by TCP backpressure (streamer.limits.IngestAllowance).
                    delay = allowance.consume(session.position_s - before_s, time.monotonic())
                    if delay:
                        self.app.count("ingest_throttled_seconds", delay)
                        await asyncio.wait([stop_wait, sender], timeout=delay)
                except StreamerError as err:
                    # The stream is broken: finish what was heard (displays get the
                    # finals), then tell the client why and close.
                    clock.end(time.monotonic())
                    await self._finish(session, jobs, dispatch)
                    await self._flush_outbox(outbox, sender)
                    await self._fail(ws, err, encoding)
                    return
            clock.end(time.monotonic())
            await self._finish(session, jobs, dispatch)
            if ended:
                stats = dict(session.stats, seq_gaps=seq_gaps,
                             throttled_s=round(allowance.throttled_s, 3),
                             audio_s=round(session.position_s, 3))
                outbox.queue.put({"type": "bye", "stats": stats})
            await self._flush_outbox(outbox, sender)
            if ws.state.name == "OPEN":
                await ws.close(close_code, close_reason)
        finally:
            stop_wait.cancel()
            sender.cancel()
            for task in jobs:
                task.cancel()
            self.streams.pop(stream_id, None)
            self.app.fanout.stream_closed(hello.room, stream_id)
            self.app.fanout.leave(hello.room)
            self.app.count("segments", session.stats["segments"])
            self.app.count("ingest_dropped_events", outbox.queue.dropped)
            logger.info("ingest %s closed", stream_id)

    def _observe_final_lag(self, clock: ArrivalClock, event: dict[str, Any]) -> None:
        """Record how long after the audio at its segment's end a final was published."""
        arrived = clock.arrived_at(float(event["end"]))
        if arrived is not None:
            self.final_lag_s.observe(time.monotonic() - arrived)

    async def _finish(self, session: Session, jobs: set[asyncio.Task[None]], dispatch: Any) -> None:
        """Close the open segment and wait (bounded) until its final events are out."""
        session.finish()
        dispatch(False)
        deadline = time.monotonic() + self._cfg.server.shutdown_timeout_s
        while jobs and time.monotonic() < deadline:
            await asyncio.wait(list(jobs), timeout=max(0.0, deadline - time.monotonic()))
        dispatch(False)  # publish now what a batch would have published a moment later
        if jobs or not session.idle:
            # Out of time: every open segment still gets its final, decided on the
            # pieces already analysed; nothing is left waiting.
            for task in list(jobs):
                task.cancel()
            abandoned = session.abandon()
            dispatch(False)
            if abandoned:
                self.app.count("abandoned_jobs", abandoned)
                logger.warning("%d model job(s) of an ended stream were still unfinished "
                               "after %.0f s; their segments were closed on the speech "
                               "already analysed", abandoned,
                               self._cfg.server.shutdown_timeout_s)

    async def _flush_outbox(self, outbox: _Outbox, sender: asyncio.Task[None]) -> None:
        """Send what is queued for this client (bounded by the shutdown timeout)."""
        outbox.queue.close()
        try:
            async with asyncio.timeout(self._cfg.server.shutdown_timeout_s):
                await asyncio.gather(sender, return_exceptions=True)
        except TimeoutError:
            sender.cancel()

    async def _fail(self, ws: ServerConnection, err: StreamerError, encoding: wire.Encoding) -> None:
        """Send ``error`` then close with the error's code (a broken stream)."""
        try:
            await ws.send(wire.encode(_error(err), encoding))
            await ws.close(err.close_code, err.close_reason)
        except ConnectionClosed:
            pass


def _first_encoding(query: dict[str, str]) -> wire.Encoding:
    """Encoding of what the server says before the client's first message (JSON, or
    msgpack with ``?encoding=msgpack``)."""
    return wire.Encoding.MSGPACK if query.get("encoding") == "msgpack" else wire.Encoding.JSON


def _idle_message(idle_timeout_s: float | None) -> str:
    return f"nothing was received for {idle_timeout_s:g} s (server.idle_timeout_s)"


def _guess_encoding(raw: str | bytes) -> wire.Encoding:
    return wire.Encoding.JSON if isinstance(raw, str) else wire.Encoding.MSGPACK


def _response(status: int, body: str | bytes, content_type: str) -> Response:
    data = body.encode("utf-8") if isinstance(body, str) else body
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(data))),
                       ("Cache-Control", "no-store")])
    return Response(status, http.HTTPStatus(status).phrase, headers, data)


def _path(connection: ServerConnection) -> str:
    """The path a connection was opened on ("" before its handshake)."""
    return urlsplit(connection.request.path).path if connection.request is not None else ""
