"""``streamer import DIR``: enrol one person per sub-folder of DIR, resumably.

``DIR/NAME/*.wav|flac|ogg|mp3`` is the enrolment of a person called ``NAME`` (the
folder's files are joined in name order, as ``streamer enroll NAME FILE...`` joins
them). The work goes over ``/v1/api`` (``--url``, one connection per job) or, without
``--url``, through :class:`~streamer.api.Api` on the data dir (which it owns meanwhile,
like the other offline people commands). Either way ``--jobs`` people are in flight at
once: their files are read and decoded here in threads while the model embeds others.

Resuming: each enrolled person carries ``info["import"] = {"folder": NAME,
"audio_sha256": HEX, "files": N}`` (HEX: SHA-256 of the audio files' bytes in name
order, each preceded by its length). At start the people are listed once; a folder
whose person has the same fingerprint is skipped. A folder whose audio changed is
reported as ``changed``; with ``--update`` it is enrolled again as a new person (same
name and other info fields as the old one), and the old person is deleted once the new
one is acknowledged, so an interruption never leaves the folder without a person (an
interrupted update leaves both; the next ``--update`` run deletes the stale one).

Flow: :func:`run_import` (the CLI entry) -> :func:`scan` -> :class:`Importer`
(:meth:`Importer.run`) -> :func:`format_summary` / :meth:`Report.to_json`.
Ctrl-C (or SIGTERM) stops taking new folders and waits for the people in flight; a
second Ctrl-C abandons them (a server still finishes what it received; the next run
skips those).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import math
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

from . import wire
from .audio import decode_file, float_to_s16le
from .config import Config
from .errors import StreamerError
from .units import MODEL_SAMPLE_RATE

__all__ = [
    "AUDIO_SUFFIXES",
    "DEFAULT_JOBS",
    "EXIT_INTERRUPTED",
    "Existing",
    "Folder",
    "ImportProblem",
    "Importer",
    "Outcome",
    "Plan",
    "Progress",
    "Report",
    "add_arguments",
    "decide",
    "existing_imports",
    "exit_code",
    "fingerprint",
    "format_summary",
    "run_import",
    "scan",
]

#: Files with these suffixes (any case) are a person's audio; others are skipped with a note.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
#: People listed per ``people`` request when the run starts.
PEOPLE_PAGE = 5000
#: People in flight at once (connections over ``--url``).
DEFAULT_JOBS = 4
#: Exit code when Ctrl-C or SIGTERM stopped the import early (128 + SIGINT).
EXIT_INTERRUPTED = 130
#: The ``info`` key holding a person's import fingerprint.
INFO_KEY = "import"

HELP = "enrol one person per sub-folder of DIR (resumable; skips people already imported)"


class ImportProblem(ValueError):
    """DIR cannot be imported (missing, not a folder, no person folders). Exit code 2."""


class _Refused(Exception):
    """A folder that cannot be enrolled: ``code`` (protocol style) and a sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- folders ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Folder:
    """One person's folder: its audio files (sorted by name) and the other files."""

    name: str
    path: Path
    files: tuple[Path, ...]
    ignored: tuple[str, ...] = ()


def scan(root: str | Path) -> tuple[list[Folder], list[str]]:
    """The person folders of ``root`` (sorted by name) and notes on what was left out.

    Call first. Folders whose name starts with ``.`` and files directly in ``root`` are
    left out with a note; inside a folder, files without an audio suffix are listed in
    :attr:`Folder.ignored`. Raises :class:`ImportProblem` when ``root`` is not a
    directory or holds no folder.
    """
    root = Path(root)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a directory"
        raise ImportProblem(f"{root} {what}: expected DIR/PERSON/*.wav|flac|ogg|mp3")
    folders, notes = [], []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            notes.append(f"left out {entry.name}: hidden")
        elif entry.is_dir():
            folders.append(_folder(entry))
        else:
            notes.append(f"left out {entry.name}: not a folder")
    if not folders:
        raise ImportProblem(f"no person folders in {root}: expected DIR/PERSON/*.wav|flac|ogg|mp3")
    return folders, notes


