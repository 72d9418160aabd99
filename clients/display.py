"""A room display in a terminal: who is speaking now, and the last turns per person.

Usage::

    python clients/display.py --room ROOM [--url ws://127.0.0.1:8765 ...] [--token T]
                              [--once-json]

Connects to ``/v1/events?room=ROOM`` (JSON) and follows the room. On a terminal the
screen is redrawn (plain ANSI, no curses) on every change; when stdout is not a terminal
(a log, a pipe) one line is printed per change instead. ``--once-json`` prints the
room's current state as one JSON object and exits (for scripts and health checks).
After a server restart or a network failure it reconnects with back-off (0.5 s .. 10 s).
With several servers (``--url`` repeated or comma-separated, :mod:`clients.failover`) a
lost or refused connection moves to the next address at once (the status says which),
where the display gets a new snapshot; the back-off starts only after a whole round of
the list has failed. ``--once-json`` uses the first address that answers.

"Now" comes from the ``room_state`` messages (the server's merge over all microphones of
the room); with a server that does not send them, the same merge is done here from the
speaker events (:mod:`streamer.room`). The timeline is built from the final ``speaker``
events and the ``recent`` list of the ``snapshot``.

The screen is a pure function, :func:`render`, of a :class:`RoomView` fed with messages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clients.failover import Failover, server_urls
from streamer import wire
from streamer.connect import explain, with_token_advice
from streamer.room import RoomState

__all__ = ["RoomView", "Turn", "backoff_delay", "main", "now_line", "render", "run_display"]

#: Close codes after which reconnecting cannot help (unauthorized, forbidden, no room).
FATAL_CLOSE_CODES = (1003, 1008)


@dataclass(frozen=True)
class Turn:
    """One finished turn (a final ``speaker`` event)."""

    stream: str
    segment: int
    name: str | None  # None: unknown speaker
    person_id: str | None
    start: float  # stream time
    end: float
    distance: float | None
    ts: float  # server wall clock when the turn was decided
    mic: str

    @property
    def duration_s(self) -> float:
        return max(0.0, self.end - self.start)

    @classmethod
    def from_event(cls, e: dict[str, Any]) -> Turn:
        person = e.get("person")
        return cls(
            stream=str(e.get("stream")), segment=int(e.get("segment") or 0),
            name=str(person["name"]) if person else None,
            person_id=str(person["id"]) if person else None,
            start=float(e.get("start") or 0.0), end=float(e.get("end") or 0.0),
            distance=e.get("distance"), ts=float(e.get("ts") or time.time()),
            mic=str(e.get("mic", "")),
        )


@dataclass
class RoomView:
    """What a display knows about a room. Feed every message to :meth:`feed`."""

    room: str
    max_turns: int = 200
    status: str = "connecting"
    connected: bool = False
    speaking: list[dict[str, Any]] = field(default_factory=list)
    turns: deque[Turn] = field(default_factory=deque)
    new_turns: list[Turn] = field(default_factory=list)  # not yet printed (line mode)
    updated: float = 0.0
    server_merges: bool = False
    _local: RoomState = field(init=False)
    _seen: set[tuple[str, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._local = RoomState(self.room)

    def set_status(self, text: str, connected: bool) -> None:
        self.status = text
        self.connected = connected

    def feed(self, message: dict[str, Any]) -> bool:
        """Apply one message; True when the view changed."""
        kind = message.get("type")
        self.updated = float(message.get("ts") or self.updated or 0.0)
        if kind == "snapshot":
            self._local = RoomState(self.room)
            for event in message.get("speaking") or []:
                self._local.update(event)
            for event in message.get("recent") or []:
                self._add_turn(event)
            if not self.server_merges:
                self.speaking = self._local.speaking()
            return True
        if kind == "room_state":
            self.server_merges = True
            self.speaking = list(message.get("speaking") or [])
            return True
        if kind in ("speech_start", "speaker", "speech_end"):
            changed = self._local.update(message)
            if kind == "speaker" and message.get("final"):
                changed = self._add_turn(message) or changed
            if changed and not self.server_merges:
                self.speaking = self._local.speaking()
            return changed
        return False

    def _add_turn(self, event: dict[str, Any]) -> bool:
        key = (str(event.get("stream")), int(event.get("segment") or 0))
        if key in self._seen:
            return False
        self._seen.add(key)
        turn = Turn.from_event(event)
        self.turns.append(turn)
        self.new_turns.append(turn)
        while len(self.turns) > self.max_turns:
            old = self.turns.popleft()
            self._seen.discard((old.stream, old.segment))
        return True

    def take_new_turns(self) -> list[Turn]:
        turns, self.new_turns = self.new_turns, []
        return turns

    def to_json(self) -> dict[str, Any]:
        """The state as plain JSON (``--once-json``)."""
        return {
            "room": self.room,
            "connected": self.connected,
            "speaking": [{"label": entry_label(e), "person": e.get("person"),
                          "final": bool(e.get("final")), "distance": e.get("distance"),
                          "pending": bool(e.get("pending")), "mics": e.get("mics", []),
                          "candidates": e.get("candidates", [])} for e in self.speaking],
            "turns": [{"name": t.name, "person": t.person_id, "start": t.start, "end": t.end,
                       "distance": t.distance, "ts": t.ts, "mic": t.mic} for t in self.turns],
        }


# -- rendering (pure) --------------------------------------------------------------------------


def entry_label(entry: dict[str, Any]) -> str:
    """``Ada Lovelace?`` (provisional), ``Ada Lovelace`` (final), ``unknown speaker``, ``...``."""
    if entry.get("pending"):
        return "..."
    person = entry.get("person")
    name = str(person["name"]) if person else "unknown speaker"
    return name if entry.get("final") else name + "?"


def _dist(d: Any) -> str:
    return "" if d is None else f"{float(d):.2f}"


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


def now_line(view: RoomView) -> str:
    """One line for who is speaking now (line mode, and the summary of the screen)."""
    if not view.speaking:
        return f"{view.room}: silence"
    parts = []
    for e in view.speaking:
        dist = _dist(e.get("distance"))
        mics = ",".join(str(m) for m in e.get("mics", []))
        parts.append(entry_label(e) + (f" ({dist})" if dist else "")
                     + (f" [{mics}]" if mics else ""))
    return f"{view.room}: " + " | ".join(parts)


def turn_line(view: RoomView, turn: Turn) -> str:
    """One line for a finished turn (line mode)."""
    dist = _dist(turn.distance)
    return (f"{view.room}: turn {turn.name or 'unknown speaker'} {turn.duration_s:.1f} s"
            + (f" ({dist})" if dist else "") + f" [{turn.mic}] "
            f"{turn.start:.1f}-{turn.end:.1f} s")


def render(view: RoomView, *, width: int = 80, ansi: bool = False, now: float | None = None,
           turns_per_person: int = 4, max_people: int = 8) -> str:
    """The whole screen for ``view`` as text (``ansi``: bold/dim/colour escapes)."""
    width = max(40, width)

    def style(text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if ansi else text

    clock = _clock(now if now is not None else time.time())
    head = f" {view.room}  ({view.status})"
    lines = [style(_fit(head, width - len(clock) - 1).ljust(width - len(clock) - 1)
                   + clock, "7"), ""]

    # now: big-ish names
    if not view.speaking:
        lines.append("   " + style("silence", "2"))
    for e in view.speaking:
        label = entry_label(e)
        big = label.upper()
        dist = _dist(e.get("distance"))
        known = e.get("person") is not None
        code = "1;32" if known and e.get("final") else "1;33" if known else "1;35"
        text = "  >> " + big + (f"   {dist}" if dist else "")
        if not e.get("final") and not e.get("pending"):
            text += "   (provisional)"
        lines.append(style(_fit(text, width), code))
        mics = ", ".join(str(m) for m in e.get("mics", []))
        if mics:
            lines.append(style(_fit(f"       mics: {mics}", width), "2"))
        cands = e.get("candidates") or []
        if cands:
            shown = ", ".join(f"{c.get('name')} {_dist(c.get('distance'))}" for c in cands[:4])
            lines.append(_fit(f"       candidates: {shown}", width))
    lines.append("")
    lines.append(style("-" * width, "2"))

    # timeline: the last turns per person, most recent person first
    lines.append(" last turns")
    by_person: dict[str, list[Turn]] = {}
    for turn in reversed(view.turns):
        by_person.setdefault(turn.name or "unknown speaker", []).append(turn)
    if not by_person:
        lines.append("   " + style("none yet", "2"))
    name_w = min(24, max((len(n) for n in by_person), default=0))
    for name, turns in list(by_person.items())[:max_people]:
        total = sum(t.duration_s for t in turns)
        count = f"{len(turns)} turn" + ("" if len(turns) == 1 else "s")
        line = f"   {name[:name_w]:<{name_w}}  {count:>8} {total:6.1f}s "
        for i, t in enumerate(turns[:turns_per_person]):
            dist = _dist(t.distance)
            cell = (" | " if i else " ") + f"{_clock(t.ts)} {t.duration_s:.1f}s" + (
                f" ({dist})" if dist else "")
            if len(line) + len(cell) > width:
                break
            line += cell
        lines.append(_fit(line, width))
    return "\n".join(lines) + "\n"


# -- the client --------------------------------------------------------------------------------


def backoff_delay(attempt: int, initial_s: float = 0.5, max_s: float = 10.0,
                  rng: random.Random | None = None) -> float:
    """Doubling from ``initial_s`` to ``max_s``, jittered by +-25 %, within those bounds."""
    base = min(max_s, initial_s * 2.0 ** min(attempt, 30))
    return max(initial_s, min(max_s, base * (rng or random).uniform(0.75, 1.25)))


class FatalError(Exception):
    """The server refused the display (unauthorized, forbidden, bad room)."""


class Screen:
    """Writes a view: full redraws on a terminal, one line per change otherwise."""

    def __init__(self, view: RoomView, out: TextIO | None, tty: bool | None = None) -> None:
        self.view = view
        self.out = out
        self.tty = bool(tty if tty is not None else (out is not None and out.isatty()))
        self._last_now: str | None = None
        self._last_status: str | None = None

    def update(self) -> None:
        out = self.out
        if out is None:
            self.view.take_new_turns()
            return
        if self.tty:
            import shutil

            size = shutil.get_terminal_size((80, 24))
            out.write("\x1b[H\x1b[2J" + render(self.view, width=size.columns, ansi=True))
            self.view.take_new_turns()
        else:
            stamp = time.strftime("%H:%M:%S")
            if self.view.status != self._last_status:
                self._last_status = self.view.status
                out.write(f"{stamp} {self.view.room}: {self.view.status}\n")
            for turn in self.view.take_new_turns():
                out.write(f"{stamp} {turn_line(self.view, turn)}\n")
            line = now_line(self.view)
            if line != self._last_now:
                self._last_now = line
                out.write(f"{stamp} {line}\n")
        out.flush()


def events_url(url: str, room: str) -> str:
    return f"{url.rstrip('/')}/v1/events?room={quote(room, safe='')}&encoding=json"


async def run_display(
    url: str | Sequence[str],
    room: str,
    *,
    token: str | None = None,
    view: RoomView | None = None,
    out: TextIO | None = None,
    tty: bool | None = None,
    on_update: Callable[[RoomView], None] | None = None,
    backoff_initial_s: float = 0.5,
    backoff_max_s: float = 10.0,
    stop: asyncio.Event | None = None,
) -> RoomView:
    """Follow ``room`` until ``stop`` is set (or the task is cancelled); reconnect on
    failures. Raises :class:`FatalError` when the server refuses the display.

    ``url`` is one server's base URL or several (a list, or comma-separated): a lost or
    refused connection then moves to the next at once (status ``moving to URL (...)``,
    then ``connected to URL`` after its snapshot); the back-off starts only after a
    whole round of the list has failed.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus, InvalidURI

    view = view or RoomView(room)
    screen = Screen(view, out, tty)
    stop = stop or asyncio.Event()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    servers = Failover(server_urls(url))

    def changed() -> None:
        screen.update()
        if on_update is not None:
            on_update(view)

    while not stop.is_set():
        reason = "connection closed"
        current = servers.current
        connected = f"connected to {current}" if servers.several else "connected"
        try:
            async with connect(events_url(current, room), additional_headers=headers,
                               max_size=None, compression=None) as ws:
                reader = asyncio.create_task(_read(ws, view, changed, connected))
                stopper = asyncio.create_task(stop.wait())
                try:
                    await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopper.cancel()
                    if not reader.done():
                        reader.cancel()
                    await asyncio.gather(reader, stopper, return_exceptions=True)
                if reader.done() and not reader.cancelled() and reader.result():
                    servers.succeeded()  # it had connected and followed the room
                code = ws.close_code
                if code in FATAL_CLOSE_CODES:
                    raise FatalError(f"the server closed the display: {code} "
                                     f"{ws.close_reason or ''}".strip())
                if code is not None:
                    reason = f"closed {code} {ws.close_reason or ''}".strip()
        except FatalError:
            raise
        except InvalidURI as err:
            raise FatalError(f"bad url: {err}") from err
        except InvalidStatus as err:
            status = err.response.status_code
            if 400 <= status < 500 and status not in (408, 429):
                raise FatalError(f"the server answered HTTP {status}") from err
            reason = f"HTTP {status}"
        except (OSError, TimeoutError, Exception) as err:  # noqa: BLE001 - refused, reset
            reason = str(err) or type(err).__name__
        if stop.is_set():
            break
        backoff_round = servers.failed()
        if backoff_round is None:  # another server to try at once
            view.set_status(f"moving to {servers.current} ({current}: {reason[:60]})", False)
            changed()
            continue
        delay = backoff_delay(backoff_round, backoff_initial_s, backoff_max_s)
        view.set_status(f"disconnected ({reason[:60]}); reconnecting in {delay:.1f} s", False)
        changed()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()
    return view


