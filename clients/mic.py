"""Stream a live microphone to ``/v1/ingest`` and show who is speaking.

Usage::

    python clients/mic.py --room ROOM [--url ws://127.0.0.1:8765 ...] [--device N|NAME]
                          [--mic NAME] [--token T] [--channels 1|2] [--block-ms 100]
                          [--max-queue-blocks 50]
    python clients/mic.py --list-devices

Needs ``sounddevice`` (``pip install -e '.[mic]'``) and PortAudio (Debian:
``libportaudio2``). Audio is captured as s16le at the device's native rate (declared in
``hello``; the server resamples and, for 2 channels, downmixes).

Layers, so that everything but the capture can be tested without a sound card:

* a *source* pushes int16 blocks (``[frames, channels]``) from its own thread:
  :class:`SoundDeviceSource` (a thin wrapper of ``sounddevice.InputStream``) or
  :class:`RecordedSource` (a recording paced at real time, or faster);
* :class:`BlockQueue`: a bounded queue between that thread and the event loop. Pushing
  never blocks (``loop.call_soon_threadsafe``); when it is full the oldest block is
  dropped and counted;
* :class:`MicStreamer`: takes the queue and the rate, sends ``hello``/``audio``/``end``,
  reconnects with exponential back-off (0.5 s .. 10 s, jittered; ``hello`` again and
  ``seq`` from 0 on each connection) and renders the events as a live status line.

While disconnected, the newest ``--max-queue-blocks`` blocks are kept and sent on
reconnection; older ones are dropped (the bound is also the worst added latency).

Several servers (``--url`` repeated or comma-separated, :mod:`clients.failover`): when
the connection is lost or refused, the next address is tried at once (a new ``hello``, a
new stream, the queued blocks sent first), cycling through the list; the back-off only
starts after a whole round of the list has failed. Blocks already sent to a server that
dies are not sent again (the protocol acknowledges no audio).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clients.failover import Failover, server_urls
from streamer import wire
from streamer.connect import with_token_advice

__all__ = [
    "SUPPORTED_RATES",
    "BlockQueue",
    "FatalError",
    "MicStreamer",
    "RecordedSource",
    "SoundDeviceSource",
    "StatusLine",
    "backoff_delay",
    "choose_rate",
    "describe",
    "list_devices",
    "main",
]

SUPPORTED_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
#: Close codes after which reconnecting cannot help (policy: auth; unsupported data: hello).
FATAL_CLOSE_CODES = (1003, 1008)


class FatalError(Exception):
    """The server refused the stream for a reason a reconnection will not fix."""


# -- pure helpers ----------------------------------------------------------------------------


def choose_rate(native: float, supported: Callable[[int], bool] = lambda _: True) -> int | None:
    """The rate to capture at: the native one if the protocol lists it, else the nearest
    listed rate that ``supported(rate)`` accepts (None when none does)."""
    native_hz = round(native)
    if native_hz in SUPPORTED_RATES and supported(native_hz):
        return native_hz
    for rate in sorted(SUPPORTED_RATES, key=lambda r: (abs(r - native_hz), -r)):
        if rate != native_hz and supported(rate):
            return rate
    return None


def backoff_delay(attempt: int, initial_s: float = 0.5, max_s: float = 10.0,
                  rng: random.Random | None = None) -> float:
    """Delay before reconnection attempt ``attempt`` (0-based): doubling from
    ``initial_s`` up to ``max_s``, jittered by +-25 %, kept within [initial_s, max_s]."""
    base = min(max_s, initial_s * 2.0 ** min(attempt, 30))
    jitter = (rng or random).uniform(0.75, 1.25)
    return max(initial_s, min(max_s, base * jitter))


def _who(event: dict[str, Any]) -> str:
    person = event.get("person")
    return str(person["name"]) if person else "unknown speaker"


def describe(message: dict[str, Any]) -> tuple[str, bool] | None:
    """``(text, permanent)`` for a server message, or None when it is not shown.

    Provisional guesses are status text (overwritten by the next one); final decisions,
    ``ready``, ``bye`` and errors are permanent lines.
    """
    kind = message.get("type")
    if kind == "speaker":
        dist = message.get("distance")
        dist_text = "" if dist is None else f" ({dist:.2f})"
        if message.get("final"):
            text = f"[{message['start']:.1f}-{message['end']:.1f} s] {_who(message)}{dist_text}"
            return text, True
        if message.get("person"):
            return f"{_who(message)} speaking{dist_text}", False
        return "unknown speaker", False
    if kind == "speech_start":
        return "…", False
    if kind == "speech_end":
        return "", False
    if kind == "ready":
        return f"connected: stream {message.get('stream')}, model {message.get('model')}", True
    if kind == "bye":
        stats = message.get("stats") or {}
        text = f"bye: {stats.get('segments', 0)} segments, {stats.get('audio_s', 0)} s of audio"
        return text, True
    if kind == "error":
        return f"error ({message.get('code')}): {message.get('message')}", True
    return None


class StatusLine:
    """A live status line on a terminal (``\\r`` overwrite) and permanent lines above it.

    When ``out`` is not a terminal, every status change is printed as its own line.
    """

    def __init__(self, out: TextIO | None, tty: bool | None = None) -> None:
        self.out = out
        self.tty = bool(tty if tty is not None else (out is not None and out.isatty()))
        self._status = ""

    def status(self, text: str) -> None:
        if self.out is None or text == self._status:
            return
        self._status = text
        if self.tty:
            self.out.write("\r\x1b[K" + text)
        elif text:
            self.out.write(text + "\n")
        self.out.flush()

    def line(self, text: str) -> None:
        if self.out is None:
            return
        if self.tty:
            self.out.write("\r\x1b[K" + text + "\n" + self._status)
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.out is not None and self.tty and self._status:
            self.out.write("\n")
            self.out.flush()
        self._status = ""


# -- the queue between the capture thread and the event loop ---------------------------------


class BlockQueue:
    """A bounded FIFO of PCM blocks. Producers never block; when full, the oldest goes.

    :meth:`put_nowait` runs on the event loop; other threads (audio callbacks) call
    :meth:`push_threadsafe`, which only schedules it (``loop.call_soon_threadsafe``).
    :meth:`get` returns None once :meth:`close` was called and the queue is drained.
    """

    def __init__(self, max_blocks: int, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if max_blocks < 1:
            raise ValueError("max_blocks must be at least 1")
        self.max_blocks = max_blocks
        self.loop = loop
        self._blocks: deque[np.ndarray] = deque()
        self._wakeup = asyncio.Event()
        self.closed = False
        self.pushed = 0
        self.dropped = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Set the event loop :meth:`push_threadsafe` hands blocks to."""
        self.loop = loop

    def __len__(self) -> int:
        return len(self._blocks)

    def put_nowait(self, block: np.ndarray) -> None:
        """Append ``block`` (event loop thread); drop the oldest block when full."""
        if self.closed:
            return
        self.pushed += 1
        if len(self._blocks) >= self.max_blocks:
            self._blocks.popleft()
            self.dropped += 1
        self._blocks.append(block)
        self._wakeup.set()

    def push_threadsafe(self, block: np.ndarray) -> None:
        """Hand ``block`` to the event loop from any thread. Never blocks, never raises."""
        loop = self.loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self.put_nowait, block)
        except RuntimeError:  # the loop is closed: the program is ending
            pass

    def unget(self, block: np.ndarray) -> None:
        """Put back a block that could not be sent (it is the oldest; dropped when full)."""
        if len(self._blocks) >= self.max_blocks:
            self.dropped += 1
            return
        self._blocks.appendleft(block)
        self._wakeup.set()

    def close(self) -> None:
        """No more blocks: :meth:`get` returns None once the queue is empty."""
        self.closed = True
        self._wakeup.set()

    def close_threadsafe(self) -> None:
        loop = self.loop
        if loop is None:
            self.closed = True
            return
        try:
            loop.call_soon_threadsafe(self.close)
        except RuntimeError:
            self.closed = True

    async def get(self) -> np.ndarray | None:
        """The oldest block; None when closed and drained."""
        while not self._blocks:
            if self.closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._blocks.popleft()


