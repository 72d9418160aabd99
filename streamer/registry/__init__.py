"""Enrolled people and their voiceprints: one interface, two databases.

:class:`Registry` (:mod:`.base`) is what the server uses; :func:`create_registry`
picks the implementation from the config at start-up: :class:`SqliteRegistry`
(:mod:`.sqlite`, the embedded default) without ``registry.url``, the PostgreSQL one
(:mod:`.postgres`, several servers as one) with it. Each keeps its search index in a
:class:`~.replica.Replica`.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from .base import Person, Registry
from .replica import EXACT_SEARCH_MAX_VECTORS, Candidate
from .sqlite import SqliteRegistry

__all__ = ["EXACT_SEARCH_MAX_VECTORS", "Candidate", "Person", "Registry", "SqliteRegistry",
           "create_registry"]


def create_registry(config: Config, data_dir: Path, model_id: str, dim: int) -> Registry:
    """The registry the config asks for (not yet opened). ``data_dir`` holds the SQLite
    database, or with ``registry.url`` only this server's index cache."""
    keep_audio = config.enroll.keep_audio
    if config.registry.url:
        from .postgres import PostgresRegistry  # psycopg is only needed in this mode

        return PostgresRegistry(config.registry.url, data_dir, model_id, dim,
                                keep_audio=keep_audio, poll_s=config.registry.poll_s,
                                timeout_s=config.registry.timeout_s)
    return SqliteRegistry(data_dir, model_id, dim, keep_audio=keep_audio)
