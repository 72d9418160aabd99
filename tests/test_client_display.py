"""clients/display.py: the pure view and renderer, and the display against a real server.

The integration tests stream an enrolled speaker's LibriSpeech utterance into a room
with ``clients/stream_file.stream_file`` (as fast as possible) while a display follows
the room: in process (:func:`run_display` feeding a :class:`RoomView`), with
``--once-json``, and as a subprocess in line mode (stdout is a pipe, not a terminal).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from server_support import running_server

from clients.display import RoomView, now_line, render, run_display
from clients.stream_file import stream_file

REPO = Path(__file__).resolve().parents[1]
DISPLAY = REPO / "clients" / "display.py"
TS = 1_700_000_000.0

ADA = {"id": "p_ada", "name": "Ada Lovelace"}
GRACE = {"id": "p_grace", "name": "Grace Hopper"}


def speaker(stream: str, segment: int, person: dict[str, str] | None, distance: float,
            *, final: bool = False, mic: str = "ceiling", start: float = 1.0,
            end: float = 2.5, ts: float = TS) -> dict[str, Any]:
    cands = [{**p, "distance": d} for p, d in ((ADA, distance), (GRACE, 1.21))]
    return {"type": "speaker", "room": "r", "mic": mic, "stream": stream, "segment": segment,
            "final": final, "start": start, "end": end, "person": person,
            "distance": distance, "candidates": cands, "ts": ts}


def entry(person: dict[str, str] | None, distance: float | None, *, final: bool = False,
          mics: tuple[str, ...] = ("ceiling",), pending: bool = False) -> dict[str, Any]:
    e: dict[str, Any] = {"person": person, "distance": distance, "final": final,
                         "candidates": [] if person is None and distance is None else
                         [{**ADA, "distance": distance}],
                         "mics": list(mics), "streams": []}
    if pending:
        e["pending"] = True
    return e


def view_with(*speaking: dict[str, Any]) -> RoomView:
    view = RoomView("r")
    view.set_status("connected", True)
    view.feed({"type": "snapshot", "room": "r", "speaking": [], "recent": []})
    view.feed({"type": "room_state", "room": "r", "speaking": list(speaking), "ts": TS})
    return view


def now_section(text: str) -> list[str]:
    """The screen lines between the header and the timeline."""
    lines = text.splitlines()
    return lines[2 : lines.index(next(x for x in lines if x.startswith("---")))]


# -- render() ------------------------------------------------------------------------------------


def test_render_silence() -> None:
    view = view_with()
    text = render(view, now=TS)
    assert "silence" in now_section(text)[0]
    assert " r  (connected)" in text.splitlines()[0]
    assert "none yet" in text
    assert now_line(view) == "r: silence"
    assert "\x1b[" not in text and "\x1b[" in render(view, now=TS, ansi=True)


def test_render_provisional_vs_final() -> None:
    provisional = render(view_with(entry(ADA, 0.62)), now=TS)
    final = render(view_with(entry(ADA, 0.58, final=True)), now=TS)
    assert "ADA LOVELACE?" in provisional and "0.62" in provisional
    assert "(provisional)" in provisional
    assert "ADA LOVELACE" in final and "ADA LOVELACE?" not in final
    assert "(provisional)" not in final
    assert "candidates: Ada Lovelace 0.58" in final


def test_render_unknown_and_pending() -> None:
    text = render(view_with(entry(None, 1.31)), now=TS)
    assert "UNKNOWN SPEAKER?" in text and "1.31" in text
    pending = render(view_with(entry(None, None, pending=True, mics=("table",))), now=TS)
    assert ">> ..." in pending and "mics: table" in pending


def test_two_mics_hearing_one_person_render_one_line() -> None:
    # the server's merge (room_state): one entry listing both mics
    text = render(view_with(entry(ADA, 0.55, mics=("ceiling", "table"))), now=TS)
    assert sum(">>" in line for line in now_section(text)) == 1
    assert "mics: ceiling, table" in text
    # an older server without room_state: the display merges the speaker events itself
    view = RoomView("r")
    view.feed({"type": "snapshot", "room": "r", "speaking": [], "recent": []})
    for stream, mic, d in (("s_1", "ceiling", 0.71), ("s_2", "table", 0.55)):
        view.feed({"type": "speech_start", "room": "r", "mic": mic, "stream": stream,
                   "segment": 1, "t": 0.5, "ts": TS})
        view.feed(speaker(stream, 1, ADA, d, mic=mic))
    assert not view.server_merges
    text = render(view, now=TS)
    now = now_section(text)
    assert sum(">>" in line for line in now) == 1
    assert "ADA LOVELACE?   0.55" in text  # the nearest guess wins
    assert "mics: ceiling, table" in text
    # and a second person is a second line
    view.feed({"type": "speech_start", "room": "r", "mic": "door", "stream": "s_3",
               "segment": 4, "t": 0.5, "ts": TS})
    view.feed(speaker("s_3", 4, GRACE, 0.6, mic="door"))
    assert sum(">>" in line for line in now_section(render(view, now=TS))) == 2


def test_timeline_from_snapshot_recent_and_finals() -> None:
    view = RoomView("r")
    recent = [speaker("s_1", 1, ADA, 0.5, final=True, start=0.0, end=3.0, ts=TS),
              speaker("s_1", 2, GRACE, 0.6, final=True, start=4.0, end=5.5, ts=TS + 5)]
    view.feed({"type": "snapshot", "room": "r", "speaking": [], "recent": recent})
    view.feed({"type": "room_state", "room": "r", "speaking": [], "ts": TS + 6})
    assert view.feed(speaker("s_1", 3, ADA, 0.45, final=True, start=6.0, end=10.0, ts=TS + 10))
    view.feed(speaker("s_2", 1, None, 1.3, final=True, start=0.0, end=1.5, ts=TS + 11))
    # a reconnection repeats the recent finals: they are not counted twice
    view.feed({"type": "snapshot", "room": "r", "speaking": [], "recent": recent})
    assert len(view.turns) == 4
    text = render(view, now=TS + 12, width=100)
    timeline = text.split("last turns")[1].splitlines()[1:]
    # most recent person first; Ada: 2 turns, 7 s in all, newest first
    assert timeline[0].strip().startswith("unknown speaker")
    ada = next(line for line in timeline if "Ada Lovelace" in line)
    assert " 2 turns " in ada and "7.0s" in ada and "1 turn " in timeline[0]
    assert ada.index("4.0s (0.45)") < ada.index("3.0s (0.50)")
    assert "Grace Hopper" in text and "1.5s (0.60)" in text
    assert "silence" in now_section(text)[0]
    # long names and many turns stay within the width
    narrow = render(view, now=TS, width=60).splitlines()
    assert all(len(line) <= 60 for line in narrow)
    ada = next(line for line in narrow if "Ada Lovelace" in line)
    assert "4.0s (0.45)" in ada and "3.0s" not in ada  # whole cells only


def test_to_json_round_trips() -> None:
    view = view_with(entry(ADA, 0.62, mics=("a", "b")))
    state = json.loads(json.dumps(view.to_json()))
    assert state["speaking"][0]["label"] == "Ada Lovelace?"
    assert state["speaking"][0]["mics"] == ["a", "b"]


# -- against a real server -------------------------------------------------------------------------


@pytest.fixture
def data_dir(client_people: dict[str, Any], tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(client_people["data_dir"], target)
    return target


async def test_display_follows_a_stream(tmp_path: Path, data_dir: Path,
                                        client_people: dict[str, Any]) -> None:
    utterance = client_people["files"]["ada"][3]
    seen: list[str] = []
    updates: list[RoomView] = []
    async with running_server(tmp_path, data_dir=data_dir) as server:
        stop = asyncio.Event()
        connected = asyncio.Event()

        def on_update(view: RoomView) -> None:
            updates.append(view)
            if view.connected:
                connected.set()
            seen.append(render(view, now=TS))

        view = RoomView("board")
        task = asyncio.create_task(run_display(server.url, "board", view=view,
                                               on_update=on_update, stop=stop))
        await asyncio.wait_for(connected.wait(), 5)
        messages = await stream_file(server.url, utterance, "board", mic="ceiling", speed=0)
        # the view ends on silence with the turn in its timeline
        async with asyncio.timeout(5):
            while view.speaking or not view.turns:
                await asyncio.sleep(0.02)
        once = await asyncio.create_subprocess_exec(
            sys.executable, str(DISPLAY), "--room", "board", "--url", server.url,
            "--once-json", stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(once.communicate(), 10)
        stop.set()
        await asyncio.wait_for(task, 5)
    finals = [m for m in messages if m["type"] == "speaker" and m["final"]]
    assert finals and finals[0]["person"]["name"] == "Ada Lovelace"
    assert view.server_merges
    assert any(">> ADA LOVELACE?" in s for s in seen), "no provisional guess shown"
    assert [t.name for t in view.turns] == ["Ada Lovelace"] * len(finals)
    assert "Ada Lovelace" in render(view).split("last turns")[1]
    assert once.returncode == 0
    state = json.loads(out)
    assert state["room"] == "board" and state["speaking"] == []
    assert [t["name"] for t in state["turns"]] == ["Ada Lovelace"] * len(finals)


async def _read_until(stream: asyncio.StreamReader, needle: str, lines: list[str],
                      timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            raw = await stream.readline()
            if not raw:
                raise AssertionError(f"display exited before {needle!r}: {lines}")
            lines.append(raw.decode())
            if needle in lines[-1]:
                return


async def test_display_subprocess_line_mode(tmp_path: Path, data_dir: Path,
                                            client_people: dict[str, Any]) -> None:
    utterance = client_people["files"]["ada"][5]
    lines: list[str] = []
    async with running_server(tmp_path, data_dir=data_dir) as server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(DISPLAY), "--room", "board", "--url", server.url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            assert proc.stdout is not None
            await _read_until(proc.stdout, "board: connected", lines, 10)
            await stream_file(server.url, utterance, "board", mic="ceiling", speed=0)
            await _read_until(proc.stdout, "board: turn Ada Lovelace", lines, 10)
            await _read_until(proc.stdout, "board: silence", lines, 5)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
            out, err = await asyncio.wait_for(proc.communicate(), 10)
    lines += out.decode().splitlines(keepends=True)
    text = "".join(lines)
    assert proc.returncode == 0, err.decode()
    print("\n" + text)
    assert "\x1b[" not in text  # no screen control codes when not on a terminal
    assert "board: Ada Lovelace?" in text  # provisional
    assert "board: turn Ada Lovelace" in text  # final


async def test_display_reconnects_after_server_restart(tmp_path: Path, data_dir: Path,
                                                       client_people: dict[str, Any]) -> None:
    from test_client_mic import server_on_port  # a server on a fixed port

    utterance = client_people["files"]["ada"][8]
    statuses: list[str] = []
    view = RoomView("board")
    stop = asyncio.Event()

    def on_update(v: RoomView) -> None:
        if not statuses or statuses[-1] != v.status:
            statuses.append(v.status)

    async with server_on_port(tmp_path, data_dir, 0) as first:
        port = first.port
        task = asyncio.create_task(run_display(first.url, "board", view=view,
                                               on_update=on_update, stop=stop))
        async with asyncio.timeout(5):
            while not view.connected:
                await asyncio.sleep(0.02)
    started = time.monotonic()
    async with asyncio.timeout(5):
        while view.connected:
            await asyncio.sleep(0.02)
    async with server_on_port(tmp_path, data_dir, port) as second:
        async with asyncio.timeout(15):
            while not view.connected:
                await asyncio.sleep(0.02)
        reconnect_s = time.monotonic() - started
        await stream_file(second.url, utterance, "board", speed=0)
        async with asyncio.timeout(5):
            while not view.turns:
                await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 5)
    print(f"\ndisplay reconnected {reconnect_s:.2f} s after the server stopped")
    assert statuses[0] == "connected" and statuses[-1] == "connected"
    assert any(s.startswith("disconnected") for s in statuses)
    assert view.turns[-1].name == "Ada Lovelace"
