"""Metrics for ``/metrics``: families, histograms and the Prometheus text format (pure).

The server builds a list of :class:`Family` on every scrape from its live state
(connections, streams, worker and hub counters) and the :class:`Histogram` objects that
accumulate observations, then calls :func:`render`. Nothing here does I/O or keeps
global state, so every part is unit-tested without a server.

Output follows the Prometheus text exposition format 0.0.4
(https://prometheus.io/docs/instrumenting/exposition_formats/): per family one
``# HELP`` and one ``# TYPE`` line, then its samples; label values and help text are
escaped; histograms have cumulative ``_bucket{le="..."}`` samples ending with
``le="+Inf"``, then ``_sum`` and ``_count``.

:class:`ArrivalClock` remembers when the audio of each stream position arrived, so the
server can tell how long after the audio that ended a segment its final event was
published (the end-to-end latency).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

__all__ = [
    "EMBED_LATENCY_BUCKETS_S",
    "FINAL_LAG_BUCKETS_S",
    "ArrivalClock",
    "Family",
    "Histogram",
    "Sample",
    "render",
]

#: Buckets of one model job's latency (queue wait included), seconds. A piece of
#: 0.5-1.5 s takes tens of milliseconds on one core when the worker is idle.
EMBED_LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Buckets of a final event's lag behind the audio that ended its segment, seconds.
FINAL_LAG_BUCKETS_S: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_KINDS = ("counter", "gauge", "histogram", "untyped")


@dataclass(frozen=True)
class Sample:
    """One line: ``name{labels} value``. ``suffix`` is appended to the family name
    (``_bucket``, ``_sum``, ``_count`` for histograms, ``""`` otherwise)."""

    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    suffix: str = ""


@dataclass(frozen=True)
class Family:
    """A metric family: ``name``, ``kind`` (``counter``, ``gauge``, ``histogram``,
    ``untyped``), one line of help, and its samples.

    Raises ``ValueError`` for an invalid name, kind or label name (a programming error,
    found by the unit tests, never by a scrape).
    """

    name: str
    kind: str
    help: str
    samples: Sequence[Sample]

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        if self.kind not in _KINDS:
            raise ValueError(f"invalid metric kind {self.kind!r}")
        for sample in self.samples:
            for label in sample.labels:
                if not _LABEL.match(label) or label.startswith("__"):
                    raise ValueError(f"invalid label name {label!r} in {self.name}")

    @classmethod
    def single(cls, name: str, kind: str, help_text: str, value: float) -> Family:
        """A family of one unlabelled sample (most gauges and counters)."""
        return cls(name, kind, help_text, [Sample(value)])

    @classmethod
    def labelled(cls, name: str, kind: str, help_text: str, label: str,
                 values: Mapping[str, float]) -> Family:
        """A family with one sample per value of ``label``, in sorted label order."""
        return cls(name, kind, help_text,
                   [Sample(v, {label: k}) for k, v in sorted(values.items())])


class Histogram:
    """Counts observations into fixed buckets (upper bounds, seconds or any unit).

    Call :meth:`observe` from the event loop (or one thread); read with
    :meth:`family` when rendering. Raises ``ValueError`` for empty, unsorted or
    non-finite bucket bounds.
    """

    def __init__(self, buckets: Sequence[float]) -> None:
        bounds = tuple(float(b) for b in buckets)
        if not bounds or any(not math.isfinite(b) for b in bounds):
            raise ValueError("histogram buckets must be finite numbers, at least one")
        if any(a >= b for a, b in pairwise(bounds)):
            raise ValueError("histogram buckets must be strictly increasing")
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation. NaN is ignored (it would poison ``_sum``)."""
        if math.isnan(value):
            return
        self._counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` pairs, ending with ``(inf, count)``."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, math.inf), self._counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    def family(self, name: str, help_text: str) -> Family:
        """This histogram as a family named ``name`` (samples ``name_bucket``, ...)."""
        samples = [Sample(n, {"le": _format_value(bound)}, "_bucket")
                   for bound, n in self.cumulative()]
        samples.append(Sample(self.sum, suffix="_sum"))
        samples.append(Sample(self.count, suffix="_count"))
        return Family(name, "histogram", help_text, samples)


def render(families: Iterable[Family]) -> str:
    """The text exposition (format 0.0.4) of ``families``, in the order given.

    Raises ``ValueError`` when two families share a name.
    """
    lines: list[str] = []
    seen: set[str] = set()
    for fam in families:
        if fam.name in seen:
            raise ValueError(f"duplicate metric family {fam.name!r}")
        seen.add(fam.name)
        lines.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        for sample in fam.samples:
            labels = ""
            if sample.labels:
                labels = "{" + ",".join(f'{k}="{_escape_label(str(v))}"'
                                        for k, v in sample.labels.items()) + "}"
            lines.append(f"{fam.name}{sample.suffix}{labels} {_format_value(sample.value)}")
    return "\n".join(lines) + "\n" if lines else ""


def _format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class ArrivalClock:
    """When the audio of each stream position arrived at the server (one per stream).

    Call :meth:`record` after feeding each chunk with the stream time analysed so far
    and the arrival time, and :meth:`end` when the stream ends; call :meth:`arrived_at`
    with a segment's end (stream time) to get the arrival time of the chunk that carried
    it. Positions must not decrease (``ValueError``).

    Memory is bounded: entries more than ``horizon_s`` of stream time behind the newest
    one are forgotten, and so are entries before a position already asked for (finals
    come in stream order). For a position older than what is kept, :meth:`arrived_at`
    answers with the oldest entry kept: the lag computed from it is a lower bound,
    which still lands in the right histogram bucket when ``horizon_s`` exceeds the
    largest bucket bound.
    """

    def __init__(self, horizon_s: float) -> None:
        if not horizon_s > 0:
            raise ValueError(f"horizon_s must be > 0 seconds, got {horizon_s!r}")
        self._horizon_s = horizon_s
        self._entries: deque[tuple[float, float]] = deque()  # (position_s, arrived)
        self._ended_at: float | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, position_s: float, arrived: float) -> None:
        """Audio up to ``position_s`` (stream seconds) had arrived at ``arrived``."""
        if self._entries and position_s < self._entries[-1][0]:
            raise ValueError("stream positions must not decrease")
        if self._entries and position_s == self._entries[-1][0]:
            return  # nothing new was analysed: the earlier arrival carried it
        self._entries.append((position_s, arrived))
        limit = position_s - self._horizon_s
        while len(self._entries) > 1 and self._entries[1][0] <= limit:
            self._entries.popleft()

    def end(self, arrived: float) -> None:
        """The stream ended (``end`` message, disconnect or shutdown) at ``arrived``:
        segments closed by the end of the stream were ended by that moment."""
        if self._ended_at is None:
            self._ended_at = arrived

    def arrived_at(self, position_s: float) -> float | None:
        """Arrival time of the first chunk that reached ``position_s``; past the last
        chunk, the time of :meth:`end`; None before that."""
        entries = self._entries
        while len(entries) > 1 and entries[1][0] <= position_s:
            entries.popleft()  # the first entry still >= position_s is all we keep
        for pos, arrived in entries:
            if pos >= position_s:
                return arrived
        return self._ended_at
