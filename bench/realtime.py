"""Real-time load benchmark: N concurrent microphone streams against a real server process.

    python bench/realtime.py                       # ramp: find the largest N that keeps up
    python bench/realtime.py --streams 1,8,32      # fixed levels instead
    python bench/realtime.py --small               # CI: 1 stream of 10 s, no ramp
    options: [--seconds 30] [--max-streams 128] [--max-lag 0.3] [--lag-from end|close]
             [--late-s 1.0] [--config config.yaml] [--set section.key=value ...]
             [--conversations 16] [--seed 0] [--gallery N] [--out bench/out]

Starts ``streamer serve --port 0`` on a fresh data dir (with ``--config``, plus any
``--set`` overrides merged into a temporary copy of it), enrols the AMI meeting speakers
and the LibriSpeech speakers of the stitched conversations over ``/v1/api``, then, per
level N, streams N recordings concurrently through ``/v1/ingest`` at real-time pace.

``--gallery N`` first fills the fresh data dir's SQLite registry with N distinct
synthetic people (one transaction, the rows ``SqliteRegistry.add_person`` writes, as
``startup()`` in ``bench/gallery.py`` does), drawn from the two-covariance model of
``bench/plda.py`` fitted to the real CAM++ voiceprints (``bench/gallery.py``'s distinct
mode: its embedding cache, :func:`prepare_distinct` and :func:`synthetic_chunk`); the
real speakers above are still enrolled over ``/v1/api`` on top. The server then builds
its index at start (HNSW above 10 000 people); the bench waits for ``listening on``
(time-out scaled with N) and reports the start-up time. The question it answers: does a
large gallery cost live capacity (every live search then walks an HNSW graph)?

Sources (``../shared/speech``, written once to temporary WAVs): the AMI / pyannote
meeting recordings and stitched LibriSpeech conversations (:func:`streamer.evaluation.
stitch`; exchanges of 2-3 turns with pauses or interruptions, ~25 % never-enrolled
voices, silences between exchanges), interleaved one meeting, two conversations, so the
mix is about half speech. Stream i plays source ``i mod len(sources)`` for ``--seconds``
(looping), later copies of a source starting 7.3 s further into it.

The client is one asyncio process and cheap: audio frames are msgpack-encoded before the
clock starts (100 ms chunks of s16le 16 kHz mono), chunk k of stream i is sent at
``S_i + k * 0.1 s`` where ``S_i`` is a shared start plus a random stagger within the
first second. The wall time of audio time t of stream i is ``S_i + t`` (a live
microphone with 100 ms chunks would add up to 0.1 s of capture delay on top).

Per N it reports:

* final lag: arrival of a segment's ``final: true`` event minus the wall time of its
  ``end``: p50/p95/p99 over all finals and separately by ``closed_by`` ("pause": the
  VAD saw the end of speech; "change": a speaker change, which waits for the window
  that confirms it, about one `segment.window_s`, by design; a missing field counts
  as "unknown");
* final after close: for finals whose end is a VAD pause end (the bench runs the
  server's VAD and segmenter offline on each stream's audio; events depend only on the
  audio), arrival minus the send time of the chunk that let the VAD close the segment:
  the server's own delay. The rest of a pause final's lag is the VAD hang-over
  (``vad_close_wait``, about 0.5 s with the default ``vad.*``). The same offline VAD
  classifies finals when ``closed_by`` is missing (``*_inferred``: an end that is no
  VAD end is a speaker change);
* onset to first provisional: arrival of a segment's first ``final: false`` event minus
  the wall time of the segment's ``start`` (p50/p95); delivery: arrival minus the
  event's server ``ts`` (time spent queued for the socket);
* server CPU seconds per stream per second of audio (``/proc/PID/stat``), and the client
  process's own CPU (it must stay small) and its pacing (how late chunks were sent);
* dropped jobs (``bye.stats.dropped_jobs``), failed jobs, missing finals (segments
  counted in ``bye.stats.segments`` whose final never came), late finals (more than
  ``--late-s`` after their end, change finals excluded), streams without ``bye``;
* server RSS now and peak (``VmRSS``, ``VmHWM``; the peak is over the server's life),
  ``/metrics`` queue depth sampled every 0.5 s, worker busy share, counter deltas;
  the CPU other processes used meanwhile (``/proc/stat``: on a shared machine the
  server gets less than the machine has, and the capacity found is understated);
* the people enrolled (``/metrics`` ``streamer_people``) and the live searches: the
  searches answered in batches, the batches (one ``Registry.search_many`` call per
  event-loop turn) and the mean batch size (``streamer_live_searches_total``,
  ``streamer_live_search_batches_total``).

Criterion: p95 final lag of pause-closed finals (all finals when no final carries
``closed_by``) <= ``--max-lag`` and nothing dropped (no dropped or failed job, no
missing final, every stream got its ``bye``). ``--lag-from close`` uses the p95 of
"final after close" instead (the hang-over excluded: what the server adds, whatever
``vad.*`` says). Ramp (no ``--streams``): N = 1, 2, 4, ... while the criterion holds
(up to ``--max-streams``), then bisection between the last passing and the first
failing N, ``--seconds`` of audio per stream at each level. Writes ``OUT/realtime.json``
(every level, the criterion, the answer, which server code ran) and
``OUT/realtime_lag.png`` (lags vs N; needs matplotlib). Figures, not pass/fail.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import asyncio
import json
import math
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import soundfile as sf
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import ServerProcess, audio_frame_prefix, machine_busy_s
from streamer import wire
from streamer.audio import pcm_to_float
from streamer.config import Config, load_config
from streamer.errors import ConfigError
from streamer.evaluation import Utterance, enrol_test_split, load_manifest, read_audio, stitch
from streamer.segmenter import SegmentEnd, Segmenter, VoiceDetector, find_speech
from streamer.units import seconds_to_samples

SPEECH = ROOT.parent / "shared" / "speech"
AMI = SPEECH / "ami_pyannote_diarization"
LIBRI = SPEECH / "librispeech_testother_10spk"
IMPOSTORS = SPEECH / "librispeech_trainclean100_251spk_1utt"
RATE = 16000
CHUNK_S = 0.1
CHUNK = int(RATE * CHUNK_S)
ENROL_S = 8.0
#: Later copies of one source start this much further into it (seconds).
COPY_STRIDE_S = 7.3
CLOSED_BY = ("pause", "change", "max_length", "end", "unknown")


def log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


# -- sources --------------------------------------------------------------------------------


@dataclass
class Source:
    """One recording to stream: s16le 16 kHz mono samples, cut to whole 100 ms chunks."""

    name: str
    kind: str  # "meeting" | "conversation"
    wav: Path
    pcm: np.ndarray  # int16
    speech_share: float
    payloads: list[bytes] = field(default_factory=list)  # msgpack ``bin`` of each chunk

    @property
    def chunks(self) -> int:
        return len(self.pcm) // CHUNK


def _trimmer(cfg: Config) -> Any:
    """Cut leading and trailing non-speech (the VAD's view), cached per utterance."""
    cache: dict[tuple[int, bytes], np.ndarray] = {}

    def trimmed(x: np.ndarray) -> np.ndarray:
        key = (len(x), x[:4000].tobytes())
        if key not in cache:
            spans = find_speech(x, cfg.vad)
            cache[key] = x[spans[0][0]:spans[-1][1]] if spans else x
        return cache[key]
    return trimmed


def build_conversations(cfg: Config, count: int, seconds: float, seed: int) -> list[np.ndarray]:
    """Stitched LibriSpeech conversations of ``seconds`` each (float32 16 kHz).

    Each is a series of exchanges: 2-3 turns of 2-5 s by enrolled test-other speakers
    (their held-out utterances) or, for about a quarter of the turns, never-enrolled
    voices, joined with one gap per exchange (0 s: an interruption, 0.3 s: too short
    for the VAD to end the turn, 1.0 s: a pause), then 15-35 s of silence.
    """
    _, test = enrol_test_split(load_manifest(LIBRI), ENROL_S)
    impostors = load_manifest(IMPOSTORS)
    trimmed = _trimmer(cfg)
    people = list(test)
    out = []
    for c in range(count):
        rng = np.random.default_rng(seed * 1000 + c)
        pieces: list[np.ndarray] = []
        total, last = 0, None
        while total < seconds * RATE:
            turns: list[Utterance] = []
            for _ in range(int(rng.integers(2, 4))):
                if rng.random() < 0.25:
                    u = impostors[int(rng.integers(len(impostors)))]
                    turns.append(Utterance(u.path, "imp" + u.speaker, u.seconds))
                    last = None
                    continue
                p = str(rng.choice([q for q in people if q != last]))
                turns.append(test[p][int(rng.integers(len(test[p])))])
                last = p
            gap = float(rng.choice([0.0, 0.3, 1.0]))
            lengths = [float(v) for v in rng.uniform(2.0, 5.0, size=len(turns))]
            audio, _ = stitch(turns, gap, max_turn_s=lengths, trim=trimmed)
            silence = np.zeros(int(rng.uniform(15.0, 35.0) * RATE), dtype=np.float32)
            pieces += [audio, silence]
            total += len(audio) + len(silence)
        out.append(np.concatenate(pieces)[: int(seconds * RATE)])
    return out


def to_s16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * 32768), -32768, 32767).astype("<i2")


