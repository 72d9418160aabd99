"""``streamer import DIR``: one person per folder, resumable, refusals summarised.

The first tests check the parts that need no model (scanning, fingerprints, decisions,
the summary). The others run the real console command in subprocesses on real
LibriSpeech speech, against a real ``streamer serve`` (``--url``) and on a data dir
directly, and interrupt one with SIGINT.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import soundfile as sf
import yaml
from server_support import IMPOSTOR_DIR, LIBRI_DIR, api_client, manifest
from test_cli import CLI, ENV, run
from test_cli_options import one_line_error, serve

from streamer.importer import (
    EXIT_INTERRUPTED,
    Existing,
    ImportProblem,
    Outcome,
    Report,
    decide,
    existing_imports,
    exit_code,
    fingerprint,
    format_summary,
    scan,
)

TOKEN = "import-admin-token"
#: folder name -> LibriSpeech test-other speaker (two utterances each)
GOOD = {"Ada Lovelace": "1688", "Bob Marley": "1998", "Zoë Ångström": "2033",
        "Grace Hopper": "2414", "Linus": "2609", "Mae": "3005"}


# -- no model ----------------------------------------------------------------------------


def test_scan_sorts_folders_and_notes_what_it_leaves_out(tmp_path: Path) -> None:
    with pytest.raises(ImportProblem, match="does not exist"):
        scan(tmp_path / "missing")
    (tmp_path / "file.wav").write_bytes(b"x")
    with pytest.raises(ImportProblem, match="is not a directory"):
        scan(tmp_path / "file.wav")
    with pytest.raises(ImportProblem, match="no person folders"):
        scan(tmp_path)
    for name in ("b", "a", ".hidden"):
        (tmp_path / name).mkdir()
    (tmp_path / "a" / "2.FLAC").write_bytes(b"x")
    (tmp_path / "a" / "1.wav").write_bytes(b"x")
    (tmp_path / "a" / "notes.txt").write_text("x")
    (tmp_path / "a" / ".DS_Store").write_text("x")
    folders, notes = scan(tmp_path)
    assert [f.name for f in folders] == ["a", "b"]
    assert [p.name for p in folders[0].files] == ["1.wav", "2.FLAC"]
    assert folders[0].ignored == ("notes.txt",) and folders[1].files == ()
    assert notes == ["left out .hidden: hidden", "left out file.wav: not a folder"]


def test_the_fingerprint_follows_the_bytes_and_their_order() -> None:
    assert fingerprint([b"ab", b"c"]) == fingerprint([b"ab", b"c"])
    assert fingerprint([b"ab", b"c"]) != fingerprint([b"a", b"bc"])
    assert fingerprint([b"ab", b"c"]) != fingerprint([b"c", b"ab"])


def test_decide_skips_same_audio_reports_changes_and_updates_on_request() -> None:
    old, new = Existing("p_old", "d1", "Ada", {}), Existing("p_new", "d2", "Ada", {})
    assert decide("d0", [], update=False).action == "enroll"
    assert decide("d1", [old], update=False) == decide("d1", [old], update=True)
    assert decide("d1", [old], update=True).action == "skip"
    assert decide("d2", [old], update=False).action == "changed"
    plan = decide("d2", [old], update=True)
    assert (plan.action, plan.delete) == ("enroll", ("p_old",))
    # an update interrupted between enrolling the new person and deleting the old one
    assert decide("d2", [old, new], update=False).delete == ()
    plan = decide("d2", [old, new], update=True)
    assert (plan.action, plan.person, plan.delete) == ("skip", "p_new", ("p_old",))


def test_existing_imports_reads_only_import_fingerprints() -> None:
    people = [
        {"id": "p_1", "name": "Ada", "info": {"import": {"folder": "Ada", "audio_sha256": "d"}}},
        {"id": "p_2", "name": "Bob", "info": {}},
        {"id": "p_3", "name": "Eve", "info": {"import": "by hand"}},
        {"id": "p_4", "name": "Ada", "info": {"import": {"folder": "Ada"}}},
    ]
    found = existing_imports(people)
    assert list(found) == ["Ada"]
    assert [(e.id, e.digest) for e in found["Ada"]] == [("p_1", "d"), ("p_4", "")]


def test_summary_groups_refusals_by_code_and_sets_the_exit_code() -> None:
    report = Report("DIR", "ws://h:1", total=4, seconds=30.0)
    report.outcomes = [Outcome("Ada", "enrolled", "p_1"), Outcome("Bob", "skipped", "p_2")]
    assert exit_code(report) == EXIT_INTERRUPTED
    report.outcomes += [Outcome("Cy", "refused", code="too_little_speech", message="short"),
                        Outcome(" ", "refused", code="bad_name", message="blank")]
    text = format_summary(report)
    assert "enrolled 1, updated 0, skipped 1" in text and "refused 2" in text
    assert "refused, bad_name: 1\n    ' ': blank" in text
    assert "refused, too_little_speech: 1\n    Cy: short" in text
    assert "rate: 2.0 people per minute" in text
    assert exit_code(report) == 1
    assert report.to_json()["refused_by_code"] == {"bad_name": [" "], "too_little_speech": ["Cy"]}
    report.outcomes = [o for o in report.outcomes if o.status != "refused"] + [
        Outcome("Cy", "changed", "p_3"), Outcome("Di", "skipped", "p_4")]
    assert exit_code(report) == 0


# -- real speech, real processes --------------------------------------------------------


def _utterances(speaker: str, n: int) -> list[Path]:
    return [p for p, s, _ in manifest(LIBRI_DIR) if s == speaker][:n]


def build_dir(root: Path) -> Path:
    """Six people with two utterances each (Ada also has notes.txt), and four folders
    that cannot be enrolled: too little speech, an undecodable .wav, empty, blank name."""
    root.mkdir()
    for name, speaker in GOOD.items():
        (root / name).mkdir()
        for path in _utterances(speaker, 2):
            shutil.copy(path, root / name)
    (root / "Ada Lovelace" / "notes.txt").write_text("recorded in the lab\n")
    speech, rate = sf.read(_utterances("3080", 1)[0], dtype="float32")
    (root / "Tiny Tim").mkdir()
    sf.write(root / "Tiny Tim" / "hello.wav", speech[: int(0.8 * rate)], rate)
    (root / "Broken").mkdir()
    (root / "Broken" / "take1.wav").write_bytes(b"RIFF but not really a wave file" * 10)
    (root / "Empty").mkdir()
    (root / " ").mkdir()
    shutil.copy(_utterances("3331", 1)[0], root / " ")
    return root


def api(url: str, token: str | None, message: dict) -> dict:
    """One ``/v1/api`` request and its reply."""
    headers = {"Authorization": f"Bearer {token}"} if token else None

    async def call() -> dict:
        async with api_client(url, additional_headers=headers) as client:
            return await client.call({"id": 1, **message})

    return asyncio.run(call())


def people_of(url: str, token: str | None = None) -> list[dict]:
    """The people a server lists (over ``/v1/api``)."""
    reply = api(url, token, {"type": "people"})
    assert reply["type"] == "people", reply
    return reply["people"]


def import_(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run(cwd, "import", *args, timeout=timeout)


REFUSED = {"bad_audio": ["Broken"], "bad_name": [" "], "no_audio": ["Empty"],
           "too_little_speech": ["Tiny Tim"]}


@pytest.mark.slow
def test_import_over_url_enrols_refuses_with_reasons_resumes_and_updates(tmp_path: Path) -> None:
    folder = build_dir(tmp_path / "people")
    config = tmp_path / "auth.yaml"
    config.write_text(yaml.safe_dump({"auth": {"tokens": {TOKEN: ["admin"]}}}))
    with serve(tmp_path, "--config", str(config), "--data-dir", "data") as url:
        line = one_line_error(import_(tmp_path, str(folder), "--url", url))
        assert "unauthorized" in line and "--token" in line, line
        auth = ("--url", url, "--token", TOKEN)
        r = import_(tmp_path, str(folder), *auth, "--json", "first.json")
        assert r.returncode == 1, r.stderr
        first = json.loads((tmp_path / "first.json").read_text())
        assert first["counts"] == {"enrolled": 6, "updated": 0, "skipped": 0, "changed": 0,
                                   "refused": 4}
        assert first["refused_by_code"] == REFUSED
        assert "refused, too_little_speech: 1\n    Tiny Tim: found 0." in r.stdout, r.stdout
        assert "Broken: take1.wav: could not decode" in r.stdout
        assert "Ada Lovelace: ignored notes.txt (not audio)" in r.stdout
        assert "import: 10/10 people" in r.stderr  # plain progress lines: not a terminal
        assert re.search(r"rate: \d+\.\d people per minute \(6 enrolled", r.stdout), r.stdout
        people = people_of(url, TOKEN)
        assert sorted(p["name"] for p in people) == sorted(GOOD)
        ids = {p["name"]: p["id"] for p in people}
        for p in people:
            mark = p["info"]["import"]
            assert mark["folder"] == p["name"] and mark["files"] == 2
            assert len(mark["audio_sha256"]) == 64

        # the same run again enrols nobody twice; the refusals are reported again
        r = import_(tmp_path, str(folder), *auth, "--quiet", "--json", "second.json")
        assert r.returncode == 1 and r.stderr == "", r.stderr
        second = json.loads((tmp_path / "second.json").read_text())
        assert second["counts"]["skipped"] == 6 and second["counts"]["enrolled"] == 0
        assert second["refused_by_code"] == REFUSED
        assert {p["folder"]: p["person"] for p in second["people"] if "person" in p} == ids
        assert len(people_of(url, TOKEN)) == 6

        # without the bad folders: exit 0; a changed folder is reported, not re-enrolled
        for bad in ("Tiny Tim", "Broken", "Empty", " "):
            shutil.rmtree(folder / bad)
        shutil.copy(_utterances("1998", 3)[2], folder / "Bob Marley")
        r = import_(tmp_path, str(folder), *auth, "--quiet")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "changed since imported, not updated (run with --update): 1: Bob Marley" in r.stdout
        assert {p["id"] for p in people_of(url, TOKEN)} == set(ids.values())

        # --update enrols it again as a new person and deletes the old one; the new
        # person takes the old one's place in every roster
        others = sorted(pid for name, pid in ids.items() if name != "Bob Marley")
        lab = [others[0], ids["Bob Marley"], others[1]]
        assert api(url, TOKEN, {"type": "set_room", "room": "lab", "people": lab})["people"] == lab
        api(url, TOKEN, {"type": "set_room", "room": "hall", "people": others[:1]})
        r = import_(tmp_path, str(folder), *auth, "--quiet", "--update", "--json", "update.json")
        assert r.returncode == 0, r.stdout + r.stderr
        update = json.loads((tmp_path / "update.json").read_text())
        assert update["counts"] == {"enrolled": 0, "updated": 1, "skipped": 5, "changed": 0,
                                    "refused": 0}
        bob = next(p for p in update["people"] if p["folder"] == "Bob Marley")
        assert bob["status"] == "updated" and bob["replaced"] == [ids["Bob Marley"]]
        now = {p["name"]: p for p in people_of(url, TOKEN)}
        assert len(now) == 6 and now["Bob Marley"]["id"] == bob["person"] != ids["Bob Marley"]
        assert now["Bob Marley"]["info"]["import"]["files"] == 3
        rooms = {r["room"]: r["people"] for r in api(url, TOKEN, {"type": "rooms"})["rooms"]}
        assert rooms == {"lab": [others[0], bob["person"], others[1]], "hall": others[:1]}


@pytest.mark.slow
def test_import_on_a_data_dir_and_one_line_errors(tmp_path: Path) -> None:
    folder = build_dir(tmp_path / "people")
    for bad in ("Broken", "Empty", " "):
        shutil.rmtree(folder / bad)
    r = import_(tmp_path, str(folder), "--data-dir", "data", "--json", "offline.json")
    assert r.returncode == 1, r.stderr
    report = json.loads((tmp_path / "offline.json").read_text())
    assert report["counts"]["enrolled"] == 6
    assert report["refused_by_code"] == {"too_little_speech": ["Tiny Tim"]}
    listed = run(tmp_path, "people", "--data-dir", "data")
    assert listed.returncode == 0, listed.stderr
    assert sorted(line.split(None, 2)[2] for line in listed.stdout.splitlines()[1:]) == sorted(GOOD)
    shutil.rmtree(folder / "Tiny Tim")
    r = import_(tmp_path, str(folder), "--data-dir", "data", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "enrolled 0, updated 0, skipped 6" in r.stdout
    # a server owns the data dir: the offline import says to use --url
    with serve(tmp_path, "--data-dir", "data") as url:
        line = one_line_error(import_(tmp_path, str(folder), "--data-dir", "data"))
        assert url in line and "--url" in line, line
    line = one_line_error(import_(tmp_path, str(folder), "--url", url))  # the server is gone
    assert "cannot reach the server" in line
    line = one_line_error(import_(tmp_path, str(tmp_path / "nowhere"), "--data-dir", "data"))
    assert "nowhere does not exist" in line
    line = one_line_error(import_(tmp_path, str(folder), "--jobs", "0", "--data-dir", "data"))
    assert "--jobs" in line


def _voices(root: Path, n: int) -> Path:
    """``n`` folders of one train-clean utterance (at least 8 s) each."""
    root.mkdir()
    rows = [(p, s) for p, s, seconds in manifest(IMPOSTOR_DIR) if seconds >= 8][:n]
    for path, speaker in rows:
        (root / f"Speaker {speaker}").mkdir()
        shutil.copy(path, root / f"Speaker {speaker}")
    return root


@pytest.mark.slow
def test_ctrl_c_keeps_what_was_enrolled_and_the_next_run_finishes(tmp_path: Path) -> None:
    folder = _voices(tmp_path / "voices", 16)
    with serve(tmp_path, "--data-dir", "data") as url:
        proc = subprocess.Popen([*CLI, "import", str(folder), "--url", url, "--jobs", "1",
                                 "--json", "stopped.json"], cwd=tmp_path, env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while len(people_of(url)) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == EXIT_INTERRUPTED, out + err
        assert "stopping: finishing the people in flight" in err and "Traceback" not in err
        stopped = json.loads((tmp_path / "stopped.json").read_text())
        enrolled = {p["folder"]: p["person"] for p in stopped["people"]}
        assert stopped["interrupted"] and 2 <= len(enrolled) < 16 and stopped["not_done"] > 0
        assert "not done (stopped early)" in out
        # what the server holds is exactly what the report says was enrolled
        assert {p["id"]: p["name"] for p in people_of(url)} == {v: k for k, v in enrolled.items()}

        r = import_(tmp_path, str(folder), "--url", url, "--quiet", "--json", "resumed.json")
        assert r.returncode == 0, r.stdout + r.stderr
        resumed = json.loads((tmp_path / "resumed.json").read_text())
        assert resumed["counts"]["skipped"] == len(enrolled)
        assert resumed["counts"]["enrolled"] == 16 - len(enrolled)
        names = [p["name"] for p in people_of(url)]
        assert len(names) == len(set(names)) == 16
