"""Stream an audio file to ``/v1/ingest`` as a live microphone would, print the events.

Usage::

    python clients/stream_file.py FILE --room ROOM [--speed X] [--url ws://127.0.0.1:8765 ...]
                                  [--mic NAME] [--chunk-ms 100] [--token T] [--json] [--debug]

The file is sent at its own sample rate and channel count (declared in ``hello``; the
server resamples), as s16le, in chunks of ``--chunk-ms``, paced at real time times
``--speed`` (``--speed 0`` sends as fast as possible). Events are printed as a timeline;
``--json`` prints every message as one JSON line instead. ``--url`` also takes the
``http://`` address the server prints. Errors (unreachable server, refused token,
unreadable or empty file) are one line on stderr and exit code 2; ``--debug`` shows the
traceback.

Several servers (``--url`` repeated or comma-separated, :mod:`clients.failover`): when
the server dies mid-file the file goes on at once on the next one as a new stream,
from the end of the last segment the dead server decided (see :func:`stream_file` for
what is and is not sent again); each move is one line on stderr. It fails only when
every address has failed since the last stream a server accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clients.failover import Failover, lost_reason, server_urls
from streamer import wire
from streamer.connect import one_line

__all__ = ["format_event", "read_audio", "stream_file"]

SUPPORTED_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)


def format_event(event: dict[str, Any]) -> str | None:
    """One timeline line for an event, or None for events not worth a line."""
    kind = event.get("type")
    if kind == "speech_start":
        return f"[{event['t']:7.2f} s] speech starts (segment {event['segment']})"
    if kind == "speech_end":
        return f"[{event['t']:7.2f} s] speech ends   (segment {event['segment']})"
    if kind == "speaker":
        person = event.get("person")
        who = person["name"] if person else "unknown speaker"
        dist = event.get("distance")
        dist_text = "" if dist is None else f" ({dist:.2f})"
        if event.get("final"):
            return (f"[{event['start']:7.2f} - {event['end']:6.2f} s] {who}{dist_text}"
                    f"  <- segment {event['segment']}")
        return f"[{event['end']:7.2f} s]   {who} speaking{dist_text}?"
    if kind == "ready":
        return f"ready: stream {event['stream']}, model {event['model']}"
    if kind == "bye":
        return f"bye: {json.dumps(event.get('stats', {}))}"
    if kind == "error":
        return f"error ({event.get('code')}): {event.get('message')}"
    return None


#: Close codes after which another server of the cluster would refuse the stream too
#: (unsupported data: a bad hello; policy: the token; message too big).
REFUSED_CLOSE_CODES = (1003, 1008, 1009)

#: ``on_failover(failed_url, next_url, error, resume_s)``: see :func:`stream_file`.
FailoverHook = Callable[[str, str, Exception | None, float], None]


async def stream_file(
    url: str | Sequence[str],
    path: str | Path,
    room: str,
    *,
    mic: str = "file",
    speed: float = 1.0,
    chunk_ms: float = 100.0,
    token: str | None = None,
    on_message: Callable[[dict[str, Any], float], None] | None = None,
    encoding: wire.Encoding = wire.Encoding.MSGPACK,
    on_failover: FailoverHook | None = None,
) -> list[dict[str, Any]]:
    """Stream ``path`` to ``url``/v1/ingest and return every message received.

    ``on_message(message, wall_clock_s)`` is called for each message as it arrives.
    Raises ``ValueError`` for a sample rate the protocol does not list and
    ``websockets.exceptions.ConnectionClosed`` if the server closes abnormally.

    ``url`` may name several servers (a list, or comma-separated). When the server in
    use dies mid-file (refused, lost, closed with any code but 1003, 1008 or 1009), the
    file goes on at once on the next address as a new stream (a new ``hello``, ``seq``
    from 0), after ``on_failover(failed_url, next_url, error, resume_s)`` (``error`` is
    None when the server closed without ``bye``). It starts again at ``resume_s``, the
    end of the last segment the dead server closed (its last final ``speaker`` event),
    so the segment that server was still analysing, and all audio after it, is sent
    again and decided by the next server; decided segments are not re-sent (their
    events were received). Stream times (``t``, ``start``, ``end``) of each stream count
    from the point it started at. The last error is raised when every address has
    failed since the last ``ready``: with one address, at the first failure, as before.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import WebSocketException

    samples, rate = read_audio(path)
    if rate not in SUPPORTED_RATES:
        raise ValueError(f"{path}: sample rate {rate} Hz is not one the protocol lists")
    channels = min(samples.shape[1], 2)
    samples = samples[:, :channels]
    step = max(1, int(rate * chunk_ms / 1000))
    received: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {token}"} if token else None
    servers = Failover(server_urls(url))
    decided = 0  # file frames decided by the servers (the end of the last final segment)
    started = time.monotonic()  # pacing: a resent part is already due, so it goes at once

    async def send_from(first: int) -> bool:
        """One stream of the file from frame ``first``; True when ``bye`` came."""
        got_bye = False
        async with connect(servers.current + "/v1/ingest", additional_headers=headers,
                           max_size=None, compression=None) as ws:

            async def reader() -> None:
                nonlocal decided, got_bye
                async for raw in ws:
                    message, _ = wire.decode(raw)
                    received.append(message)
                    kind = message.get("type")
                    if kind == "ready":
                        servers.succeeded()
                    elif kind == "speaker" and message.get("final"):
                        decided = max(decided, first + round(float(message["end"]) * rate))
                    elif kind == "bye":
                        got_bye = True
                    if on_message is not None:
                        on_message(message, time.time())

            reading = asyncio.create_task(reader())
            try:
                await ws.send(wire.encode({"type": "hello", "room": room, "mic": mic,
                                           "sample_rate": rate, "format": "s16le",
                                           "channels": channels}, encoding))
                for seq, offset in enumerate(range(first, len(samples), step)):
                    chunk = samples[offset : offset + step]
                    await ws.send(wire.encode({"type": "audio", "seq": seq,
                                               "pcm": np.ascontiguousarray(chunk).tobytes()},
                                              encoding))
                    if speed > 0:
                        due = started + (offset + len(chunk)) / rate / speed
                        delay = due - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                await ws.send(wire.encode({"type": "end"}, encoding))
            except Exception:
                # the server closed the stream: the reader saw why (raise that, not the send's)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reading), 5.0)
                reading.cancel()
                raise
            await reading
        return got_bye

    while True:
        failed_url, error = servers.current, None
        try:
            if await send_from(decided):
                return received
        except (OSError, TimeoutError, WebSocketException) as err:  # refused, lost
            if _refused(err):
                raise
            error = err
        if servers.failed() is not None:  # every address failed since the last ready
            if error is not None:
                raise error
            return received
        if on_failover is not None:
            on_failover(failed_url, servers.current, error, decided / rate)


