"""A data dir has one owner: ``DATA/owner.lock``.

The owner (a running ``streamer serve``, or a people command run without ``--url``)
holds an exclusive :func:`fcntl.flock` on ``DATA/owner.lock`` for as long as it uses the
data dir, and writes who it is into the file as JSON::

    {"pid": 4242, "host": "meeting-pc", "kind": "server", "command": "serve",
     "started": "2025-01-31T09:12:03+00:00", "url": "ws://127.0.0.1:8765",
     "data_dir": "/srv/streamer/data"}

``url`` is ``null`` until the server listens (:meth:`DataDirLock.set_url`). Anyone else
who tries to take the lock is refused with :class:`DataDirInUse`, whose message names
the owner (pid, and for a server its URL and ``--url URL`` to use instead).

The flock, not the file, is the lock: the kernel drops it when the owner's process
ends, also on ``kill -9``, so a file left behind by a dead owner is *stale* and the next
owner takes it over (logged at INFO). A clean :meth:`DataDirLock.release` empties the
file; it is never deleted, because deleting a lock file races with a process that has
just opened it. Linux/POSIX only (``fcntl``); a data dir on a network file system
gets whatever ``flock`` means there.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError

__all__ = ["LOCK_NAME", "DataDirInUse", "DataDirLock", "Owner", "read_owner"]

logger = logging.getLogger("streamer.datadir")

#: The lock file's name inside the data dir.
LOCK_NAME = "owner.lock"

Kind = Literal["server", "cli"]

#: How long a refused taker waits for the owner's JSON to appear (the owner writes it
#: right after taking the flock) or for a releasing owner to let go.
_SETTLE_S = 2.0


@dataclass(frozen=True)
class Owner:
    """Who holds a data dir, as written in its ``owner.lock``."""

    pid: int
    host: str
    kind: str
    started: str
    url: str | None = None
    command: str | None = None

    @classmethod
    def from_json(cls, raw: bytes) -> Owner | None:
        """The owner in ``raw`` (the file's bytes), or None when it is empty or not ours."""
        try:
            data = json.loads(raw.decode("utf-8"))
            if not isinstance(data, dict):
                return None
            url = data.get("url")
            command = data.get("command")
            return cls(pid=int(data["pid"]), host=str(data["host"]), kind=str(data["kind"]),
                       started=str(data.get("started", "")),
                       url=str(url) if url else None,
                       command=str(command) if command else None)
        except (ValueError, KeyError, TypeError):
            return None

    def plausible(self) -> bool:
        """False when the owner is on this host and its pid is gone (a stale record)."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def read_owner(data_dir: Path) -> Owner | None:
    """The owner recorded in ``data_dir``'s lock file, without taking the lock.

    None when there is no lock file or it names nobody (released cleanly). The record
    may be stale (its owner died); only the flock tells, see :class:`DataDirLock`.
    """
    try:
        raw = (Path(data_dir) / LOCK_NAME).read_bytes()
    except FileNotFoundError:
        return None
    return Owner.from_json(raw)


def _reachable(url: str) -> str:
    """``url`` with a wildcard listen address replaced by one a local client can dial."""
    for wildcard in ("ws://0.0.0.0:", "ws://[::]:", "ws://:::"):
        if url.startswith(wildcard):
            return "ws://127.0.0.1:" + url[len(wildcard):]
    return url


class DataDirInUse(ConfigError):
    """Another process owns the data dir. ``str(err)`` is one line saying who and what to do.

    ``owner`` is the owner's record (None when it could not be read in time).
    """

    def __init__(self, data_dir: Path, owner: Owner | None, wanted: Kind) -> None:
        self.data_dir = Path(data_dir)
        self.owner = owner
        self.wanted = wanted
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"data dir {str(self.data_dir)!r}"
        owner = self.owner
        if owner is None:
            return (f"{where} is locked by another process ({self.data_dir / LOCK_NAME} names "
                    "no owner yet); try again in a moment")
        pid = f"pid {owner.pid}" + ("" if owner.host == socket.gethostname()
                                    else f" on {owner.host}")
        if owner.kind == "server":
            if owner.url is None:
                server = f"a streamer server that is still starting ({pid})"
                use = "--url with the address it prints ('listening on ws://...')"
            else:
                url = _reachable(owner.url)
                server = f"the streamer server at {url} ({pid})"
                use = f"--url {url}"
            if self.wanted == "server":
                return (f"{where} is already used by {server}; stop that server first "
                        "or pass another --data-dir")
            return (f"{where} belongs to {server}; ask that server instead with {use} "
                    "(a change made directly in the data dir would not reach it)")
        command = f"`streamer {owner.command}`" if owner.command else "a streamer command"
        return (f"{where} is in use by {command} ({pid}), which opens it directly; "
                "try again when it has finished")


class DataDirLock:
    """The exclusive ownership of one data dir for one :class:`Owner` (this process).

    Use::

        lock = DataDirLock(data_dir, "server", command="serve")
        lock.acquire()                 # before opening the registry
        lock.set_url(server.url)       # once the server listens (servers only)
        ...
        lock.release()                 # on shutdown; the OS releases it on a crash

    Two locks on one data dir conflict even within one process (each has its own open
    file description). Not thread-safe; one owner object per user of the data dir.
    """

    def __init__(self, data_dir: Path, kind: Kind, command: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_NAME
        self.kind: Kind = kind
        self.command = command
        self._fd: int | None = None
        self._record: dict[str, Any] = {}

    @property
    def held(self) -> bool:
        """True between a successful :meth:`acquire` and :meth:`release`."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the data dir (creating it when missing) and write this process's record.

        Call once, before anything in the data dir is opened; a no-op when already held.
        A stale lock file (its owner died without releasing) is taken over, logged at
        INFO. Raises :class:`DataDirInUse` when a live process holds the lock, and
        :class:`~streamer.errors.ConfigError` when the data dir or its lock file cannot be
        created or opened.
        """
        if self._fd is not None:
            return
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot use data dir {str(self.data_dir)!r}: "
                              f"{exc.strerror or exc} ({self.path})") from exc
        try:
            self._take(fd)
            previous = Owner.from_json(self._read(fd))
            if previous is not None:
                logger.info("data dir %s: taking over the lock of %s pid %d on %s (started "
                            "%s), which is no longer running", self.data_dir, previous.kind,
                            previous.pid, previous.host, previous.started or "?")
            self._record = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "kind": self.kind,
                "command": self.command,
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "url": None,
                "data_dir": str(self.data_dir.resolve()),
            }
            self._write(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def set_url(self, url: str) -> None:
        """Record the server's address (``ws://HOST:PORT``) once it listens.

        Call after :meth:`acquire`, when the server accepts connections; refused
        takers then name it. Raises :class:`RuntimeError` when the lock is not held.
        """
        if self._fd is None:
            raise RuntimeError("set_url() before acquire()")
        self._record["url"] = url
        try:
            self._write(self._fd)
        except OSError as exc:  # the lock still holds; only the message gets poorer
            logger.warning("cannot write the server address into %s: %s", self.path, exc)

    def release(self) -> None:
        """Empty the lock file and let go of the data dir. Idempotent; never raises."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:  # pragma: no cover - the flock is what counts
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- internals -----------------------------------------------------------------------

    def _take(self, fd: int) -> None:
        """flock ``fd``, or raise :class:`DataDirInUse` naming the live owner."""
        deadline = time.monotonic() + _SETTLE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise ConfigError(f"cannot lock data dir {str(self.data_dir)!r}: "
                                      f"{exc.strerror or exc} ({self.path})") from exc
            owner = Owner.from_json(self._read(fd))
            # The owner writes its record right after taking the flock, and empties it
            # right before letting go: an empty or dead record is worth a short wait.
            if (owner is not None and owner.plausible()) or time.monotonic() >= deadline:
                raise DataDirInUse(self.data_dir, owner, self.kind)
            time.sleep(0.05)

    @staticmethod
    def _read(fd: int) -> bytes:
        chunks = []
        offset = 0
        while True:
            chunk = os.pread(fd, 65536, offset)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            offset += len(chunk)

    def _write(self, fd: int) -> None:
        data = (json.dumps(self._record) + "\n").encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
