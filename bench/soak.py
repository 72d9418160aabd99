"""Soak benchmark: N real-time microphone streams for a set time, with enrolments,
deletions and identifications over ``/v1/api`` all along, against a real server process.

    python bench/soak.py                       # 20 streams for 10 minutes
    python bench/soak.py --streams 20 --minutes 60
    python bench/soak.py --small               # CI: 2 streams, 15 s, a few enrolments
    options: [--window-s 60] [--sample-s 5] [--enrol-every-s 5] [--keep-extras 5]
             [--identify-every-s 2] [--late-s 1.0] [--max-rss-slope-mb-per-min 1.0]
             [--max-lag-slope-s-per-min 0.02] [--config config.yaml]
             [--set section.key=value ...] [--conversations 16] [--seed 0] [--out bench/out]

Reuses ``bench/realtime.py`` (by import): the same server subprocess (``streamer serve
--port 0`` on a fresh data dir, ``--config`` plus ``--set`` overrides), the same base
enrolment (AMI meeting speakers and LibriSpeech test-other speakers), the same sources
(AMI meetings and stitched LibriSpeech conversations, interleaved) and the same paced
stream client (100 ms msgpack chunks, chunk k of stream i sent at ``S_i + k * 0.1 s``).
Stream i plays source ``i mod len(sources)`` and restarts it when it ends (the sources
loop), so any duration works; later copies of a source start 7.3 s further into it.

While the streams run, two ``/v1/api`` connections keep the registry changing:

* **enrol/delete** (one connection): every ``--enrol-every-s`` it enrols an *extra*
  person (``soak-extra-NNNNN``, <= 8 s of one LibriSpeech train-clean speaker, cycling
  through the pool); when more than ``--keep-extras`` extras are enrolled, it deletes the
  oldest. The registry is written while the streams' identifications read it.
* **identify** (another connection): every ``--identify-every-s``, alternately a held-out
  utterance of an enrolled LibriSpeech test-other speaker (``identify_correct``: the
  match is that person) and the enrolment audio of the most recently *deleted* extra
  (``ghost_hits``: the deleted id is among the results: an error, deletion must remove
  the voiceprint from the index). Requests are paced by a schedule; one that is still
  running when the next is due delays it (latency, not load, is what grows).

Every ``--sample-s`` the bench samples the server's RSS (``VmRSS``), open file
descriptors (``/proc/PID/fd``), CPU time, new server log lines and ``/metrics``. Per
window of ``--window-s`` it reports: RSS and fds at the window's end (RSS max too),
final-event lag p50/p95 of pause-closed finals (``closed_by == "pause"``, arrival minus
the wall time of the segment's ``end``, as ``realtime.py`` defines it; all finals when no
final carries ``closed_by``) and p95 of all finals, late finals (> ``--late-s``, speaker
changes excluded), API latency p50/p95/max of enrol/delete/identify (by request start),
people enrolled (``/metrics``), dropped embedding jobs (``dropped_jobs_total`` delta),
the fewest open ingest connections seen (a stream that died shows), errors (API errors,
ghost hits, server log warnings), server cores used and the client's pacing.

Flatness: RSS, fds, lag p95 and identify p95 in the first vs the last window and a
least-squares slope per minute over the window values (``*_slope_per_min``; also from
the second window on, ``*_after_warmup``, when there are at least 3 windows). ``flat``
says whether the RSS slope after warm-up is <= ``--max-rss-slope-mb-per-min`` and the lag
slope <= ``--max-lag-slope-s-per-min``: figures, not pass/fail. At the end the bench
checks that the extras listed by ``people`` are exactly those it enrolled and did not
delete (``people_consistent``), and counts missing finals and streams without ``bye``.
Writes ``OUT/soak.json`` and ``OUT/soak.png`` (RSS, fds, lag and API latency over time;
needs matplotlib).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realtime import (
    CHUNK_S,
    COPY_STRIDE_S,
    ENROL_S,
    IMPOSTORS,
    LIBRI,
    RATE,
    ROOT,
    Plan,
    Server,
    Source,
    StreamResult,
    _open,
    _run_stream,
    build_sources,
    code_fingerprint,
    enrol_all,
    enrolments,
    fmt,
    log,
    pct,
    to_s16,
    write_config,
)

from harness import audio_frame_prefix
from streamer import wire
from streamer.config import load_config
from streamer.evaluation import enrol_test_split, load_manifest, read_audio

EXTRA_PREFIX = "soak-extra-"
#: Longest a single API request may take before it counts as an error (seconds).
API_TIMEOUT_S = 60.0
#: Extras are cut from pool utterances at least this long (seconds of audio).
EXTRA_MIN_S = 7.0
#: Identification probes are cut to this length (seconds).
PROBE_S = 6.0
#: The server is sampled this long before each multiple of ``--sample-s`` (seconds).
SAMPLE_LEAD_S = 0.5


# -- the API load -----------------------------------------------------------------------------


@dataclass
class ApiOp:
    """One ``/v1/api`` request: what, when (monotonic start), how long, how it went."""

    kind: str  # "enroll" | "delete" | "identify"
    at: float
    latency_s: float
    outcome: str  # "ok" | "refused" (a request error such as too_little_speech) | "error"
    detail: str = ""
    #: identify only: the probe's expected person matched / the deleted id was absent.
    correct: bool | None = None
    probe: str = ""  # identify only: "enrolled" | "deleted"


@dataclass
class ApiState:
    """What the enrol/delete loop believes the registry holds, shared with identify."""

    live: deque[tuple[str, bytes]] = field(default_factory=deque)  # (person id, pcm)
    deleted: list[tuple[str, bytes]] = field(default_factory=list)
    #: ids whose enrolment or deletion timed out or broke: their state is unknown.
    uncertain: set[str] = field(default_factory=set)
    ops: list[ApiOp] = field(default_factory=list)


class ApiClient:
    """One ``/v1/api`` connection that reconnects after a failure.

    Call :meth:`call` for each request; it never raises for a server-side problem (a
    broken connection or a timeout is returned as an ``error`` outcome).
    """

    def __init__(self, url: str) -> None:
        self._url = url + "/v1/api"
        self._ws: Any = None

    async def call(self, message: dict[str, Any]) -> tuple[dict[str, Any] | None, float, str]:
        """Send ``message``; return ``(reply or None, latency_s, error text or "")``."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        t0 = time.monotonic()
        try:
            async with asyncio.timeout(API_TIMEOUT_S):
                if self._ws is None:
                    self._ws = await connect(self._url, max_size=None, compression=None)
                await self._ws.send(wire.encode(message, wire.Encoding.MSGPACK))
                reply, _ = wire.decode(await self._ws.recv())
            return reply, time.monotonic() - t0, ""
        except (OSError, TimeoutError, WebSocketException) as exc:
            await self.close()
            return None, time.monotonic() - t0, f"{type(exc).__name__}: {exc}"[:200]

    async def close(self) -> None:
        if self._ws is not None:
            ws, self._ws = self._ws, None
            await ws.close()


