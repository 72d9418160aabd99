"""``streamer demo``: the real console command in a subprocess, and its room page in Chromium.

Real parts only: the demo process loads the real model, enrols the packaged LibriSpeech
samples over its own ``/v1/api`` and streams the stitched conversation over its own
``/v1/ingest``; the browser test opens ``/room/demo`` of a running demo in headless
Chromium (Debian ``chromium`` + ``chromium-driver``, see ``browser_support``) and waits
for an enrolled person's name. Every process runs from a scratch working directory,
so nothing but the installed package (its samples are package data) is used.
"""

from __future__ import annotations

import contextlib
import queue
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf
from browser_support import chromium
from test_cli import CLI, ENV, cli_process

from streamer import demo

pytestmark = pytest.mark.slow

ROOM_LINE = re.compile(r"room display: (http://127\.0\.0\.1:(\d+)/room/demo)\b")
NAMES = {p.name for p in demo.PEOPLE}


def test_samples_are_packaged_and_credited() -> None:
    credits = (demo.SAMPLES / "CREDITS.md").read_text(encoding="utf-8")
    assert "CC BY 4.0" in credits and "LibriSpeech" in credits
    files = sorted(p.name for p in demo.SAMPLES.glob("*.flac"))
    used = {f for p in demo.PEOPLE for f in p.enrol_files} | {t.file for t in demo.CONVERSATION}
    assert used == set(files), "every packaged sample is used, every used one is packaged"
    total = sum(p.stat().st_size for p in demo.SAMPLES.glob("*.flac"))
    assert total < 5_000_000
    for name in files:
        assert name in credits, f"{name} is not credited"
        info = sf.info(str(demo.SAMPLES / name))
        assert (info.samplerate, info.channels) == (16000, 1)
    # conversation turns are never the enrolment's own utterances
    enrol_files = {f for p in demo.PEOPLE for f in p.enrol_files}
    assert not enrol_files & {t.file for t in demo.CONVERSATION}
    assert any(t.name is None for t in demo.CONVERSATION)
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"samples/*"' in pyproject


def test_demo_one_pass_from_another_folder(tmp_path: Path) -> None:
    proc = subprocess.run([*CLI, "demo", "--port", "0", "--speed", "4", "--loops", "1"],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    lines = out.splitlines()
    # the addresses come first, before the enrolment and the stream
    assert ROOM_LINE.search(lines[1]), out
    port = ROOM_LINE.search(lines[1]).group(2)  # type: ignore[union-attr]
    assert int(port) > 0
    assert f"people page:  http://127.0.0.1:{port}/people" in lines[2]
    for name in NAMES:
        assert f"enrolled {name} " in out
    assert "pass 1 of 1:" in out
    m = re.search(r"done: 1 pass, (\d+) of (\d+) final decisions", out)
    assert m, out
    right, named = int(m.group(1)), int(m.group(2))
    assert named >= len(demo.CONVERSATION) and right >= named - 2, out
    assert "unknown speaker" in out  # the never-enrolled voice
    assert lines[-1] == "shutting down"
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == [], "the demo leaves nothing in the working folder"


@pytest.mark.parametrize("args, message", [
    (["--speed", "0"], "--speed must be > 0"),
    (["--loops", "-1"], "--loops must be 0"),
    (["--data-dir", "x"], "leave out --data-dir"),
    (["--host", "192.0.2.1"], "not a loopback address"),
])
def test_demo_bad_options_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run([*CLI, "demo", "--port", "0", *args], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_demo_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([*CLI, "demo", "--port", str(port)], cwd=tmp_path, env=ENV,
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}"), proc.stderr
    assert "--port 0" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.fixture
def running_demo(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, queue.Queue[str]]]:
    """``streamer demo --port 0`` (until stopped) in a scratch folder; its room address."""
    work = tmp_path / "work"
    work.mkdir()
    with cli_process(work, ["demo", "--port", "0", "--speed", "1.5"],
                     re.compile(ROOM_LINE.pattern + r".*\s*"), tmp_path / "demo.log",
                     what="the demo did not print its room address") as (proc, m, lines):
        yield proc, m.group(1), lines


def test_room_page_of_the_demo_shows_a_name(tmp_path: Path, running_demo: tuple[
        subprocess.Popen[str], str, queue.Queue[str]]) -> None:
    proc, room_url, lines = running_demo
    with chromium(tmp_path / "chromium-profile") as driver:
        driver.get(room_url)
        deadline = time.monotonic() + 60
        seen = ""
        while time.monotonic() < deadline:
            seen = driver.execute_script(
                "return document.getElementById('now-name').textContent") or ""
            if seen.strip().rstrip("?") in NAMES:
                break
            time.sleep(0.1)
        assert seen.strip().rstrip("?") in NAMES, f"no enrolled name on the page: {seen!r}"
        artifacts = Path(__file__).resolve().parents[1] / "artifacts"
        artifacts.mkdir(exist_ok=True)
        driver.save_screenshot(str(artifacts / "demo_room.png"))
    # SIGTERM ends the demo cleanly: the stream ends, the server shuts down, exit 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    out = []
    with contextlib.suppress(queue.Empty):
        while True:
            out.append(lines.get(timeout=2))
    assert out and out[-1].strip() == "shutting down", out
    assert any(line.startswith("stopped: ") for line in out), out

