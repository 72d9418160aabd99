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
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from . import pages, wire
from .api import Api
from .app import App
from .errors import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_TRY_AGAIN,
    Forbidden,
    Overloaded,
    PolicyError,
    StreamerError,
    Unauthorized,
    WireError,
)
from .hub import Subscriber
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
        self.api = Api(cfg, app.registry, app.worker)
        self.stopping = asyncio.Event()
        self._ingest_done: set[asyncio.Event] = set()
        self._server: Server | None = None
        self.streams: dict[str, Session] = {}
        self.connections: dict[str, int] = {"ingest": 0, "display": 0, "api": 0}

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> StreamerServer:
        self.app.check_listen(self.host)
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
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        logger.info("listening on ws://%s:%d", self.host, self.port)
        return self

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
        timeout = self._cfg.server.shutdown_timeout_s
        self.stopping.set()
        server.close(close_connections=False)  # stop accepting now
        waits = [asyncio.create_task(e.wait()) for e in list(self._ingest_done)]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                logger.warning("%d ingest stream(s) did not finish in time", len(pending))
        closing = [asyncio.create_task(c.close(CLOSE_GOING_AWAY, "server shutting down"))
                   for c in server.connections]
        if closing:
            await asyncio.wait(closing, timeout=timeout)
        try:
            async with asyncio.timeout(timeout):
                await server.wait_closed()
        except TimeoutError:
            logger.warning("connections still open after %.1f s", timeout)
        await self.worker.close(timeout)
        logger.info("server stopped")

    # -- HTTP and routing ----------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if request.headers.get("Upgrade", "").lower() == "websocket" and path in ROUTE_ROLES:
            return None
        if path == "/healthz":
            ok = self.registry is not None and self.app.embedder.model_id is not None
            body = json.dumps({
                "status": "ok" if ok else "unavailable",
                "model": self.app.embedder.model_id,
                "people": len(self.registry),
            })
            return _response(200 if ok else 503, body, "application/json")
        if path == "/metrics":
            return _response(200, self._metrics(), "text/plain; version=0.0.4")
        page = pages.resolve(path)
        if page is not None:
            content, content_type = page
            return _response(200, content, content_type)
        return _response(404, "not found\n", "text/plain")

    def _metrics(self) -> str:
        lines = []

        def metric(name: str, kind: str, value: float, help_text: str) -> None:
            lines.append(f"# HELP streamer_{name} {help_text}")
            lines.append(f"# TYPE streamer_{name} {kind}")
            lines.append(f"streamer_{name} {value}")

        metric("ingest_connections", "gauge", self.connections["ingest"], "Open ingest streams.")
        metric("display_connections", "gauge", self.connections["display"], "Open displays.")
        metric("api_connections", "gauge", self.connections["api"], "Open API connections.")
        metric("people", "gauge", len(self.registry), "Enrolled people.")
        metric("queue_depth", "gauge", self.worker.in_flight, "Embedding jobs in flight.")
        metric("embeddings_total", "counter", self.worker.done, "Model runs (pieces count one each).")
        metric("batches_total", "counter", self.worker.batches, "Batches of live pieces run.")
        metric("batched_pieces_total", "counter", self.worker.batched_pieces,
               "Live pieces run in batches (divide by batches_total for the mean batch).")
        metric("dropped_jobs_total", "counter", self.worker.dropped, "Provisional jobs dropped.")
        metric("embed_seconds_total", "counter", round(self.worker.busy_s, 3),
               "Thread time spent embedding.")
        metric("events_total", "counter", self.app.hub.published, "Events published.")
        for name, value in sorted(self.app.counters.items()):
            metric(f"{name}_total", "counter", value, f"Count of {name.replace('_', ' ')}.")
        return "\n".join(lines) + "\n"

    def _authorize(self, ws: ServerConnection, role: str) -> None:
        """Raise ``Unauthorized`` / ``Forbidden`` unless the request carries a fitting token."""
        auth = self._cfg.auth
        if not auth.enabled:
            return
        request = ws.request
        token = None
        header = request.headers.get("Authorization", "") if request else ""
        if header.startswith("Bearer "):
            token = header[len("Bearer "):].strip()
        elif request is not None:
            values = parse_qs(urlsplit(request.path).query).get("token")
            token = values[0] if values else None
        match = None
        for entry in auth.tokens:
            if token is not None and secrets.compare_digest(entry.token, token):
                match = entry
        if match is None:
            raise Unauthorized("a valid token is required")
        if role not in match.roles and "admin" not in match.roles:
            raise Forbidden(f"this token does not have the {role} role")

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
        kind = {"ingest": "ingest", "display": "display", "admin": "api"}[role]
        self.connections[kind] += 1
        self.app.count(f"{kind}_connections")
        try:
            if role == "ingest":
                await self._ingest(ws)
            elif role == "display":
                await self._events(ws, query)
            else:
                await self._api(ws)
        except ConnectionClosed:
            pass
        finally:
            self.connections[kind] -= 1

    # -- /v1/events ------------------------------------------------------------------------

    async def _events(self, ws: ServerConnection, query: dict[str, str]) -> None:
        encoding = wire.Encoding.MSGPACK if query.get("encoding") == "msgpack" else wire.Encoding.JSON
        room = query.get("room", "")
        if not room:
            await ws.send(wire.encode(_error(WireError("the room query parameter is required")),
                                      encoding))
            await ws.close(1008, "room required")
            return
        sub = self.app.hub.subscribe(room)
        try:
            # Both taken now, before any await: whatever happens later is queued in
            # ``sub`` (a newer room_state included) and sent after them.
            snapshot, state = self.app.hub.snapshot(room), self.app.hub.room_state(room)
            await ws.send(wire.encode(snapshot, encoding))
            await ws.send(wire.encode(state, encoding))
            outbox = _Outbox(ws, encoding, self._cfg.events.max_queued_events)
            outbox.queue = sub
            # Displays need not send anything; whatever they send is read and ignored so
            # that pings and closes are processed.
            reader = asyncio.create_task(self._drain_reader(ws))
            sender = asyncio.create_task(outbox.run())
            try:
                await asyncio.wait([reader, sender], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (reader, sender):
                    task.cancel()
                await asyncio.gather(reader, sender, return_exceptions=True)
        finally:
            self.app.hub.unsubscribe(sub)

    @staticmethod
    async def _drain_reader(ws: ServerConnection) -> None:
        async for _ in ws:
            pass

    # -- /v1/api ---------------------------------------------------------------------------

    async def _api(self, ws: ServerConnection) -> None:
        encoding: wire.Encoding | None = None
        async for raw in ws:
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

    async def _ingest(self, ws: ServerConnection) -> None:
        done = asyncio.Event()
        self._ingest_done.add(done)
        try:
            await self._ingest_stream(ws)
        finally:
            done.set()
            self._ingest_done.discard(done)

    async def _ingest_stream(self, ws: ServerConnection) -> None:
        cfg = self._cfg
        encoding = wire.Encoding.JSON
        try:
            async with asyncio.timeout(cfg.server.hello_timeout_s):
                raw = await ws.recv()
        except TimeoutError:
            await ws.close(1008, "hello timeout")
            return
        try:
            message, encoding = wire.decode(raw)
            hello = wire.parse_hello(message)
        except StreamerError as err:
            await self._fail(ws, err, encoding if isinstance(raw, str) else wire.Encoding.MSGPACK)
            return
        stream_id = "s_" + secrets.token_hex(6)
        session = Session(
            cfg, self.registry.search, self.app.streamer.head, room=hello.room, mic=hello.mic,
            stream=stream_id,
            sample_rate=hello.sample_rate, fmt=hello.format, channels=hello.channels,
        )
        self.streams[stream_id] = session
        outbox = _Outbox(ws, encoding, cfg.events.max_queued_events)
        await ws.send(wire.encode({
            "type": "ready", "stream": stream_id, "sample_rate": 16000,
            "model": self.app.embedder.model_id, "threshold": cfg.match.max_distance,
        }, encoding))
        logger.info("ingest %s opened: room=%s mic=%s rate=%d", stream_id, hello.room,
                    hello.mic, hello.sample_rate)
        expected_seq = 0
        seq_gaps = 0
        jobs: set[asyncio.Task[None]] = set()
        sender = asyncio.create_task(outbox.run())
        close_code, close_reason = CLOSE_NORMAL, ""
        ended = False

        def publish() -> None:
            for event in session.take_events():
                self.app.hub.publish(hello.room, event)
                outbox.queue.put(event)

        def dispatch() -> None:
            for job in session.take_jobs():
                task = asyncio.create_task(run_job(job))
                jobs.add(task)
                task.add_done_callback(jobs.discard)
            publish()

        async def run_job(job: EmbedJob) -> None:
            try:
                stats = await self.worker.stats(job.pcm, job.keep_samples, droppable=job.droppable)
            except Overloaded:
                session.job_dropped(job.id)
            except Exception:
                # One bad job must not stall the stream: log it, release the segment.
                logger.exception("embedding failed for stream %s", stream_id)
                self.app.count("failed_jobs")
                session.job_failed(job.id)
            else:
                session.job_done(job.id, stats)
            dispatch()

        stop_wait = asyncio.create_task(self.stopping.wait())
        try:
            while True:
                recv = asyncio.create_task(ws.recv())
                await asyncio.wait([recv, stop_wait, sender], return_when=asyncio.FIRST_COMPLETED)
                if not recv.done():
                    recv.cancel()
                    await asyncio.gather(recv, return_exceptions=True)
                    close_code, close_reason = CLOSE_GOING_AWAY, "server shutting down"
                    break
                try:
                    raw = recv.result()
                except ConnectionClosed:
                    break
                try:
                    message, _ = wire.decode(raw)
                    item = wire.parse_ingest(message, encoding)
                    if isinstance(item, wire.Hello):
                        raise PolicyError("hello was already received on this stream")
                    if isinstance(item, wire.End):
                        ended = True
                        break
                    if item.seq != expected_seq:
                        seq_gaps += 1
                    expected_seq = item.seq + 1
                    session.feed_pcm(item.pcm)
                    dispatch()
                except StreamerError as err:
                    # The stream is broken: finish what was heard (displays get the
                    # finals), then tell the client why and close.
                    await self._finish(session, jobs, dispatch)
                    await self._flush_outbox(outbox, sender)
                    await self._fail(ws, err, encoding)
                    return
            await self._finish(session, jobs, dispatch)
            if ended:
                stats = dict(session.stats, seq_gaps=seq_gaps,
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
            self.app.hub.stream_closed(hello.room, stream_id)
            self.app.count("segments", session.stats["segments"])
            logger.info("ingest %s closed", stream_id)

    async def _finish(self, session: Session, jobs: set[asyncio.Task[None]], dispatch: Any) -> None:
        """Close the open segment and wait (bounded) until its final events are out."""
        session.finish()
        dispatch()
        deadline = time.monotonic() + self._cfg.server.shutdown_timeout_s
        while jobs and time.monotonic() < deadline:
            await asyncio.wait(list(jobs), timeout=max(0.0, deadline - time.monotonic()))
        if jobs or not session.idle:
            # Out of time: every open segment still gets its final, decided on the
            # pieces already analysed; nothing is left waiting.
            for task in list(jobs):
                task.cancel()
            abandoned = session.abandon()
            dispatch()
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


def _guess_encoding(raw: str | bytes) -> wire.Encoding:
    return wire.Encoding.JSON if isinstance(raw, str) else wire.Encoding.MSGPACK


def _response(status: int, body: str | bytes, content_type: str) -> Response:
    data = body.encode("utf-8") if isinstance(body, str) else body
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(data))),
                       ("Cache-Control", "no-store")])
    return Response(status, http.HTTPStatus(status).phrase, headers, data)