def _pcm_request(kind: str, request_id: str, pcm: bytes, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "id": request_id, "pcm": pcm, "sample_rate": RATE, "format": "s16le",
            **extra}


def _outcome(reply: dict[str, Any] | None, want: str, error: str) -> tuple[str, str]:
    if reply is None:
        return "error", error
    if reply.get("type") == want:
        return "ok", ""
    code = str(reply.get("code"))
    # internal/overloaded are the server failing; anything else is a refusal of this input
    return ("error" if code in ("internal", "overloaded") else "refused",
            f"{code}: {reply.get('message')}"[:200])


async def _wait_until(due: float) -> None:
    delay = due - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def enrol_delete_loop(url: str, extras: list[bytes], every_s: float, keep: int,
                            clock: float, stop_at: float, state: ApiState,
                            streams_done: asyncio.Event) -> None:
    """Enrol an extra every ``every_s`` from ``clock`` until ``stop_at``; keep at most
    ``keep`` extras by deleting the oldest right after each enrolment. The connection
    stays open until ``streams_done`` (open fds stay comparable across windows)."""
    api = ApiClient(url)
    try:
        k = 0
        while clock + k * every_s < stop_at:
            await _wait_until(clock + k * every_s)
            pcm = extras[k % len(extras)]
            t0 = time.monotonic()
            reply, latency, error = await api.call(
                _pcm_request("enroll", f"enrol-{k}", pcm, name=f"{EXTRA_PREFIX}{k:05d}"))
            outcome, detail = _outcome(reply, "enrolled", error)
            state.ops.append(ApiOp("enroll", t0, latency, outcome, detail))
            if outcome == "ok" and reply is not None:
                state.live.append((str(reply["person"]["id"]), pcm))
            elif outcome == "error":
                state.uncertain.add(f"{EXTRA_PREFIX}{k:05d}")  # by name: no id came back
            while len(state.live) > keep:
                person, old = state.live.popleft()
                t0 = time.monotonic()
                reply, latency, error = await api.call(
                    {"type": "delete_person", "id": f"delete-{k}", "person": person})
                outcome, detail = _outcome(reply, "deleted", error)
                state.ops.append(ApiOp("delete", t0, latency, outcome, detail))
                if outcome == "ok":
                    state.deleted.append((person, old))
                else:
                    state.uncertain.add(person)
            k += 1
        await streams_done.wait()
    finally:
        await api.close()


