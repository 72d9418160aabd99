"""The /people page in real headless Chromium against a real server (real model, real speech).

Chromium's fake microphone plays a LibriSpeech test-other utterance (looped). The test
records it on the page with live feedback (``analyze``), enrols it, then checks over
/v1/api that the person exists and that ANOTHER utterance of the same speaker
identifies as them; identifies and verifies by file upload on the page; renames and
deletes on the page. A screenshot goes to ``artifacts/people.png``.

The server runs in its own thread and event loop (``browser_support.ServerThread``;
selenium blocks); the test talks to it over /v1/api with short ``asyncio.run`` calls.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from browser_support import mic_chromium as chromium
from browser_support import record_sent, sent_people_requests, server_thread, wait_for
from server_support import LIBRI_DIR, api_call, audio_fields, pcm_fields, read_flac

from streamer.config import AuthConfig, AuthToken, EnrollConfig
from streamer.room_profiles import PRESETS, parse_rooms

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

#: The speaker recorded through the fake microphone and the utterances used.
SPEAKER = "1688"
RECORDED = LIBRI_DIR / "1688/1688-142285-0000.flac"   # 15.0 s, played by the fake mic
API_PROBE = LIBRI_DIR / "1688/1688-142285-0001.flac"  # 12.6 s, identify over /v1/api
UPLOADED = LIBRI_DIR / "1688/1688-142285-0006.flac"   # 8.1 s, uploaded on the page
#: Two other speakers enrolled over the API first, so the ranked table has rivals.
OTHERS = {"Speaker 1998": LIBRI_DIR / "1998/1998-15444-0000.flac",
          "Speaker 2414": LIBRI_DIR / "2414/2414-128291-0002.flac"}


# -- a real server in its own thread, a real Chromium -----------------------------------


def wav_of(flac: Path, target: Path) -> Path:
    """A 16-bit WAV copy of a FLAC utterance (what Chromium's fake microphone plays)."""
    sf.write(str(target), read_flac(flac), 16000, subtype="PCM_16")
    return target


def text(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By
    return str(driver.find_element(By.ID, element_id).text)


def people_of(url: str) -> dict[str, dict[str, Any]]:
    reply = asyncio.run(api_call(url, {"type": "people", "id": "list"}))
    assert reply["type"] == "people", reply
    return {p["id"]: p for p in reply["people"]}


def no_page_errors(driver: Any) -> None:
    """No script errors in the console (missing style.css/favicon are not errors here)."""
    errors = [e for e in driver.get_log("browser")
              if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]
    assert errors == []


# -- tests -----------------------------------------------------------------------------


def test_people_page_record_enrol_identify_verify_rename_delete(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    mic = wav_of(RECORDED, tmp_path / "mic.wav")
    with server_thread(tmp_path, rooms=parse_rooms({"hall": "far"})) as server:
        http = f"http://127.0.0.1:{server.port}"
        for i, (name, path) in enumerate(OTHERS.items()):
            reply = asyncio.run(api_call(server.url, {"type": "enroll", "id": i, "name": name,
                                                      **audio_fields(read_flac(path), "FLAC")}))
            assert reply["type"] == "enrolled", reply

        with chromium(tmp_path, mic) as driver:
            started = time.monotonic()
            driver.get(f"{http}/people")
            listed = "#people-table tbody tr"
            wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, listed)) == 2,
                     what="the people list")
            # the page shows the server's enroll.min_speech_s, not a number of its own
            needed = f"{server.app.config.enroll.min_speech_s:g}"
            wait_for(driver, lambda d: text(d, "speech-needed") == needed, what="the limits")
            assert text(driver, "speech-recommended") == "7"

            # -- enrol by recording, with live feedback
            driver.find_element(By.ID, "enroll-name").send_keys("Ada Lovelace")
            driver.find_element(By.ID, "enroll-info").send_keys('{"team": "engines"}')
            driver.find_element(By.ID, "enroll-record").click()
            wait_for(driver, lambda d: d.find_element(By.ID, "enroll-stop").is_enabled(),
                     what="recording to start")
            seen: list[float] = []

            def speech_seconds(d: Any) -> bool:
                value = float(text(d, "speech-seconds"))
                if not seen or seen[-1] != value:
                    seen.append(value)
                return value >= 5.0

            wait_for(driver, speech_seconds, timeout=30, what="5 s of speech on the live display")
            # the level meter follows the voice (speech, not a pause, at some moment)
            wait_for(driver, lambda d: -45 < float(d.find_element(By.ID, "enroll-level")
                                                     .get_attribute("data-dbfs")) < 0,
                     timeout=5, what="the level meter to show speech")
            driver.find_element(By.ID, "enroll-stop").click()
            wait_for(driver, lambda d: d.find_element(By.ID, "enroll-submit").is_enabled(),
                     what="the recording to be ready")
            record_s = time.monotonic() - started
            assert seen == sorted(seen) and len(seen) >= 3, seen  # it grew while recording
            driver.find_element(By.ID, "enroll-submit").click()
            wait_for(driver, lambda d: d.find_elements(By.ID, "enroll-ok"), what="enrolled")
            assert text(driver, "enroll-person-name") == "Ada Lovelace"
            pid = text(driver, "enroll-person-id")
            assert pid.startswith("p_")
            assert "s of speech in this audio" in text(driver, "enroll-result")

            # over the API: the person exists, and another utterance identifies as them
            people = people_of(server.url)
            assert people[pid]["name"] == "Ada Lovelace"
            assert people[pid]["info"] == {"team": "engines"}
            assert people[pid]["speech_s"] >= 4.5
            reply = asyncio.run(api_call(server.url, {"type": "identify", "id": "probe",
                                                      **pcm_fields(read_flac(API_PROBE))}))
            assert reply["match"] is not None and reply["match"]["id"] == pid, reply

            # -- identify by upload: ranked table, right name first, threshold shown
            wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, listed)) == 3,
                     what="the list to show the new person")
            driver.find_element(By.ID, "identify-file").send_keys(str(UPLOADED))
            wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#identify-table tbody tr"),
                     what="the identify table")
            rows = driver.find_elements(By.CSS_SELECTOR, "#identify-table tbody tr")
            assert len(rows) == 3
            cells = [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in rows]
            assert [c[0] for c in cells] == ["1", "2", "3"]
            names = [r.find_element(By.CSS_SELECTOR, ".pp-name").text for r in rows]
            assert names[0] == "Ada Lovelace" and rows[0].get_attribute("data-person-id") == pid
            assert sorted(names[1:]) == sorted(OTHERS)
            assert rows[0].find_element(By.CSS_SELECTOR, ".pp-id").text == pid
            distances = [float(c[2]) for c in cells]
            assert distances == sorted(distances)
            verdict = text(driver, "identify-verdict")
            assert verdict == f"Ada Lovelace ({distances[0]:.2f})"
            threshold = server.app.config.match.max_distance
            assert f"distance ≤ {threshold:.2f}" in text(driver, "identify-threshold")

            # -- identify by recording (the fake microphone plays the enrolled utterance)
            driver.find_element(By.ID, "identify-record").click()
            wait_for(driver, lambda d: d.find_element(By.ID, "identify-stop").is_enabled()
                     and not d.find_elements(By.ID, "identify-verdict"),
                     what="identify recording (the last verdict cleared)")
            time.sleep(3.5)
            driver.find_element(By.ID, "identify-stop").click()
            wait_for(driver, lambda d: text(d, "identify-verdict").startswith("Ada Lovelace ("),
                     what="identify by recording")
            assert driver.find_element(By.ID, "identify-file").get_attribute("value") == ""

            # -- "as heard in room": that room's profile decides (hall: far)
            far = PRESETS["far"]["match"]["max_distance"]
            driver.find_element(By.ID, "identify-room").send_keys("hall")
            driver.find_element(By.ID, "identify-submit").click()
            wait_for(driver, lambda d: f"distance ≤ {far:.2f}" in text(d, "identify-threshold"),
                     what="the far room's threshold")
            assert text(driver, "identify-verdict").startswith("Ada Lovelace (")
            driver.find_element(By.ID, "identify-room").clear()

            # -- verify by upload against a chosen person
            Select(driver.find_element(By.ID, "verify-person")).select_by_value(pid)
            driver.find_element(By.ID, "verify-file").send_keys(str(UPLOADED))
            wait_for(driver, lambda d: d.find_elements(By.ID, "verify-verdict"), what="verify")
            assert text(driver, "verify-verdict").startswith("accepted")
            assert f"threshold {threshold:.2f}" in text(driver, "verify-result")
            other = next(p for p, v in people.items() if v["name"] == "Speaker 1998")
            Select(driver.find_element(By.ID, "verify-person")).select_by_value(other)
            driver.find_element(By.ID, "verify-submit").click()
            wait_for(driver, lambda d: text(d, "verify-verdict").startswith("rejected"),
                     what="a rejection against another person")
            driver.find_element(By.ID, "verify-room").send_keys("hall")
            driver.find_element(By.ID, "verify-submit").click()
            wait_for(driver, lambda d: f"threshold {far:.2f}" in text(d, "verify-result"),
                     what="verify as heard in the far room")

            ARTIFACTS.mkdir(exist_ok=True)
            driver.save_screenshot(str(ARTIFACTS / "people.png"))

            # -- rename on the page
            row = driver.find_element(By.CSS_SELECTOR, f'#people-table tr[data-person-id="{pid}"]')
            row.find_element(By.CSS_SELECTOR, "button.rename").click()
            field = row.find_element(By.CSS_SELECTOR, "input.rename-input")
            field.clear()
            field.send_keys("Ada King")
            row.find_element(By.CSS_SELECTOR, "button.rename-save").click()
            name_cell = f'#people-table tr[data-person-id="{pid}"] td.pp-name'
            wait_for(driver,
                     lambda d: d.find_element(By.CSS_SELECTOR, name_cell).text == "Ada King",
                     what="the new name in the list")
            assert people_of(server.url)[pid]["name"] == "Ada King"

            # -- delete on the page (with a confirmation step)
            row = driver.find_element(By.CSS_SELECTOR, f'#people-table tr[data-person-id="{pid}"]')
            row.find_element(By.CSS_SELECTOR, "button.delete").click()
            assert pid in people_of(server.url)  # not before the confirmation
            row.find_element(By.CSS_SELECTOR, "button.delete-confirm").click()
            wait_for(driver, lambda d: not d.find_elements(
                By.CSS_SELECTOR, f'#people-table tr[data-person-id="{pid}"]'), what="the row to go")
            assert pid not in people_of(server.url) and len(people_of(server.url)) == 2
            no_page_errors(driver)
            print(f"\npeople page: recorded to {seen[-1]:.1f} s of speech in {record_s:.1f} s "
                  f"(live values {seen}); whole test {time.monotonic() - started:.1f} s")


