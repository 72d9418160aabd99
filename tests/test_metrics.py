"""streamer.metrics: families, histograms, the text format, and the arrival clock (pure).

The rendered text is checked line by line against the format 0.0.4 rules and parsed
with ``prometheus_client``'s own parser, which is strict about names, labels, escapes
and histogram samples.
"""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamer.metrics import (
    EMBED_LATENCY_BUCKETS_S,
    FINAL_LAG_BUCKETS_S,
    ArrivalClock,
    Family,
    Histogram,
    Sample,
    render,
)


def parse(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """family name -> [(sample name, labels, value)], via prometheus_client."""
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples]
            for f in text_string_to_metric_families(text)}


# -- Histogram -----------------------------------------------------------------------------


def test_histogram_counts_are_cumulative_and_end_with_inf() -> None:
    h = Histogram([0.1, 0.5, 1.0])
    for value in (0.05, 0.1, 0.3, 0.7, 2.0, 5.0):
        h.observe(value)
    assert h.cumulative() == [(0.1, 2), (0.5, 3), (1.0, 4), (math.inf, 6)]
    assert h.count == 6 and h.sum == pytest.approx(8.15)


def test_histogram_ignores_nan() -> None:
    h = Histogram([1.0])
    h.observe(float("nan"))
    assert h.count == 0 and h.sum == 0.0


@pytest.mark.parametrize("buckets", [[], [1.0, 1.0], [2.0, 1.0], [1.0, math.inf],
                                     [float("nan")]])
def test_histogram_refuses_bad_buckets(buckets: list[float]) -> None:
    with pytest.raises(ValueError):
        Histogram(buckets)


@pytest.mark.parametrize("buckets", [EMBED_LATENCY_BUCKETS_S, FINAL_LAG_BUCKETS_S])
def test_default_buckets_are_valid(buckets: tuple[float, ...]) -> None:
    assert Histogram(buckets).bounds == buckets


def test_histogram_renders_and_parses() -> None:
    h = Histogram([0.25, 1.0])
    h.observe(0.2)
    h.observe(3.0)
    text = render([h.family("x_seconds", "Latency.")])
    assert text.splitlines() == [
        "# HELP x_seconds Latency.",
        "# TYPE x_seconds histogram",
        'x_seconds_bucket{le="0.25"} 1',
        'x_seconds_bucket{le="1"} 1',
        'x_seconds_bucket{le="+Inf"} 2',
        "x_seconds_sum 3.2",
        "x_seconds_count 2",
    ]
    samples = parse(text)["x_seconds"]
    assert ("x_seconds_bucket", {"le": "+Inf"}, 2.0) in samples
    assert ("x_seconds_count", {}, 2.0) in samples
    assert ("x_seconds_sum", {}, pytest.approx(3.2)) in samples


# -- Family and render ---------------------------------------------------------------------


def test_render_gauges_counters_and_labels() -> None:
    text = render([
        Family.single("a_total", "counter", "Things done.", 3),
        Family.labelled("conns", "gauge", "Open connections.", "kind",
                        {"ingest": 2, "display": 0}),
        Family.single("ratio", "gauge", "A float.", 0.125),
        Family("u", "untyped", "Odd values.", [Sample(math.inf, {"x": "1"}),
                                               Sample(-math.inf, {"x": "2"}),
                                               Sample(math.nan, {"x": "3"}),
                                               Sample(True, {"x": "4"}),
                                               Sample(2.0, {"x": "5"}),
                                               Sample(1e20, {"x": "6"})]),
    ])
    lines = text.splitlines()
    assert text.endswith("\n")
    assert lines[:3] == ["# HELP a_total Things done.", "# TYPE a_total counter", "a_total 3"]
    assert 'conns{kind="display"} 0' in lines and 'conns{kind="ingest"} 2' in lines
    assert lines.index('conns{kind="display"} 0') < lines.index('conns{kind="ingest"} 2')
    assert "ratio 0.125" in lines
    assert [line.split()[-1] for line in lines if line.startswith("u{")] == [
        "+Inf", "-Inf", "NaN", "1", "2", "1e+20"]
    families = parse(text)
    assert families["a"] == [("a_total", {}, 3.0)]  # the parser strips _total of counters
    assert families["conns"] == [("conns", {"kind": "display"}, 0.0),
                                 ("conns", {"kind": "ingest"}, 2.0)]