# -- sources ---------------------------------------------------------------------------------


class Source(Protocol):
    sample_rate: int
    channels: int

    def start(self, queue: BlockQueue) -> None: ...

    def stop(self) -> None: ...


class SoundDeviceSource:
    """A sound card input (``sounddevice.InputStream``, int16) pushing blocks to a queue.

    The PortAudio callback only copies the block and schedules it on the event loop.
    """

    def __init__(self, device: int | str | None = None, *, channels: int = 1,
                 block_ms: float = 100.0, sample_rate: int | None = None) -> None:
        import sounddevice as sd

        self._sd = sd
        self.device = device
        self.channels = channels
        info = sd.query_devices(device, "input")
        self.device_name = str(info["name"])
        if info["max_input_channels"] < channels:
            raise ValueError(f"device {self.device_name!r} has "
                             f"{info['max_input_channels']} input channel(s)")

        def supported(rate: int) -> bool:
            try:
                sd.check_input_settings(device, channels=channels, dtype="int16",
                                        samplerate=rate)
            except Exception:  # noqa: BLE001 - PortAudio reports unsupported settings so
                return False
            return True

        rate = sample_rate or choose_rate(float(info["default_samplerate"]), supported)
        if rate is None:
            raise ValueError(f"device {self.device_name!r} supports none of the rates "
                             f"{SUPPORTED_RATES}")
        self.sample_rate = rate
        self.blocksize = max(1, int(rate * block_ms / 1000))
        self.overflows = 0
        self._stream: Any = None

    def start(self, queue: BlockQueue) -> None:
        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            if status and status.input_overflow:
                self.overflows += 1
            queue.push_threadsafe(indata.copy())

        self._stream = self._sd.InputStream(
            device=self.device, samplerate=self.sample_rate, channels=self.channels,
            dtype="int16", blocksize=self.blocksize, callback=callback)
        self._stream.start()

    def stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.abort()
            stream.close()