def test_people_page_errors_and_token(tmp_path: Path) -> None:
    """Too little speech shows the server's message; ?token= reaches the websocket."""
    from selenium.webdriver.common.by import By

    short = tmp_path / "short.wav"
    x = read_flac(RECORDED)
    sf.write(str(short), x[16000:16000 + int(1.2 * 16000)], 16000, subtype="PCM_16")
    auth = AuthConfig(tokens=(AuthToken("s3cret-admin", ("admin",)),
                              AuthToken("s3cret-display", ("display",))))
    with server_thread(tmp_path, auth=auth) as server, chromium(tmp_path) as driver:
        http = f"http://127.0.0.1:{server.port}"
        driver.get(f"{http}/people")  # no token: the page says why nothing works
        wait_for(driver, lambda d: "valid token" in text(d, "api-status"), what="unauthorized")
        wait_for(driver, lambda d: "valid token" in text(d, "rooms-result"),
                 what="the rooms section saying why")
        assert text(driver, "rooms-result").startswith(
            "Rooms not loaded: the server wants a valid token")
        # a display token may not manage people or rooms: said in plain words
        driver.get(f"{http}/people?token=s3cret-display")
        wait_for(driver, lambda d: "admin role needed" in text(d, "rooms-result"),
                 what="the rooms section refused")
        driver.find_element(By.ID, "roster-room").send_keys("board")
        driver.find_element(By.ID, "roster-save").click()
        wait_for(driver,
                 lambda d: text(d, "rooms-result").startswith("Not saved: this token may not"),
                 what="the save refused")
        assert "admin role needed" in text(driver, "rooms-result")

        driver.get(f"{http}/people?token=s3cret-admin")
        wait_for(driver, lambda d: text(d, "api-status") == "connected", what="connected")
        wait_for(driver, lambda d: d.find_element(By.ID, "people-empty").is_displayed(),
                 what="the empty list")
        driver.find_element(By.ID, "enroll-name").send_keys("Shorty")
        driver.find_element(By.ID, "enroll-file").send_keys(str(short))
        wait_for(driver, lambda d: float(text(d, "speech-seconds")) > 0, what="file analysis")
        driver.find_element(By.ID, "enroll-submit").click()
        wait_for(driver, lambda d: "Not enrolled" in text(d, "enroll-result"), what="the error")
        message = text(driver, "enroll-result")
        needed = f"need at least {EnrollConfig().min_speech_s:.1f} s"
        assert "found" in message and needed in message, message
        assert driver.find_element(By.ID, "enroll-result").get_attribute("data-code") == \
            "too_little_speech"

        # identify with nobody enrolled
        driver.find_element(By.ID, "identify-file").send_keys(str(UPLOADED))
        wait_for(driver, lambda d: d.find_elements(By.ID, "identify-verdict"), what="verdict")
        assert text(driver, "identify-verdict") == "nobody enrolled"

        # a file that is not audio: the page says so instead of "Press Enrol to use it"
        garbage = tmp_path / "notes.wav"
        garbage.write_bytes(b"these are meeting notes, not a recording\n" * 50)
        driver.find_element(By.ID, "enroll-file").send_keys(str(garbage))
        wait_for(driver, lambda d: "could not be read as audio" in text(d, "enroll-source"),
                 what="the unreadable file named")
        assert "Press Enrol" not in text(driver, "enroll-source")
        assert not driver.find_element(By.ID, "enroll-submit").is_enabled()
        no_page_errors(driver)
        # the favicon is served (no 404 in the console or the server log)
        with urllib.request.urlopen(f"{http}/favicon.ico", timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("image/svg+xml")
    shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def rooms_of(url: str) -> dict[str, list[str]]:
    reply = asyncio.run(api_call(url, {"type": "rooms", "id": "rooms"}))
    assert reply["type"] == "rooms", reply
    return {r["room"]: r["people"] for r in reply["rooms"]}


def test_people_page_rooms_rosters(tmp_path: Path) -> None:
    """The Rooms section: create rosters by room name with the enrolled people checked,
    edit one, see a person deleted meanwhile refused in plain words, remove one; each
    step checked over /v1/api ``rooms``."""
    from selenium.webdriver.common.by import By

    enrolled = {**OTHERS, "Speaker 1688": RECORDED}
    with server_thread(tmp_path) as server, chromium(tmp_path) as driver:
        http = f"http://127.0.0.1:{server.port}"
        ids = {}
        for i, (name, path) in enumerate(enrolled.items()):
            reply = asyncio.run(api_call(server.url, {"type": "enroll", "id": i, "name": name,
                                                      **audio_fields(read_flac(path), "FLAC")}))
            assert reply["type"] == "enrolled", reply
            ids[name] = reply["person"]["id"]

        def box(name: str) -> Any:
            return driver.find_element(By.CSS_SELECTOR,
                                       f'#roster-people li[data-person-id="{ids[name]}"] input')

        def row(room: str) -> Any:
            return driver.find_element(By.CSS_SELECTOR, f'#rooms-table tr[data-room="{room}"]')

        def expected(room: str) -> str:
            return str(row(room).find_element(By.CSS_SELECTOR, ".pp-expected").text)

        def save_and_wait(what: str) -> str:
            driver.find_element(By.ID, "roster-save").click()
            wait_for(driver, lambda d: d.find_elements(By.ID, "roster-saved")
                     or d.find_elements(By.CSS_SELECTOR, "#rooms-result .pp-error"), what=what)
            return text(driver, "rooms-result")

        driver.get(f"{http}/people")
        wait_for(driver, lambda d: d.find_element(By.ID, "rooms-empty").is_displayed()
                 and len(d.find_elements(By.CSS_SELECTOR, "#roster-people li")) == 3,
                 what="no rosters yet and three people to check")
        assert text(driver, "roster-title") == "New roster"

        # -- a roster for "board": two of the three
        driver.find_element(By.ID, "roster-room").send_keys("board")
        box("Speaker 1688").click()
        box("Speaker 2414").click()
        assert text(driver, "roster-selected-count") == "(2 checked)"
        saved = save_and_wait("the board roster")
        assert saved.startswith("Saved: 2 people are expected in board."), saved
        assert rooms_of(server.url) == {"board": [ids["Speaker 1688"], ids["Speaker 2414"]]}
        wait_for(driver, lambda d: expected("board") == "Speaker 1688, Speaker 2414",
                 what="board in the list, by name")
        link = row("board").find_element(By.CSS_SELECTOR, "a.pp-room-link")
        assert link.get_attribute("href") == f"{http}/room/board"
        assert text(driver, "roster-title") == "Roster of board"  # the form keeps it

        # -- a second room, started from a cleared form; the filter narrows the list
        driver.find_element(By.ID, "roster-clear").click()
        assert not box("Speaker 1688").is_selected()
        assert text(driver, "roster-title") == "New roster"
        driver.find_element(By.ID, "roster-room").send_keys("lobby")
        driver.find_element(By.ID, "roster-filter").send_keys("1998")  # a search on the server
        wait_for(driver, lambda d: [li.is_displayed() for li in d.find_elements(
            By.CSS_SELECTOR, "#roster-people li")].count(True) == 1, what="the filter applied")
        box("Speaker 1998").click()
        driver.find_element(By.ID, "roster-filter").clear()
        driver.find_element(By.ID, "roster-filter").send_keys(" ")  # input event: all again
        wait_for(driver, lambda d: box("Speaker 1688").is_displayed(), what="the filter cleared")
        save_and_wait("the lobby roster")
        assert rooms_of(server.url) == {"board": [ids["Speaker 1688"], ids["Speaker 2414"]],
                                        "lobby": [ids["Speaker 1998"]]}
        wait_for(driver, lambda d: text(d, "rooms-count") == "(2)", what="two rooms listed")

        # -- edit board: 2414 out, 1998 in
        row("board").find_element(By.CSS_SELECTOR, "button.roster-edit").click()
        assert driver.find_element(By.ID, "roster-room").get_attribute("value") == "board"
        assert box("Speaker 1688").is_selected() and box("Speaker 2414").is_selected()
        assert not box("Speaker 1998").is_selected()
        box("Speaker 2414").click()
        box("Speaker 1998").click()
        save_and_wait("the edited board roster")
        assert rooms_of(server.url)["board"] == [ids["Speaker 1688"], ids["Speaker 1998"]]
        wait_for(driver, lambda d: expected("board") == "Speaker 1688, Speaker 1998",
                 what="the edited roster listed")

        # -- someone deleted meanwhile (elsewhere): the save is refused in plain words
        row("lobby").find_element(By.CSS_SELECTOR, "button.roster-edit").click()
        box("Speaker 2414").click()
        reply = asyncio.run(api_call(server.url, {"type": "delete_person", "id": "gone",
                                                  "person": ids["Speaker 2414"]}))
        assert reply["type"] == "deleted", reply
        message = save_and_wait("the refusal")
        assert message.startswith("Not saved: Speaker 2414 is no longer enrolled"), message
        assert driver.find_element(By.ID, "rooms-result").get_attribute("data-code") == \
            "unknown_person"
        assert rooms_of(server.url)["lobby"] == [ids["Speaker 1998"]]  # unchanged
        gone = driver.find_element(By.CSS_SELECTOR, "#roster-people li.pp-gone")
        assert "(not enrolled)" in gone.text
        gone.find_element(By.CSS_SELECTOR, "input").click()  # uncheck, save again
        save_and_wait("the save without them")
        assert rooms_of(server.url)["lobby"] == [ids["Speaker 1998"]]
        assert not driver.find_elements(By.CSS_SELECTOR, "#roster-people li.pp-gone")

        # -- remove board's roster (with a confirmation step)
        row("board").find_element(By.CSS_SELECTOR, "button.roster-remove").click()
        assert "board" in rooms_of(server.url)  # not before the confirmation
        row("board").find_element(By.CSS_SELECTOR, "button.roster-remove-confirm").click()
        wait_for(driver, lambda d: not d.find_elements(By.CSS_SELECTOR,
                                                       '#rooms-table tr[data-room="board"]'),
                 what="the board row to go")
        assert "Removed the roster of board" in text(driver, "rooms-result")
        assert rooms_of(server.url) == {"lobby": [ids["Speaker 1998"]]}
        assert text(driver, "roster-title") == "Roster of lobby"  # the form still holds lobby

        # -- a room name is required
        driver.find_element(By.ID, "roster-room").clear()
        driver.find_element(By.ID, "roster-save").click()
        assert "Enter the room's name" in text(driver, "rooms-result")
        ARTIFACTS.mkdir(exist_ok=True)
        driver.find_element(By.ID, "rooms-section").screenshot(str(ARTIFACTS / "people-rooms.png"))
        no_page_errors(driver)


def enrol_many(url: str, people: dict[str, Any]) -> dict[str, str]:
    """Enrol ``{name: samples}`` in this order over one connection; name -> id."""
    from server_support import api_client

    async def run() -> dict[str, str]:
        ids = {}
        async with api_client(url) as client:
            for i, (name, x) in enumerate(people.items()):
                reply = await client.call({"type": "enroll", "id": i, "name": name,
                                           **pcm_fields(x)})
                assert reply["type"] == "enrolled", reply
                ids[name] = reply["person"]["id"]
        return ids
    return asyncio.run(run())


def test_people_page_in_pages_with_search_and_a_roster_found_by_query(tmp_path: Path) -> None:
    """A gallery larger than a page (``?page_size=5``; the server refuses any "people"
    request without a limit past 3 people): next/previous and the "6–10 of 13" text,
    Refresh and deleting keep the page and the search, the search finds someone on a
    later page (by name or id), and the roster checklist finds someone by query, keeps
    the checked people in sight and saves them; every "people" request had a limit."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    speech = read_flac(RECORDED)[16000:16000 + 5 * 16000]  # the same 5 s for twelve names
    people = {f"Person {n:02d}": speech for n in range(1, 13)}
    people["Zelda Quinn"] = read_flac(OTHERS["Speaker 1998"])
    with server_thread(tmp_path, server={"max_people_reply": 3}) as server, \
            chromium(tmp_path) as driver:
        http = f"http://127.0.0.1:{server.port}"
        ids = enrol_many(server.url, people)
        zelda = ids["Zelda Quinn"]
        record_sent(driver)
        driver.get(f"{http}/people?page_size=5")

        def names() -> list[str]:
            return [td.text for td in driver.find_elements(By.CSS_SELECTOR,
                                                           "#people-table tbody td.pp-name")]

        def page_is(range_text: str, expected: list[str]) -> None:
            wait_for(driver, lambda d: text(d, "people-range") == range_text
                     and names() == expected, what=f"the page {range_text} {expected}")

        def button(element_id: str) -> Any:
            return driver.find_element(By.ID, element_id)

        def search(query: str) -> None:
            field = button("people-search")
            field.clear()
            field.send_keys(query if query else " ")  # a space: an input event, no query

        # -- one page at a time, oldest enrolment first
        page_is("1–5 of 13", [f"Person {n:02d}" for n in range(1, 6)])
        assert text(driver, "people-count") == "(13)"
        assert not button("people-prev").is_enabled() and button("people-next").is_enabled()
        button("people-next").click()
        page_is("6–10 of 13", [f"Person {n:02d}" for n in range(6, 11)])
        assert button("people-prev").is_enabled()
        button("people-next").click()
        page_is("11–13 of 13", ["Person 11", "Person 12", "Zelda Quinn"])
        assert not button("people-next").is_enabled()
        # the selects offer the page's people (by name)
        options = [o.get_attribute("value") for o in
                   Select(button("verify-person")).options]
        assert options == [ids["Person 11"], ids["Person 12"], zelda]
        button("people-prev").click()
        page_is("6–10 of 13", [f"Person {n:02d}" for n in range(6, 11)])

        # -- Refresh keeps the page
        loaded = button("people-table").get_attribute("data-loaded")
        button("people-refresh").click()
        wait_for(driver, lambda d: d.find_element(By.ID, "people-table")
                 .get_attribute("data-loaded") != loaded, what="the refresh")
        page_is("6–10 of 13", [f"Person {n:02d}" for n in range(6, 11)])

        # -- the search (on the server) finds someone on a later page, by name or by id
        search("zelda")
        page_is("1–1 of 1", ["Zelda Quinn"])
        assert text(driver, "people-count") == "(1 matching)"
        search(ids["Person 03"])
        page_is("1–1 of 1", ["Person 03"])
        search("0")
        page_is("1–5 of 10", [f"Person {n:02d}" for n in range(1, 6)])
        Select(button("verify-person")).select_by_value(ids["Person 04"])
        search("person 1")
        page_is("1–3 of 3", ["Person 10", "Person 11", "Person 12"])
        # who was chosen in a select stays chosen when the page changes
        verify = Select(button("verify-person"))
        assert verify.first_selected_option.get_attribute("value") == ids["Person 04"]
        assert [o.get_attribute("value") for o in verify.options] == \
            [ids["Person 04"]] + [ids[f"Person {n}"] for n in (10, 11, 12)]
        search("nobody like this")
        wait_for(driver, lambda d: d.find_element(By.ID, "people-empty").is_displayed(),
                 what="nobody found")
        assert text(driver, "people-empty") == "Nobody matches “nobody like this”."
        assert not button("people-table").is_displayed()
        search("PERSON 1")
        page_is("1–3 of 3", ["Person 10", "Person 11", "Person 12"])

        # -- deleting and renaming refresh the page shown (the search kept)
        row = driver.find_element(By.CSS_SELECTOR,
                                  f'#people-table tr[data-person-id="{ids["Person 11"]}"]')
        row.find_element(By.CSS_SELECTOR, "button.delete").click()
        row.find_element(By.CSS_SELECTOR, "button.delete-confirm").click()
        page_is("1–2 of 2", ["Person 10", "Person 12"])
        assert button("people-search").get_attribute("value") == "PERSON 1"
        row = driver.find_element(By.CSS_SELECTOR,
                                  f'#people-table tr[data-person-id="{ids["Person 10"]}"]')
        row.find_element(By.CSS_SELECTOR, "button.rename").click()
        field = row.find_element(By.CSS_SELECTOR, "input.rename-input")
        field.clear()
        field.send_keys("Person 10 (Ten)")
        row.find_element(By.CSS_SELECTOR, "button.rename-save").click()
        page_is("1–2 of 2", ["Person 10 (Ten)", "Person 12"])
        search("")
        page_is("1–5 of 12", [f"Person {n:02d}" for n in range(1, 6)])

        # -- the roster checklist: one page of what the filter finds, checked people kept
        def box(person_id: str) -> Any:
            return driver.find_element(By.CSS_SELECTOR,
                                       f'#roster-people li[data-person-id="{person_id}"] input')

        def listed() -> list[str]:
            return [li.get_attribute("data-person-id") for li in
                    driver.find_elements(By.CSS_SELECTOR, "#roster-people li")]

        def expected(room: str) -> str:
            return str(driver.find_element(
                By.CSS_SELECTOR, f'#rooms-table tr[data-room="{room}"] .pp-expected').text)

        wait_for(driver, lambda d: len(listed()) == 5, what="the checklist's first page")
        assert zelda not in listed()
        assert text(driver, "roster-more") == \
            "Showing 5 of 12 people: type a name (or an id) to find someone else."
        driver.find_element(By.ID, "roster-room").send_keys("hall")
        box(ids["Person 02"]).click()
        driver.find_element(By.ID, "roster-filter").send_keys("zel")
        wait_for(driver, lambda d: listed() == [zelda, ids["Person 02"]],
                 what="Zelda found, Person 02 (checked) still in sight")
        assert not driver.find_element(By.ID, "roster-more").is_displayed()
        box(zelda).click()
        assert text(driver, "roster-selected-count") == "(2 checked)"
        driver.find_element(By.ID, "roster-filter").clear()
        driver.find_element(By.ID, "roster-filter").send_keys(" ")
        wait_for(driver, lambda d: len(listed()) == 6 and listed()[-1] == zelda,
                 what="the first page again, Zelda (checked) below it")
        ARTIFACTS.mkdir(exist_ok=True)
        driver.find_element(By.ID, "rooms-section").screenshot(
            str(ARTIFACTS / "people-rooms-search.png"))
        assert box(zelda).is_selected() and box(ids["Person 02"]).is_selected()
        driver.find_element(By.ID, "roster-save").click()
        wait_for(driver, lambda d: d.find_elements(By.ID, "roster-saved"), what="saved")
        assert text(driver, "rooms-result").startswith("Saved: 2 people are expected in hall.")
        assert rooms_of(server.url) == {"hall": [ids["Person 02"], zelda]}
        assert expected("hall") == "Person 02, Zelda Quinn"

        # -- a fresh page names the roster's members (looked up by id) and edits them
        driver.get(f"{http}/people?page_size=5")
        wait_for(driver, lambda d: expected("hall") == "Person 02, Zelda Quinn",
                 what="the roster named after a reload")
        driver.find_element(By.CSS_SELECTOR,
                            '#rooms-table tr[data-room="hall"] button.roster-edit').click()
        assert box(zelda).is_selected()
        zelda_item = driver.find_element(By.CSS_SELECTOR,
                                         f'#roster-people li[data-person-id="{zelda}"]')
        assert "Zelda Quinn" in zelda_item.text
        box(zelda).click()  # out of the roster
        driver.find_element(By.ID, "roster-save").click()
        wait_for(driver, lambda d: d.find_elements(By.ID, "roster-saved"), what="saved again")
        assert rooms_of(server.url) == {"hall": [ids["Person 02"]]}

        # -- deleting the last one on the last page moves to the page before
        button("people-next").click()
        button("people-next").click()
        page_is("11–12 of 12", ["Person 12", "Zelda Quinn"])
        for name, after in (("Zelda Quinn", "11–11 of 11"), ("Person 12", "6–10 of 10")):
            row = driver.find_element(By.CSS_SELECTOR,
                                      f'#people-table tr[data-person-id="{ids[name]}"]')
            row.find_element(By.CSS_SELECTOR, "button.delete").click()
            row.find_element(By.CSS_SELECTOR, "button.delete-confirm").click()
            wait_for(driver, lambda d, after=after: text(d, "people-range") == after,
                     what=f"{after} after deleting {name}")
        assert names() == ["Person 06", "Person 07", "Person 08", "Person 09", "Person 10 (Ten)"]

        requests = sent_people_requests(driver)
        assert requests and all(isinstance(m.get("limit"), int) for m in requests), requests
        ARTIFACTS.mkdir(exist_ok=True)
        driver.find_element(By.ID, "people-section").screenshot(str(ARTIFACTS / "people-pages.png"))
        no_page_errors(driver)
