"""The /mic/NAME page in real headless Chromium against a real server.

Chromium's fake microphone plays an utterance of an enrolled LibriSpeech speaker (not
the enrolment one). The page streams it to /v1/ingest; a display client on
/v1/events?room=R (a websockets client in a thread) must receive speaker events naming
that person, from the page's browser-... microphone, and the page itself shows them.

The server runs in its own thread and event loop (``browser_support.ServerThread``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from browser_support import mic_chromium as chromium
from browser_support import ServerThread, server_thread, wait_for
from server_support import LIBRI_DIR, api_call, audio_fields, read_flac
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

NAME = "Grace Hopper"
ENROLLED = LIBRI_DIR / "2414/2414-128291-0002.flac"  # 18.1 s, enrolled over /v1/api
PLAYED = LIBRI_DIR / "2414/2414-128291-0004.flac"    # 10.4 s, the fake microphone
OTHER = LIBRI_DIR / "1998/1998-15444-0000.flac"      # another enrolled voice
ROOM = "board room"


# -- a real server in its own thread, a real Chromium -----------------------------------


class Display:
    """A room display: a websockets client on /v1/events in a thread, collecting events."""

    def __init__(self, url: str, room: str) -> None:
        from urllib.parse import quote
        self.events: list[dict[str, Any]] = []
        self._url = f"{url}/v1/events?room={quote(room)}"
        self._ws: Any = None
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="display", daemon=True)
        self._thread.start()
        assert self._connected.wait(10), "the display did not connect"

    def _run(self) -> None:
        with connect(self._url) as ws:
            self._ws = ws
            self._connected.set()
            try:
                for raw in ws:
                    self.events.append(json.loads(raw))
            except ConnectionClosed:
                pass

    def speaker_events(self) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("type") == "speaker"]

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
        self._thread.join(10)


def test_browser_microphone_streams_to_a_room(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    mic = tmp_path / "mic.wav"
    sf.write(str(mic), read_flac(PLAYED), 16000, subtype="PCM_16")
    with server_thread(tmp_path) as server:
        people = {}
        for i, (name, path) in enumerate(((NAME, ENROLLED), ("Speaker 1998", OTHER))):
            reply = asyncio.run(api_call(server.url, {"type": "enroll", "id": i, "name": name,
                                                      **audio_fields(read_flac(path), "FLAC")}))
            assert reply["type"] == "enrolled", reply
            people[name] = reply["person"]["id"]
        display = Display(server.url, ROOM)
        try:
            with chromium(tmp_path, mic) as driver:
                started = time.monotonic()
                driver.get(f"http://127.0.0.1:{server.port}/mic/board%20room")
                assert driver.find_element(By.ID, "mic-room").text == ROOM
                mic_id = driver.find_element(By.ID, "mic-id").text
                assert mic_id.startswith("browser-")
                driver.find_element(By.ID, "mic-start").click()
                def status(d: Any) -> str:
                    return str(d.find_element(By.ID, "mic-status").text)

                wait_for(driver, lambda d: status(d).startswith("streaming"), what="streaming")
                rate = driver.find_element(By.ID, "mic-format").text
                assert "s16le, mono" in rate

                # the display hears who speaks, from this page's microphone
                wait_for(driver, lambda d: any(e["person"] and e["person"]["name"] == NAME
                                               for e in display.speaker_events()),
                         timeout=30, what="a speaker event naming the person on the display")
                first_s = time.monotonic() - started
                # ... and so does the page itself
                wait_for(driver, lambda d: NAME in d.find_element(By.ID, "mic-speaker-name").text,
                         what="the person's name on the page")
                state = driver.find_element(By.ID, "mic-speaker").get_attribute("data-state")
                assert state in ("provisional", "final")
                # the level meter follows the voice (speech, not a pause, at some moment)
                wait_for(driver, lambda d: -45 < float(d.find_element(By.ID, "mic-level")
                                                         .get_attribute("data-dbfs")) < 0,
                         timeout=5, what="the level meter to show speech")

                # stream a few seconds more, then stop: end -> the open segment's final
                # event, bye, close
                wait_for(driver, lambda d: float(d.find_element(By.ID, "mic-sent").text) >= 6.0,
                         what="6 s streamed")
                driver.find_element(By.ID, "mic-stop").click()
                wait_for(driver, lambda d: status(d).startswith("stopped"), timeout=20,
                         what="stopped")
                assert "segment(s)" in status(driver)  # the bye's stats reached the page
                wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#mic-log li"),
                         what="a final turn in the page's log")
                wait_for(driver, lambda d: any(e["final"] for e in display.speaker_events()),
                         what="a final speaker event on the display")
                ARTIFACTS.mkdir(exist_ok=True)
                driver.save_screenshot(str(ARTIFACTS / "mic.png"))
                errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
                          and "Failed to load resource" not in e["message"]]
                assert errors == []
        finally:
            display.close()

    events = display.speaker_events()
    assert events, display.events
    for event in events:
        assert event["room"] == ROOM and event["mic"] == mic_id
    person = {"id": people[NAME], "name": NAME}
    named = [e for e in events if e["person"] is not None]
    right = [e for e in named if e["person"] == person]
    assert len(right) >= max(1, 0.8 * len(named)), named
    finals = [e for e in events if e["final"]]
    assert any(e["person"] == person for e in finals), finals
    # every final turn of 2 s or more is the person (shorter ones are weaker evidence)
    assert all(e["person"] == person for e in finals if e["end"] - e["start"] >= 2.0), finals
    assert {e["stream"] for e in events} == {events[0]["stream"]}  # one browser stream
    print(f"\nmic page: first named event {first_s:.1f} s after opening the page; "
          f"{len(events)} speaker events, {len(finals)} final")


def test_mic_page_passes_its_token_on(tmp_path: Path) -> None:
    """With auth on, ``/mic/ROOM?token=T`` streams with an ingest token, and a token
    without the role is told why (the protocol's 1008 ``forbidden``)."""
    from selenium.webdriver.common.by import By

    from streamer.config import AuthConfig, AuthToken

    mic = tmp_path / "mic.wav"
    sf.write(str(mic), read_flac(PLAYED)[: 16000 * 4], 16000, subtype="PCM_16")
    auth = AuthConfig(tokens=(AuthToken("mic-page-ingest-1", ("ingest",)),
                              AuthToken("mic-page-display-2", ("display",))))
    with server_thread(tmp_path, auth=auth) as server, chromium(tmp_path, mic) as driver:
        def status(d: Any) -> str:
            return str(d.find_element(By.ID, "mic-status").text)

        def error(d: Any) -> str:
            return str(d.find_element(By.ID, "mic-error").text)

        base = f"http://127.0.0.1:{server.port}/mic/{ROOM.replace(' ', '%20')}"
        driver.get(base + "?token=mic-page-display-2")
        driver.find_element(By.ID, "mic-start").click()
        wait_for(driver, lambda d: "ingest role needed" in error(d), what="forbidden")
        driver.get(base)  # no token at all
        driver.find_element(By.ID, "mic-start").click()
        wait_for(driver, lambda d: "valid token" in error(d), what="unauthorized")
        driver.get(base + "?token=mic-page-ingest-1")
        driver.find_element(By.ID, "mic-start").click()
        wait_for(driver, lambda d: status(d).startswith("streaming"), what="streaming")
        wait_for(driver, lambda d: float(d.find_element(By.ID, "mic-sent").text) >= 1.0,
                 what="audio sent")
        assert server.connections["ingest"] == 1
        driver.find_element(By.ID, "mic-stop").click()
        wait_for(driver, lambda d: status(d).startswith("stopped"), timeout=20, what="stopped")


def test_mic_page_moves_to_the_next_server_of_its_list(tmp_path: Path) -> None:
    """``/mic/ROOM?servers=A,B``: streaming to A, which stops; the page streams to B at
    once as a new stream (a new hello) and a display on B hears the person named."""
    from urllib.parse import unquote

    from selenium.webdriver.common.by import By

    mic = tmp_path / "mic.wav"
    sf.write(str(mic), read_flac(PLAYED), 16000, subtype="PCM_16")
    first = ServerThread(tmp_path / "data-a").start()
    try:
        with ServerThread(tmp_path / "data-b") as second:
            ids = {}
            for server in (first, second):  # the same person on both (separate data dirs)
                reply = asyncio.run(api_call(server.url, {
                    "type": "enroll", "id": 1, "name": NAME,
                    **audio_fields(read_flac(ENROLLED), "FLAC")}))
                assert reply["type"] == "enrolled", reply
                ids[server.url] = reply["person"]["id"]
            display = Display(second.url, ROOM)
            try:
                with chromium(tmp_path, mic) as driver:
                    def status(d: Any) -> tuple[str, str]:
                        element = d.find_element(By.ID, "mic-status")
                        return str(element.text), str(element.get_attribute("data-server"))

                    driver.get(f"{first.http_url}/mic/board%20room"
                               f"?servers={first.url},{second.url}")
                    mic_id = driver.find_element(By.ID, "mic-id").text
                    link = unquote(driver.find_element(By.ID, "room-link").get_attribute("href"))
                    assert link.endswith(f"/room/board room?servers={first.url},{second.url}")
                    driver.find_element(By.ID, "mic-start").click()
                    wait_for(driver, lambda d: status(d)[0].startswith("streaming")
                             and status(d)[1] == first.url, what="streaming to the first")
                    wait_for(driver, lambda d: float(d.find_element(By.ID, "mic-sent").text)
                             >= 2.0, what="2 s streamed")
                    assert display.speaker_events() == []  # nothing on the second yet
                    stopping = threading.Thread(target=first.stop)
                    started = time.monotonic()
                    stopping.start()  # closes the page's stream (1001), then finishes
                    wait_for(driver, lambda d: status(d)[0].startswith("streaming")
                             and status(d)[1] == second.url, timeout=5,
                             what="streaming to the second")
                    moved_s = time.monotonic() - started
                    stopping.join(30)
                    wait_for(driver, lambda d: any(
                        e["person"] and e["person"]["name"] == NAME
                        for e in display.speaker_events()), timeout=30,
                        what="the person named by the second server")
                    driver.find_element(By.ID, "mic-stop").click()
                    wait_for(driver, lambda d: status(d)[0].startswith("stopped"), timeout=20,
                             what="stopped")
                    text = status(driver)[0]
                    infos = [e["message"] for e in driver.get_log("browser")
                             if "moving to" in e["message"]]
            finally:
                display.close()
    finally:
        first.stop()
    print(f"\nthe page streamed to the second server {moved_s:.2f} s after the first began "
          f"to stop; {text}")
    assert moved_s < 2.0
    assert "segment(s)" in text  # end and bye on the second server
    assert infos and f"moving to {second.url}" in infos[0]
    events = display.speaker_events()
    assert {e["mic"] for e in events} == {mic_id}
    assert len({e["stream"] for e in events}) == 1  # one new stream on the second server
    assert any(e["person"] == {"id": ids[second.url], "name": NAME} for e in events)
