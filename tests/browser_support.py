"""Helpers for the browser tests: a real server in a thread, headless Chromium, streams.

The browser tests are synchronous (Selenium blocks), so the server cannot share the
test's event loop: :class:`ServerThread` runs a real :class:`~streamer.server.StreamerServer`
on 127.0.0.1 in a thread with its own event loop (the port is 0, or a fixed one so a
second server can take over the first one's address). :func:`stream_in_thread` streams a
file into a room with ``clients.stream_file.stream_file`` in another thread, so the test
can watch the page meanwhile.

:func:`chromium` starts headless Chromium through the Debian packages ``chromium`` and
``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``), given explicitly
so selenium-manager never downloads a browser or a driver.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import pytest
from server_support import make_config, shared_embedder, shared_streamer

from clients.stream_file import stream_file
from streamer.app import App
from streamer.server import StreamerServer

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "ServerThread",
    "chromium",
    "chromium_available",
    "wait_for",
    "server_thread",
    "mic_chromium",
    "free_port",
    "stream_in_thread",
]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def chromium_available() -> bool:
    """True when Chromium, its driver and the selenium package are installed."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return CHROMIUM.is_file() and CHROMEDRIVER.is_file()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """A real server in a thread: ``with ServerThread(data_dir) as server: server.http_url``.

    ``sections`` are config sections as for ``server_support.running_server``.
    :meth:`stop` shuts the server down as SIGTERM would (open segments finished,
    connections closed with 1001) and waits for the thread.
    """

    def __init__(self, data_dir: Path, port: int = 0, **sections: Any) -> None:
        self.data_dir = data_dir
        self.port = port
        self._sections = sections
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="streamer-server", daemon=True)
        self.server: StreamerServer | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Self:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the server did not start")
        if self._error is not None:
            raise RuntimeError("the server did not start") from self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:  # noqa: BLE001 - reported to the starting thread
            self._error = err
            self._ready.set()

    async def _main(self) -> None:
        config = make_config(**self._sections)
        app = App(config, data_dir=self.data_dir)
        app.embedder = shared_embedder(config)
        app.streamer = shared_streamer(config)
        app.load()
        try:
            async with StreamerServer(app, "127.0.0.1", self.port) as server:
                self.server = server
                self.port = server.port
                self._loop = asyncio.get_running_loop()
                self._stop = asyncio.Event()
                self._ready.set()
                await self._stop.wait()
        finally:
            app.close()

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("the server did not stop")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stream_in_thread(url: str, path: Path, room: str, **kwargs: Any) -> Future[list[dict[str, Any]]]:
    """Start ``stream_file(url, path, room, **kwargs)`` in a thread; its messages come back
    through the returned future."""
    future: Future[list[dict[str, Any]]] = Future()

    def run() -> None:
        try:
            future.set_result(asyncio.run(stream_file(url, path, room, **kwargs)))
        except BaseException as err:  # noqa: BLE001 - handed to the waiting test
            future.set_exception(err)

    threading.Thread(target=run, name=f"stream-{room}", daemon=True).start()
    return future


@contextmanager
def chromium(profile_dir: Path, width: int = 1280, height: int = 800,
             mic_wav: Path | None = None) -> Iterator[Any]:
    """Headless Chromium (a Selenium ``WebDriver``) with a fresh profile in ``profile_dir``.

    With ``mic_wav``, getUserMedia is granted without asking and the microphone plays
    that WAV file (in a loop), as Chromium's fake capture device.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
             "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
             "--autoplay-policy=no-user-gesture-required",
             f"--window-size={width},{height}", f"--user-data-dir={profile_dir}"]
    if mic_wav is not None:
        flags.append(f"--use-file-for-fake-audio-capture={mic_wav}")
    for flag in flags:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_window_size(width, height)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile_dir, ignore_errors=True)


def wait_for(driver: Any, condition: Any, timeout: float = 20.0, what: str = "") -> Any:
    """Poll ``condition(driver)`` until truthy; fail with the page's console on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition(driver)
            if value:
                return value
        except Exception as err:  # noqa: BLE001 - stale elements while the page redraws
            last_error = err
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what or condition}: {last_error!r}; "
                f"console: {driver.get_log('browser')}")


@contextmanager
def server_thread(tmp_path: Path, **sections: Any) -> Iterator[StreamerServer]:
    """A real server on its own event loop in a thread (selenium calls block)."""
    with ServerThread(tmp_path / "data", **sections) as thread:
        assert thread.server is not None
        yield thread.server


@contextmanager
def mic_chromium(tmp_path: Path, mic_wav: Path | None = None) -> Iterator[Any]:
    """Headless Chromium (1280 x 1300) whose fake microphone plays ``mic_wav``."""
    with chromium(tmp_path / "chromium-profile", 1280, 1300, mic_wav=mic_wav) as driver:
        yield driver


#: Records every message a page sends on a websocket (installed before the page loads).
RECORD_SENT = """
window.__sent = [];
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  try { window.__sent.push(JSON.parse(data)); } catch (err) { /* not JSON */ }
  return send.call(this, data);
};
"""


def record_sent(driver: Any) -> str:
    """From the next page load on, ``window.__sent`` holds what the page sends. Returns
    the script's identifier (``Page.removeScriptToEvaluateOnNewDocument`` stops it)."""
    added = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                                   {"source": RECORD_SENT})
    return str(added["identifier"])


def sent_people_requests(driver: Any) -> list[dict[str, Any]]:
    """The ``people`` requests the page sent since :func:`record_sent`."""
    sent = driver.execute_script("return window.__sent || [];")
    return [m for m in sent if m.get("type") == "people"]
