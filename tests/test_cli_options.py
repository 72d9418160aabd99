"""``streamer`` options work where people type them, and errors are one line.

Real subprocesses of the console entry point against a real server on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from test_cli import CLI, ENV, cli_process, run

from streamer.config import REPO_ROOT

pytestmark = pytest.mark.slow

COMMON = ("--config", "--data-dir", "--url", "--token", "--log-level", "--debug")
COMMANDS = ("serve", "enroll", "identify", "verify", "people", "update", "delete", "calibrate",
            "demo", "import")
TOKEN = "s3cret-admin-token"
LISTENING = re.compile(r"listening on (ws://127\.0\.0\.1:\d+)\s*")


@contextmanager
def serve(cwd: Path, *args: str) -> Iterator[str]:
    """``streamer serve --port 0 ARGS`` in ``cwd``; yields the ws:// address it prints."""
    with cli_process(cwd, ["serve", "--port", "0", *args], LISTENING,
                     cwd / "serve.log") as (_, m, _lines):
        yield m.group(1)


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_every_command_help_lists_the_common_options(tmp_path: Path) -> None:
    for command in COMMANDS:
        r = run(tmp_path, command, "--help")
        assert r.returncode == 0, r.stderr
        for option in COMMON:
            assert option in r.stdout, (command, option)


