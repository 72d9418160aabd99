"""Several server addresses for one client, and which one to try next when one fails.

The servers of a cluster sit behind a load balancer or at several addresses. The clients
(``mic.py``, ``display.py``, ``stream_file.py``) take them all: ``--url`` given several
times and/or as a comma-separated list. Each run keeps one :class:`Failover`:

* :func:`server_urls`: what was typed, as the list of websocket base URLs. Call once
  when parsing the command line (or when a function is given one or several
  addresses); raises ``ValueError`` with one line for a bad address or no address.
* :class:`Failover`: the address in use. Call :meth:`Failover.succeeded` when its
  server accepted the client (``ready``, ``snapshot``) and :meth:`Failover.failed`
  when a connection attempt failed or a connection was lost: it moves to the next
  address at once and says when a whole round of the list has failed since the last
  success, the only time a client backs off (or, for a one-shot client, gives up).
  With one address every failure is a whole round: the behaviour of a single ``--url``.
* :func:`lost_reason`: a few words for why a connection failed, for a "moving to" line.

No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from streamer.connect import ws_url

__all__ = ["DEFAULT_URL", "Failover", "lost_reason", "server_urls"]

DEFAULT_URL = "ws://127.0.0.1:8765"


def server_urls(values: str | Iterable[str] | None, default: str = DEFAULT_URL) -> list[str]:
    """The websocket base URLs of ``values``: one address, several, or comma-separated
    lists of them (``--url`` may be repeated), each mapped by
    :func:`streamer.connect.ws_url`, duplicates dropped, in the given order. ``None``
    gives ``[default]``. Raises ``ValueError`` for a bad address or when none is left."""
    if values is None:
        values = [default]
    elif isinstance(values, str):
        values = [values]
    urls: list[str] = []
    for value in values:
        for part in value.split(","):
            if part.strip():
                url = ws_url(part)
                if url not in urls:
                    urls.append(url)
    if not urls:
        raise ValueError("--url names no server: use ws://HOST:PORT")
    return urls


class Failover:
    """The server address in use out of several, and when to back off.

    ``failures`` counts the failed or lost connections since the last success; each one
    moves to the next address (cycling), and every ``len(urls)``-th one ends a round.
    """

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("no server address")
        self.urls = list(urls)
        self.index = 0
        self.failures = 0

    @property
    def current(self) -> str:
        """The address to connect to now."""
        return self.urls[self.index]

    @property
    def several(self) -> bool:
        """True when there is another address to move to."""
        return len(self.urls) > 1

    def succeeded(self) -> None:
        """The server at :attr:`current` accepted the client: failures start again at 0."""
        self.failures = 0

    def failed(self) -> int | None:
        """A connection to :attr:`current` failed or was lost: move to the next address.

        Returns None when the next address should be tried at once, or the back-off
        round (0, 1, 2, ...: the ``attempt`` of ``backoff_delay``) when every address has
        failed since the last success.
        """
        self.failures += 1
        self.index = (self.index + 1) % len(self.urls)
        if self.failures % len(self.urls):
            return None
        return self.failures // len(self.urls) - 1


def lost_reason(err: BaseException | None) -> str:
    """A few words for why a connection to a server failed or ended (``err`` None: it
    closed normally before the client was done), e.g. ``connection refused``,
    ``connection lost``, ``closed 1001 going away``."""
    from websockets.exceptions import ConnectionClosed

    if err is None:
        return "closed before the end"
    if isinstance(err, ConnectionClosed):
        frame = err.rcvd
        return f"closed {frame.code} {frame.reason}".strip() if frame else "connection lost"
    if isinstance(err, ConnectionRefusedError) or "connect call failed" in str(err).lower():
        return "connection refused"
    if isinstance(err, TimeoutError):
        return "timed out"
    text = str(err) or type(err).__name__
    return text if len(text) <= 80 else text[:77] + "..."