def build_sources(cfg: Config, tmp: Path, conversations: int, conv_s: float,
                  seed: int) -> list[Source]:
    """Meetings and conversations, interleaved (meeting, conv, conv, ...), as temp WAVs."""
    folder = tmp / "sources"
    folder.mkdir(parents=True, exist_ok=True)
    meetings = [(p.stem, read_audio(p)) for p in sorted((AMI / "recordings").glob("*.flac"))]
    convs = [(f"conv{c:02d}", x) for c, x in
             enumerate(build_conversations(cfg, conversations, conv_s, seed))]
    order: list[tuple[str, str, np.ndarray]] = []
    per = max(1, math.ceil(len(convs) / max(1, len(meetings))))
    for k, (name, x) in enumerate(meetings):
        order.append((name, "meeting", x))
        order += [(n, "conversation", y) for n, y in convs[k * per:(k + 1) * per]]
    order += [(n, "conversation", y) for n, y in convs[len(meetings) * per:]]
    sources = []
    for name, kind, x in order:
        wav = folder / f"{name}.wav"
        sf.write(wav, to_s16(x), RATE, subtype="PCM_16")
        pcm, rate = sf.read(wav, dtype="int16")
        assert rate == RATE
        pcm = pcm[: len(pcm) // CHUNK * CHUNK]
        spans = find_speech(pcm.astype(np.float32) / 32768, cfg.vad)
        share = sum(b - a for a, b in spans) / max(1, len(pcm))
        src = Source(name, kind, wav, pcm, round(share, 3))
        src.payloads = [msgpack.packb(pcm[k * CHUNK:(k + 1) * CHUNK].tobytes(), use_bin_type=True)
                        for k in range(src.chunks)]
        sources.append(src)
    return sources


def enrolments() -> list[tuple[str, np.ndarray]]:
    """(name, float32 audio) of everyone to enrol: AMI speakers (their solo segments)
    and the LibriSpeech test-other speakers (first utterances), <= 8 s each."""
    people = []
    for speaker_dir in sorted((AMI / "segments").iterdir()):
        parts = [read_audio(f) for f in sorted(speaker_dir.glob("*.flac"))]
        people.append((speaker_dir.name, np.concatenate(parts)[: int(RATE * ENROL_S)]))
    enrol, _ = enrol_test_split(load_manifest(LIBRI), ENROL_S)
    for speaker, utts in enrol.items():
        x = np.concatenate([read_audio(u.path) for u in utts])
        people.append((f"libri{speaker}", x[: int(RATE * ENROL_S)]))
    return people


# -- a large gallery (--gallery N) -----------------------------------------------------------

#: Blocks of synthetic people (``bench/gallery.py`` draws them in blocks of 100 000).
SYNTH_BLOCK = 100_000


def synthetic_people(cfg: Config, n: int, small: bool) -> tuple[np.ndarray, str, dict[str, Any]]:
    """``n`` distinct synthetic people's enrolled vectors (unit float32), the model id of
    ``cfg``'s model and facts about the model.

    ``bench/gallery.py``'s distinct mode, imported: the real CAM++ voiceprints of
    ``shared/speech`` (its embedding cache in ``bench/out``, embedded on first use; the
    small selection with ``small``), the two-covariance model fitted and validated by
    :func:`gallery.prepare_distinct`, people ``0 .. n-1`` of :func:`gallery.synthetic_chunk`
    (the same people whatever ``n``). No real person is among them.
    """
    import gallery  # bench/gallery.py (it imports bench/plda.py)

    e, model_id = gallery.load_embeddings(cfg, SPEECH, ROOT / "bench" / "out", small)
    d = gallery.prepare_distinct(e, small, np.random.default_rng(gallery.SEED))
    vectors = np.concatenate([gallery.synthetic_chunk(d.model, a, min(n, a + SYNTH_BLOCK))[2]
                              for a in range(0, n, SYNTH_BLOCK)])
    info = {"model": d.info["model"], "real_vectors": len(e.vectors),
            "real_speakers_fitted": len(set(e.speaker.tolist())),
            "nearest_impostor_validation": {
                k: v.get("p1") for k, v in d.info["validation"]["nearest_impostor"].items()
                if isinstance(v, dict)}}
    return np.ascontiguousarray(vectors, dtype=np.float32), model_id, info


def fill_registry(data_dir: Path, model_id: str, vectors: np.ndarray) -> float:
    """Write ``len(vectors)`` people into ``data_dir``'s SQLite registry in one transaction;
    returns the seconds the write took.

    The database is created by :class:`SqliteRegistry` itself (its schema, whatever it
    is), then filled with the rows ``add_person`` writes (``people`` and ``voiceprints``,
    8 s of speech each) and one generation bump, by ``bench/gallery.py``'s
    ``bulk_write_people``. Everything but the database is removed afterwards, so the
    server finds no index cache and builds its index from SQLite (a cold start).
    """
    from streamer.registry import SqliteRegistry

    n, dim = vectors.shape
    reg = SqliteRegistry(data_dir, model_id, dim)
    reg.open()
    reg.close()
    import gallery  # bench/gallery.py

    t = time.perf_counter()
    gallery.bulk_write_people(reg.db_path, vectors, model_id)
    db = sqlite3.connect(reg.db_path)
    try:
        (people,) = db.execute("SELECT COUNT(*) FROM people").fetchone()
    finally:
        db.close()
    seconds = time.perf_counter() - t
    if people != n:
        raise SystemExit(f"the registry holds {people} people after writing {n}")
    for path in data_dir.iterdir():  # the index cache of the empty registry, if any
        if path.name.startswith(reg.db_path.name):
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return seconds


# -- the server -----------------------------------------------------------------------------


def code_fingerprint() -> dict[str, str]:
    """Which server code ran: sha256 over ``streamer/**/*.py`` and the newest change."""
    import hashlib

    files = sorted((ROOT / "streamer").rglob("*.py"))
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes())
    newest = max(f.stat().st_mtime for f in files)
    return {"sha256": digest.hexdigest()[:16],
            "newest_change": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(newest)) + " UTC"}