def _folder(path: Path) -> Folder:
    files, ignored = [], []
    for entry in sorted(path.iterdir()):
        if entry.is_file() and entry.suffix.lower() in AUDIO_SUFFIXES:
            files.append(entry)
        elif not entry.name.startswith("."):
            ignored.append(entry.name)
    return Folder(path.name, path, tuple(files), tuple(ignored))


def _person_name(folder: Folder) -> str:
    """The folder's name as a person's name. Raises :class:`_Refused` (``bad_name``)."""
    name = folder.name.strip()
    if not name:
        raise _Refused("bad_name", "the folder name is blank")
    if len(name) > wire.MAX_NAME_CHARS:
        raise _Refused("bad_name",
                       f"the folder name is longer than {wire.MAX_NAME_CHARS} characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise _Refused("bad_name", "the folder name is not valid UTF-8") from None
    return name


def _read(folder: Folder) -> list[bytes]:
    """The bytes of the folder's audio files. Raises :class:`_Refused` (``no_audio``,
    ``bad_audio`` for a file that cannot be read)."""
    if not folder.files:
        extra = f" (only {', '.join(folder.ignored)})" if folder.ignored else ""
        raise _Refused("no_audio", f"the folder holds no {'/'.join(AUDIO_SUFFIXES)} files{extra}")
    blobs = []
    for path in folder.files:
        try:
            blobs.append(path.read_bytes())
        except OSError as err:
            raise _Refused("bad_audio", f"{path.name}: {err.strerror or err}") from None
    return blobs


def fingerprint(blobs: Iterable[bytes]) -> str:
    """SHA-256 (hex) of the files' bytes in order, each preceded by its 8-byte length."""
    digest = hashlib.sha256()
    for blob in blobs:
        digest.update(len(blob).to_bytes(8, "little"))
        digest.update(blob)
    return digest.hexdigest()


def _pcm(folder: Folder, blobs: Sequence[bytes], max_seconds: float) -> bytes:
    """Decode and join the files as 16 kHz s16le. Call in a thread. Raises
    :class:`_Refused` (``bad_audio`` naming the file, ``too_large`` over ``max_seconds``)."""
    parts = []
    for path, blob in zip(folder.files, blobs):
        try:
            parts.append(decode_file(blob, max_seconds=max_seconds))
        except StreamerError as err:
            raise _Refused(err.code, f"{path.name}: {err}") from None
    samples = np.concatenate(parts)
    seconds = len(samples) / MODEL_SAMPLE_RATE
    if seconds > max_seconds:
        raise _Refused("too_large", f"the files last {seconds:.0f} s together, longer than "
                                    f"the limit of {max_seconds:g} s per request")
    return float_to_s16le(samples)


# -- what is already enrolled ----------------------------------------------------------


@dataclass(frozen=True)
class Existing:
    """A person enrolled by an earlier import of a folder."""

    id: str
    digest: str
    name: str
    info: dict[str, Any]


def existing_imports(people: Iterable[dict[str, Any]]) -> dict[str, list[Existing]]:
    """``{folder: [Existing, ...]}`` from a ``people`` reply's list. Call once at start;
    people without an import fingerprint are left out."""
    out: dict[str, list[Existing]] = {}
    for p in people:
        info = p.get("info") if isinstance(p.get("info"), dict) else {}
        mark = info.get(INFO_KEY)
        if not isinstance(mark, dict) or not isinstance(mark.get("folder"), str):
            continue
        digest = mark.get("audio_sha256") if isinstance(mark.get("audio_sha256"), str) else ""
        out.setdefault(mark["folder"], []).append(
            Existing(str(p["id"]), digest, str(p.get("name", "")), info))
    return out


@dataclass(frozen=True)
class Plan:
    """What to do with one folder: ``skip``, ``changed`` (report only) or ``enroll``;
    ``delete`` lists stale people of the folder to delete after it (``--update``)."""

    action: str
    person: str | None = None
    delete: tuple[str, ...] = ()


def decide(digest: str, existing: Sequence[Existing], update: bool) -> Plan:
    """The :class:`Plan` for a folder whose audio has fingerprint ``digest``."""
    same = [e.id for e in existing if e.digest == digest]
    stale = tuple(e.id for e in existing if e.digest != digest)
    if same:
        return Plan("skip", same[0], stale if update else ())
    if stale and not update:
        return Plan("changed", stale[0])
    return Plan("enroll", None, stale)


# -- outcomes and the report -----------------------------------------------------------


@dataclass
class Outcome:
    """What happened to one folder. ``status``: ``enrolled``, ``updated`` (enrolled
    again, the old person deleted), ``skipped`` (already enrolled with this audio),
    ``changed`` (audio changed, not updated) or ``refused`` (``code``, ``message``)."""

    folder: str
    status: str
    person: str | None = None
    code: str | None = None
    message: str | None = None
    speech_s: float | None = None
    replaced: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """This outcome as a JSON map (empty fields left out)."""
        return {k: v for k, v in self.__dict__.items() if v not in (None, [])}


STATUSES = ("enrolled", "updated", "skipped", "changed", "refused")


@dataclass
class Report:
    """The whole import: outcomes in completion order, notes, timing."""

    root: str
    target: str
    total: int
    notes: list[str] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    #: The error that stopped the import early (connection lost), if any.
    error: str | None = None

    @property
    def interrupted(self) -> bool:
        """True when some folders were not done (Ctrl-C, or an error)."""
        return len(self.outcomes) < self.total

    def counts(self) -> dict[str, int]:
        """People per status (every status present, 0 when none)."""
        seen = Counter(o.status for o in self.outcomes)
        return {s: seen.get(s, 0) for s in STATUSES}

    def enrolled(self) -> int:
        """People enrolled or updated by this run."""
        c = self.counts()
        return c["enrolled"] + c["updated"]

    def per_minute(self, seconds: float | None = None) -> float:
        """:meth:`enrolled` people per minute of wall time (``seconds``, default the run's)."""
        seconds = self.seconds if seconds is None else seconds
        return 60.0 * self.enrolled() / seconds if seconds > 0 else 0.0

    def refused_by_code(self) -> dict[str, list[str]]:
        """``{code: [folder, ...]}`` of the refused people, codes sorted by name."""
        out: dict[str, list[str]] = {}
        for o in self.outcomes:
            if o.status == "refused":
                out.setdefault(o.code or "internal", []).append(o.folder)
        return {code: sorted(out[code]) for code in sorted(out)}

    def to_json(self) -> dict[str, Any]:
        """The report as written by ``--json FILE``."""
        return {
            "dir": self.root, "target": self.target, "folders": self.total,
            "seconds": round(self.seconds, 2),
            "people_per_minute": round(self.per_minute(), 1),
            "counts": self.counts(), "not_done": self.total - len(self.outcomes),
            "interrupted": self.interrupted, "error": self.error,
            "refused_by_code": self.refused_by_code(), "notes": self.notes,
            "people": [o.to_json() for o in sorted(self.outcomes, key=lambda o: o.folder)],
        }


def exit_code(report: Report) -> int:
    """0 all enrolled, skipped or changed; 1 some refused; :data:`EXIT_INTERRUPTED`."""
    if report.interrupted:
        return EXIT_INTERRUPTED
    return 1 if report.counts()["refused"] else 0


def format_summary(report: Report) -> str:
    """The summary printed at the end: counts, refusals by code, notes, the rate."""
    c = report.counts()
    lines = [f"imported {report.root} into {report.target}: {report.total} folders "
             f"in {report.seconds:.1f} s"]
    lines.append(f"  enrolled {c['enrolled']}, updated {c['updated']}, skipped {c['skipped']} "
                 f"(already enrolled with the same audio), refused {c['refused']}")
    if c["changed"]:
        changed = ", ".join(sorted(o.folder for o in report.outcomes if o.status == "changed"))
        lines.append(f"  changed since imported, not updated (run with --update): "
                     f"{c['changed']}: {changed}")
    if report.total > len(report.outcomes):
        lines.append(f"  not done (stopped early): {report.total - len(report.outcomes)}")
    lines += _refusal_lines(report)
    for o in sorted(report.outcomes, key=lambda o: o.folder):
        if o.ignored:
            lines.append(f"  note: {o.folder}: ignored {', '.join(o.ignored)} (not audio)")
    lines += [f"  note: {n}" for n in report.notes]
    lines.append(f"rate: {report.per_minute():.1f} people per minute "
                 f"({report.enrolled()} enrolled or updated in {report.seconds:.1f} s)")
    return "\n".join(lines)


def _shown(folder: str) -> str:
    """A folder name as printed: quoted when blank or padded with spaces."""
    return repr(folder) if folder != folder.strip() or not folder else folder


def _refusal_lines(report: Report) -> list[str]:
    by_code = report.refused_by_code()
    lines = []
    messages = {o.folder: o.message for o in report.outcomes if o.status == "refused"}
    for code, folders in by_code.items():
        lines.append(f"  refused, {code}: {len(folders)}")
        lines += [f"    {_shown(f)}: {messages[f]}" for f in folders]
    return lines


# -- progress --------------------------------------------------------------------------


class Progress:
    """A progress bar on ``stream``: redrawn in place on a terminal, else a plain line
    at most every ``every_s`` seconds and at the end. Call :meth:`update` after each
    outcome and :meth:`finish` once."""

    def __init__(self, report: Report, stream: TextIO | None, every_s: float = 10.0) -> None:
        self._report = report
        self._stream = stream
        self._tty = bool(stream is not None and stream.isatty())
        self._every_s = 0.1 if self._tty else every_s
        self._last = -math.inf

    def line(self) -> str:
        """The current progress as one line (no newline)."""
        r = self._report
        done, total = len(r.outcomes), r.total
        elapsed = time.monotonic() - r.started
        rate = r.per_minute(elapsed)
        eta = _duration(60 * (total - done) / rate) if rate > 0 and done < total else "-"
        refused = r.counts()["refused"]
        if self._tty:
            width = 24
            filled = width * done // max(total, 1)
            return (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} people  "
                    f"{rate:.1f}/min  {refused} refused  ETA {eta}")
        return (f"import: {done}/{total} people, {rate:.1f} people/min, "
                f"{refused} refused so far, ETA {eta}")

    def update(self, force: bool = False) -> None:
        """Show the progress when the last update is old enough (or ``force``)."""
        now = time.monotonic()
        if self._stream is None or (not force and now - self._last < self._every_s):
            return
        self._last = now
        if self._tty:
            self._stream.write("\r" + self.line() + "\x1b[K")
        else:
            self._stream.write(self.line() + "\n")
        self._stream.flush()

    def say(self, text: str) -> None:
        """Print a message on its own line (the bar is redrawn at the next update)."""
        if self._stream is not None:
            self._stream.write(("\n" if self._tty else "") + text + "\n")
            self._stream.flush()
            self._last = -math.inf

    def finish(self) -> None:
        """Show the final state and end the line."""
        self.update(force=True)
        if self._stream is not None and self._tty:
            self._stream.write("\n")
            self._stream.flush()


