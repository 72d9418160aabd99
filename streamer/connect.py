"""What clients and the CLI need to reach a server and to say, in one line, why they could not.

* :func:`ws_url`: the address a person typed (``http://HOST:PORT`` as ``streamer serve``
  prints it for the web pages, ``ws://``, ``wss://``, ``https://`` or a bare
  ``HOST:PORT``) as the websocket base URL. Call before connecting; raises
  ``ValueError`` with a one-line message for anything else.
* :func:`explain`: one actionable line for an exception raised while connecting to or
  talking with a server (unreachable, refused token, not a streamer server), or None when
  the exception is not a connection problem (a bug: let it show its traceback).
* :func:`one_line`: any exception of a command as the one line it prints (``--debug``
  shows the traceback instead).

No I/O here; the callers print the line and exit.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from .errors import StreamerError

__all__ = ["AUTH_CLOSE_REASONS", "explain", "one_line", "with_token_advice", "ws_url"]

_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}
#: Close reasons the server gives for a missing or wrong token (code 1008).
AUTH_CLOSE_REASONS = ("unauthorized", "forbidden")


def ws_url(url: str) -> str:
    """``url`` as a ``ws://`` or ``wss://`` base URL without a trailing slash.

    ``http`` maps to ``ws`` and ``https`` to ``wss``; a bare ``HOST:PORT`` gets ``ws://``.
    Raises ``ValueError`` for another scheme or no host.
    """
    text = url.strip()
    if "://" not in text:
        text = "ws://" + text
    parts = urlsplit(text)
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"--url {url!r}: use ws://HOST:PORT (or the http:// address "
                         "`streamer serve` prints)")
    if not parts.hostname:
        raise ValueError(f"--url {url!r} names no host: use ws://HOST:PORT")
    return f"{scheme}://{parts.netloc}{parts.path}".rstrip("/")


def explain(exc: BaseException, url: str, role: str) -> str | None:
    """One line saying what went wrong reaching ``url`` and what to do, or None.

    ``role`` is the token role the command needs (``admin``, ``ingest``, ``display``),
    named in the advice for a refused token.
    """
    from websockets import exceptions as wsx

    token_advice = f"pass --token TOKEN (a token with the {role} role)"
    if isinstance(exc, wsx.InvalidStatus):
        status = exc.response.status_code
        if status in (401, 403):
            return f"the server at {url} refused the token (HTTP {status}): {token_advice}"
        return (f"{url} answered HTTP {status}, not a websocket: is it a voiceprint "
                "streamer server, and is the address right?")
    if isinstance(exc, wsx.ConnectionClosed):
        frame = exc.rcvd
        if frame is not None and frame.code == 1008 and frame.reason in AUTH_CLOSE_REASONS:
            return f"the server at {url} said {frame.reason}: {token_advice}"
        if frame is not None:
            return f"the server at {url} closed the connection ({frame.code} {frame.reason})"
        return f"the connection to {url} was lost before the server answered"
    if isinstance(exc, wsx.InvalidURI):
        return f"{url} is not a websocket address: use ws://HOST:PORT"
    if isinstance(exc, (wsx.InvalidHandshake, wsx.InvalidMessage)):
        return f"{url} did not answer as a voiceprint streamer server ({exc})"
    if isinstance(exc, socket.gaierror):
        return f"cannot find the host of {url} ({exc.strerror or exc})"
    if isinstance(exc, TimeoutError):
        return f"the server at {url} did not answer in time"
    if isinstance(exc, ConnectionRefusedError) or (
            isinstance(exc, OSError) and "connect call failed" in str(exc).lower()):
        return f"cannot reach the server at {url} (connection refused): is `streamer serve` running there?"
    if isinstance(exc, OSError) and exc.errno is not None and not getattr(exc, "filename", None):
        return f"cannot reach the server at {url} ({exc.strerror or exc})"
    return None


def with_token_advice(message: str, role: str) -> str:
    """``message`` with what to do about it when it is a refused token (1008
    unauthorized or forbidden, HTTP 401 or 403); unchanged otherwise."""
    lowered = message.lower()
    if any(word in lowered for word in (*AUTH_CLOSE_REASONS, "http 401", "http 403")):
        return f"{message}: pass --token TOKEN (a token with the {role} role)"
    return message


def one_line(err: Exception, url: str | None, role: str) -> str:
    """``err`` as one line a person can act on: a file that cannot be opened, a
    connection problem with ``url`` (see :func:`explain`; ``role`` as there), a bad
    ``url``, the message of a :class:`~streamer.errors.StreamerError` or ``ValueError``;
    anything else (a bug) with its type and a pointer to ``--debug``."""
    if isinstance(err, OSError) and err.filename:
        return f"{err.filename}: {err.strerror or err}"
    if url:
        try:
            line = explain(err, ws_url(url), role)
        except ValueError as bad_url:
            return str(bad_url)
        if line is not None:
            return line
    if isinstance(err, (StreamerError, ValueError)):
        return str(err)
    if isinstance(err, OSError):
        return str(err.strerror or err)
    return f"{type(err).__name__}: {err} (run with --debug for the traceback)"