async def _read(ws: Any, view: RoomView, changed: Callable[[], None],
                connected: str = "connected") -> bool:
    """Feed messages to ``view`` until the connection closes; True if a snapshot came
    (the status is then ``connected``)."""
    got_snapshot = False
    with contextlib.suppress(Exception):  # ConnectionClosed: the caller reconnects
        async for raw in ws:
            message, _ = wire.decode(raw)
            if message.get("type") == "error":
                view.set_status(f"error: {message.get('message')}", False)
                changed()
                continue
            if message.get("type") == "snapshot":
                got_snapshot = True
                view.set_status(connected, True)
            if view.feed(message):
                changed()
    return got_snapshot


async def once_json(url: str, room: str, token: str | None = None,
                    timeout_s: float = 5.0) -> dict[str, Any]:
    """Connect once, read the snapshot and the first ``room_state``, return the state."""
    from websockets.asyncio.client import connect

    view = RoomView(room)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with connect(events_url(url, room), additional_headers=headers,
                       max_size=None, compression=None) as ws:
        view.set_status("connected", True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                async for raw in ws:
                    message, _ = wire.decode(raw)
                    if message.get("type") == "error":
                        raise FatalError(str(message.get("message")))
                    view.feed(message)
                    if message.get("type") == "room_state":
                        break
                    if message.get("type") == "snapshot":
                        # an older server sends no room_state: do not wait for long
                        timeout_s = 1.0
    return view.to_json()


def _print_once_json(urls: list[str], room: str, token: str | None, debug: bool) -> int:
    """``--once-json``: print the state from the first server that answers; 0, or 1 with
    the last server's error line (each server passed over is named on stderr)."""
    for n, url in enumerate(urls, 1):
        try:
            state = asyncio.run(once_json(url, room, token))
        except Exception as err:  # refused, closed, fatal
            line = explain(err, url, "display") or with_token_advice(str(err), "display")
            if n < len(urls):
                print(f"{url}: {line}; trying {urls[n]}", file=sys.stderr)
                continue
            if debug:
                raise
            print(f"error: {line}", file=sys.stderr)
            break
        else:
            print(json.dumps(state))
            return 0
    return 1


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description="Show who is speaking in a room (a terminal room display).")
    parser.add_argument("--room", required=True)
    parser.add_argument("--url", action="append",
                        help="server address (default ws://127.0.0.1:8765); repeat it or "
                             "separate addresses with commas to move to the next server "
                             "when one is lost")
    parser.add_argument("--token", help="bearer token with the display role")
    parser.add_argument("--once-json", action="store_true",
                        help="print the room's current state as JSON and exit")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    try:
        urls = server_urls(args.url)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    if args.once_json:
        return _print_once_json(urls, args.room, args.token, args.debug)

    tty = sys.stdout.isatty()

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await run_display(urls, args.room, token=args.token, out=sys.stdout, tty=tty,
                              stop=stop)
        except FatalError as err:
            if args.debug:
                raise
            print(f"error: {with_token_advice(str(err), 'display')}", file=sys.stderr)
            return 1
        return 0

    if tty:
        sys.stdout.write("\x1b[?25l")  # hide the cursor while redrawing
    try:
        return asyncio.run(run())
    finally:
        if tty:
            sys.stdout.write("\x1b[?25h\n")
            sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
