"""streamer.limits: connection counting and the ingest allowance, fed plain numbers."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.config import ServerConfig, config_from_mapping
from streamer.errors import CLOSE_TRY_AGAIN, ConfigError, Overloaded
from streamer.limits import ConnectionLimits, IngestAllowance

# -- ConnectionLimits ----------------------------------------------------------------------


def test_total_limit_refuses_then_admits_after_a_release() -> None:
    limits = ConnectionLimits(max_total=2, max_per_room=None)
    a, b = limits.admit(), limits.admit()
    assert limits.total == 2
    with pytest.raises(Overloaded) as info:
        limits.admit()
    err = info.value
    assert err.code == "overloaded" and err.close_code == CLOSE_TRY_AGAIN
    assert "server.max_connections" in str(err) and "2 open connections" in str(err)
    assert limits.total == 2 and limits.refused == 1
    a.release()
    assert limits.total == 1
    c = limits.admit()
    assert limits.total == 2
    b.release()
    c.release()
    assert limits.total == 0 and limits.rooms == {}


def test_room_limit_counts_each_room_separately() -> None:
    limits = ConnectionLimits(max_total=None, max_per_room=2)
    conns = [limits.admit() for _ in range(4)]
    conns[0].enter_room("board")
    conns[1].enter_room("board")
    with pytest.raises(Overloaded) as info:
        conns[2].enter_room("board")
    assert "'board'" in str(info.value) and "server.max_connections_per_room" in str(info.value)
    assert conns[2].room is None
    conns[2].enter_room("lobby")  # another room is not full
    assert limits.rooms == {"board": 2, "lobby": 1}
    assert limits.in_room("board") == 2 and limits.in_room("nowhere") == 0
    assert limits.refused == 1
    conns[0].release()
    conns[3].enter_room("board")  # the freed place is taken
    assert limits.in_room("board") == 2
    for conn in conns:
        conn.release()
    assert limits.total == 0 and limits.rooms == {}


def test_a_refused_room_keeps_the_total_place_until_released() -> None:
    limits = ConnectionLimits(max_total=3, max_per_room=1)
    first = limits.admit()
    first.enter_room("r")
    second = limits.admit()
    with pytest.raises(Overloaded):
        second.enter_room("r")
    assert limits.total == 2 and limits.rooms == {"r": 1}
    second.release()
    assert limits.total == 1 and limits.rooms == {"r": 1}


def test_release_is_idempotent_and_misuse_is_a_runtime_error() -> None:
    limits = ConnectionLimits(max_total=None, max_per_room=None)
    conn = limits.admit()
    conn.enter_room("r")
    with pytest.raises(RuntimeError):
        conn.enter_room("other")
    conn.release()
    conn.release()
    assert limits.total == 0 and limits.rooms == {}
    with pytest.raises(RuntimeError):
        conn.enter_room("r")
    assert limits.rooms == {}


def test_no_limits_admit_everyone() -> None:
    limits = ConnectionLimits(max_total=None, max_per_room=None)
    conns = [limits.admit() for _ in range(1000)]
    for conn in conns:
        conn.enter_room("one")
    assert limits.total == 1000 and limits.in_room("one") == 1000 and limits.refused == 0


def test_random_open_close_sequences_keep_counts_exact() -> None:
    rng = random.Random(6)
    limits = ConnectionLimits(max_total=5, max_per_room=2)
    held = []
    for _ in range(2000):
        if held and rng.random() < 0.45:
            held.pop(rng.randrange(len(held))).release()
            continue
        try:
            conn = limits.admit()
        except Overloaded:
            assert limits.total == 5
            continue
        try:
            conn.enter_room(rng.choice("abc"))
        except Overloaded:
            conn.release()
            continue
        held.append(conn)
        assert limits.total == len(held) <= 5
        counts: dict[str, int] = {}
        for h in held:
            assert h.room is not None
            counts[h.room] = counts.get(h.room, 0) + 1
        assert limits.rooms == counts and max(counts.values()) <= 2
    for conn in held:
        conn.release()
    assert limits.total == 0 and limits.rooms == {}


# -- IngestAllowance -----------------------------------------------------------------------


def test_within_the_burst_there_is_no_delay() -> None:
    allowance = IngestAllowance(speed=10.0, burst_s=60.0, now=100.0)
    for _ in range(60):
        assert allowance.consume(1.0, now=100.0) == 0.0
    assert allowance.throttled_s == 0.0


def test_beyond_the_burst_the_delay_restores_the_allowance() -> None:
    allowance = IngestAllowance(speed=4.0, burst_s=2.0, now=0.0)
    assert allowance.consume(1.5, now=0.0) == 0.0
    delay = allowance.consume(1.5, now=0.0)  # 1 s of audio over: 1 / 4 s
    assert delay == pytest.approx(0.25)
    # the server waits exactly that long: the next message starts from zero credit
    assert allowance.consume(0.4, now=0.25) == pytest.approx(0.1)
    assert allowance.throttled_s == pytest.approx(0.35)


def test_real_time_streams_are_never_delayed() -> None:
    allowance = IngestAllowance(speed=1.5, burst_s=1.0, now=0.0)
    t = 0.0
    for _ in range(1000):
        t += 0.02
        assert allowance.consume(0.02, now=t) == 0.0


def test_idle_time_refills_only_up_to_the_burst() -> None:
    allowance = IngestAllowance(speed=10.0, burst_s=3.0, now=0.0)
    assert allowance.consume(3.0, now=0.0) == 0.0
    # an hour idle does not bank an hour of credit: only burst_s
    assert allowance.consume(3.0, now=3600.0) == 0.0
    assert allowance.consume(1.0, now=3600.0) == pytest.approx(0.1)


def test_a_clock_going_backwards_refills_nothing() -> None:
    allowance = IngestAllowance(speed=2.0, burst_s=1.0, now=10.0)
    assert allowance.consume(1.0, now=10.0) == 0.0
    assert allowance.consume(1.0, now=5.0) == pytest.approx(0.5)


def test_speed_none_disables_throttling() -> None:
    allowance = IngestAllowance(speed=None, burst_s=1.0, now=0.0)
    assert all(allowance.consume(100.0, now=0.0) == 0.0 for _ in range(10))
    assert allowance.throttled_s == 0.0


@given(speed=st.floats(0.5, 50), burst_s=st.floats(0.1, 100),
       chunks=st.lists(st.tuples(st.floats(0, 5), st.floats(0, 2)), min_size=1, max_size=60))
def test_waiting_the_delays_bounds_the_rate(speed: float, burst_s: float,
                                            chunks: list[tuple[float, float]]) -> None:
    """Whatever the client does, a server that waits each delay reads N seconds of audio
    no sooner than (N - burst_s) / speed after the start."""
    allowance = IngestAllowance(speed=speed, burst_s=burst_s, now=0.0)
    now = 0.0
    audio = 0.0
    for audio_s, client_pause in chunks:
        now += client_pause
        audio += audio_s
        delay = allowance.consume(audio_s, now=now)
        assert delay >= 0.0
        now += delay  # the server waits before reading the next message
        assert now >= (audio - burst_s) / speed - 1e-6
    assert allowance.throttled_s <= now + 1e-9


# -- the configuration of the limits -------------------------------------------------------


def test_limit_config_defaults_and_disabling() -> None:
    cfg = ServerConfig()
    assert (cfg.max_connections, cfg.max_connections_per_room) == (512, 64)
    assert (cfg.max_ingest_speed, cfg.ingest_burst_s, cfg.idle_timeout_s) == (10.0, 60.0, 120.0)
    off = ServerConfig(max_connections=None, max_connections_per_room=None,
                       max_ingest_speed=None, idle_timeout_s=None)
    assert off.max_connections is None and off.idle_timeout_s is None


@pytest.mark.parametrize("field,value,match", [
    ("max_connections", 0, "server.max_connections must be a number > 0 connections"),
    ("max_connections", 2.5, "server.max_connections must be an integer"),
    ("max_connections_per_room", -1, "max_connections_per_room must be a number > 0"),
    ("max_connections_per_room", True, "max_connections_per_room must be an integer"),
    ("max_ingest_speed", 0, r"server.max_ingest_speed must be a number > 0 x real time"),
    ("ingest_burst_s", 0, "server.ingest_burst_s must be a number > 0 seconds"),
    ("ingest_burst_s", None, "server.ingest_burst_s must be a number > 0 seconds"),
    ("idle_timeout_s", -5, "server.idle_timeout_s must be a number > 0 seconds"),
])
def test_limit_config_is_validated(field: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ServerConfig(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        config_from_mapping({"server": {field: value}})
