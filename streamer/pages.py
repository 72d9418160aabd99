"""The web pages the server serves over plain HTTP GET (files in ``streamer/web/``).

No build step and no CDN: every page is a static HTML file with its script and style
beside it, and talks to the websocket endpoints of the same host. Routes:

* ``/`` - start page (links to the rooms and to the people page);
* ``/room/NAME`` - the room display for room NAME;
* ``/people`` - enrol, identify, verify, rename and delete people;
* ``/mic/NAME`` - use this browser's microphone as a microphone of room NAME;
* ``/static/FILE`` - scripts, styles and the audio worklet.

Call :func:`resolve` from the server's HTTP hook; it returns ``None`` for other paths.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["WEB_DIR", "resolve"]

WEB_DIR = Path(__file__).resolve().parent / "web"

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
_STATIC_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_PAGES = {
    "/": "index.html",
    "/index.html": "index.html",
    "/people": "people.html",
    "/enroll": "people.html",
    "/favicon.ico": "favicon.svg",  # browsers ask for it on every page
}


def _page_file(path: str) -> str | None:
    if path in _PAGES:
        return _PAGES[path]
    if path == "/room" or path.startswith("/room/"):
        return "room.html"
    if path == "/mic" or path.startswith("/mic/"):
        return "mic.html"
    if path.startswith("/static/"):
        name = path[len("/static/"):]
        if _STATIC_NAME.match(name) and ".." not in name:
            return name
    return None


def resolve(path: str) -> tuple[bytes, str] | None:
    """Return ``(body, content_type)`` for a page or static file, or None if not ours.

    ``path`` is the URL path without the query. Files are read on each request (they
    are small), so a page edited on disk is served at once.
    """
    name = _page_file(path)
    if name is None:
        return None
    file = WEB_DIR / name
    content_type = _CONTENT_TYPES.get(file.suffix)
    if content_type is None or not file.is_file():
        return None
    return file.read_bytes(), content_type
