"""Bearer tokens: who may use which endpoint, and keeping tokens out of the logs.

Call :func:`authorize` once per websocket connection, before anything is read from
it; it raises :class:`~streamer.errors.Unauthorized` (no token, or one that is not
configured) or :class:`~streamer.errors.Forbidden` (a configured token without the
role). ``admin`` implies ``ingest`` and ``display`` (protocol.md, "Authentication").

:class:`RedactTokens` is a logging filter for the websockets library's logger: at
DEBUG level websockets logs the request line and headers, which carry tokens.
"""

from __future__ import annotations

import logging
import re
import secrets
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers

from .config import AuthConfig
from .errors import Forbidden, Unauthorized

__all__ = ["RedactTokens", "authorize", "token_of"]

_BEARER = re.compile(r"(?i)(bearer\s+)\S+")
_QUERY_TOKEN = re.compile(r"([?&]token=)[^&\s\"']*")
REDACTED = "<redacted>"


def token_of(headers: Headers, path: str) -> str | None:
    """The token a request carries: ``Authorization: Bearer T``, else ``?token=T``."""
    header = headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    values = parse_qs(urlsplit(path).query).get("token")
    return values[0] if values else None


def authorize(auth: AuthConfig, headers: Headers, path: str, role: str) -> None:
    """Check that the request may use an endpoint needing ``role``; no-op without tokens.

    Raises ``Unauthorized`` or ``Forbidden``. Every configured token is compared in
    constant time, so the reply time does not tell which prefix was right.
    """
    if not auth.enabled:
        return
    token = token_of(headers, path)
    roles: tuple[str, ...] | None = None
    for entry in auth.tokens:
        if token is not None and secrets.compare_digest(entry.token.encode(), token.encode()):
            roles = entry.roles
    if roles is None:
        raise Unauthorized("a valid token is required")
    if role not in roles and "admin" not in roles:
        raise Forbidden(f"this token does not have the {role} role")


class RedactTokens(logging.Filter):
    """Rewrites a record's message so that no configured token, bearer value or
    ``token=`` query value appears in it. Attach to the logger given to ``serve``."""

    def __init__(self) -> None:
        super().__init__()
        self._tokens: list[str] = []

    def add(self, auth: AuthConfig) -> None:
        """Also redact the tokens of ``auth``."""
        # Longest first, so that a token containing another is replaced whole.
        tokens = set(self._tokens) | {t.token for t in auth.tokens}
        self._tokens = sorted(tokens, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record; replaces its message when it held a token."""
        message = record.getMessage()
        redacted = _QUERY_TOKEN.sub(rf"\g<1>{REDACTED}", _BEARER.sub(rf"\g<1>{REDACTED}", message))
        for token in self._tokens:
            redacted = redacted.replace(token, REDACTED)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
