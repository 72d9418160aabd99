"""The real console commands in subprocesses: serve, enroll, people, identify, verify, delete.

``streamer serve --port 0`` prints ``listening on ws://127.0.0.1:PORT``; the people
commands talk to it with ``--url``, or open a data dir directly without it. Every
process runs the same interpreter (``sys.executable -c "from streamer.cli import
main; main()"``, what the ``streamer`` script does) from a scratch working directory.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest
from server_support import IMPOSTOR_DIR, LIBRI_DIR, manifest

from streamer.room_profiles import PRESETS

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-c", "from streamer.cli import main; main()"]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "STREAMER_LOG": "WARNING"}


def run(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def _files(speaker: str) -> list[str]:
    return [str(p) for p, s, _ in manifest(LIBRI_DIR) if s == speaker]


def _lines(stream: IO[str], out: queue.Queue[str]) -> None:
    for line in stream:
        out.put(line)


@contextmanager
def cli_process(cwd: Path, args: Sequence[str], ready: re.Pattern[str], log_path: Path,
                what: str = "the server did not print its address", timeout_s: float = 60,
                ) -> Iterator[tuple[subprocess.Popen[str], re.Match[str], queue.Queue[str]]]:
    """Run ``streamer ARGS`` in ``cwd`` (stderr to ``log_path``) until a stdout line matches
    ``ready`` (``fullmatch``); yield the process, the match and the queue of later lines.
    Killed on exit. Fails with the log when the process ends first, ``what`` on timeout."""
    log = log_path.open("w")
    proc = subprocess.Popen([*CLI, *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=log, text=True)
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                m = ready.fullmatch(lines.get(timeout=1))
            except queue.Empty:
                assert proc.poll() is None, log_path.read_text()
                continue
            if m:
                yield proc, m, lines
                return
        raise AssertionError(what)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()


class Served:
    def __init__(self, proc: subprocess.Popen[str], url: str, lines: queue.Queue[str]) -> None:
        self.proc = proc
        self.url = url
        self.lines = lines


@pytest.fixture
def served(tmp_path: Path, speech_dir: Path) -> Iterator[Served]:
    data = tmp_path / "served-data"
    with cli_process(tmp_path, ["serve", "--port", "0", "--data-dir", str(data)],
                     re.compile(r"listening on (ws://127\.0\.0\.1:(\d+))\s*"),
                     tmp_path / "serve.log") as (proc, m, lines):
        assert int(m.group(2)) > 0
        yield Served(proc, m.group(1), lines)


def test_cli_against_a_running_server(served: Served, tmp_path: Path) -> None:
    ada, bob = _files("1688"), _files("1998")
    url = ["--url", served.url]

    enrolled = {}
    for name, files in (("Ada", ada[:2]), ("Bob", bob[:2])):
        r = run(tmp_path, "enroll", name, *files, *url)
        assert r.returncode == 0, r.stderr
        m = re.match(rf"enrolled {name} as (p_[0-9a-f]+) \((\d+\.\d) s of speech in total\)",
                     r.stdout)
        assert m, r.stdout
        assert float(m.group(2)) >= 10.0
        enrolled[name] = m.group(1)

    r = run(tmp_path, "people", *url)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split()[-1] for line in r.stdout.splitlines()[1:]}
    assert rows == {enrolled["Ada"]: "Ada", enrolled["Bob"]: "Bob"}
    r = run(tmp_path, "people", "--limit", "1", *url)  # pages, with the way to the next
    assert r.returncode == 0 and "1-1 of 2; next page: --offset 1" in r.stdout, r.stdout
    r = run(tmp_path, "people", "--limit", "1", "--offset", "1", *url)
    assert "2-2 of 2" in r.stdout and "next page" not in r.stdout, r.stdout
    r = run(tmp_path, "people", "--query", "bo", *url)
    assert r.stdout.splitlines()[1].split() == [enrolled["Bob"], r.stdout.split()[4], "Bob"]
    assert len(r.stdout.splitlines()) == 2, r.stdout

    r = run(tmp_path, "identify", ada[5], *url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith(f"Ada ({enrolled['Ada']}), distance ")
    r = run(tmp_path, "identify", bob[6], *url)
    assert r.returncode == 0 and r.stdout.startswith("Bob ("), r.stdout
    stranger = str(manifest(IMPOSTOR_DIR)[0][0])
    r = run(tmp_path, "identify", stranger, *url)
    assert r.returncode == 1, r.stdout
    assert r.stdout.startswith("nobody enrolled is close enough")

    r = run(tmp_path, "verify", enrolled["Ada"], ada[4], *url)
    assert r.returncode == 0 and r.stdout.startswith("accepted: distance"), r.stdout
    r = run(tmp_path, "verify", enrolled["Ada"], bob[4], *url)
    assert r.returncode == 1 and r.stdout.startswith("rejected: distance"), r.stdout
    r = run(tmp_path, "verify", "p_000000000000", ada[4], *url)
    assert r.returncode == 2 and "unknown_person" in r.stderr, (r.stdout, r.stderr)

    r = run(tmp_path, "delete", enrolled["Ada"], *url)
    assert r.returncode == 0 and r.stdout.strip() == f"deleted {enrolled['Ada']}", r.stdout
    r = run(tmp_path, "people", *url)
    assert "Ada" not in r.stdout and enrolled["Bob"] in r.stdout
    r = run(tmp_path, "identify", ada[5], *url)
    assert "Ada" not in r.stdout

    # SIGTERM: a clean stop with exit code 0
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=15) == 0
    rest = []
    while not served.lines.empty():
        rest.append(served.lines.get())
    assert "shutting down\n" in rest


def test_cli_offline_on_a_data_dir(tmp_path: Path, speech_dir: Path) -> None:
    data = ["--data-dir", str(tmp_path / "offline")]
    ada = _files("2033")
    r = run(tmp_path, "enroll", "Carol", ada[0], ada[1], *data, "--info", '{"team": "b"}')
    assert r.returncode == 0, r.stderr
    m = re.match(r"enrolled Carol as (p_[0-9a-f]+)", r.stdout)
    assert m, r.stdout
    pid = m.group(1)
    assert (tmp_path / "offline" / "registry.sqlite3").is_file()

    r = run(tmp_path, "people", *data)
    assert r.returncode == 0 and pid in r.stdout and "Carol" in r.stdout
    r = run(tmp_path, "identify", ada[6], *data)
    assert r.returncode == 0 and r.stdout.startswith(f"Carol ({pid})"), r.stdout
    assert "match when distance <= 1.0" in r.stdout
    # --room: decided with that room's profile (here: the built-in far one)
    far = PRESETS["far"]["match"]["max_distance"]
    config = tmp_path / "rooms.yaml"
    config.write_text("rooms:\n  hall: far\n")
    r = run(tmp_path, "identify", ada[6], "--room", "hall", "--config", str(config), *data)
    assert r.returncode == 0 and f"match when distance <= {far:g}" in r.stdout, r.stdout
    r = run(tmp_path, "verify", pid, ada[6], "--room", "hall", "--config", str(config), *data)
    assert r.returncode == 0 and r.stdout.startswith("accepted"), r.stdout
    assert f"(threshold {far:g})" in r.stdout, r.stdout
    r = run(tmp_path, "delete", pid, *data)
    assert r.returncode == 0 and f"deleted {pid}" in r.stdout
    r = run(tmp_path, "people", *data)
    assert r.returncode == 0 and r.stdout.strip() == "nobody enrolled"
    r = run(tmp_path, "identify", ada[6], *data)
    assert r.returncode == 1 and r.stdout.startswith("nobody enrolled")
    # errors exit 2 with a sentence on stderr
    r = run(tmp_path, "enroll", "Nobody", str(tmp_path / "missing.flac"), *data)
    assert r.returncode == 2 and r.stderr.startswith("error:")


def test_console_script_is_installed(tmp_path: Path) -> None:
    script = shutil.which("streamer")
    assert script is not None, "pip install -e . puts the streamer console script on PATH"
    r = subprocess.run([script, "--help"], cwd=tmp_path, env=ENV, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "serve" in r.stdout and "enroll" in r.stdout