def _duration(seconds: float) -> str:
    """``42 s``, ``12 min`` or ``3.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# -- channels: /v1/api or the data dir ------------------------------------------------


class Channel(Protocol):
    """Sends one ``/v1/api`` request map and returns the reply map (``error`` replies
    included). Raises on a broken connection only."""

    async def request(self, message: dict[str, Any]) -> dict[str, Any]: ...


class _Remote:
    """One ``/v1/api`` connection; requests go one at a time (the server answers a
    connection's requests in order)."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._next = 0

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        self._next += 1
        await self._ws.send(wire.encode({**message, "id": self._next}, wire.Encoding.MSGPACK))
        reply, _ = wire.decode(await self._ws.recv())
        return reply


class _Local:
    """Requests answered by an :class:`~streamer.api.Api` in this process."""

    def __init__(self, api: Any) -> None:
        self._api = api

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            request = wire.parse_request({**message, "id": 1}, wire.Encoding.MSGPACK)
            return await self._api.handle(request)
        except StreamerError as err:
            return {"type": "error", "code": err.code, "message": str(err)}


class Target(Protocol):
    """Where people are enrolled: gives :class:`Channel` s (one per job)."""

    name: str

    def channel(self) -> AbstractAsyncContextManager[Channel]: ...


class RemoteTarget:
    """A server's ``/v1/api`` at ``url`` (``--url``, ``--token``)."""

    def __init__(self, url: str, token: str | None) -> None:
        from .connect import ws_url

        self.name = ws_url(url)
        self._headers = {"Authorization": f"Bearer {token}"} if token else None

    @asynccontextmanager
    async def channel(self) -> AsyncIterator[Channel]:
        """Open one connection. Raises websockets/OS errors when the server cannot be
        reached or refuses the token (:func:`~streamer.connect.one_line` explains them)."""
        from websockets.asyncio.client import connect

        async with connect(self.name + "/v1/api", additional_headers=self._headers,
                           max_size=None) as ws:
            yield _Remote(ws)


class LocalTarget:
    """The data dir, through an :class:`~streamer.api.Api` of this process. Use as an
    async context manager: entering takes the data dir and loads the model (raises
    :class:`~streamer.datadir.DataDirInUse` when a server or command owns it)."""

    def __init__(self, config: Config) -> None:
        self.name = str(config.data_dir)
        self._config = config
        self._app: Any = None
        self._api: Any = None

    async def __aenter__(self) -> LocalTarget:
        from .api import Api
        from .app import App

        app = App(self._config, owner="cli", command="import")
        app.load()
        if app.registry is None or app.worker is None:  # pragma: no cover - load() sets both
            raise RuntimeError("the app did not load")
        app.worker.start()
        self._app, self._api = app, Api(self._config, app.registry, app.worker, app.lines)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._app.worker.close(5.0)
        finally:
            self._app.close()

    @asynccontextmanager
    async def channel(self) -> AsyncIterator[Channel]:
        """A channel to this process's Api (nothing to open)."""
        yield _Local(self._api)


# -- the import ------------------------------------------------------------------------


@dataclass
class _Work:
    """A folder read and decided: its person's name, fingerprint, plan, the person it
    replaces (``--update``) and, when it is to be enrolled, its audio as s16le."""

    folder: Folder
    name: str
    digest: str
    plan: Plan
    old: Existing | None
    pcm: bytes = b""


def _outcome(folder: Folder, status: str, person: str | None = None, **fields: Any) -> Outcome:
    """An :class:`Outcome` for ``folder`` that lists its ignored files."""
    return Outcome(folder.name, status, person, ignored=list(folder.ignored), **fields)


class Importer:
    """Enrols ``folders`` through ``target`` with ``jobs`` people in flight.

    Call :meth:`run` once. ``max_audio_s`` is the longest joined audio sent (the
    server's ``server.max_request_audio_s``). :meth:`stop` (first Ctrl-C) lets the
    people in flight finish; :meth:`abort` (second) cancels them.
    """

    def __init__(self, target: Target, folders: Sequence[Folder], report: Report, *,
                 jobs: int, update: bool, max_audio_s: float,
                 progress: Progress | None = None) -> None:
        self._target = target
        self._todo: deque[Folder] = deque(folders)
        self._report = report
        self._jobs = max(1, jobs)
        self._update = update
        self._max_audio_s = max_audio_s
        self._progress = progress or Progress(report, None)
        self._existing: dict[str, list[Existing]] = {}
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._roster_lock = asyncio.Lock()
        #: The first error that broke a job (connection lost, a bug); re-raised by run().
        self.error: BaseException | None = None

    async def run(self) -> Report:
        """List the people once, then enrol every folder. Returns the report (also when
        stopped); raises the error that broke a job (after the others finished) or one
        raised while listing the people (cannot connect, refused token, data dir in use)."""
        people: list[dict[str, Any]] = []
        async with self._target.channel() as channel:
            while True:  # a page at a time: a gallery may hold millions
                reply = await channel.request({"type": "people", "offset": len(people),
                                               "limit": PEOPLE_PAGE})
                if reply.get("type") != "people":
                    raise StreamerError("the server refused to list the people: "
                                        f"{reply.get('message')}")
                people += reply["people"]
                if not reply["people"] or len(people) >= reply.get("total", len(people)):
                    break
        self._existing = existing_imports(people)
        self._progress.update(force=True)
        self._tasks = [asyncio.create_task(self._job())
                       for _ in range(min(self._jobs, len(self._todo)))]
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self.error is not None:
            raise self.error
        return self._report

    def stop(self) -> None:
        """Take no new folder; the people in flight finish. A second call aborts them."""
        if self._stopping:
            self.abort()
            return
        self._stopping = True
        self._progress.say(f"stopping: finishing the people in flight "
                           f"({len(self._todo)} not started); Ctrl-C again to abandon them")

    def abort(self) -> None:
        """Cancel the people in flight (a server still finishes what it received)."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()

    async def _job(self) -> None:
        try:
            async with self._target.channel() as channel:
                while self._todo and not self._stopping:
                    self._record(await self._one(channel, self._todo.popleft()))
        except asyncio.CancelledError:
            pass
        except Exception as err:  # kept and re-raised by run() once the others finished
            if self.error is None:
                self.error = err
            self._stopping = True

    def _record(self, outcome: Outcome) -> None:
        self._report.outcomes.append(outcome)
        self._progress.update()

    async def _one(self, channel: Channel, folder: Folder) -> Outcome:
        """Read, fingerprint, decide, decode and enrol one folder."""
        try:
            work = await self._prepare(folder)
        except _Refused as refused:
            return _outcome(folder, "refused", code=refused.code, message=str(refused))
        plan = work.plan
        if plan.action == "skip":
            await self._delete(channel, plan.delete)
            return _outcome(folder, "skipped", plan.person, replaced=list(plan.delete))
        if plan.action == "changed":
            return _outcome(folder, "changed", plan.person,
                            message="the audio changed since it was imported")
        outcome = await self._enroll(channel, work)
        if outcome.status == "refused" and plan.delete:
            outcome.message = f"{outcome.message} (kept the earlier enrolment {plan.delete[0]})"
        elif plan.delete:
            assert outcome.person is not None
            await self._move_rosters(channel, plan.delete, outcome.person)
            await self._delete(channel, plan.delete)
            outcome.status, outcome.replaced = "updated", list(plan.delete)
        return outcome

    async def _move_rosters(self, channel: Channel, old: Iterable[str], new: str) -> None:
        """Put ``new`` in the place of the ``old`` people in every room roster (before
        they are deleted, which would take them out). One move at a time in this run;
        a roster another client changes meanwhile may lose that change. Raises
        :class:`StreamerError` when the server refuses."""
        stale = set(old)
        async with self._roster_lock:
            reply = await channel.request({"type": "rooms"})
            if reply.get("type") != "rooms":
                raise StreamerError(f"could not read the room rosters: {reply.get('message')}")
            for room in reply["rooms"]:
                if not stale & set(room["people"]):
                    continue
                people = list(dict.fromkeys(new if pid in stale else pid
                                            for pid in room["people"]))
                answer = await channel.request({"type": "set_room", "room": room["room"],
                                                "people": people})
                if answer.get("type") != "room":
                    raise StreamerError(f"could not update the roster of {room['room']}: "
                                        f"{answer.get('message')}")

    async def _prepare(self, folder: Folder) -> _Work:
        """Check the name, read and fingerprint the files, decide; decode them only when
        the folder is to be enrolled. Raises :class:`_Refused`."""
        name = _person_name(folder)
        blobs = await asyncio.to_thread(_read, folder)
        digest = await asyncio.to_thread(fingerprint, blobs)
        existing = self._existing.get(folder.name, [])
        plan = decide(digest, existing, self._update)
        work = _Work(folder, name, digest, plan,
                     next((e for e in existing if e.id in plan.delete), None))
        if plan.action == "enroll":
            work.pcm = await asyncio.to_thread(_pcm, folder, blobs, self._max_audio_s)
        return work

    @staticmethod
    async def _enroll(channel: Channel, work: _Work) -> Outcome:
        """Send the ``enroll`` request; an update keeps the old person's name and info."""
        old = work.old
        info = dict(old.info) if old else {}
        info[INFO_KEY] = {"folder": work.folder.name, "audio_sha256": work.digest,
                          "files": len(work.folder.files)}
        reply = await channel.request({
            "type": "enroll", "name": old.name if old and old.name.strip() else work.name,
            "info": info, "pcm": work.pcm, "sample_rate": MODEL_SAMPLE_RATE, "format": "s16le"})
        if reply.get("type") == "error":
            return _outcome(work.folder, "refused", code=str(reply.get("code")),
                            message=str(reply.get("message")))
        person = reply["person"]
        return _outcome(work.folder, "enrolled", person["id"], speech_s=person.get("speech_s"),
                        warnings=list(reply.get("quality", {}).get("warnings", [])))

    @staticmethod
    async def _delete(channel: Channel, people: Iterable[str]) -> None:
        """Delete stale people of a folder; one already gone is fine. Raises
        :class:`StreamerError` when the server refuses otherwise."""
        for person in people:
            reply = await channel.request({"type": "delete_person", "person": person})
            if reply.get("type") == "error" and reply.get("code") != "unknown_person":
                raise StreamerError(f"could not delete the replaced person {person}: "
                                    f"{reply.get('message')}")


# -- command line ----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``import`` command's own options to its parser."""
    parser.add_argument("dir", help="DIR/PERSON/*.wav|flac|ogg|mp3: one folder per person, "
                                    "named after them")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                        help=f"people in flight at once (default {DEFAULT_JOBS})")
    parser.add_argument("--update", action="store_true",
                        help="enrol again the folders whose audio changed since they were "
                             "imported (as a new person; the old one is deleted)")
    parser.add_argument("--json", metavar="FILE", help="write the whole report to FILE")
    parser.add_argument("--quiet", action="store_true", help="no progress bar on stderr")