class RecordedSource:
    """A recording played as a microphone: int16 blocks pushed from a thread at real time
    times ``speed`` (0: as fast as possible); closes the queue at the end (``close_at_end``).
    """

    def __init__(self, samples: np.ndarray, sample_rate: int, *, block_ms: float = 100.0,
                 speed: float = 1.0, close_at_end: bool = True) -> None:
        x = np.asarray(samples)
        if x.ndim == 1:
            x = x[:, None]
        if x.dtype != np.int16:
            x = (np.clip(x, -1.0, 1.0) * 32767.0).round().astype(np.int16)
        self.samples = np.ascontiguousarray(x)
        self.sample_rate = sample_rate
        self.channels = int(x.shape[1])
        self.blocksize = max(1, int(sample_rate * block_ms / 1000))
        self.speed = speed
        self.close_at_end = close_at_end
        self.pushed = 0
        self.finished = threading.Event()
        self.push_seconds: list[float] = []  # how long each push took (never blocks)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_file(cls, path: str | Path, sample_rate: int | None = None,
                  **kwargs: Any) -> RecordedSource:
        """A mono recording of ``path``, resampled to ``sample_rate`` when given."""
        import soundfile as sf

        from streamer.audio import resample

        x, rate = sf.read(str(path), dtype="float32", always_2d=True)
        mono = x.mean(axis=1).astype(np.float32)
        if sample_rate is not None and sample_rate != rate:
            mono = resample(mono, rate, sample_rate)
            rate = sample_rate
        return cls(mono, rate, **kwargs)

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate

    def start(self, queue: BlockQueue) -> None:
        self._thread = threading.Thread(target=self._run, args=(queue,), daemon=True,
                                        name="recorded-source")
        self._thread.start()

    def _run(self, queue: BlockQueue) -> None:
        started = time.monotonic()
        for offset in range(0, len(self.samples), self.blocksize):
            if self._stop.is_set():
                break
            block = self.samples[offset : offset + self.blocksize]
            t0 = time.perf_counter()
            queue.push_threadsafe(block)
            self.push_seconds.append(time.perf_counter() - t0)
            self.pushed += 1
            if self.speed > 0:
                due = started + (offset + len(block)) / self.sample_rate / self.speed
                delay = due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
        else:
            if self.close_at_end:
                queue.close_threadsafe()
        self.finished.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)


# -- the streamer ----------------------------------------------------------------------------


class _Lost(Exception):
    """The connection went away; reconnect."""