def test_options_before_or_after_the_command(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "my.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"model": {"path": str(REPO_ROOT / "models" / "campplus.onnx")}}))
    before = run(tmp_path, "--config", str(config), "--data-dir", "d1", "--log-level", "WARNING",
                 "people")
    after = run(tmp_path, "people", "--config", str(config), "--data-dir", "d2",
                "--log-level", "WARNING")
    for r in (before, after):
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "nobody enrolled"
    assert (tmp_path / "d1").is_dir() and (tmp_path / "d2").is_dir()
    # a value after the command wins over one before it
    run(tmp_path, "--data-dir", "d3", "people", "--data-dir", "d4")
    assert (tmp_path / "d4").is_dir() and not (tmp_path / "d3").exists()
    r = run(tmp_path, "serve", "--url", "ws://127.0.0.1:1")
    assert r.returncode == 2 and "serve does not use --url" in r.stderr


def test_url_forms_and_one_line_connection_errors(tmp_path: Path) -> None:
    config = tmp_path / "auth.yaml"
    config.write_text(yaml.safe_dump({"auth": {"tokens": {TOKEN: ["admin"]}}}))
    with serve(tmp_path, "--config", str(config), "--data-dir", "data") as url:
        http = url.replace("ws://", "http://")
        # the address as the server prints it for browsers, the token after the command
        r = run(tmp_path, "people", "--url", http + "/", "--token", TOKEN)
        assert r.returncode == 0 and r.stdout.strip() == "nobody enrolled", r.stderr
        r = run(tmp_path, "--url", url.removeprefix("ws://"), "--token", TOKEN, "people")
        assert r.returncode == 0, r.stderr
        line = one_line_error(run(tmp_path, "people", "--url", url))
        assert "unauthorized" in line and "--token" in line and "admin" in line
        line = one_line_error(run(tmp_path, "people", "--url", url, "--token", "wrong"))
        assert "--token" in line
        # --debug shows the traceback
        r = run(tmp_path, "people", "--url", url, "--debug")
        assert r.returncode != 0 and "Traceback" in r.stderr
    line = one_line_error(run(tmp_path, "people", "--url", url))  # the server is gone
    assert "cannot reach the server" in line and url in line
    line = one_line_error(run(tmp_path, "people", "--url", "ftp://example"))
    assert "ws://HOST:PORT" in line
    line = one_line_error(run(tmp_path, "identify", str(tmp_path / "missing.wav"),
                              "--data-dir", "x"))
    assert "missing.wav" in line


def test_a_missing_model_says_where_it_looked_and_how_to_fix_it(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "streamer.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"model": {"path": "weights/none.onnx"}}))
    r = subprocess.run([*CLI, "serve", "--port", "0", "--config", str(config)], cwd=tmp_path,
                       env=ENV, capture_output=True, text=True, timeout=60)
    line = one_line_error(r)
    assert str(tmp_path / "etc" / "weights" / "none.onnx") in line
    assert "relative to the config file's folder" in line and "remove model.path" in line


def test_the_built_wheel_serves_from_any_folder_without_a_config(tmp_path: Path) -> None:
    """pip wheel + a fresh venv + `streamer serve` elsewhere: the package carries its model."""
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO_ROOT), "--no-deps",
                            "-q", "-w", str(wheels)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("voiceprint_streamer-*.whl")
    with zipfile.ZipFile(wheel) as zf:  # the served models, their line variants (the phone
        # and far room profiles) and the segmentation model (enrolment and change checks)
        models = {Path(n).name for n in zf.namelist() if n.startswith("streamer/models/")}
    assert {"campplus.onnx", "campplus_frames.onnx", "campplus_head.onnx",
            "campplus_telephone_frames.onnx", "campplus_telephone_head.onnx",
            "campplus_far_frames.onnx", "campplus_far_head.onnx", "segmentation.onnx"} <= models
    venv = tmp_path / "venv"
    # the dependencies come from this interpreter; the package itself only from the wheel
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps",
                              "--no-index", str(wheel)], capture_output=True, text=True,
                             timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import streamer.config as c; "
                            "print(c.__file__); print(c.Config().model_path)"],
                           cwd=elsewhere, capture_output=True, text=True, timeout=60)
    module, model = where.stdout.split()
    assert module.startswith(str(venv)) and model.startswith(str(venv)), where.stdout
    proc = subprocess.Popen([str(venv / "bin" / "streamer"), "serve", "--port", "0"],
                            cwd=elsewhere, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.fullmatch(r"listening on ws://127\.0\.0\.1:(\d+)\s*", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/healthz", timeout=30) as r:
            health = json.loads(r.read())
        assert r.status == 200 and health["status"] == "ok", health
        assert (elsewhere / "data").is_dir()  # no config file: data in the working directory
    finally:
        proc.kill()
        proc.wait()
    # the demo too: its voices are package data
    demo = subprocess.run([str(venv / "bin" / "streamer"), "demo", "--port", "0", "--speed", "8",
                           "--loops", "1"], cwd=elsewhere, env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert "/room/demo" in demo.stdout and "Alex Morgan" in demo.stdout, demo.stdout


def client(cwd: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO_ROOT / "clients" / script), *args],
                          cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)


def test_clients_take_the_printed_address_and_fail_in_one_line(tmp_path: Path,
                                                               speech_dir: Path) -> None:
    flac = str(next((speech_dir / "vctk_4spk").rglob("*.flac")))
    (tmp_path / "notes.mp3").write_text("not audio at all\n")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.int16), 16000)
    for bad, says in (("notes.mp3", "not audio this client can decode"),
                      ("empty.wav", "holds no audio"), ("missing.wav", "No such file")):
        line = one_line_error(client(tmp_path, "stream_file.py", bad, "--room", "r"))
        assert bad in line and says in line, line
    config = tmp_path / "auth.yaml"
    config.write_text(yaml.safe_dump({"auth": {"tokens": {TOKEN: ["admin"]}}}))
    with serve(tmp_path, "--config", str(config), "--data-dir", "data") as url:
        http = url.replace("ws://", "http://")
        r = client(tmp_path, "stream_file.py", flac, "--room", "r", "--speed", "0",
                   "--url", http, "--token", TOKEN, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout.splitlines()[-1])["type"] == "bye"
        line = one_line_error(client(tmp_path, "stream_file.py", flac, "--room", "r",
                                     "--url", http))
        assert "unauthorized" in line and "--token" in line and "ingest" in line, line
        r = client(tmp_path, "display.py", "--room", "r", "--once-json", "--url", http,
                   "--token", TOKEN)
        assert r.returncode == 0 and json.loads(r.stdout)["room"] == "r", r.stderr
        r = client(tmp_path, "display.py", "--room", "r", "--once-json", "--url", http)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert "--token" in r.stderr and "display" in r.stderr, r.stderr
    line = one_line_error(client(tmp_path, "stream_file.py", flac, "--room", "r", "--url", url))
    assert "cannot reach the server" in line


def test_mic_without_an_input_device_says_so(tmp_path: Path) -> None:
    listed = client(tmp_path, "mic.py", "--list-devices")
    if listed.returncode != 0 or len(listed.stdout.strip().splitlines()) > 1:
        pytest.skip("PortAudio is missing or this machine has an input device")
    r = client(tmp_path, "mic.py", "--room", "r")
    line = one_line_error(r)
    assert "no input device" in line and "--list-devices" in line
