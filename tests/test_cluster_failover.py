"""Servers of a cluster that die: ``kill -9`` mid-stream, and a restart after missed changes.

Each server is its own ``streamer serve --config FILE`` process on one real PostgreSQL
and one real NATS (tests/cluster_support.py), so ``kill -9`` is a real crash.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import yaml
from cluster_support import Nats
from server_support import api_call, read_flac
from cluster_support import free_port
from test_cli import cli_process, run
from test_cluster import SPEAKERS, enrol, named, utterances
from websockets.asyncio.client import connect

from clients.stream_file import stream_file
from streamer import wire

pytestmark = pytest.mark.slow

LISTENING = re.compile(r"listening on (ws://127\.0\.0\.1:(\d+))\s*")


class Node:
    def __init__(self, name: str, folder: Path, database_url: str, nats_url: str) -> None:
        self.name = name
        self.folder = folder
        self.config = folder / "config.yaml"
        folder.mkdir(parents=True, exist_ok=True)
        self.config.write_text(yaml.safe_dump({
            "registry": {"data_dir": "data", "url": database_url, "poll_s": 0.5},
            "cluster": {"nats_url": nats_url, "node": name, "heartbeat_s": 0.2,
                        "node_timeout_s": 1.0},
            "worker": {"max_queued_jobs": 10_000},
        }))
        self.url = ""
        self.proc: Any = None
        self._stack = ExitStack()

    def start(self) -> None:
        proc, m, _ = self._stack.enter_context(cli_process(
            self.folder, ["serve", "--config", str(self.config), "--port", "0"], LISTENING,
            self.folder / f"serve-{time.monotonic_ns()}.log"))
        self.proc, self.url = proc, m.group(1)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._stack.close()

    def close(self) -> None:
        self._stack.close()


@contextmanager
def nodes(tmp_path: Path, database_url: str, nats_url: str, *names: str) -> Iterator[list[Node]]:
    started = [Node(n, tmp_path / n, database_url, nats_url) for n in names]
    try:
        for node in started:
            node.start()
        yield started
    finally:
        for node in started:
            node.close()


@pytest.fixture(scope="module")
def long_talk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 40 s of the two enrolled speakers taking turns."""
    parts = []
    for i in range(3, 8):
        for speaker in SPEAKERS:
            parts += [read_flac(utterances(speaker)[i]), np.zeros(9600, np.float32)]
    path = tmp_path_factory.mktemp("talk") / "talk.wav"
    sf.write(path, np.concatenate(parts), 16000)
    return path


async def test_kill_9_mid_stream_loses_nothing_acknowledged(
        tmp_path: Path, database_url: str, nats: Nats, long_talk: Path) -> None:
    with nodes(tmp_path, database_url, nats.url, "a", "b") as (a, b):
        people = {s: await enrol(a.url, s) for s in SPEAKERS}  # acknowledged by A
        seen: list[tuple[float, dict[str, Any]]] = []
        moved: list[tuple[float, str]] = []

        async def display() -> None:
            async with connect(f"{b.url}/v1/events?room=r") as ws:
                async for raw in ws:
                    seen.append((time.monotonic(), wire.decode(raw)[0]))

        watcher = asyncio.create_task(display())
        killed_at: list[float] = []

        readies: list[float] = []

        def on_message(message: dict[str, Any], _: float) -> None:
            if message.get("type") == "ready":
                readies.append(time.monotonic())
            # kill A once the stream has produced a couple of finals there
            if (not killed_at and message.get("type") == "speaker" and message.get("final")
                    and message.get("end", 0) > 8):
                a.kill()
                killed_at.append(time.monotonic())

        def on_failover(failed: str, next_url: str, error: Any, resume_s: float) -> None:
            moved.append((time.monotonic(), next_url))

        messages = await stream_file([a.url, b.url], long_talk, "r", mic="table", speed=2.0,
                                     on_message=on_message, on_failover=on_failover)
        await asyncio.sleep(0.3)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)

        assert killed_at and moved and moved[0][1] == b.url
        assert len([m for m in messages if m["type"] == "ready"]) == 2  # a new hello on B
        # the mic streams on B within 2 s of the kill (B's ready to its new hello)
        assert len(readies) == 2 and readies[1] - killed_at[0] <= 2.0
        assert any(m.get("node") == "b" for _, m in seen)  # and B's display hears it
        # the display on B kept going: finals from A before the kill, from B after
        finals = [m for _, m in seen if m.get("type") == "speaker" and m.get("final")]
        assert {m["node"] for m in finals} == {"a", "b"}
        after = [m for m in finals if m["node"] == "b"]
        assert {m["person"]["id"] for m in after if m["person"]} <= {
            p["id"] for p in people.values()} and any(m["person"] for m in after)
        # A's stream left the room: the last room_state names nobody from A's stream
        states = [m for _, m in seen if m.get("type") == "room_state"]
        a_stream = next(m["stream"] for m in finals if m["node"] == "a")
        assert all(a_stream not in e["streams"] for e in states[-1]["speaking"])
        # nothing acknowledged by A is lost
        listed = await api_call(b.url, {"type": "people", "id": 1})
        assert {p["id"] for p in listed["people"]} == {p["id"] for p in people.values()}


async def test_a_restarted_server_catches_up_before_it_answers(
        tmp_path: Path, database_url: str, nats: Nats) -> None:
    with nodes(tmp_path, database_url, nats.url, "a", "b") as (a, b):
        early = await enrol(a.url, SPEAKERS[0])
        probe = {s: read_flac(utterances(s)[5]) for s in SPEAKERS}
        for _ in range(50):  # B has it (and has saved its index cache)
            if await named(b.url, probe[SPEAKERS[0]]) == early["id"]:
                break
            await asyncio.sleep(0.1)
        b.kill()
        late = await enrol(a.url, SPEAKERS[1])  # B misses both changes
        reply = await api_call(a.url, {"type": "delete_person", "id": 2, "person": early["id"]})
        assert reply["type"] == "deleted"
        b.start()
        # the first answers B gives already reflect both
        assert await named(b.url, probe[SPEAKERS[1]]) == late["id"]
        assert await named(b.url, probe[SPEAKERS[0]]) is None
        cache = (b.folder / "data").glob("index-*.json")
        assert all(early["id"] not in p.read_text() for p in cache)


def test_unreachable_database_or_broker_stops_the_start_with_one_line(
        tmp_path: Path, database_url: str, nats: Nats) -> None:
    dead = free_port()
    cases = {
        "nats": ({"registry": {"url": database_url}, "cluster": {"nats_url":
                  f"nats://127.0.0.1:{dead}"}}, f"cannot connect to NATS at nats://127.0.0.1:{dead}"),
        "db": ({"registry": {"url": f"postgresql://u:secret@127.0.0.1:{dead}/x", "timeout_s": 1},
                "cluster": {"nats_url": nats.url}}, f"registry database 127.0.0.1:{dead}/x is "
                                                     "unavailable"),
    }
    for name, (config, message) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "c.yaml").write_text(yaml.safe_dump(config))
        result = run(folder, "serve", "--config", "c.yaml", "--port", "0")
        assert result.returncode == 2, result.stderr
        (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
        assert message in line and "secret" not in result.stderr