def write_config(base: Path, overrides: list[str], tmp: Path) -> Path:
    """``base`` with ``section.key=value`` overrides (YAML values), as a temp file.

    A relative ``model.path`` is made absolute (it is relative to the config file's
    folder; unset, it is the packaged model).
    Raises ``SystemExit`` when the result does not validate.
    """
    raw = yaml.safe_load(base.read_text(encoding="utf-8")) or {}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--set wants section.key=value, got {item!r}")
        raw.setdefault(section, {})[name] = yaml.safe_load(value)
    model = raw.setdefault("model", {}) or {}
    raw["model"] = model
    if model.get("path") is not None and not Path(model["path"]).is_absolute():
        model["path"] = str((base.resolve().parent / model["path"]).resolve())
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:  # say what is wrong before starting anything
        raise SystemExit(f"bad config: {exc}") from None
    return path


class Server(ServerProcess):
    """``streamer serve --port 0`` on ``config`` and ``data_dir``, listening when made."""

    def __init__(self, config: Path, data_dir: Path, log_path: Path,
                 timeout_s: float = 60.0) -> None:
        super().__init__(["--config", str(config), "--log-level", "WARNING",
                          "--data-dir", str(data_dir)], log_path)
        self.wait_listening(timeout_s, lambda s: log(f"  server starting: {s:.0f} s ..."))

    async def metrics(self) -> dict[str, float]:
        """GET /metrics, parsed (``streamer_`` prefix removed)."""
        return {name.removeprefix("streamer_"): value
                for name, value in (await super().metrics()).items()}


async def enrol_all(url: str, people: list[tuple[str, np.ndarray]]) -> list[str]:
    """Enrol everyone over /v1/api; return the names that were refused (with why)."""
    from websockets.asyncio.client import connect

    refused = []
    async with connect(url + "/v1/api", max_size=None) as ws:
        for name, audio in people:
            await ws.send(wire.encode({"type": "enroll", "id": name, "name": name,
                                       "pcm": to_s16(audio).tobytes(), "sample_rate": RATE,
                                       "format": "s16le"}, wire.Encoding.MSGPACK))
            reply, _ = wire.decode(await ws.recv())
            if reply["type"] != "enrolled":
                refused.append(f"{name}: {reply.get('code')} {reply.get('message')}")
    return refused


# -- one level ------------------------------------------------------------------------------


@dataclass
class Plan:
    """What stream ``index`` plays: ``source`` from chunk ``offset`` (looping)."""

    index: int
    source: Source
    offset: int
    chunks: int
    stagger_s: float
    #: VAD pause / max-length / end-of-stream closes: ``{end_ms: (kind, decided_s)}``.
    closes: dict[int, tuple[str, float]] = field(default_factory=dict)
    #: VAD segment starts: ``{start_ms: "onset" | "max_length"}``.
    starts: dict[int, str] = field(default_factory=dict)
    speech_share: float = 0.0

    def pcm(self) -> np.ndarray:
        idx = (self.offset + np.arange(self.chunks)) % self.source.chunks
        return self.source.pcm.reshape(-1, CHUNK)[idx].reshape(-1)


