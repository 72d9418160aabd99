"""Real-time benchmark: N concurrent microphone streams against a real server process.

    python bench/realtime.py [--streams 1,2,4] [--seconds 30] [--small] [--out bench/out]

Starts ``streamer serve --port 0`` on a fresh data dir, enrols the AMI meeting speakers
over ``/v1/api``, then streams AMI recordings (and, when N exceeds them, the same
recordings again) concurrently at real-time pace through ``/v1/ingest`` with
``clients/stream_file.py``. For each N it prints:

* final lag: wall-clock time from a segment's end (in audio time, mapped to the wall
  clock of its stream) to the arrival of its ``final`` event (p50/p95/max);
* first guess: time from a segment's start to its first provisional ``speaker`` event;
* server CPU seconds per second of audio per stream (from /proc), and dropped jobs.

Figures, not pass/fail. ``--small`` streams one 10 s excerpt once, so CI can check
that the script runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clients.stream_file import stream_file
from streamer import wire

SPEECH = ROOT.parent / "shared" / "speech"
AMI = SPEECH / "ami_pyannote_diarization"
RECORDINGS = ["ami_dev00", "ami_dev01", "ami_trn00", "ami_trn01", "ami_trn03",
              "ami_seriously_mixture", "pyannote_sample"]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _enroll(url: str) -> None:
    from websockets.asyncio.client import connect

    async with connect(url + "/v1/api", max_size=None) as ws:
        for speaker_dir in sorted((AMI / "segments").iterdir()):
            parts = [sf.read(f, dtype="float32")[0] for f in sorted(speaker_dir.glob("*.flac"))]
            audio = np.concatenate(parts)[: 16000 * 8]
            pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
            await ws.send(wire.encode({"type": "enroll", "id": speaker_dir.name,
                                       "name": speaker_dir.name, "pcm": pcm,
                                       "sample_rate": 16000, "format": "s16le"},
                                      wire.Encoding.MSGPACK))
            reply, _ = wire.decode(await ws.recv())
            if reply["type"] != "enrolled":
                print(f"  (not enrolled {speaker_dir.name}: {reply.get('message')})", file=sys.stderr)


async def _one_stream(url: str, path: Path, room: str, seconds: float, tmp: Path) -> dict[str, Any]:
    x, rate = sf.read(path, dtype="int16")
    excerpt = tmp / f"{room}.wav"
    sf.write(excerpt, x[: int(rate * seconds)], rate, subtype="PCM_16")
    arrivals: list[tuple[dict[str, Any], float]] = []
    started = time.time()
    await stream_file(url, excerpt, room, mic="bench", speed=1.0, chunk_ms=100,
                      on_message=lambda m, t: arrivals.append((m, t)))
    final_lag, first_guess = [], []
    first_seen: dict[int, float] = {}
    bye: dict[str, Any] = {}
    for message, at in arrivals:
        if message.get("type") == "bye":
            bye = message.get("stats", {})
        if message.get("type") != "speaker":
            continue
        segment = message["segment"]
        if message["final"]:
            final_lag.append(at - (started + message["end"]))
        elif segment not in first_seen:
            first_seen[segment] = at
            first_guess.append(at - (started + message["start"]))
    return {"final_lag": final_lag, "first_guess": first_guess, "bye": bye}


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def _run_level(url: str, n: int, seconds: float, pid: int, tmp: Path) -> dict[str, Any]:
    files = [AMI / "recordings" / f"{RECORDINGS[i % len(RECORDINGS)]}.flac" for i in range(n)]
    cpu0, t0 = _cpu_seconds(pid), time.time()
    results = await asyncio.gather(*[
        _one_stream(url, f, f"room{i}", seconds, tmp) for i, f in enumerate(files)
    ])
    cpu = _cpu_seconds(pid) - cpu0
    audio_s = sum(min(seconds, sf.info(f).duration) for f in files)
    lags = [v for r in results for v in r["final_lag"]]
    guesses = [v for r in results for v in r["first_guess"]]
    dropped = sum(r["bye"].get("dropped_jobs", 0) for r in results)
    return {
        "streams": n, "wall_s": round(time.time() - t0, 1), "audio_s": round(audio_s, 1),
        "finals": len(lags),
        "final_lag_p50_s": round(_pct(lags, 50), 3), "final_lag_p95_s": round(_pct(lags, 95), 3),
        "final_lag_max_s": round(max(lags), 3) if lags else None,
        "first_guess_p50_s": round(_pct(guesses, 50), 3),
        "first_guess_p95_s": round(_pct(guesses, 95), 3),
        "cpu_s_per_audio_s": round(cpu / audio_s, 4) if audio_s else None,
        "dropped_jobs": dropped, "server_rss_mb": round(_rss_mb(pid), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", default="1,2,4,8")
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per stream")
    parser.add_argument("--small", action="store_true", help="1 stream of 10 s (for CI)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    args = parser.parse_args()
    levels = [1] if args.small else [int(n) for n in args.streams.split(",")]
    seconds = 10.0 if args.small else args.seconds

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = subprocess.Popen(
            [sys.executable, "-c", "from streamer.cli import main; main()",
             "--config", str(ROOT / "config.yaml"), "--log-level", "WARNING",
             "serve", "--port", "0", "--data-dir", str(tmp / "data")],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            match = re.search(r"ws://[\d.]+:\d+", line)
            if not match:
                raise SystemExit(f"server did not start: {line!r}")
            url = match.group(0)
            asyncio.run(_enroll(url))
            rows = []
            for n in levels:
                print(f"streaming {n} stream(s) of {seconds:.0f} s ...", file=sys.stderr)
                rows.append(asyncio.run(_run_level(url, n, seconds, server.pid, tmp)))
        finally:
            server.terminate()
            server.wait(timeout=30)

    header = ("streams", "final_lag_p50_s", "final_lag_p95_s", "final_lag_max_s",
              "first_guess_p50_s", "first_guess_p95_s", "cpu_s_per_audio_s", "dropped_jobs",
              "server_rss_mb")
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(row[h]) for h in header))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "realtime.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