async def identify_loop(url: str, probes: list[tuple[str, bytes]], every_s: float,
                        clock: float, stop_at: float, state: ApiState,
                        streams_done: asyncio.Event) -> None:
    """Identify every ``every_s``: enrolled people's held-out speech and, in turn, the
    enrolment audio of the latest deleted extra (which must not come back). The
    connection stays open until ``streams_done``."""
    api = ApiClient(url)
    try:
        k = 0
        while clock + k * every_s < stop_at:
            await _wait_until(clock + k * every_s)
            if k % 2 == 1 and state.deleted:
                expected, pcm = state.deleted[-1]
                probe = "deleted"
            else:
                expected, pcm = probes[(k // 2) % len(probes)]
                probe = "enrolled"
            t0 = time.monotonic()
            reply, latency, error = await api.call(
                _pcm_request("identify", f"identify-{k}", pcm, top_k=5))
            outcome, detail = _outcome(reply, "identified", error)
            correct = None
            if outcome == "ok" and reply is not None:
                ids = [str(r.get("id")) for r in reply.get("results") or []]
                if probe == "deleted":
                    correct = expected not in ids
                else:
                    match = reply.get("match")
                    correct = match is not None and str(match.get("id")) == expected
            state.ops.append(ApiOp("identify", t0, latency, outcome, detail, correct, probe))
            k += 1
        await streams_done.wait()
    finally:
        await api.close()


async def list_people(url: str) -> list[dict[str, Any]]:
    """Everyone enrolled (one ``people`` request). Raises ``RuntimeError`` on an error."""
    api = ApiClient(url)
    try:
        reply, _, error = await api.call({"type": "people", "id": "people"})
    finally:
        await api.close()
    if reply is None or reply.get("type") != "people":
        raise RuntimeError(f"people request failed: {error or reply}")
    return list(reply["people"])


def extra_pool() -> list[bytes]:
    """s16le PCM (<= 8 s) of one utterance per train-clean speaker of >= 7 s."""
    pool = []
    for utt in load_manifest(IMPOSTORS):
        if utt.seconds >= EXTRA_MIN_S:
            pool.append(to_s16(read_audio(utt.path)[: int(RATE * ENROL_S)]).tobytes())
    if not pool:
        raise SystemExit(f"no utterance of >= {EXTRA_MIN_S} s in {IMPOSTORS}")
    return pool


def identify_probes(ids: dict[str, str]) -> list[tuple[str, bytes]]:
    """(person id, s16le PCM <= 6 s) of held-out test-other utterances of enrolled people,
    two per speaker, speakers interleaved."""
    _, test = enrol_test_split(load_manifest(LIBRI), ENROL_S)
    rounds: list[list[tuple[str, bytes]]] = [[], []]
    for speaker, utts in sorted(test.items()):
        person = ids.get(f"libri{speaker}")
        if person is None:
            continue
        for r, utt in enumerate(utts[:2]):
            rounds[r].append((person, to_s16(read_audio(utt.path)[: int(RATE * PROBE_S)])
                              .tobytes()))
    probes = rounds[0] + rounds[1]
    if not probes:
        raise SystemExit("no enrolled LibriSpeech speaker to identify")
    return probes


# -- server sampling --------------------------------------------------------------------------


def open_fds(pid: int) -> int:
    """Open file descriptors of process ``pid`` (entries of ``/proc/PID/fd``)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


async def sampler(server: Server, first_at: float, every_s: float, done: asyncio.Event,
                  samples: list[dict[str, Any]]) -> None:
    """Append a sample of the server at ``first_at + k * every_s`` until ``done`` is set,
    and once more then. A fixed grid: a sample falls just before each window's end."""
    k = 0
    while True:
        sample: dict[str, Any] = {"t": time.monotonic()}
        rss, peak = server.memory_mb()
        sample.update(rss_mb=rss, peak_rss_mb=peak, fds=open_fds(server.pid),
                      cpu_s=server.cpu_s(), log=server.new_log_lines())
        try:
            sample["metrics"] = await server.metrics()
        except (OSError, TimeoutError) as exc:
            sample["metrics"] = {}
            sample["metrics_error"] = f"{type(exc).__name__}: {exc}"
        samples.append(sample)
        if done.is_set():
            return
        k += 1
        try:
            await asyncio.wait_for(done.wait(), max(0.0, first_at + k * every_s
                                                    - time.monotonic()))
        except TimeoutError:
            pass


# -- the run ----------------------------------------------------------------------------------


def make_soak_plans(sources: list[Source], n: int, seconds: float, seed: int) -> list[Plan]:
    """Stream i plays source ``i mod len(sources)`` for ``seconds`` (looping), copies
    offset by 7.3 s, with a seeded stagger within the first second."""
    rng = np.random.default_rng(seed * 7919 + n)
    chunks = round(seconds / CHUNK_S)
    plans = []
    for i in range(n):
        src = sources[i % len(sources)]
        offset = round((i // len(sources)) * COPY_STRIDE_S / CHUNK_S) % src.chunks
        plans.append(Plan(i, src, offset, chunks, float(rng.uniform(0.0, 1.0))))
    return plans


async def run_soak(server: Server, plans: list[Plan], seconds: float, args: argparse.Namespace,
                   extras: list[bytes], probes: list[tuple[str, bytes]]) -> dict[str, Any]:
    """Stream every plan at real-time pace with the API loops and the sampler alongside."""
    prefixes = [audio_frame_prefix(k) for k in range(max(p.chunks for p in plans))]
    sockets = []
    for k in range(0, len(plans), 16):  # open in small batches, then start the clock
        sockets += await asyncio.gather(*[_open(server.url, p) for p in plans[k:k + 16]])
    samples: list[dict[str, Any]] = []
    state = ApiState()
    done, streams_done = asyncio.Event(), asyncio.Event()
    client0 = time.process_time()
    clock = time.monotonic() + 0.6
    stop_at = clock + seconds

    async def streams() -> list[StreamResult]:
        try:
            return await asyncio.gather(*[
                _run_stream(ws, p, clock + p.stagger_s, prefixes, 60.0 + len(plans))
                for ws, p in zip(sockets, plans)])
        finally:
            streams_done.set()

    # samples at clock - 0.5 + k * sample_s: before any stream ends (stop_at - 0.1 at the
    # earliest) when sample_s divides the duration
    sampling = asyncio.create_task(sampler(server, clock - SAMPLE_LEAD_S, args.sample_s, done,
                                           samples))
    try:
        results, *_ = await asyncio.gather(
            streams(),
            enrol_delete_loop(server.url, extras, args.enrol_every_s, args.keep_extras,
                              clock, stop_at, state, streams_done),
            identify_loop(server.url, probes, args.identify_every_s, clock, stop_at, state,
                          streams_done),
        )
    finally:
        done.set()
        await sampling
    return {"results": results, "state": state, "samples": samples, "clock": clock,
            "stop_at": stop_at, "seconds": seconds, "client_cpu_s": time.process_time() - client0,
            "wall_s": time.monotonic() - clock}


# -- figures ----------------------------------------------------------------------------------


def slope_per_min(xs_min: list[float], ys: list[float | None]) -> float | None:
    """Least-squares slope of ``ys`` over ``xs_min`` (per minute); None below 2 points."""
    pts = [(x, y) for x, y in zip(xs_min, ys) if y is not None]
    if len(pts) < 2:
        return None
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts], dtype=float)
    if np.ptp(x) == 0:
        return None
    return round(float(np.polyfit(x, y, 1)[0]), 4)


def _latency(ops: list[ApiOp], kind: str) -> dict[str, Any]:
    mine = [op for op in ops if op.kind == kind]
    ok = [op.latency_s for op in mine if op.outcome == "ok"]
    return {"n": len(mine), "ok": len(ok),
            "refused": sum(op.outcome == "refused" for op in mine),
            "errors": sum(op.outcome == "error" for op in mine),
            "p50_s": pct(ok, 50), "p95_s": pct(ok, 95),
            "max_s": round(max(ok), 3) if ok else None}


def _finals(results: list[StreamResult]) -> list[tuple[float, float, str]]:
    """(arrival monotonic, lag s, closed_by) of each segment's first final event."""
    out = []
    for r in results:
        seen: set[int] = set()
        for mono, _, e in r.events:
            segment = int(e.get("segment", -1))
            if not e.get("final") or segment in seen:
                continue
            seen.add(segment)
            out.append((mono, mono - (r.start + float(e["end"])),
                        str(e.get("closed_by") or "unknown")))
    return out


def summarize(raw: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Per-window rows, the flatness summary and the end-of-run totals."""
    results: list[StreamResult] = raw["results"]
    state: ApiState = raw["state"]
    # samples taken once streams began to end (sockets closing) belong to no window
    samples = [s for s in raw["samples"] if s["t"] < raw["stop_at"] - CHUNK_S]
    clock: float = raw["clock"]
    seconds: float = raw["seconds"]
    window_s: float = args.window_s
    n_windows = max(1, math.ceil(seconds / window_s - 1e-9))

    def window_of(t: float) -> int:
        return min(n_windows - 1, max(0, int((t - clock) // window_s)))

    finals = _finals(results)
    with_field = any(kind != "unknown" for _, _, kind in finals)
    sends: list[list[float]] = [[] for _ in range(n_windows)]
    for r in results:
        for k, late in enumerate(r.send_late):
            sends[window_of(r.start + k * CHUNK_S)].append(late)
    rows = []
    previous = samples[0] if samples else None
    for w in range(n_windows):
        in_w = [s for s in samples if window_of(s["t"]) == w]
        last = in_w[-1] if in_w else previous
        lags = [(lag, kind) for t, lag, kind in finals if window_of(t) == w]
        pause = [lag for lag, kind in lags if kind == "pause"] if with_field else \
            [lag for lag, _ in lags]
        ops = [op for op in state.ops if window_of(op.at) == w]
        ident = [op for op in ops if op.kind == "identify" and op.correct is not None]
        log_lines = [line for s in in_w for line in s["log"]]
        m_last = (last or {}).get("metrics", {})
        m_prev = (previous or {}).get("metrics", {})
        cpu = ((last["cpu_s"] - previous["cpu_s"]) / max(1e-9, last["t"] - previous["t"])
               if last and previous and last is not previous else None)
        ingest = [s["metrics"]["ingest_connections"] for s in in_w
                  if "ingest_connections" in s["metrics"]]
        row: dict[str, Any] = {
            "window": w, "from_s": round(w * window_s, 1),
            "to_s": round(min(seconds, (w + 1) * window_s), 1),
            "rss_mb": last["rss_mb"] if last else None,
            "rss_max_mb": max((s["rss_mb"] for s in in_w), default=None),
            "fds": last["fds"] if last else None,
            "finals": len(lags),
            "lag_pause_p50_s": pct(pause, 50), "lag_pause_p95_s": pct(pause, 95),
            "lag_all_p95_s": pct([lag for lag, _ in lags], 95),
            "late_finals": sum(1 for lag, kind in lags if lag > args.late_s and kind != "change"),
            "enroll": _latency(ops, "enroll"), "delete": _latency(ops, "delete"),
            "identify": _latency(ops, "identify"),
            "identify_correct": sum(1 for op in ident if op.probe == "enrolled" and op.correct),
            "identify_enrolled_probes": sum(1 for op in ident if op.probe == "enrolled"),
            "ghost_hits": sum(1 for op in ident if op.probe == "deleted" and not op.correct),
            "people": int(m_last["people"]) if "people" in m_last else None,
            "dropped_jobs": (int(m_last.get("dropped_jobs_total", 0)
                                 - m_prev.get("dropped_jobs_total", 0)) if m_last else None),
            "ingest_connections_min": int(min(ingest)) if ingest else None,
            "server_cores": round(cpu, 2) if cpu is not None else None,
            "client_send_late_p99_s": pct(sends[w], 99),
            "server_log_lines": len(log_lines), "server_log": log_lines[:5],
        }
        row["errors"] = (row["enroll"]["errors"] + row["delete"]["errors"]
                         + row["identify"]["errors"] + row["ghost_hits"] + len(log_lines))
        rows.append(row)
        previous = last
    byes = [r.bye for r in results if r.bye is not None]
    missing = sum(max(0, int(r.bye.get("segments", 0))
                      - len({e.get("segment") for _, _, e in r.events if e.get("final")}))
                  for r in results if r.bye is not None)
    totals = {
        "streams": len(results), "seconds": seconds, "finals": len(finals),
        "finals_by_closed_by": {k: sum(1 for *_, c in finals if c == k)
                                for k in sorted({c for *_, c in finals})},
        "lag_group": "pause" if with_field else "all (no closed_by field)",
        "dropped_jobs": sum(int(b.get("dropped_jobs", 0)) for b in byes),
        "failed_jobs": sum(int(b.get("failed_jobs", 0)) for b in byes),
        "segments": sum(int(b.get("segments", 0)) for b in byes),
        "missing_finals": missing,
        "streams_without_bye": sum(1 for r in results if r.bye is None),
        "stream_errors": sorted({r.error for r in results if r.error})[:5],
        "enroll": _latency(state.ops, "enroll"), "delete": _latency(state.ops, "delete"),
        "identify": _latency(state.ops, "identify"),
        "identify_correct": sum(r["identify_correct"] for r in rows),
        "identify_enrolled_probes": sum(r["identify_enrolled_probes"] for r in rows),
        "ghost_hits": sum(r["ghost_hits"] for r in rows),
        "api_errors": sorted({op.detail for op in state.ops if op.outcome == "error"})[:5],
        "api_refusals": sorted({op.detail for op in state.ops if op.outcome == "refused"})[:5],
        "server_peak_rss_mb": max((s["peak_rss_mb"] for s in samples), default=None),
        "client_cpu_s": round(raw["client_cpu_s"], 2),
        "client_cores": round(raw["client_cpu_s"] / max(1e-9, raw["wall_s"]), 3),
        "samples": len(samples),
        "metrics_errors": sum(1 for s in samples if "metrics_error" in s),
    }
    return {"windows": rows, "totals": totals, "flatness": flatness(rows, args)}


def flatness(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """First vs last window and least-squares slopes per minute (window midpoints)."""
    xs = [(r["from_s"] + r["to_s"]) / 120.0 for r in rows]
    out: dict[str, Any] = {}
    getters: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("rss_mb", lambda r: r["rss_mb"]), ("fds", lambda r: r["fds"]),
                      ("lag_pause_p95_s", lambda r: r["lag_pause_p95_s"]),
                      ("identify_p95_s", lambda r: r["identify"]["p95_s"]),
                      ("enroll_p95_s", lambda r: r["enroll"]["p95_s"])]
    for name, get in getters:
        ys = [get(r) for r in rows]
        out[name] = {"first": ys[0], "last": ys[-1], "slope_per_min": slope_per_min(xs, ys),
                     "slope_per_min_after_warmup":
                         slope_per_min(xs[1:], ys[1:]) if len(rows) >= 3 else None}
    rss = out["rss_mb"]["slope_per_min_after_warmup"]
    rss = out["rss_mb"]["slope_per_min"] if rss is None else rss
    lag = out["lag_pause_p95_s"]["slope_per_min_after_warmup"]
    lag = out["lag_pause_p95_s"]["slope_per_min"] if lag is None else lag
    out["criterion"] = (f"RSS slope (after warm-up) <= {args.max_rss_slope_mb_per_min:g} MB/min"
                        f" and lag p95 slope <= {args.max_lag_slope_s_per_min:g} s/min")
    out["flat"] = (rss is not None and rss <= args.max_rss_slope_mb_per_min
                   and (lag is None or lag <= args.max_lag_slope_s_per_min))
    return out


COLUMNS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("window s", lambda r: f"{r['from_s']:g}-{r['to_s']:g}"),
    ("rss MB", lambda r: r["rss_mb"]), ("fds", lambda r: r["fds"]),
    ("finals", lambda r: r["finals"]),
    ("lag p50", lambda r: r["lag_pause_p50_s"]), ("p95", lambda r: r["lag_pause_p95_s"]),
    ("all p95", lambda r: r["lag_all_p95_s"]), ("late", lambda r: r["late_finals"]),
    ("enrol n", lambda r: r["enroll"]["ok"]), ("p95", lambda r: r["enroll"]["p95_s"]),
    ("delete n", lambda r: r["delete"]["ok"]), ("p95", lambda r: r["delete"]["p95_s"]),
    ("ident n", lambda r: r["identify"]["ok"]), ("p95", lambda r: r["identify"]["p95_s"]),
    ("correct", lambda r: f"{r['identify_correct']}/{r['identify_enrolled_probes']}"),
    ("people", lambda r: r["people"]), ("dropped", lambda r: r["dropped_jobs"]),
    ("errors", lambda r: r["errors"]), ("srv cores", lambda r: r["server_cores"]),
]


def print_table(rows: list[dict[str, Any]]) -> None:
    print(" | ".join(h for h, _ in COLUMNS))
    for row in rows:
        print(" | ".join(fmt(get(row)) for _, get in COLUMNS))


def print_flatness(flat: dict[str, Any]) -> None:
    for name in ("rss_mb", "fds", "lag_pause_p95_s", "identify_p95_s", "enroll_p95_s"):
        f = flat[name]
        print(f"{name}: first {fmt(f['first'])}, last {fmt(f['last'])}, slope "
              f"{fmt(f['slope_per_min'])}/min, after warm-up "
              f"{fmt(f['slope_per_min_after_warmup'])}/min")
    print(f"flat: {flat['flat']} ({flat['criterion']})")


def plot(summary: dict[str, Any], samples: list[dict[str, Any]], clock: float,
         path: Path) -> bool:
    """RSS and fds (every sample), lag and API latency p95 (per window) over time."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install -e '.[tools]'): no plot")
        return False
    rows = summary["windows"]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    ts = [(s["t"] - clock) / 60 for s in samples]
    ax1.plot(ts, [s["rss_mb"] for s in samples], "-", color="tab:blue", label="server RSS (MB)")
    ax1.set_ylabel("RSS (MiB)")
    for ax in (ax1, ax2):
        ax.axvline(summary["totals"]["seconds"] / 60, color="grey", linestyle=":", linewidth=1)
    ax1.set_ylim(bottom=0)
    fd_axis = ax1.twinx()
    fd_axis.plot(ts, [s["fds"] for s in samples], "--", color="tab:orange", label="open fds")
    fd_axis.set_ylabel("open file descriptors")
    fd_axis.set_ylim(bottom=0)
    lines = ax1.get_legend_handles_labels()[0] + fd_axis.get_legend_handles_labels()[0]
    ax1.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="lower right")
    ax1.grid(True, alpha=0.3)
    ax1.set_title("voiceprint streamer soak: "
                  f"{summary['totals']['streams']} streams, enrol/delete/identify alongside")
    mid = [(r["from_s"] + r["to_s"]) / 120 for r in rows]

    def ys(get: Any) -> list[float]:
        return [math.nan if get(r) is None else get(r) for r in rows]

    for get, label, style in [
        (lambda r: r["lag_pause_p50_s"], "final lag p50 (pause finals)", "o--"),
        (lambda r: r["lag_pause_p95_s"], "final lag p95 (pause finals)", "D-"),
        (lambda r: r["identify"]["p95_s"], "identify latency p95", "s:"),
        (lambda r: r["enroll"]["p95_s"], "enrol latency p95", "^:"),
        (lambda r: r["delete"]["p95_s"], "delete latency p95", "v:"),
    ]:
        values = ys(get)
        if any(not math.isnan(v) for v in values):
            ax2.plot(mid, values, style, label=label)
    ax2.set_ylabel("seconds")
    ax2.set_ylim(bottom=0)
    ax2.set_xlabel("minutes since the streams started")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--streams", type=int, default=20, help="concurrent real-time streams")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the streams run")
    parser.add_argument("--window-s", type=float, default=60.0, help="report window (seconds)")
    parser.add_argument("--sample-s", type=float, default=5.0,
                        help="server RSS/fds//metrics sampling period (seconds)")
    parser.add_argument("--enrol-every-s", type=float, default=5.0,
                        help="an extra person is enrolled this often (seconds)")
    parser.add_argument("--keep-extras", type=int, default=5,
                        help="beyond this many extras, the oldest is deleted")
    parser.add_argument("--identify-every-s", type=float, default=2.0,
                        help="an identify request this often (seconds)")
    parser.add_argument("--late-s", type=float, default=1.0,
                        help="a final this much after its end is late (change finals excluded)")
    parser.add_argument("--max-rss-slope-mb-per-min", type=float, default=1.0,
                        help="'flat' when the RSS slope after warm-up is at most this")
    parser.add_argument("--max-lag-slope-s-per-min", type=float, default=0.02,
                        help="'flat' when the lag p95 slope after warm-up is at most this")
    parser.add_argument("--small", action="store_true",
                        help="CI: 2 streams for 15 s, 5 s windows, an enrolment every 4 s")
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a server config value (YAML syntax); repeatable")
    parser.add_argument("--conversations", type=int, default=16,
                        help="stitched conversations (60 s each) besides the meetings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    args = parser.parse_args(argv)
    if args.small:
        args.streams, args.minutes, args.window_s, args.sample_s = 2, 0.25, 5.0, 1.0
        args.enrol_every_s, args.keep_extras, args.conversations = 4.0, 1, 2
    for name in ("streams", "minutes", "window_s", "sample_s", "enrol_every_s",
                 "identify_every_s"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    if args.keep_extras < 0:
        parser.error("--keep-extras must be >= 0")
    seconds = args.minutes * 60.0
    t_start = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp_name:
        tmp = Path(tmp_name)
        config_path = write_config(Path(args.config), args.set, tmp)
        cfg = load_config(config_path)
        sources = build_sources(cfg, tmp, args.conversations, 60.0, args.seed)
        plans = make_soak_plans(sources, args.streams, seconds, args.seed)
        extras = extra_pool()
        code = code_fingerprint()
        server = Server(config_path, tmp / "data", tmp / "server.log")
        try:
            people = enrolments()
            refused = asyncio.run(enrol_all(server.url, people))
            base = asyncio.run(list_people(server.url))
            probes = identify_probes({p["name"]: p["id"] for p in base})
            startup_log = server.new_log_lines()
            log(f"server {server.url} (pid {server.pid}); enrolled {len(base)}/{len(people)} "
                f"people" + (f"; refused: {refused}" if refused else "")
                + f"; {args.streams} streams x {seconds:g} s, {len(sources)} sources, "
                f"{len(extras)} extra voices, {len(probes)} identify probes")
            raw = asyncio.run(run_soak(server, plans, seconds, args, extras, probes))
            final_people = asyncio.run(list_people(server.url))
            end_log = server.new_log_lines()
            rss_end = server.memory_mb()
            fds_end = open_fds(server.pid)
        finally:
            server.stop()

    summary = summarize(raw, args)
    state: ApiState = raw["state"]
    # an enrolment or deletion whose reply never came may or may not have happened
    uncertain = state.uncertain
    listed = {p["id"] for p in final_people if str(p.get("name", "")).startswith(EXTRA_PREFIX)
              and p["id"] not in uncertain and p.get("name") not in uncertain}
    believed = {pid for pid, _ in state.live} - uncertain
    base_ids = {p["id"] for p in base}
    totals = summary["totals"]
    totals.update({
        "people_start": len(base), "people_end": len(final_people),
        "extras_enrolled": totals["enroll"]["ok"], "extras_deleted": totals["delete"]["ok"],
        "extras_live_end": len(believed),
        "people_consistent": (listed == believed
                              and base_ids <= {p["id"] for p in final_people}),
        "uncertain_ids": sorted(uncertain)[:10],
        "server_rss_end_mb": rss_end[0], "server_fds_end": fds_end,
        "server_log_after": end_log[:10],
    })
    print_table(summary["windows"])
    print_flatness(summary["flatness"])
    print(f"totals: finals {totals['finals']}, dropped {totals['dropped_jobs']}, failed "
          f"{totals['failed_jobs']}, missing finals {totals['missing_finals']}, streams "
          f"without bye {totals['streams_without_bye']}, enrolled {totals['extras_enrolled']}, "
          f"deleted {totals['extras_deleted']}, identify {totals['identify']['ok']} "
          f"({totals['identify_correct']}/{totals['identify_enrolled_probes']} correct, "
          f"{totals['ghost_hits']} ghost hits), API errors "
          f"{sum(totals[k]['errors'] for k in ('enroll', 'delete', 'identify'))}, people "
          f"{totals['people_start']} -> {totals['people_end']} "
          f"(consistent: {totals['people_consistent']})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "mode": "small" if args.small else "soak",
        **summary,
        "settings": {"streams": args.streams, "seconds": seconds, "window_s": args.window_s,
                     "sample_s": args.sample_s, "enrol_every_s": args.enrol_every_s,
                     "keep_extras": args.keep_extras,
                     "identify_every_s": args.identify_every_s, "late_s": args.late_s,
                     "config": args.config, "set": args.set, "seed": args.seed,
                     "conversations": args.conversations, "chunk_s": CHUNK_S,
                     "worker_threads": cfg.worker.threads, "cpus": os.cpu_count(),
                     "loadavg_end": [round(v, 2) for v in os.getloadavg()]},
        "sources": [{"name": s.name, "kind": s.kind, "seconds": round(len(s.pcm) / RATE, 1),
                     "speech_share": s.speech_share} for s in sources],
        "samples": [{"t_s": round(s["t"] - raw["clock"], 2), "rss_mb": s["rss_mb"],
                     "fds": s["fds"], "people": s["metrics"].get("people"),
                     "queue_depth": s["metrics"].get("queue_depth")} for s in raw["samples"]],
        "server_startup_log": startup_log[:20],
        "server_code": code,
        "total_wall_s": round(time.monotonic() - t_start, 1),
    }
    (out / "soak.json").write_text(json.dumps(result, indent=2))
    if plot(summary, raw["samples"], raw["clock"], out / "soak.png"):
        print(f"wrote {out / 'soak.json'} and {out / 'soak.png'}")
    else:
        print(f"wrote {out / 'soak.json'}")
    print(f"total {result['total_wall_s']:.0f} s")


if __name__ == "__main__":
    main()