def room_of(index: int) -> str:
    """The room of stream ``index`` (each stream its own room)."""
    return f"room{index}"


def vad_closes(pcm: np.ndarray, cfg: Config) -> tuple[dict[int, tuple[str, float]],
                                                       dict[int, str], float]:
    """Run the server's VAD and segmenter on a stream's audio, as its session will.

    Returns ``{end_ms: (kind, decided_s)}`` for every segment end (``kind`` "pause",
    "max_length" or "end"; ``decided_s``: stream time when the segmenter settled it),
    ``{start_ms: kind}`` for every segment start ("onset", or "max_length" for the
    start of the next piece of a cut segment) and the speech share. A final whose end
    is none of these ends closed a turn at a speaker change.
    """
    x = pcm_to_float(pcm.tobytes(), "s16le", 1)
    vad = VoiceDetector.from_config(cfg.vad)
    seg = Segmenter(cfg.vad, seconds_to_samples(cfg.segment.max_segment_s))
    n = vad.frame_samples
    closes: dict[int, tuple[str, float]] = {}
    starts: dict[int, str] = {}
    speech = 0
    start, forced = None, False
    for i in range(len(x) // n):
        for b in seg.step(vad.is_speech(x[i * n:(i + 1) * n])):
            if isinstance(b, SegmentEnd):
                forced = b.forced
                closes[round(b.end / RATE * 1000)] = ("max_length" if forced else "pause",
                                                      seg.position / RATE)
                speech += b.end - (start or 0)
            else:
                start = b.start
                starts[round(start / RATE * 1000)] = "max_length" if forced else "onset"
                forced = False
    for b in seg.flush():
        if isinstance(b, SegmentEnd):
            closes[round(b.end / RATE * 1000)] = ("end", len(x) / RATE)
            speech += b.end - (start or 0)
    return closes, starts, speech / max(1, len(x))


@dataclass
class StreamResult:
    plan: Plan
    start: float = 0.0  # monotonic S_i
    events: list[tuple[float, float, dict[str, Any]]] = field(default_factory=list)
    bye: dict[str, Any] | None = None
    error: str | None = None
    send_late: list[float] = field(default_factory=list)


async def _open(url: str, plan: Plan) -> Any:
    from websockets.asyncio.client import connect

    ws = await connect(url + "/v1/ingest", max_size=None, compression=None, open_timeout=60)
    await ws.send(wire.encode({"type": "hello", "room": room_of(plan.index), "mic": "bench",
                               "sample_rate": RATE, "format": "s16le", "channels": 1},
                              wire.Encoding.MSGPACK))
    ready, _ = wire.decode(await asyncio.wait_for(ws.recv(), 60))
    if ready.get("type") != "ready":
        raise RuntimeError(f"stream {plan.index}: expected ready, got {ready}")
    return ws


async def _run_stream(ws: Any, plan: Plan, start: float, prefixes: list[bytes],
                      tail_s: float) -> StreamResult:
    res = StreamResult(plan, start)
    payloads, n_src = plan.source.payloads, plan.source.chunks

    async def reader() -> None:
        async for raw in ws:
            mono, wall = time.monotonic(), time.time()
            message, _ = wire.decode(raw)
            kind = message.get("type")
            if kind == "speaker":
                res.events.append((mono, wall, message))
            elif kind == "bye":
                res.bye = message.get("stats", {})
            elif kind == "error":
                res.error = f"{message.get('code')}: {message.get('message')}"

    reading = asyncio.create_task(reader())
    try:
        for k in range(plan.chunks):
            due = start + k * CHUNK_S
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(prefixes[k] + payloads[(plan.offset + k) % n_src])
            res.send_late.append(time.monotonic() - due)
        await ws.send(wire.encode({"type": "end"}, wire.Encoding.MSGPACK))
        await asyncio.wait_for(asyncio.shield(reading), tail_s)
    except Exception as exc:  # noqa: BLE001 - a broken stream is a figure, not a crash
        res.error = res.error or f"{type(exc).__name__}: {exc}"
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await ws.close()
    if ws.close_code not in (None, 1000) and res.error is None:
        res.error = f"closed {ws.close_code} {ws.close_reason}"
    return res


async def run_level(server: Server, plans: list[Plan], tail_s: float) -> dict[str, Any]:
    """Stream every plan concurrently; return raw results and resource figures."""
    prefixes = [audio_frame_prefix(k) for k in range(max(p.chunks for p in plans))]
    sockets = []
    for k in range(0, len(plans), 16):  # open in small batches, then start the clock
        sockets += await asyncio.gather(*[_open(server.url, p) for p in plans[k:k + 16]])
    samples: list[dict[str, float]] = []
    done = asyncio.Event()

    async def sampler() -> None:
        while not done.is_set():
            try:
                samples.append(await server.metrics())
            except (OSError, TimeoutError):
                pass
            try:
                await asyncio.wait_for(done.wait(), 0.5)
            except TimeoutError:
                pass

    m0 = await server.metrics()
    load0 = os.getloadavg()[0]
    cpu0, client0, busy0 = server.cpu_s(), time.process_time(), machine_busy_s()
    t0 = time.monotonic()
    clock = t0 + 0.2
    sampling = asyncio.create_task(sampler())
    results = await asyncio.gather(*[
        _run_stream(ws, p, clock + p.stagger_s, prefixes, tail_s) for ws, p in zip(sockets, plans)
    ])
    wall = time.monotonic() - t0
    cpu, client_cpu = server.cpu_s() - cpu0, time.process_time() - client0
    busy = machine_busy_s() - busy0
    done.set()
    await sampling
    m1 = await server.metrics()
    return {"results": results, "wall_s": wall, "server_cpu_s": cpu, "client_cpu_s": client_cpu,
            "metrics": samples, "m0": m0, "m1": m1, "memory": server.memory_mb(),
            "machine_busy_s": busy, "loadavg_before": load0}


async def wait_idle(server: Server, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = await server.metrics()
        if not m.get("ingest_connections") and not m.get("queue_depth"):
            return
        await asyncio.sleep(0.25)
    log("  (server not idle after the previous level)")


def wait_quiet(server: Server, timeout_s: float = 120.0, cores: float = 0.2) -> float:
    """Wait until the server uses less than ``cores`` CPU over half a second (e.g. after
    the enrolments, while it saves its index cache in the background); returns the wait."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        c0, w0 = server.cpu_s(), time.monotonic()
        time.sleep(0.5)
        if (server.cpu_s() - c0) / (time.monotonic() - w0) < cores:
            break
    else:
        log(f"  (server still busy {timeout_s:.0f} s after the enrolments)")
    return round(time.monotonic() - t0, 1)


# -- figures --------------------------------------------------------------------------------


def summarize(n: int, seconds: float, raw: dict[str, Any], args: argparse.Namespace,
              threads: int, log_lines: list[str]) -> dict[str, Any]:
    results: list[StreamResult] = raw["results"]
    lags: dict[str, list[float]] = {k: [] for k in CLOSED_BY}  # by the closed_by field
    inferred: dict[str, list[float]] = {k: [] for k in CLOSED_BY}  # by the offline VAD
    onsets: dict[str, list[float]] = {"onset": [], "change": [], "max_length": []}
    all_lags, after_close, hangover, onset, delivery = [], [], [], [], []
    late = finals = agree = missing = 0
    field_seen = False
    for r in results:
        first_prov: dict[int, float] = {}
        seen_final: set[int] = set()
        if r.bye is not None:  # segments the server counted, each owed one final
            missing += max(0, int(r.bye.get("segments", 0))
                           - sum(1 for _, _, e in r.events if e.get("final")))
        for mono, wall, e in r.events:
            segment = int(e.get("segment", -1))
            delivery.append(wall - float(e.get("ts", wall)))
            if not e.get("final"):
                if segment not in first_prov:
                    first_prov[segment] = mono
                    start = float(e["start"])
                    value = mono - (r.start + start)
                    onset.append(value)
                    onsets[r.plan.starts.get(round(start * 1000), "change")].append(value)
                continue
            if segment in seen_final:
                continue
            seen_final.add(segment)
            finals += 1
            end = float(e["end"])
            lag = mono - (r.start + end)
            closed_by = e.get("closed_by")
            field_seen = field_seen or closed_by is not None
            kind = closed_by if closed_by in CLOSED_BY else "unknown"
            lags[kind].append(lag)
            all_lags.append(lag)
            close = r.plan.closes.get(round(end * 1000))
            guess = close[0] if close is not None else "change"
            inferred[guess].append(lag)
            agree += kind == guess
            if lag > args.late_s and (kind if closed_by is not None else guess) != "change":
                late += 1
            if close is not None and close[0] == "pause":
                chunk = max(0, math.ceil(close[1] / CHUNK_S - 1e-6) - 1)
                after_close.append(mono - (r.start + chunk * CHUNK_S))
                hangover.append(chunk * CHUNK_S - end)
    byes = [r.bye for r in results if r.bye is not None]
    m0, m1, samples = raw["m0"], raw["m1"], raw["metrics"]
    depth = [s["queue_depth"] for s in samples if "queue_depth" in s]
    late_sends = [v for r in results for v in r.send_late]
    audio_s = n * seconds
    if args.lag_from == "close" and after_close:
        group, crit = "after_vad_close", pct(after_close, 95)
    elif args.lag_from == "end" and field_seen and lags["pause"]:
        group, crit = "pause", pct(lags["pause"], 95)
    else:  # no closed_by field (or no pause final at this level): every final
        group, crit = "all", pct(all_lags, 95)
    row: dict[str, Any] = {
        "streams": n, "seconds": seconds, "wall_s": round(raw["wall_s"], 1),
        "audio_s": round(audio_s, 1),
        "speech_share": round(float(np.mean([r.plan.speech_share for r in results])), 3),
        "sources": sorted({r.plan.source.name for r in results}),
        "finals": finals,
        "finals_by_closed_by": {k: len(v) for k, v in lags.items() if v},
        "final_lag_p50_s": pct(all_lags, 50), "final_lag_p95_s": pct(all_lags, 95),
        "final_lag_p99_s": pct(all_lags, 99),
        "final_lag_max_s": round(max(all_lags), 3) if all_lags else None,
    }
    for kind in ("pause", "change", "max_length", "end"):
        for q in (50, 95, 99):
            row[f"final_lag_{kind}_p{q}_s"] = pct(lags[kind], q)
    row["finals_by_vad_inferred"] = {k: len(v) for k, v in inferred.items() if v}
    row["closed_by_agrees_with_vad"] = agree if field_seen else None
    for kind in ("pause", "change"):
        for q in (50, 95, 99):
            row[f"final_lag_{kind}_inferred_p{q}_s"] = pct(inferred[kind], q)
    row.update({
        "final_after_vad_close_n": len(after_close),
        "final_after_vad_close_p50_s": pct(after_close, 50),
        "final_after_vad_close_p95_s": pct(after_close, 95),
        "final_after_vad_close_p99_s": pct(after_close, 99),
        "vad_close_wait_p50_s": pct(hangover, 50), "vad_close_wait_p95_s": pct(hangover, 95),
        "first_provisional_n": len(onset),
        "first_provisional_p50_s": pct(onset, 50), "first_provisional_p95_s": pct(onset, 95),
        "first_provisional_vad_onset_p50_s": pct(onsets["onset"], 50),
        "first_provisional_vad_onset_p95_s": pct(onsets["onset"], 95),
        "first_provisional_after_change_p50_s": pct(onsets["change"], 50),
        "first_provisional_after_change_p95_s": pct(onsets["change"], 95),
        "delivery_p50_s": pct(delivery, 50), "delivery_p95_s": pct(delivery, 95),
        "delivery_max_s": round(max(delivery), 3) if delivery else None,
        "late_finals": late, "late_s": args.late_s,
        "late_finals_exclude": "closed_by == change" if field_seen else "VAD-inferred change",
        "dropped_jobs": sum(int(b.get("dropped_jobs", 0)) for b in byes),
        "failed_jobs": sum(int(b.get("failed_jobs", 0)) for b in byes),
        "seq_gaps": sum(int(b.get("seq_gaps", 0)) for b in byes),
        "jobs": sum(int(b.get("jobs", 0)) for b in byes),
        "speaker_changes": sum(int(b.get("speaker_changes", 0)) for b in byes),
        "segments": sum(int(b.get("segments", 0)) for b in byes),
        "missing_finals": missing,
        "streams_without_bye": sum(1 for r in results if r.bye is None),
        "stream_errors": sorted({r.error for r in results if r.error})[:5],
        "server_cpu_s": round(raw["server_cpu_s"], 2),
        "server_cpu_s_per_stream_s": round(raw["server_cpu_s"] / audio_s, 4),
        "server_cores": round(raw["server_cpu_s"] / raw["wall_s"], 2),
        "client_cpu_s": round(raw["client_cpu_s"], 2),
        "client_cpu_s_per_stream_s": round(raw["client_cpu_s"] / audio_s, 4),
        "client_cores": round(raw["client_cpu_s"] / raw["wall_s"], 3),
        "other_processes_cores": round(max(0.0, raw["machine_busy_s"] - raw["server_cpu_s"]
                                           - raw["client_cpu_s"]) / raw["wall_s"], 2),
        "loadavg_1m_before": round(raw["loadavg_before"], 2),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "client_send_late_p99_s": pct(late_sends, 99),
        "client_send_late_max_s": round(max(late_sends), 3) if late_sends else None,
        "server_rss_mb": raw["memory"][0], "server_peak_rss_mb": raw["memory"][1],
        "queue_depth_max": int(max(depth)) if depth else None,
        "queue_depth_mean": round(float(np.mean(depth)), 2) if depth else None,
        "metrics_samples": len(samples),
        "embeddings": int(m1.get("embeddings_total", 0) - m0.get("embeddings_total", 0)),
        "metrics_delta": {k: round(v - m0.get(k, 0), 3) for k, v in sorted(m1.items())
                          if k.endswith("_total")},
        "gallery_people": int(m1["people"]) if "people" in m1 else None,
        "live_searches": int(m1.get("live_searches_total", 0)
                             - m0.get("live_searches_total", 0)),
        "live_search_batches": int(m1.get("live_search_batches_total", 0)
                                   - m0.get("live_search_batches_total", 0)),
        "worker_busy_share": round((m1.get("embed_seconds_total", 0)
                                    - m0.get("embed_seconds_total", 0))
                                   / (raw["wall_s"] * threads), 3),
        "server_log": log_lines[:20],
        "criterion_group": group, "criterion_p95_s": crit,
    })
    reasons = []
    if crit is None:
        reasons.append("no finals")
    elif crit > args.max_lag:
        reasons.append(f"p95 final lag ({group}) {crit:.3f} s > {args.max_lag:g} s")
    for key in ("dropped_jobs", "failed_jobs", "missing_finals", "streams_without_bye"):
        if row[key]:
            reasons.append(f"{key} {row[key]}")
    row["searches_per_batch"] = (round(row["live_searches"] / row["live_search_batches"], 2)
                                 if row["live_search_batches"] else None)
    row["passed"] = not reasons
    row["fail_reasons"] = reasons
    return row


def make_plans(sources: list[Source], n: int, seconds: float, seed: int, cfg: Config,
               vad_cache: dict[tuple[Any, ...], Any]) -> list[Plan]:
    rng = np.random.default_rng(seed * 7919 + n)
    chunks = round(seconds / CHUNK_S)
    plans = []
    for i in range(n):
        src = sources[i % len(sources)]
        copy = i // len(sources)
        offset = round(copy * COPY_STRIDE_S / CHUNK_S) % src.chunks
        plan = Plan(i, src, offset, chunks, float(rng.uniform(0.0, 1.0)))
        room_cfg = cfg.for_room(room_of(i))  # the stream's VAD: its room's profile, if any
        key = (src.name, offset, chunks, repr(room_cfg.vad), room_cfg.segment.max_segment_s)
        if key not in vad_cache:
            vad_cache[key] = vad_closes(plan.pcm(), room_cfg)
        plan.closes, plan.starts, plan.speech_share = vad_cache[key]
        plans.append(plan)
    return plans


def ramp(passes: Any, max_streams: int) -> int:
    """Largest N with ``passes(N)``: double from 1 while it passes (up to
    ``max_streams``), then bisect between the last pass and the first failure.
    Returns 0 when N = 1 fails."""
    last_pass, first_fail, n = 0, None, 1
    while n <= max_streams:
        if not passes(n):
            first_fail = n
            break
        last_pass = n
        if n == max_streams:
            break
        n = min(2 * n, max_streams)
    while first_fail is not None and last_pass > 0 and first_fail - last_pass > 1:
        mid = (last_pass + first_fail) // 2
        if passes(mid):
            last_pass = mid
        else:
            first_fail = mid
    return last_pass


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


COLUMNS = [
    ("N", "streams"), ("finals", "finals"),
    ("lag p50", "final_lag_p50_s"), ("p95", "final_lag_p95_s"), ("p99", "final_lag_p99_s"),
    ("pause p50", "final_lag_pause_p50_s"), ("p95", "final_lag_pause_p95_s"),
    ("p99", "final_lag_pause_p99_s"),
    ("change p50", "final_lag_change_p50_s"), ("p95", "final_lag_change_p95_s"),
    ("VAD-pause p50", "final_lag_pause_inferred_p50_s"), ("p95", "final_lag_pause_inferred_p95_s"),
    ("VAD-change p95", "final_lag_change_inferred_p95_s"),
    ("after-close p50", "final_after_vad_close_p50_s"), ("p95", "final_after_vad_close_p95_s"),
    ("1st prov p50", "first_provisional_p50_s"), ("p95", "first_provisional_p95_s"),
    ("srv cpu/stream", "server_cpu_s_per_stream_s"),
    ("cli cpu/stream", "client_cpu_s_per_stream_s"), ("other cores", "other_processes_cores"),
    ("searches", "live_searches"), ("batches", "live_search_batches"),
    ("per batch", "searches_per_batch"),
    ("dropped", "dropped_jobs"), ("no final", "missing_finals"), ("late", "late_finals"),
    ("queue max", "queue_depth_max"),
    ("rss MB", "server_rss_mb"), ("peak MB", "server_peak_rss_mb"), ("pass", "passed"),
]


def print_table(rows: list[dict[str, Any]]) -> None:
    print(" | ".join(h for h, _ in COLUMNS))
    for row in rows:
        print(" | ".join(fmt(row.get(k)) for _, k in COLUMNS))


def plot(rows: list[dict[str, Any]], answer: int | None, max_lag: float, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install -e '.[tools]'): no plot")
        return False
    rows = sorted(rows, key=lambda r: r["streams"])
    xs = [r["streams"] for r in rows]

    def ys(key: str) -> list[float]:
        return [math.nan if r.get(key) is None else r[key] for r in rows]

    fig, ax = plt.subplots(figsize=(9, 5.5))
    with_field = any(r.get("final_lag_pause_p95_s") is not None for r in rows)
    pause = (("final_lag_pause_p95_s", "final lag p95, closed_by pause (criterion)", "D-")
             if with_field else
             ("final_lag_pause_inferred_p95_s", "final lag p95, VAD pause ends (inferred)", "D-"))
    for key, label, style in [
        ("final_lag_p50_s", "final lag p50, all finals", "o--"),
        ("final_lag_p95_s", "final lag p95, all finals", "s--"),
        ("final_lag_p99_s", "final lag p99, all finals", "^--"),
        pause,
        ("final_after_vad_close_p95_s", "pause final after the VAD closed it, p95", "v:"),
        ("first_provisional_p95_s", "onset to first provisional, p95", "x-."),
    ]:
        values = ys(key)
        if any(not math.isnan(v) for v in values):
            ax.plot(xs, values, style, label=label)
    ax.axhline(max_lag, color="red", linewidth=1, label=f"criterion {max_lag:g} s")
    if answer:
        ax.axvline(answer, color="grey", linestyle=":", label=f"largest passing N = {answer}")
    if len(xs) > 1 and max(xs) / max(1, min(xs)) >= 4:
        ax.set_xscale("log", base=2)
    ticks = sorted({x for x in xs if x & (x - 1) == 0} | ({answer} if answer else set())
                   | {min(xs), max(xs)})
    ax.set_xticks(ticks, [str(x) for x in ticks])
    ax.minorticks_off()
    ax.set_yscale("log")
    top = max([max_lag] + [v for k in ("final_lag_p99_s", "first_provisional_p95_s")
                           for v in ys(k) if not math.isnan(v)])
    yt = [v for v in (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 20, 50) if v <= 1.5 * top]
    ax.set_yticks(yt, [f"{v:g}" for v in yt])
    ax.set_xlabel("concurrent streams N")
    ax.set_ylabel("seconds (wall clock)")
    ax.set_title("voiceprint streamer: lag vs concurrent real-time streams")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", help="fixed levels, e.g. 1,8,32 (default: ramp)")
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per stream per level")
    parser.add_argument("--max-streams", type=int, default=128, help="ramp ceiling")
    parser.add_argument("--max-lag", type=float, default=0.3,
                        help="criterion: p95 final lag (pause-closed finals) in seconds")
    parser.add_argument("--lag-from", choices=("end", "close"), default="end",
                        help="criterion lag from the segment's end (default) or from the "
                             "moment the VAD closed it (hang-over excluded; pause finals)")
    parser.add_argument("--late-s", type=float, default=1.0,
                        help="a final this much after its end is late (change finals excluded)")
    parser.add_argument("--small", action="store_true", help="1 stream of 10 s, no ramp (CI)")
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a server config value (YAML syntax); repeatable")
    parser.add_argument("--conversations", type=int, default=16,
                        help="stitched conversations (60 s each) besides the meetings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gallery", type=int, default=0, metavar="N",
                        help="first fill the registry with N distinct synthetic people "
                             "(bench/gallery.py's two-covariance model; default none)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    args = parser.parse_args(argv)
    if args.gallery < 0:
        parser.error("--gallery wants N >= 0")
    seconds = 10.0 if args.small else args.seconds
    fixed = [1] if args.small else (
        [int(v) for v in args.streams.split(",")] if args.streams else None)
    t_start = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="realtime-") as tmp_name:
        tmp = Path(tmp_name)
        config_path = write_config(Path(args.config), args.set, tmp)
        cfg = load_config(config_path)
        sources = build_sources(cfg, tmp, 2 if args.small else args.conversations, 60.0, args.seed)
        log(f"sources: {len(sources)} ({sum(s.kind == 'meeting' for s in sources)} meetings, "
            f"{sum(s.kind == 'conversation' for s in sources)} conversations), speech share "
            f"{np.mean([s.speech_share for s in sources]):.2f} "
            f"(meetings {np.mean([s.speech_share for s in sources if s.kind == 'meeting']):.2f}, "
            f"conversations "
            f"{np.mean([s.speech_share for s in sources if s.kind != 'meeting']):.2f})")
        code = code_fingerprint()
        gallery: dict[str, Any] = {"synthetic_people": args.gallery}
        if args.gallery:
            t = time.monotonic()
            vectors, model_id, gallery["synthetic_model"] = synthetic_people(
                cfg, args.gallery, args.small)
            gallery["generate_s"] = round(time.monotonic() - t, 1)
            gallery["bulk_write_s"] = round(fill_registry(tmp / "data", model_id, vectors), 1)
            del vectors
            log(f"gallery: {args.gallery} synthetic people ({model_id}) drawn in "
                f"{gallery['generate_s']:g} s, written to the registry in "
                f"{gallery['bulk_write_s']:g} s; starting the server (it builds its index) ...")
        server = Server(config_path, tmp / "data", tmp / "server.log",
                        timeout_s=60.0 + 0.006 * args.gallery)
        gallery["server_startup_s"] = server.startup_s
        log(f"server listening after {server.startup_s:g} s")
        rows: dict[int, dict[str, Any]] = {}
        order: list[int] = []
        vad_cache: dict[Any, Any] = {}
        try:
            people = enrolments()
            refused = asyncio.run(enrol_all(server.url, people))
            log(f"server {server.url} (pid {server.pid}); enrolled {len(people) - len(refused)}"
                f"/{len(people)} people" + (f"; refused: {refused}" if refused else ""))
            gallery["enrolled_over_api"] = len(people) - len(refused)
            gallery["settle_s"] = wait_quiet(server)
            gallery["people"] = int(asyncio.run(server.metrics()).get("people", -1))
            log(f"gallery: {gallery['people']} people ({args.gallery} synthetic + "
                f"{gallery['enrolled_over_api']} enrolled); server idle after "
                f"{gallery['settle_s']:g} s")
            startup_log = server.new_log_lines()

            def level(n: int) -> dict[str, Any]:
                plans = make_plans(sources, n, seconds, args.seed, cfg, vad_cache)
                log(f"N={n}: {n} stream(s) x {seconds:g} s ...")
                asyncio.run(wait_idle(server))
                raw = asyncio.run(run_level(server, plans, tail_s=60.0 + n))
                row = summarize(n, seconds, raw, args, cfg.worker.threads, server.new_log_lines())
                rows[n] = row
                order.append(n)
                log(f"  finals {row['finals']} {row['finals_by_closed_by']}, lag p50/p95/p99 "
                    f"{fmt(row['final_lag_p50_s'])}/{fmt(row['final_lag_p95_s'])}/"
                    f"{fmt(row['final_lag_p99_s'])} s, criterion ({row['criterion_group']}) p95 "
                    f"{fmt(row['criterion_p95_s'])} s, VAD-inferred pause p95 "
                    f"{fmt(row['final_lag_pause_inferred_p95_s'])} s, after VAD close p95 "
                    f"{fmt(row['final_after_vad_close_p95_s'])} s, first provisional p95 "
                    f"{fmt(row['first_provisional_p95_s'])} s, server {row['server_cores']} cores,"
                    f" client {row['client_cores']} cores, dropped {row['dropped_jobs']}, "
                    f"queue max {row['queue_depth_max']} -> "
                    f"{'pass' if row['passed'] else 'FAIL: ' + '; '.join(row['fail_reasons'])}")
                if row["client_send_late_p99_s"] and row["client_send_late_p99_s"] > 0.05:
                    log(f"  warning: the client sent chunks late (p99 "
                        f"{row['client_send_late_p99_s']:.3f} s): it no longer keeps real time")
                if row["other_processes_cores"] > 0.25:
                    log(f"  warning: other processes used {row['other_processes_cores']:.2f} of "
                        f"{os.cpu_count()} cores during this level: the server had less CPU "
                        f"than the machine has (capacity is understated)")
                for line in row["server_log"][:5]:
                    log(f"  server: {line}")
                return row

            if fixed is not None:
                for n in fixed:
                    level(n)
            else:
                ramp(lambda n: bool(level(n)["passed"]), args.max_streams)
        finally:
            server.stop()

    levels = [rows[n] for n in sorted(rows)]
    passing = [r["streams"] for r in levels if r["passed"]]
    answer = max(passing) if passing else 0
    groups = sorted({r["criterion_group"] for r in levels})
    criterion = {
        "max_lag_s": args.max_lag,
        "lag": ("p95 final lag of finals closed by a pause (closed_by == 'pause')"
                if groups == ["pause"] else
                "p95 of pause finals' arrival after the chunk that let the VAD close them"
                " (--lag-from close)" if groups == ["after_vad_close"] else
                "p95 final lag of all finals (no final carried closed_by)" if groups == ["all"]
                else f"mixed: {groups}"),
        "also": "no dropped or failed jobs, no segment without its final, every stream got its bye",
        "groups_used": groups,
    }
    print(f"gallery: {gallery.get('people')} people ({args.gallery} synthetic + "
          f"{gallery.get('enrolled_over_api')} enrolled over /v1/api); server start-up "
          f"{gallery['server_startup_s']:g} s")
    print_table(levels)
    print(f"criterion: {criterion['lag']} <= {args.max_lag:g} s, {criterion['also']}")
    if fixed is None:
        print(f"largest N passing: {answer}" + ("" if answer else " (no level passed)"))
    else:
        print(f"largest N passing (of the levels run): {answer}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "mode": "small" if args.small else ("fixed" if fixed is not None else "ramp"),
        "largest_passing_streams": answer, "criterion": criterion,
        "run_order": order, "gallery": gallery, "levels": levels,
        "settings": {"seconds": seconds, "max_streams": args.max_streams, "late_s": args.late_s,
                     "config": args.config, "set": args.set, "seed": args.seed,
                     "gallery": args.gallery,
                     "lag_from": args.lag_from,
                     "chunk_s": CHUNK_S, "worker_threads": cfg.worker.threads,
                     "cpus": os.cpu_count()},
        "sources": [{"name": s.name, "kind": s.kind, "seconds": round(len(s.pcm) / RATE, 1),
                     "speech_share": s.speech_share} for s in sources],
        "server_startup_log": startup_log[:20],
        "server_code": code,
        "total_wall_s": round(time.monotonic() - t_start, 1),
    }
    (out / "realtime.json").write_text(json.dumps(result, indent=2))
    if plot(levels, answer, args.max_lag, out / "realtime_lag.png"):
        print(f"wrote {out / 'realtime.json'} and {out / 'realtime_lag.png'}")
    else:
        print(f"wrote {out / 'realtime.json'}")
    print(f"total {result['total_wall_s']:.0f} s")


if __name__ == "__main__":
    main()