def run_import(config: Config, args: argparse.Namespace) -> int:
    """``streamer import``: run the import, print the summary, write ``--json``.

    Returns the exit code (:func:`exit_code`). Raises :class:`ImportProblem` (bad DIR,
    ``--jobs``), connection errors (before the import starts, or after the summary when
    the connection broke midway) and :class:`~streamer.datadir.DataDirInUse`; the CLI
    prints them in one line with exit code 2.
    """
    if args.jobs < 1:
        raise ImportProblem(f"--jobs must be at least 1, got {args.jobs}")
    folders, notes = scan(args.dir)
    target = RemoteTarget(args.url, args.token) if args.url else None
    report = Report(str(args.dir), target.name if target else str(config.data_dir),
                    len(folders), notes)
    progress = Progress(report, None if args.quiet else sys.stderr)
    try:
        asyncio.run(_run(config, target, folders, report, progress, args))
    except Exception as err:
        if not report.outcomes:
            raise
        report.error = str(err)
        _finish(report, progress, args.json)
        raise
    return _finish(report, progress, args.json)


async def _run(config: Config, target: RemoteTarget | None, folders: Sequence[Folder],
               report: Report, progress: Progress, args: argparse.Namespace) -> None:
    if target is None:
        _quiet_per_person_logs()
        async with LocalTarget(config) as local:
            await _run_on(local, config, folders, report, progress, args)
    else:
        await _run_on(target, config, folders, report, progress, args)


def _quiet_per_person_logs() -> None:
    """Offline, leave out the API's INFO line per enrolment (the report has them) unless
    ``--log-level DEBUG``: thousands of them would bury the progress bar."""
    api_logger = logging.getLogger("streamer.api")
    if not api_logger.isEnabledFor(logging.DEBUG):
        api_logger.setLevel(max(api_logger.getEffectiveLevel(), logging.WARNING))


async def _run_on(target: Target, config: Config, folders: Sequence[Folder], report: Report,
                  progress: Progress, args: argparse.Namespace) -> None:
    """Run the :class:`Importer` with Ctrl-C and SIGTERM calling its ``stop``."""
    importer = Importer(target, folders, report, jobs=args.jobs, update=args.update,
                        max_audio_s=config.server.max_request_audio_s, progress=progress)
    report.started = time.monotonic()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, importer.stop)
    try:
        await importer.run()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        report.seconds = time.monotonic() - report.started


def _finish(report: Report, progress: Progress, json_path: str | None) -> int:
    """End the progress bar, print the summary, write ``--json``; the exit code."""
    progress.finish()
    print(format_summary(report), flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps(report.to_json(), indent=1) + "\n",
                                   encoding="utf-8")
    return exit_code(report)