def test_escapes_help_and_label_values() -> None:
    text = render([Family("m", "gauge", "back\\slash\nnewline",
                          [Sample(1, {"room": 'a "quoted"\\ room\nname'})])])
    lines = text.splitlines()
    assert lines[0] == "# HELP m back\\\\slash\\nnewline"
    assert lines[2] == 'm{room="a \\"quoted\\"\\\\ room\\nname"} 1'
    (family,) = text_string_to_metric_families(text)
    assert family.documentation == "back\\slash\nnewline"
    assert family.samples[0].labels == {"room": 'a "quoted"\\ room\nname'}


def test_render_of_nothing_is_empty() -> None:
    assert render([]) == ""


def test_duplicate_families_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        render([Family.single("a", "gauge", "x", 1), Family.single("a", "gauge", "y", 2)])


@pytest.mark.parametrize("kwargs", [
    {"name": "1abc"}, {"name": "a-b"}, {"name": ""}, {"kind": "summary?"},
    {"samples": [Sample(1, {"bad-label": "x"})]}, {"samples": [Sample(1, {"__x": "y"})]},
])
def test_invalid_families_are_refused(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"name": "ok", "kind": "gauge", "help": "h",
                                 "samples": [Sample(1)], **kwargs}
    with pytest.raises(ValueError):
        Family(**fields)  # type: ignore[arg-type]


# -- ArrivalClock --------------------------------------------------------------------------


def test_arrival_of_a_position_is_the_chunk_that_reached_it() -> None:
    clock = ArrivalClock(horizon_s=60)
    assert clock.arrived_at(0.5) is None  # nothing yet
    for i in range(1, 11):  # chunk i carries audio up to i * 0.1 s, arrives at 100 + i
        clock.record(i * 0.1, 100.0 + i)
    assert clock.arrived_at(0.25) == 103.0
    assert clock.arrived_at(0.3) == 103.0
    assert clock.arrived_at(0.95) == 110.0
    assert clock.arrived_at(1.5) is None  # beyond what arrived, the stream goes on
    clock.end(120.0)
    clock.end(130.0)  # only the first end counts
    assert clock.arrived_at(1.5) == 120.0


def test_asking_forgets_what_is_before() -> None:
    clock = ArrivalClock(horizon_s=60)
    for i in range(1, 11):
        clock.record(float(i), float(i))
    assert clock.arrived_at(5.0) == 5.0
    assert len(clock) == 6  # 5 .. 10 kept: finals come in stream order
    assert clock.arrived_at(5.0) == 5.0  # the same end again (two finals, one chunk)
    assert clock.arrived_at(2.0) == 5.0  # older than kept: the oldest kept (lower bound)


def test_memory_is_bounded_by_the_horizon() -> None:
    clock = ArrivalClock(horizon_s=3.0)
    for i in range(1, 1001):
        clock.record(i * 0.1, float(i))
    assert len(clock) <= 32
    assert clock.arrived_at(99.9) == 999.0
    # a position older than the horizon answers the oldest kept arrival: a lower bound
    assert clock.arrived_at(1.0) is not None and clock.arrived_at(1.0) <= 999.0


def test_equal_positions_keep_the_first_arrival_and_decreasing_ones_are_refused() -> None:
    clock = ArrivalClock(horizon_s=10)
    clock.record(1.0, 5.0)
    clock.record(1.0, 6.0)  # a chunk shorter than one VAD frame: nothing new analysed
    assert len(clock) == 1 and clock.arrived_at(1.0) == 5.0
    with pytest.raises(ValueError):
        clock.record(0.5, 7.0)
    with pytest.raises(ValueError):
        ArrivalClock(horizon_s=0)