def _refused(err: BaseException) -> bool:
    """True when ``err`` says the server refused this stream for a reason every server of
    a cluster shares (bad address or token, bad hello, too big), so moving on cannot help."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

    if isinstance(err, InvalidURI):
        return True
    if isinstance(err, InvalidStatus):
        status = err.response.status_code
        return 400 <= status < 500 and status not in (408, 429)
    if isinstance(err, ConnectionClosed):
        return err.rcvd is not None and err.rcvd.code in REFUSED_CLOSE_CODES
    return False


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """``path`` as s16 samples (frames x channels) and its sample rate.

    Raises ``OSError`` when the file cannot be opened (missing, no permission) and
    ``ValueError`` with one line when it is not audio libsndfile decodes (WAV, FLAC,
    OGG, MP3) or holds no samples.
    """
    with open(path, "rb") as fh:
        try:
            samples, rate = sf.read(fh, dtype="int16", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError) as err:
            reason = str(err).split(":")[-1].strip() or type(err).__name__
            raise ValueError(f"{path}: not audio this client can decode (WAV, FLAC, OGG or "
                             f"MP3; {reason})") from None
    if len(samples) == 0:
        raise ValueError(f"{path}: the file holds no audio")
    return samples, int(rate)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file")
    parser.add_argument("--room", required=True)
    parser.add_argument("--mic", default="file")
    parser.add_argument("--url", action="append",
                        help="server address (default ws://127.0.0.1:8765); repeat it or "
                             "separate addresses with commas to go on on the next server "
                             "when one dies")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--chunk-ms", type=float, default=100.0)
    parser.add_argument("--token")
    parser.add_argument("--json", action="store_true", help="print raw messages as JSON lines")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args()

    def show(message: dict[str, Any], _: float) -> None:
        if args.json:
            print(json.dumps(message), flush=True)
            return
        line = format_event(message)
        if line:
            print(line, flush=True)

    try:
        urls = server_urls(args.url)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    in_use = urls[0]  # the server named by an error

    def moved(failed: str, to: str, error: Exception | None, resume_s: float) -> None:
        nonlocal in_use
        in_use = to
        print(f"{failed}: {lost_reason(error)}; moving to {to}, from {resume_s:.2f} s of "
              "the file", file=sys.stderr, flush=True)

    try:
        asyncio.run(stream_file(urls, args.file, args.room, mic=args.mic, speed=args.speed,
                                chunk_ms=args.chunk_ms, token=args.token, on_message=show,
                                on_failover=moved))
    except Exception as err:
        if args.debug:
            raise
        print(f"error: {one_line(err, in_use, 'ingest')}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
