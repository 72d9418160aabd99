"""Build the server's parts from a :class:`~streamer.config.Config`, load, run, shut down.

Two-phase start-up (uvicorn ``config.load()`` / ``Server.startup()``): :class:`App` is
cheap to construct; :meth:`App.load` takes the data dir's lock (:mod:`streamer.datadir`),
loads the model and opens the registry, raising :class:`~streamer.errors.ConfigError` on
any mismatch or when another server or command owns the data dir, *before* anything
listens. :meth:`App.close` lets go of the data dir.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from .config import CHANNELS, Config, packaged_model_dir
from .datadir import DataDirLock, Kind
from .embedder import Embedder
from .errors import ConfigError
from .fanout import Fanout, create_fanout
from .hub import Hub
from .line_voiceprints import LINE_CHANNELS, Lines, searched
from .pooling import Stats
from .registry import Registry, create_registry
from .segmentation_model import FILE_NAME as SEGMENTATION_FILE
from .segmentation_model import SegmentationModel
from .stream_embedder import StreamEmbedder, missing_variant_files
from .worker import Worker

__all__ = ["App", "is_loopback", "line_channels", "variant_channels"]

logger = logging.getLogger("streamer.app")


def is_loopback(host: str) -> bool:
    """True for addresses that only this machine can reach."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def line_channels(config: Config, variants: Mapping[str, object]) -> list[str]:
    """The line channels whose own voiceprints the server keeps
    (:mod:`streamer.line_voiceprints`): with ``enroll.line_voiceprints``, those of
    :data:`~streamer.line_voiceprints.LINE_CHANNELS` that a room uses (``match.channel``)
    and the server has a variant for (``variants``)."""
    if not config.enroll.line_voiceprints:
        return []
    return [c for c in LINE_CHANNELS if c in config.channels() and c in variants]


def variant_channels(config: Config, model_path: Path) -> list[str]:
    """The line variants of the model at ``model_path`` a server loads, in
    :data:`~streamer.config.CHANNELS` order: every ``match.channel`` the configuration
    uses (loading fails when one is missing) and ``telephone`` for phone-line enrolments
    (``enroll.telephone_below_db``) when the model has that variant."""
    wanted = set(config.channels())
    if (config.enroll.telephone_below_db is not None
            and not missing_variant_files(model_path, "telephone")):
        wanted.add("telephone")
    return [c for c in CHANNELS if c in wanted and c != "wideband"]