class MicStreamer:
    """Stream PCM blocks from a :class:`BlockQueue` to ``/v1/ingest``, reconnecting.

    ``url`` is a server's base URL, or several (a list, or comma-separated): a lost or
    refused connection moves to the next at once, and the back-off starts only after a
    whole round has failed (:class:`~clients.failover.Failover`, in :attr:`servers`).
    ``run()`` returns when the queue is closed and drained (``end`` sent, ``bye`` awaited
    up to ``bye_timeout_s``) or after :meth:`stop`; it raises :class:`FatalError` when the
    server refuses the stream (bad hello, unauthorized, forbidden). Every received message
    is appended to :attr:`messages` and passed to ``on_message``.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        room: str,
        blocks: BlockQueue,
        sample_rate: int,
        *,
        channels: int = 1,
        mic: str = "default",
        token: str | None = None,
        out: TextIO | None = None,
        tty: bool | None = None,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        ready_timeout_s: float = 10.0,
        bye_timeout_s: float = 3.0,
        connect: Callable[..., Any] | None = None,
        encoding: wire.Encoding = wire.Encoding.MSGPACK,
        rng: random.Random | None = None,
    ) -> None:
        if sample_rate not in SUPPORTED_RATES:
            raise ValueError(f"sample rate {sample_rate} Hz is not one the protocol lists")
        if channels not in (1, 2):
            raise ValueError("channels must be 1 or 2")
        self.servers = Failover(server_urls(url))
        self.room = room
        self.mic = mic
        self.blocks = blocks
        self.sample_rate = sample_rate
        self.channels = channels
        self.token = token
        self.on_message = on_message
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.ready_timeout_s = ready_timeout_s
        self.bye_timeout_s = bye_timeout_s
        self.encoding = encoding
        self.rng = rng or random.Random()
        if connect is None:
            from websockets.asyncio.client import connect as ws_connect

            connect = ws_connect
        self._connect = connect
        self.status = StatusLine(out, tty)
        self.messages: list[dict[str, Any]] = []
        self.attempts = 0  # connection attempts
        self.connections = 0  # streams the server accepted (``ready``)
        self.sent_blocks = 0
        self.delays: list[float] = []  # back-off delays waited
        self.moves: list[tuple[str, str]] = []  # (from, to) after a failure, without waiting
        self._stopping = asyncio.Event()
        self._got_bye = False

    @property
    def url(self) -> str:
        """The ``/v1/ingest`` URL of the server in use. Setting it replaces the list of
        servers by that one."""
        return self.servers.current + "/v1/ingest"

    @url.setter
    def url(self, value: str) -> None:
        self.servers = Failover(server_urls(value.rstrip("/").removesuffix("/v1/ingest")))

    # -- control --

    def stop(self) -> None:
        """Finish: send what is queued, then ``end``, wait briefly for ``bye``; no
        reconnection. Call from the event loop (e.g. a signal handler)."""
        self._stopping.set()
        self.blocks.close()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- main loop --

    async def run(self) -> None:
        """Connect, stream, reconnect on failures until the queue is closed and drained."""
        if self.blocks.loop is None:
            self.blocks.bind(asyncio.get_running_loop())
        try:
            while True:
                if self.blocks.closed and not len(self.blocks):
                    return
                self.attempts += 1
                try:
                    finished = await self._connect_once()
                    if finished:
                        return
                    reason = "connection closed"
                except FatalError:
                    raise
                except _Lost as err:
                    reason = str(err)
                except Exception as err:  # refused, reset, timeout, handshake
                    fatal = _fatal_handshake(err)
                    if fatal:
                        raise FatalError(fatal) from err
                    reason = _reason(err)
                if self.stopping:
                    return
                failed = self.servers.current
                backoff_round = self.servers.failed()
                if backoff_round is None:  # another server to try at once
                    self.moves.append((failed, self.servers.current))
                    self.status.line(f"{failed}: {reason}; moving to {self.servers.current}"
                                     + self._dropped_text())
                    continue
                delay = backoff_delay(backoff_round, self.backoff_initial_s,
                                      self.backoff_max_s, self.rng)
                self.delays.append(delay)
                self.status.status(f"disconnected ({reason}); retrying in {delay:.1f} s"
                                   + self._dropped_text())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()
                if self.stopping:
                    return
        finally:
            self.status.close()

    def _dropped_text(self) -> str:
        return f" [dropped {self.blocks.dropped} blocks]" if self.blocks.dropped else ""

    async def _connect_once(self) -> bool:
        """One connection. True when the stream ended (``end`` sent), False to reconnect."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        async with self._connect(self.url, additional_headers=headers, max_size=None,
                                 compression=None, open_timeout=self.ready_timeout_s) as ws:
            try:
                return await self._handshake_and_stream(ws)
            except (FatalError, _Lost):
                raise
            except Exception as err:  # ConnectionClosed while sending hello or audio
                self._raise_if_fatal(ws)
                raise _Lost(_reason(err)) from err

    async def _handshake_and_stream(self, ws: Any) -> bool:
        await ws.send(self._encode({
            "type": "hello", "room": self.room, "mic": self.mic,
            "sample_rate": self.sample_rate, "format": "s16le", "channels": self.channels,
        }))
        try:
            async with asyncio.timeout(self.ready_timeout_s):
                raw = await ws.recv()
        except TimeoutError:
            raise _Lost("no ready from the server") from None
        first, _ = wire.decode(raw)
        self._handle(first)
        if first.get("type") != "ready":
            with contextlib.suppress(Exception):
                await ws.close()
            if first.get("code") == "overloaded":  # 1013 try again later (or elsewhere)
                raise _Lost(f"overloaded: {first.get('message')}")
            raise FatalError(f"the server refused the stream: "
                             f"{first.get('code')}: {first.get('message')}")
        self.connections += 1
        self.servers.succeeded()
        return await self._stream(ws)

    async def _stream(self, ws: Any) -> bool:
        reader = asyncio.create_task(self._read(ws))
        seq = 0
        try:
            while True:
                getter = asyncio.create_task(self.blocks.get())
                await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    await asyncio.gather(getter, return_exceptions=True)
                    self._raise_if_fatal(ws)
                    raise _Lost(self._close_text(ws))
                block = getter.result()
                if block is None:  # the source is finished, or stop() was called
                    await self._finish(ws, reader)
                    return True
                try:
                    await ws.send(self._encode({"type": "audio", "seq": seq,
                                                "pcm": block.tobytes()}))
                except Exception as err:  # ConnectionClosed
                    self.blocks.unget(block)
                    self._raise_if_fatal(ws)
                    raise _Lost(_reason(err)) from err
                seq += 1
                self.sent_blocks += 1
        finally:
            if not reader.done():
                reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _finish(self, ws: Any, reader: asyncio.Task[None]) -> None:
        self._got_bye = False
        try:
            await ws.send(self._encode({"type": "end"}))
        except Exception:  # noqa: BLE001 - already closed: nothing more to say
            return
        done, _ = await asyncio.wait({reader}, timeout=self.bye_timeout_s)
        if not done:
            self.status.line("no bye from the server; closing")
        with contextlib.suppress(Exception):
            await ws.close()

    async def _read(self, ws: Any) -> None:
        with contextlib.suppress(Exception):  # ConnectionClosed: the sender notices
            async for raw in ws:
                message, _ = wire.decode(raw)
                self._handle(message)
                if message.get("type") == "bye":
                    self._got_bye = True
                    return

    def _handle(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if self.on_message is not None:
            self.on_message(message)
        shown = describe(message)
        if shown is None:
            return
        text, permanent = shown
        if permanent:
            self.status.line(text)
        else:
            self.status.status(text + (self._dropped_text() if text else ""))

    def _encode(self, message: dict[str, Any]) -> bytes | str:
        return wire.encode(message, self.encoding)

    @staticmethod
    def _close_text(ws: Any) -> str:
        code = getattr(ws, "close_code", None)
        reason = getattr(ws, "close_reason", None) or ""
        return f"closed {code} {reason}".strip() if code is not None else "connection lost"

    def _raise_if_fatal(self, ws: Any) -> None:
        code = getattr(ws, "close_code", None)
        if code in FATAL_CLOSE_CODES:
            raise FatalError(f"the server closed the stream: {code} "
                             f"{getattr(ws, 'close_reason', '') or ''}".strip())


def _reason(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _fatal_handshake(err: BaseException) -> str | None:
    """A message when a failed connection attempt cannot succeed later (bad URL, 4xx)."""
    from websockets.exceptions import InvalidStatus, InvalidURI

    if isinstance(err, InvalidURI):
        return f"bad url: {err}"
    if isinstance(err, InvalidStatus):
        status = err.response.status_code
        if 400 <= status < 500 and status not in (408, 429):
            return f"the server answered HTTP {status}"
    return None


# -- command line ----------------------------------------------------------------------------


def list_devices(out: TextIO = sys.stdout) -> int:
    """Print the input devices; 0, or 2 when PortAudio is not available."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as err:
        print(f"sounddevice is not available ({err}); pip install -e '.[mic]' and "
              f"install PortAudio (Debian: libportaudio2)", file=sys.stderr)
        return 2
    try:
        devices = list(sd.query_devices())
        default_in = sd.default.device[0]
    except Exception as err:  # noqa: BLE001 - PortAudio errors
        print(f"could not list devices: {err}", file=sys.stderr)
        return 2
    inputs = [(i, d) for i, d in enumerate(devices) if d.get("max_input_channels", 0) > 0]
    if not inputs:
        print("no input devices", file=out)
        return 0
    print(f"{'':2}{'index':>5}  {'name':<40} {'rate':>8}  channels", file=out)
    for index, dev in inputs:
        mark = "*" if index == default_in else " "
        print(f"{mark:2}{index:>5}  {str(dev['name'])[:40]:<40} "
              f"{int(dev['default_samplerate']):>6} Hz  {dev['max_input_channels']}", file=out)
    return 0


def _device(text: str | None) -> int | str | None:
    if text is None:
        return None
    return int(text) if text.strip().isdigit() else text


async def _run(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    try:
        source = SoundDeviceSource(_device(args.device), channels=args.channels,
                                   block_ms=args.block_ms)
    except (ImportError, OSError) as err:
        print(f"error: sounddevice is not available ({err}); pip install -e '.[mic]'",
              file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - PortAudio: no such device, no input
        if "querying device -1" in str(err):  # PortAudio found no default input device
            print("error: no input device (no microphone or sound card found): connect one, "
                  "or pick one with --device (see --list-devices)", file=sys.stderr)
        else:
            print(f"error: {err} (see --list-devices)", file=sys.stderr)
        return 2
    queue = BlockQueue(args.max_queue_blocks, loop)
    streamer = MicStreamer(args.urls, args.room, queue, source.sample_rate,
                           channels=source.channels, mic=args.mic, token=args.token,
                           out=sys.stdout)
    streamer.status.line(f"capturing {source.device_name!r} at {source.sample_rate} Hz, "
                         f"{source.channels} channel(s); Ctrl-C to stop")
    main_task = asyncio.current_task()

    def on_signal() -> None:
        if streamer.stopping and main_task is not None:
            main_task.cancel()  # a second Ctrl-C: do not wait for bye
            return
        streamer.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    try:
        source.start(queue)
    except Exception as err:  # noqa: BLE001 - PortAudio could not open the stream
        print(f"error: could not open the input stream: {err}", file=sys.stderr)
        return 2
    try:
        await streamer.run()
    except FatalError as err:
        print(f"error: {with_token_advice(str(err), 'ingest')}", file=sys.stderr)
        return 1
    except asyncio.CancelledError:
        return 130
    finally:
        source.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description="Stream a live microphone to a voiceprint streamer server and show "
                    "who is speaking.")
    parser.add_argument("--room", help="room name (required unless --list-devices)")
    parser.add_argument("--url", action="append",
                        help="server address (default ws://127.0.0.1:8765); repeat it or "
                             "separate addresses with commas to move to the next server "
                             "when one is lost")
    parser.add_argument("--device", help="input device index or (part of its) name; "
                                         "default: the system's default input")
    parser.add_argument("--mic", default="default", help="microphone name shown to displays")
    parser.add_argument("--token", help="bearer token with the ingest role")
    parser.add_argument("--channels", type=int, choices=(1, 2), default=1)
    parser.add_argument("--block-ms", type=float, default=100.0,
                        help="capture block length in ms (default 100)")
    parser.add_argument("--max-queue-blocks", type=int, default=50,
                        help="blocks kept while the network is slow or down; the oldest "
                             "are dropped beyond this (default 50)")
    parser.add_argument("--list-devices", action="store_true",
                        help="print the input devices and exit")
    args = parser.parse_args(argv)
    if args.list_devices:
        return list_devices()
    if not args.room:
        parser.error("--room is required")
    try:
        args.urls = server_urls(args.url)
    except ValueError as err:
        parser.error(str(err))
    if args.block_ms <= 0 or args.max_queue_blocks < 1:
        parser.error("--block-ms must be > 0 and --max-queue-blocks >= 1")
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
