"""The room display page (/room/NAME) in real headless Chromium, on a real server.

Real model, real speech: LibriSpeech test-other speakers are enrolled over /v1/api, then
short excerpts (5-6 s) of held-out utterances are streamed into the room over
/v1/ingest at real-time pace (``clients.stream_file.stream_file``) while the test polls
the page's DOM. Needs the Debian packages ``chromium`` and ``chromium-driver`` and the
``selenium`` package (the ``test`` extra). Screenshots go to ``artifacts/`` (gitignored).
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from browser_support import (ServerThread, chromium, free_port, record_sent, sent_people_requests,
                             stream_in_thread)
from server_support import (IMPOSTOR_DIR, LIBRI_DIR, api_call, api_client, manifest, pcm_fields,
                            read_flac)

# No skip when Chromium is missing: .ci/run installs it, and a silent skip would hide that.
pytestmark = [pytest.mark.slow]

RATE = 16000
ROOM = "test"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
#: LibriSpeech speaker -> display name; enrolled on their first two utterances.
PEOPLE = {"1688": "Ada Lovelace", "2033": "Grace Hopper", "3005": "Alan Turing"}
EXCERPT_S = 6.0

#: JavaScript that reads everything the tests look at in one round trip.
READ_PAGE = """
const now = document.getElementById("now");
const status = document.getElementById("status");
return {
  now: now.className,
  name: document.getElementById("now-name").textContent,
  detail: document.getElementById("now-detail").textContent,
  count: Number(now.dataset.count),
  speakers: document.querySelectorAll(".now-speaker").length,
  status: status.className,
  statusText: status.textContent,
  server: status.dataset.server || "",
  candidates: [...document.querySelectorAll("#candidates tr.candidate")].map(tr => ({
    name: tr.querySelector(".name").textContent,
    distance: tr.querySelector(".distance").textContent,
    match: tr.classList.contains("match"),
  })),
  rows: [...document.querySelectorAll("#timeline .tl-row")].map(r => ({
    person: r.dataset.person,
    name: r.querySelector(".tl-name").textContent,
    bars: r.querySelectorAll(".tl-bar").length,
    visitor: r.classList.contains("visitor"),
  })),
  visitor: document.querySelector("#now-detail .visitor-tag") !== null,
  roster: document.getElementById("roster").dataset.state,
  rosterOpen: document.getElementById("roster").open,
  rosterLoads: Number(document.getElementById("roster").dataset.loads || 0),
  rosterPeople: document.querySelectorAll("#roster-people li[data-person]").length,
  rosterSummary: document.getElementById("roster-summary").textContent,
  rosterNames: [...document.querySelectorAll("#roster-names li")].map(li => li.textContent),
  rosterState: document.getElementById("roster-state").textContent,
  rosterMessage: document.getElementById("roster-message").textContent,
};
"""


@dataclass
class Setup:
    data_dir: Path
    ids: dict[str, str]       # display name -> person id
    enrolled: Path            # 6 s of Ada Lovelace (held-out utterance)
    other: Path               # 6 s of Grace Hopper
    short: Path               # 5 s of Alan Turing
    impostor: Path            # 6 s of a never-enrolled voice
    impostor_distance: float  # its nearest enrolled person's distance (whole excerpt)


def _excerpt(path: Path, out: Path, seconds: float) -> Path:
    x = read_flac(path)[: int(seconds * RATE)]
    sf.write(str(out), x, RATE, subtype="PCM_16")
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, speech_dir: Path) -> Setup:
    base = tmp_path_factory.mktemp("web_room")
    by: dict[str, list[Path]] = defaultdict(list)
    for path, speaker, _ in manifest(LIBRI_DIR):
        by[speaker].append(path)
    enrolled = _excerpt(by["1688"][6], base / "ada.wav", EXCERPT_S)
    other = _excerpt(by["2033"][2], base / "grace.wav", EXCERPT_S)
    short = _excerpt(by["3005"][3], base / "alan.wav", 5.0)

    async def enrol(url: str) -> tuple[dict[str, str], Path, float]:
        ids = {}
        for speaker, name in PEOPLE.items():
            x = np.concatenate([read_flac(p) for p in by[speaker][:2]])
            reply = await api_call(url, {"type": "enroll", "id": speaker, "name": name,
                                         **pcm_fields(x)})
            assert reply["type"] == "enrolled", reply
            ids[name] = reply["person"]["id"]
        # the first never-enrolled voice whose excerpt is clearly nobody enrolled
        for n, (path, _, seconds) in enumerate(manifest(IMPOSTOR_DIR)[:20]):
            if seconds < EXCERPT_S + 0.5:
                continue
            candidate = _excerpt(path, base / f"impostor{n}.wav", EXCERPT_S)
            reply = await api_call(url, {"type": "identify", "id": n,
                                         **pcm_fields(read_flac(candidate))})
            assert reply["type"] == "identified", reply
            nearest = reply["results"][0]["distance"]
            if reply["match"] is None and nearest > reply.get("threshold", 1.0) + 0.1:
                return ids, candidate, nearest
        raise AssertionError("no never-enrolled voice is far enough from everyone")

    with ServerThread(base / "data") as server:
        ids, impostor, distance = asyncio.run(enrol(server.url))
    return Setup(base / "data", ids, enrolled, other, short, impostor, distance)


@pytest.fixture
def data_dir(setup: Setup, tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(setup.data_dir, target)
    return target


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


# -- helpers ---------------------------------------------------------------------------------


def read_page(driver: Any) -> dict[str, Any]:
    return driver.execute_script(READ_PAGE)  # type: ignore[no-any-return]


def wait_for(driver: Any, check: Callable[[dict[str, Any]], bool], timeout: float,
             what: str, seen: list[dict[str, Any]] | None = None,
             interval: float = 0.05) -> dict[str, Any]:
    """Poll the page until ``check(page)``; every reading goes to ``seen``."""
    from selenium.webdriver.support.ui import WebDriverWait

    last: dict[str, Any] = {}

    def poll(d: Any) -> dict[str, Any] | bool:
        nonlocal last
        last = read_page(d)
        if seen is not None:
            seen.append(last)
        return last if check(last) else False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=interval).until(poll)  # type: ignore[no-any-return]
    except Exception as err:  # TimeoutException: say what the page showed
        raise AssertionError(f"timed out waiting for {what}; page: {last}") from err


def watch_until_done(driver: Any, future: Any, seen: list[dict[str, Any]],
                     timeout: float = 30.0) -> list[dict[str, Any]]:
    """Poll the page until the stream's future is done; return the stream's messages."""
    deadline = time.monotonic() + timeout
    while not future.done():
        assert time.monotonic() < deadline, "the stream did not finish"
        seen.append(read_page(driver))
        time.sleep(0.05)
    return future.result()  # type: ignore[no-any-return]


def open_room(driver: Any, http_url: str, room: str = ROOM, query: str = "") -> None:
    driver.get(f"{http_url}/room/{room}{query}")
    wait_for(driver, lambda p: "live" in p["status"].split(), 10, "the page to connect")


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), f"screenshot {path} failed"
    return path


def severe_console_errors(driver: Any, allow: tuple[str, ...] = ()) -> list[str]:
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and not any(a in e["message"] for a in allow)]


def is_named(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda p: p["name"] == name and bool({"provisional", "final"} & set(p["now"].split()))


# -- tests ------------------------------------------------------------------------------------


def test_page_names_the_speaker_then_shows_an_unknown_voice(browser: Any, setup: Setup,
                                                             data_dir: Path) -> None:
    ada = "Ada Lovelace"
    with ServerThread(data_dir) as server:
        open_room(browser, server.http_url)
        page = read_page(browser)
        assert "silent" in page["now"].split() and page["count"] == 0
        assert browser.title.startswith(ROOM)
        browser.get_log("browser")  # start the console check from here

        # an enrolled person speaks
        seen: list[dict[str, Any]] = []
        future = stream_in_thread(server.url, setup.enrolled, ROOM, mic="table", speed=1)
        page = wait_for(browser, is_named(ada), 8, f"{ada} to be named", seen)
        assert page["count"] == 1 and page["speakers"] == 1
        assert "table" in page["detail"]
        assert page["candidates"] and page["candidates"][0]["name"] == ada
        assert page["candidates"][0]["match"]
        assert float(page["candidates"][0]["distance"]) <= 1.0
        shot = screenshot(browser, "room.png")
        messages = watch_until_done(browser, future, seen)
        assert messages[-1]["type"] == "bye"
        finals = [m for m in messages if m["type"] == "speaker" and m["final"]]
        assert finals and all(m["person"] and m["person"]["name"] == ada for m in finals)
        # while Ada spoke the page never named anybody else
        shown = {p["name"] for p in seen if {"provisional", "final"} & set(p["now"].split())}
        assert shown == {ada}, shown
        # a room without a roster: no scope in the events, no visitor tag, "No roster"
        assert all("scope" not in m for m in messages if m["type"] == "speaker")
        assert not any(p["visitor"] for p in seen)
        assert seen[-1]["roster"] == "none" and seen[-1]["rosterSummary"] == "No roster"
        assert not seen[-1]["rosterOpen"]
        # her turn is on the timeline; then the room falls silent
        page = wait_for(browser, lambda p: "silent" in p["now"].split(), 6, "silence")
        assert page["name"] == "Silence" and page["count"] == 0
        assert [(r["person"], r["name"]) for r in page["rows"]] == [(setup.ids[ada], ada)]
        assert page["rows"][0]["bars"] >= 1

        # a voice nobody enrolled
        seen = []
        future = stream_in_thread(server.url, setup.impostor, ROOM, mic="table", speed=1)
        page = wait_for(browser, lambda p: "unknown" in p["now"].split(), 8,
                        "an unknown speaker", seen)
        assert page["name"] == "Unknown speaker" and page["count"] == 1
        assert "nearest" in page["detail"]
        screenshot(browser, "room-unknown.png")
        messages = watch_until_done(browser, future, seen)
        finals = [m for m in messages if m["type"] == "speaker" and m["final"]]
        assert finals and all(m["person"] is None for m in finals)
        page = wait_for(browser, lambda p: any(r["person"] == "unknown" for r in p["rows"]), 5,
                        "an unknown row on the timeline")
        assert [r["person"] for r in page["rows"]] == [setup.ids[ada], "unknown"]
        # a phone-sized window: panels stack under "now"
        browser.set_window_size(420, 860)
        screenshot(browser, "room-narrow.png")
        browser.set_window_size(1280, 800)
        assert severe_console_errors(browser) == []
    print(f"\nscreenshot: {shot}; impostor's nearest distance {setup.impostor_distance:.3f}")


def test_two_mics_hearing_one_person_show_one_speaker(browser: Any, setup: Setup,
                                                      data_dir: Path) -> None:
    grace = "Grace Hopper"
    with ServerThread(data_dir) as server:
        open_room(browser, server.http_url)
        seen: list[dict[str, Any]] = []
        near = stream_in_thread(server.url, setup.other, ROOM, mic="ceiling-1", speed=1)
        far = stream_in_thread(server.url, setup.other, ROOM, mic="ceiling-2", speed=1)
        wait_for(browser, is_named(grace), 8, f"{grace} to be named", seen)
        wait_for(browser, lambda p: "ceiling-1" in p["detail"] and "ceiling-2" in p["detail"],
                 5, "both mics in one entry", seen)
        screenshot(browser, "room-two-mics.png")
        for future in (near, far):
            messages = watch_until_done(browser, future, seen)
            assert any(m["type"] == "speaker" and m["person"] for m in messages)
        wait_for(browser, lambda p: "silent" in p["now"].split(), 6, "silence", seen)
    assert max(p["count"] for p in seen) == 1
    assert max(p["speakers"] for p in seen) == 1
    assert {p["name"] for p in seen if p["count"]} <= {grace, "Listening…"}
    print(f"\n{len(seen)} page readings, never more than one speaker shown")


def test_page_reconnects_to_a_restarted_server(browser: Any, setup: Setup,
                                               data_dir: Path) -> None:
    port = free_port()
    first = ServerThread(data_dir, port=port).start()
    try:
        open_room(browser, first.http_url)
    finally:
        first.stop()
    wait_for(browser, lambda p: "reconnecting" in p["status"].split(), 5, "the reconnecting badge")
    with ServerThread(data_dir, port=port) as second:
        started = time.monotonic()
        page = wait_for(browser, lambda p: "live" in p["status"].split(), 10, "reconnection")
        print(f"\nreconnected {time.monotonic() - started:.1f} s after the new server started")
        assert "silent" in page["now"].split()
        alan = "Alan Turing"
        future = stream_in_thread(second.url, setup.short, ROOM, mic="door", speed=2)
        wait_for(browser, is_named(alan), 8, f"{alan} to be named after the reconnect")
        future.result(timeout=30)
        wait_for(browser, lambda p: any(r["name"] == alan for r in p["rows"]), 5,
                 "the turn on the timeline")
    assert severe_console_errors(browser, allow=("/v1/events",)) == []


def test_page_moves_to_the_next_server_of_its_list(browser: Any, setup: Setup, data_dir: Path,
                                                  tmp_path: Path) -> None:
    """``?servers=`` lists two servers (separate data dirs, the same people); the page
    follows the room on the first, which stops: the page is live on the second at once
    (no back-off), with a new snapshot, and names who speaks there."""
    other_dir = tmp_path / "data-b"
    shutil.copytree(setup.data_dir, other_dir)
    first = ServerThread(data_dir).start()
    try:
        with ServerThread(other_dir) as second:
            # a ws:// address and a bare HOST:PORT (which gets the page's scheme)
            query = f"?servers={first.url},127.0.0.1:{second.port}"
            open_room(browser, first.http_url, query=query)
            assert read_page(browser)["server"] == first.url
            browser.get_log("browser")
            stopping = threading.Thread(target=first.stop)
            started = time.monotonic()
            stopping.start()  # closes the page's connection (1001), then finishes
            page = wait_for(browser, lambda p: "live" in p["status"].split()
                            and p["server"] == second.url, 5, "live on the second server",
                            interval=0.02)
            moved_s = time.monotonic() - started
            stopping.join(30)
            assert "silent" in page["now"].split()
            alan = "Alan Turing"
            future = stream_in_thread(second.url, setup.short, ROOM, mic="door", speed=2)
            wait_for(browser, is_named(alan), 8, f"{alan} to be named on the second server")
            messages = future.result(timeout=30)
            page = wait_for(browser, lambda p: any(r["name"] == alan for r in p["rows"]), 5,
                            "the turn on the timeline")
            assert page["server"] == second.url
    finally:
        first.stop()
    print(f"\nthe page was live on the second server {moved_s:.2f} s after the first "
          f"began to stop")
    assert moved_s < 2.0
    assert any(m["type"] == "speaker" and m["final"] and m["person"]
               and m["person"]["name"] == alan for m in messages)
    assert severe_console_errors(browser, allow=("/v1/events",)) == []


def test_token_from_the_page_url_is_passed_on(browser: Any, setup: Setup,
                                              data_dir: Path) -> None:
    from streamer.config import AuthConfig, AuthToken

    auth = AuthConfig(tokens=(AuthToken("display-token-1", ("display",)),))
    with ServerThread(data_dir, auth=auth) as server:
        open_room(browser, server.http_url, query="?token=display-token-1")
        browser.get(f"{server.http_url}/room/{ROOM}?token=wrong-token")
        wait_for(browser, lambda p: "reconnecting" in p["status"].split()
                 and "unauthorized" in p["statusText"], 5, "the refusal to be shown")
    browser.get("about:blank")
    browser.get_log("browser")


# -- rosters: who is expected in the room ---------------------------------------------------


def api_as(url: str, message: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    """One /v1/api request (with ``token`` as a bearer header when given)."""
    async def call() -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        async with api_client(url, additional_headers=headers) as client:
            return await client.call(message)
    return asyncio.run(call())


def rosters(url: str, token: str | None = None) -> dict[str, list[str]]:
    reply = api_as(url, {"type": "rooms", "id": "rooms"}, token)
    assert reply["type"] == "rooms", reply
    return {r["room"]: r["people"] for r in reply["rooms"]}


def open_roster_panel(driver: Any) -> None:
    """Open the panel and wait for the read it starts (when the API may be asked)."""
    from selenium.webdriver.common.by import By
    page = read_page(driver)
    assert not page["rosterOpen"]
    loads = page["rosterLoads"]
    driver.find_element(By.ID, "roster-summary").click()
    wait_for(driver, lambda p: p["rosterOpen"] and (p["roster"] == "refused" or (
        p["rosterLoads"] > loads and p["rosterPeople"] > 0)), 10,
        "the roster panel to open and load")


def set_checkbox(driver: Any, person_id: str, checked: bool) -> None:
    from selenium.webdriver.common.by import By
    selector = f'#roster-people li[data-person="{person_id}"] input'
    box = driver.find_element(By.CSS_SELECTOR, selector)
    if box.is_selected() != checked:
        box.click()
    assert driver.find_element(By.CSS_SELECTOR, selector).is_selected() == checked


def finals_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == "speaker" and m["final"]]


def test_roster_edited_on_the_room_page_and_a_visitor_tagged(browser: Any, setup: Setup,
                                                             data_dir: Path) -> None:
    """The collapsed "Who is expected here" panel creates, edits and removes the room's
    roster (checked over /v1/api ``rooms``); live speech of someone outside the roster,
    named with ``scope: "all"``, shows a "visitor" tag, a member (``"roster"``) none."""
    from selenium.webdriver.common.by import By

    ada, grace, alan = "Ada Lovelace", "Grace Hopper", "Alan Turing"
    ids = setup.ids
    with ServerThread(data_dir) as server:
        open_room(browser, server.http_url)
        page = wait_for(browser, lambda p: p["roster"] == "none", 10, "the roster state")
        assert page["rosterSummary"] == "No roster" and not page["rosterOpen"]
        assert not browser.find_element(By.ID, "roster-save").is_displayed()  # collapsed
        browser.get_log("browser")

        # -- create: Ada and Grace are expected here
        open_roster_panel(browser)
        assert "no roster" in read_page(browser)["rosterState"]
        set_checkbox(browser, ids[ada], True)
        set_checkbox(browser, ids[grace], True)
        assert browser.find_element(By.ID, "roster-save").text == "Create roster"
        browser.find_element(By.ID, "roster-save").click()
        page = wait_for(browser, lambda p: p["roster"] == "set", 10, "the roster to be saved")
        assert page["rosterSummary"] == "Expected: 2"
        assert page["rosterNames"] == [ada, grace]
        assert page["rosterMessage"].startswith("Saved: 2 people")
        assert rosters(server.url) == {ROOM: [ids[ada], ids[grace]]}
        browser.find_element(By.ID, "roster-summary").click()  # collapse it again
        wait_for(browser, lambda p: not p["rosterOpen"], 5, "the panel to close")

        # -- someone outside the roster speaks: named among everyone, tagged "visitor"
        seen: list[dict[str, Any]] = []
        future = stream_in_thread(server.url, setup.short, ROOM, mic="door", speed=1)
        page = wait_for(browser, lambda p: is_named(alan)(p) and p["visitor"], 8,
                        f"{alan} named as a visitor", seen)
        assert "visitor" in page["now"].split()
        screenshot(browser, "room-visitor.png")
        messages = watch_until_done(browser, future, seen)
        alan_events = [m for m in messages if m["type"] == "speaker" and m["person"]
                       and m["person"]["id"] == ids[alan]]
        assert alan_events and all(m["scope"] == "all" for m in alan_events)
        assert any(m["final"] for m in alan_events)
        # every reading that named Alan tagged him; nobody else was named
        named = [p for p in seen if {"provisional", "final"} & set(p["now"].split())]
        assert named and all(p["name"] == alan and p["visitor"] for p in named)
        page = wait_for(browser, lambda p: any(r["person"] == ids[alan] for r in p["rows"]), 5,
                        "Alan's turn on the timeline")
        assert [r["visitor"] for r in page["rows"] if r["person"] == ids[alan]] == [True]

        # -- a member speaks: named from the roster, no tag
        seen = []
        future = stream_in_thread(server.url, setup.enrolled, ROOM, mic="table", speed=1)
        wait_for(browser, is_named(ada), 8, f"{ada} to be named", seen)
        messages = watch_until_done(browser, future, seen)
        finals = finals_of(messages)
        assert finals and all(m["person"]["id"] == ids[ada] and m["scope"] == "roster"
                              for m in finals)
        assert not any(p["visitor"] for p in seen if p["name"] == ada)
        page = wait_for(browser, lambda p: any(r["person"] == ids[ada] for r in p["rows"]), 5,
                        "Ada's turn on the timeline")
        assert {r["person"]: r["visitor"] for r in page["rows"]} == {ids[alan]: True,
                                                                     ids[ada]: False}

        # -- edit: Grace is no longer expected
        open_roster_panel(browser)
        assert read_page(browser)["rosterNames"] == [ada, grace]
        screenshot(browser, "room-roster.png")
        set_checkbox(browser, ids[grace], False)
        browser.find_element(By.ID, "roster-save").click()
        page = wait_for(browser, lambda p: p["rosterNames"] == [ada], 10, "the edited roster")
        assert page["rosterSummary"] == "Expected: 1"
        assert rosters(server.url) == {ROOM: [ids[ada]]}

        # -- remove it (a second click confirms)
        remove = browser.find_element(By.ID, "roster-remove")
        remove.click()
        assert rosters(server.url) == {ROOM: [ids[ada]]}  # not before the confirmation
        assert "Really remove" in browser.find_element(By.ID, "roster-remove").text
        browser.find_element(By.ID, "roster-remove").click()
        page = wait_for(browser, lambda p: p["roster"] == "none", 10, "the roster removed")
        assert page["rosterSummary"] == "No roster" and page["rosterNames"] == []
        assert "everyone enrolled is matched here again" in page["rosterMessage"]
        assert rosters(server.url) == {}
        assert severe_console_errors(browser) == []
        assert "live" in read_page(browser)["status"].split()
    browser.get("about:blank")


def test_room_page_roster_with_a_display_token(browser: Any, setup: Setup,
                                               data_dir: Path) -> None:
    """With a display-only token the API refuses the roster: the page says so in the
    panel and keeps displaying (a visitor still gets the tag: the events say "all");
    an admin token typed into the panel (a wrong one is refused) shows and edits it."""
    from selenium.webdriver.common.by import By

    from streamer.config import AuthConfig, AuthToken

    ada, grace, alan = "Ada Lovelace", "Grace Hopper", "Alan Turing"
    ids = setup.ids
    auth = AuthConfig(tokens=(AuthToken("display-token-1", ("display",)),
                              AuthToken("admin-token-1", ("admin",))))
    with ServerThread(data_dir, auth=auth) as server:
        reply = api_as(server.url, {"type": "set_room", "id": 1, "room": ROOM,
                                    "people": [ids[ada]]}, "admin-token-1")
        assert reply["type"] == "room", reply
        open_room(browser, server.http_url, query="?token=display-token-1")
        page = wait_for(browser, lambda p: p["roster"] == "refused", 10, "the refusal")
        assert page["rosterSummary"] == "Roster" and not page["rosterOpen"]
        open_roster_panel(browser)
        page = read_page(browser)
        assert "needs the admin role" in page["rosterState"], page["rosterState"]
        assert "The display works as before" in page["rosterState"]
        assert browser.find_element(By.ID, "roster-token-input").is_displayed()
        assert not browser.find_element(By.ID, "roster-save").is_displayed()
        screenshot(browser, "room-roster-refused.png")

        # the display goes on: a visitor is named and tagged from the events alone
        future = stream_in_thread(server.url, setup.short, ROOM, mic="door", speed=2,
                                  token="admin-token-1")
        page = wait_for(browser, lambda p: is_named(alan)(p) and p["visitor"], 8,
                        f"{alan} named as a visitor")
        assert "live" in page["status"].split()
        future.result(timeout=30)
        page = wait_for(browser, lambda p: p["rosterSummary"] == "Roster set", 5,
                        "the summary to say the room has a roster")
        assert "This room has a roster (the live events say so)" in page["rosterState"]

        # a wrong admin token, then the right one
        field = browser.find_element(By.ID, "roster-token-input")
        field.send_keys("not-a-token")
        browser.find_element(By.ID, "roster-token-use").click()
        page = wait_for(browser, lambda p: "you typed is not accepted" in p["rosterState"], 10,
                        "the typed token refused")
        assert page["roster"] == "refused"
        field = browser.find_element(By.ID, "roster-token-input")
        field.send_keys("admin-token-1")
        browser.find_element(By.ID, "roster-token-use").click()
        page = wait_for(browser, lambda p: p["roster"] == "set" and p["rosterPeople"] == 3, 10,
                        "the roster with the admin token")
        assert page["rosterNames"] == [ada] and page["rosterSummary"] == "Expected: 1"
        assert not browser.find_element(By.ID, "roster-token-input").is_displayed()
        set_checkbox(browser, ids[grace], True)
        browser.find_element(By.ID, "roster-save").click()
        page = wait_for(browser, lambda p: p["rosterNames"] == [ada, grace], 10, "the saved roster")
        assert rosters(server.url, "admin-token-1") == {ROOM: [ids[ada], ids[grace]]}
        assert "live" in page["status"].split()
        # the token never went into the address
        assert "admin-token-1" not in browser.current_url
    browser.get("about:blank")
    browser.get_log("browser")


def test_roster_panel_finds_people_by_query(browser: Any, setup: Setup, data_dir: Path) -> None:
    """Large galleries: the panel's edit list shows one page (``?page_size=1``) of what
    its filter finds on the server (by name or by id) plus the room's members; the
    members' names come from the snapshot while the panel is closed; the saved roster
    holds everyone checked; no "people" request goes without a limit (the server
    refuses those past one person here)."""
    from selenium.webdriver.common.by import By

    ada, grace, alan = "Ada Lovelace", "Grace Hopper", "Alan Turing"
    ids = setup.ids
    with ServerThread(data_dir, server={"max_people_reply": 1}) as server:
        reply = api_as(server.url, {"type": "set_room", "id": 1, "room": ROOM,
                                    "people": [ids[alan]]})
        assert reply["type"] == "room", reply
        script = record_sent(browser)
        try:
            open_room(browser, server.http_url, query="?page_size=1")
            # closed: only "rooms" is asked; the name comes with the events' snapshot
            page = wait_for(browser, lambda p: p["roster"] == "set"
                            and p["rosterNames"] == [alan], 10, "the roster named")
            assert page["rosterSummary"] == "Expected: 1" and not page["rosterOpen"]
            browser.get_log("browser")

            def listed(p: dict[str, Any]) -> list[str]:
                return browser.execute_script(  # type: ignore[no-any-return]
                    'return [...document.querySelectorAll("#roster-people li[data-person]")]'
                    '.map(li => li.dataset.person);')

            def more() -> str:
                return str(browser.find_element(By.ID, "roster-more").text)

            def find(query: str) -> None:
                field = browser.find_element(By.ID, "roster-filter")
                field.clear()
                field.send_keys(query)

            # -- open: the first page (Ada, the oldest) and the member (Alan)
            open_roster_panel(browser)
            wait_for(browser, lambda p: listed(p) == [ids[ada], ids[alan]], 5,
                     "one page and the member")
            assert more() == "1 of 3 people shown: type a name (or an id) to find someone else."
            set_checkbox(browser, ids[ada], True)
            # -- by name: Grace found; Ada and Alan (checked) stay in sight
            find("GRACE")
            wait_for(browser, lambda p: listed(p) == [ids[grace], ids[ada], ids[alan]], 5,
                     "Grace found")
            assert not browser.find_element(By.ID, "roster-more").is_displayed()
            set_checkbox(browser, ids[grace], True)
            set_checkbox(browser, ids[ada], False)  # unchecked: still there until redrawn
            # -- by id: Ada again
            find(ids[ada])
            wait_for(browser, lambda p: listed(p) == [ids[ada], ids[alan], ids[grace]], 5,
                     "Ada found by id")
            set_checkbox(browser, ids[ada], True)
            find("nobody like this")
            wait_for(browser, lambda p: listed(p) == [ids[ada], ids[alan], ids[grace]]
                     and "Nobody enrolled matches" in browser.find_element(
                         By.ID, "roster-people").text, 5, "nobody found, the checked kept")
            browser.find_element(By.ID, "roster-save").click()
            page = wait_for(browser, lambda p: p["rosterNames"] == [ada, alan, grace], 10,
                            "the saved roster")
            assert page["rosterSummary"] == "Expected: 3"
            assert rosters(server.url) == {ROOM: [ids[ada], ids[alan], ids[grace]]}
            people = sent_people_requests(browser)
            assert people and all(isinstance(m.get("limit"), int) for m in people), people
            assert severe_console_errors(browser) == []
            screenshot(browser, "room-roster-search.png")
        finally:
            browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument",
                                    {"identifier": script})
    browser.get("about:blank")
