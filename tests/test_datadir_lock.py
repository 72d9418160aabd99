"""A data dir has one owner (``DATA/owner.lock``, :mod:`streamer.datadir`).

Unit tests of the lock in one process, then real ``streamer serve`` subprocesses: a
second server and an offline people command on the same data dir are refused in one
line naming the owner's pid and URL; SIGTERM releases the data dir, ``kill -9`` leaves
a stale lock file that the next owner takes over.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_cli import cli_process, run
from test_cli_options import one_line_error

from streamer.app import App
from streamer.config import Config
from streamer.datadir import LOCK_NAME, DataDirInUse, DataDirLock, Owner, read_owner
from streamer.errors import ConfigError, StreamerError

# -- the lock itself ---------------------------------------------------------------------


def test_a_second_lock_on_one_dir_is_refused_even_in_one_process(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = DataDirLock(data, "server")
    first.acquire()  # creates the data dir
    assert first.held and (data / LOCK_NAME).is_file()
    first.set_url("ws://127.0.0.1:8765")
    owner = read_owner(data)
    assert owner is not None
    assert (owner.pid, owner.kind, owner.url) == (os.getpid(), "server", "ws://127.0.0.1:8765")
    assert owner.host == socket.gethostname() and owner.started

    with pytest.raises(DataDirInUse) as server_err:
        DataDirLock(data, "server").acquire()
    line = str(server_err.value)
    assert "\n" not in line and f"pid {os.getpid()}" in line and "ws://127.0.0.1:8765" in line
    assert isinstance(server_err.value, ConfigError) and isinstance(server_err.value,
                                                                    StreamerError)
    with pytest.raises(DataDirInUse, match=r"--url ws://127\.0\.0\.1:8765"):
        DataDirLock(data, "cli", command="people").acquire()

    first.release()
    first.release()  # idempotent
    assert not first.held and read_owner(data) is None  # emptied, not deleted
    with DataDirLock(data, "cli", command="people") as again:
        assert again.held
        with pytest.raises(DataDirInUse, match=r"`streamer people` \(pid \d+\).*finished"):
            DataDirLock(data, "server").acquire()
    assert read_owner(data) is None


def test_messages_for_a_starting_server_a_wildcard_address_and_another_host(
        tmp_path: Path) -> None:
    me = socket.gethostname()
    starting = Owner(pid=7, host=me, kind="server", started="")
    line = str(DataDirInUse(tmp_path, starting, "cli"))
    assert "still starting (pid 7)" in line and "listening on" in line
    wildcard = Owner(pid=7, host="elsewhere", kind="server", started="", url="ws://0.0.0.0:9")
    line = str(DataDirInUse(tmp_path, wildcard, "cli"))
    assert "--url ws://127.0.0.1:9" in line and "pid 7 on elsewhere" in line
    assert "names no owner" in str(DataDirInUse(tmp_path, None, "server"))


def test_records_that_are_not_an_owner_are_ignored(tmp_path: Path) -> None:
    for raw in (b"", b"[]", b"{}", b"not json", b'{"pid": "x", "host": 1, "kind": "server"}',
                b"\xff"):
        assert Owner.from_json(raw) is None
    assert read_owner(tmp_path / "missing") is None


def test_a_stale_lock_file_is_taken_over_and_said_at_info(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # what a server killed with -9 leaves: its record, and no flock
    dead = {"pid": 999_999_999, "host": socket.gethostname(), "kind": "server",
            "command": "serve", "started": "2025-01-01T00:00:00+00:00",
            "url": "ws://127.0.0.1:1", "data_dir": str(data)}
    (data / LOCK_NAME).write_text(json.dumps(dead))
    with caplog.at_level(logging.INFO, logger="streamer.datadir"):
        with DataDirLock(data, "server") as lock:
            assert lock.held
            owner = read_owner(data)
            assert owner is not None and owner.pid == os.getpid() and owner.url is None
    assert any("taking over" in r.message and "999999999" in r.message
               for r in caplog.records if r.levelno == logging.INFO)


def test_a_refused_taker_waits_for_the_owners_record(tmp_path: Path) -> None:
    """Between the owner's flock and its record the file is empty: the taker waits."""
    data = tmp_path / "data"
    with DataDirLock(data, "server") as owner:
        (data / LOCK_NAME).write_text("")  # as if the record were not written yet
        threading.Timer(0.3, owner.set_url, args=("ws://127.0.0.1:5",)).start()
        started = time.monotonic()
        with pytest.raises(DataDirInUse, match="ws://127.0.0.1:5"):
            DataDirLock(data, "cli").acquire()
        assert time.monotonic() - started < 1.9


def test_a_lock_file_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot use data dir"):
        DataDirLock(blocker / "data", "cli").acquire()
    with pytest.raises(RuntimeError):
        DataDirLock(tmp_path, "server").set_url("ws://x:1")


def test_app_load_takes_the_data_dir_and_close_lets_go(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = App(Config(), data_dir=data)
    first.load()
    try:
        first.listening("ws://127.0.0.1:4")
        second = App(Config(), data_dir=data, owner="cli", command="enroll")
        with pytest.raises(DataDirInUse, match="--url ws://127.0.0.1:4"):
            second.load()
        assert second.registry is None
        second.close()  # harmless after a refused load
    finally:
        first.close()
    first.close()
    reopened = App(Config(), data_dir=data)  # a closed data dir opens again
    reopened.load()
    reopened.close()
    with pytest.raises(RuntimeError):
        App(Config(), data_dir=data).listening("ws://x:1")


# -- real servers ------------------------------------------------------------------------


@contextmanager
def server(cwd: Path, data: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``streamer serve --port 0 --data-dir DATA``; yields the process and its ws:// URL."""
    with cli_process(cwd, ["serve", "--port", "0", "--data-dir", str(data)],
                     re.compile(r"listening on (ws://127\.0\.0\.1:\d+)\s*"),
                     cwd / f"serve-{time.monotonic_ns()}.log") as (proc, m, _):
        yield proc, m.group(1)


@pytest.mark.slow
def test_one_server_per_data_dir_and_offline_commands_are_told_its_url(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with server(tmp_path, data) as (first, url):
        owner = read_owner(data)
        assert owner is not None and owner.pid == first.pid and owner.url == url
        assert owner.kind == "server"

        line = one_line_error(run(tmp_path, "serve", "--port", "0", "--data-dir", str(data)))
        assert f"pid {first.pid}" in line and url in line, line

        line = one_line_error(run(tmp_path, "people", "--data-dir", str(data)))
        assert f"--url {url}" in line and f"pid {first.pid}" in line, line
        r = run(tmp_path, "people", "--url", url)
        assert r.returncode == 0 and r.stdout.strip() == "nobody enrolled", r.stderr

        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
    assert read_owner(data) is None  # released on a clean shutdown
    r = run(tmp_path, "people", "--data-dir", str(data))
    assert r.returncode == 0 and r.stdout.strip() == "nobody enrolled", r.stderr
    assert read_owner(data) is None  # an offline command holds it only while it runs


@pytest.mark.slow
def test_a_server_killed_with_9_leaves_a_lock_the_next_server_takes_over(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    with server(tmp_path, data) as (first, url):
        first.kill()
        first.wait()
    stale = read_owner(data)
    assert stale is not None and stale.pid == first.pid  # the record stays behind
    with server(tmp_path, data) as (second, url2):
        owner = read_owner(data)
        assert owner is not None and owner.pid == second.pid and owner.url == url2
        line = one_line_error(run(tmp_path, "people", "--data-dir", str(data)))
        assert f"--url {url2}" in line