class App:
    """The shared parts of a running server: model, registry, worker, hub, counters."""

    def __init__(self, config: Config, data_dir: Path | None = None, *,
                 owner: Kind = "server", command: str | None = None) -> None:
        """``owner``/``command`` say who takes the data dir in :meth:`load`: a server
        (``"server"``, the default) or a people command run without ``--url`` (``"cli"``,
        ``command`` its name); a refused taker's message names them."""
        self.config = config
        self.data_dir = Path(data_dir) if data_dir is not None else config.data_dir
        self.embedder = Embedder(config.model_path, threads=config.model.threads)
        self.streamer = StreamEmbedder(self.embedder,
                                       precision=config.model.precision("wideband"))
        #: Line variants of the model the configuration uses (``match.channel``), by name,
        #: at their live precision (``model.int8_channels``).
        self.channels: dict[str, StreamEmbedder] = {}
        #: The float32 graphs of those variants that run int8 live: requests (identify,
        #: verify, enrolment checks, line voiceprints) embed with them.
        self.request_channels: dict[str, StreamEmbedder] = {}
        #: Line voiceprints (``enroll.line_voiceprints``), after :meth:`load`.
        self.lines: Lines | None = None
        #: The speaker-segmentation model of the enrolment check, once loaded.
        self.segmenter: SegmentationModel | None = None
        self.registry: Registry | None = None
        self.owner: Kind = owner
        self.command = command or ("serve" if owner == "server" else None)
        #: The data dir's lock, held from :meth:`load` to :meth:`close`.
        self.lock: DataDirLock | None = None
        self.worker: Worker | None = None
        self.hub = Hub(config.events.max_queued_events, config.events.recent_events)
        #: Carries this server's room events to displays (in process, or NATS).
        self.fanout: Fanout = create_fanout(config, self.hub)
        self.started = time.time()
        #: Counters for /metrics: name -> value.
        self.counters: dict[str, float] = {}

    def check_listen(self, host: str) -> None:
        """Refuse a non-loopback address without tokens unless the config allows it.

        Raises :class:`ConfigError`.
        """
        cfg = self.config
        if not cfg.auth.enabled and not is_loopback(host) and not cfg.server.allow_unauthenticated_remote:
            raise ConfigError(
                f"refusing to listen on {host} without auth tokens; configure auth.tokens "
                "or set server.allow_unauthenticated_remote: true"
            )

    def load(self) -> None:
        """Take the data dir, load the model and open the registry. Call once before serving.

        Raises :class:`ConfigError` (model, or :class:`~streamer.datadir.DataDirInUse`
        when a live server or command owns the data dir) or
        :class:`~streamer.errors.RegistryError`. On any error the data dir is let go.
        """
        if not self.config.model_path.is_file():
            raise ConfigError(
                f"embedding model {str(self.config.model_path)!r} does not exist or is not a "
                f"file ({self.config.model_path_origin}); set model.path in the config file to "
                "the .onnx file, or remove model.path to use the model shipped with the package")
        if self.lock is None or not self.lock.held:
            lock = DataDirLock(self.data_dir, self.owner, command=self.command)
            lock.acquire()
            self.lock = lock
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        self.embedder.load()
        if self.streamer.embedder is not self.embedder:  # the embedder was replaced
            self.streamer = StreamEmbedder(
                self.embedder, precision=self.config.model.precision("wideband"))
        if not self.streamer.loaded:
            self.streamer.load()
        for channel in variant_channels(self.config, self.embedder.path):
            if channel not in self.channels:
                # a line no room streams (telephone, for phone-line enrolments only) runs
                # requests alone: float32, no int8 copy loaded
                live = channel in self.config.channels()
                precision = self.config.model.precision(channel) if live else "float32"
                variant = StreamEmbedder(self.embedder, channel, precision)
                variant.load()
                self.channels[channel] = variant
                if precision != "float32":
                    whole = StreamEmbedder(self.embedder, channel)
                    whole.load()
                    self.request_channels[channel] = whole
        if self.config.enroll.telephone_below_db is not None and "telephone" not in self.channels:
            logger.info("no telephone-line variant next to %s: enrolments through a phone "
                        "line are checked with the model itself", self.embedder.path.name)
        segmenter = self._load_segmenter()
        registry = create_registry(self.config, self.data_dir, self.embedder.model_id,
                                   self.embedder.dim)
        registry.open()
        self.registry = registry
        lines = Lines(registry, lambda model_id: create_registry(
            self.config, self.data_dir, model_id, self.embedder.dim),
            line_channels(self.config, self.channels))
        lines.open()
        self.lines = lines
        self.worker = Worker(self.embedder, self.config.worker.threads,
                             self.config.worker.max_queued_jobs, streamer=self.streamer,
                             max_batch=self.config.worker.max_batch,
                             channels=dict(self.channels), segmenter=segmenter,
                             request_channels=dict(self.request_channels))
        logger.info("model %s loaded in %.2f s; %d people enrolled",
                    self.embedder.model_id, getattr(self.embedder, "load_time_s", 0.0),
                    len(registry))

    def _load_segmenter(self) -> SegmentationModel | None:
        """The speaker-segmentation model for the enrolment's second-voice check
        (``enroll.second_voice``) and live streams' change check (``segment.voice_check``),
        or ``None`` when both are off or the package has no such model (logged:
        enrolments are then checked by their pieces only, changes by distances only)."""
        if not (self.config.enroll.listens_for_second_voice
                or self.config.checks_voices_live()):
            return None
        if self.segmenter is None:
            path = packaged_model_dir() / SEGMENTATION_FILE
            if not path.is_file():
                logger.info("no %s in %s: enrolments are checked for a second voice by "
                            "their pieces only, live changes by distances only",
                            SEGMENTATION_FILE, path.parent)
                return None
            segmenter = SegmentationModel(path, threads=self.config.model.threads)
            segmenter.load()
            self.segmenter = segmenter
        return self.segmenter

    def searched(self, channel: str) -> Registry:
        """The registry live streams and requests of ``channel`` (``match.channel``)
        search after :meth:`load`: the line's own voiceprints when they are kept
        (:mod:`streamer.line_voiceprints`), else the registry. Raises
        :class:`RuntimeError` before :meth:`load`."""
        if self.registry is None:
            raise RuntimeError("searched() before load()")
        return searched(self.registry, self.lines, channel)

    def head(self, channel: str) -> Callable[[Stats], np.ndarray]:
        """The head that turns pooled statistics into an embedding for ``channel``
        (``match.channel``) after :meth:`load`. Raises ``KeyError`` for a channel the
        configuration does not use."""
        return self.streamer.head if channel == "wideband" else self.channels[channel].head

    def count(self, name: str, value: float = 1) -> None:
        """Add ``value`` to counter ``name``."""
        self.counters[name] = self.counters.get(name, 0) + value

    def listening(self, url: str) -> None:
        """Record the server's address (``ws://HOST:PORT``) in the data dir's lock file.

        Call once the server accepts connections, after :meth:`load`: a second server or
        an offline people command on this data dir is then told to use ``--url URL``.
        Raises :class:`RuntimeError` before :meth:`load`.
        """
        if self.lock is None:
            raise RuntimeError("listening() before load()")
        self.lock.set_url(url)

    def close(self) -> None:
        """Close the registry and let go of the data dir. Idempotent."""
        try:
            if self.lines is not None:
                self.lines.close()
            if self.registry is not None:
                self.registry.close()
        finally:
            if self.lock is not None:
                self.lock.release()
