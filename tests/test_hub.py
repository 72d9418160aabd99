"""streamer.hub: per-room fan-out, snapshots, room states and the slow-display policy.

Since the hub also queues ``room_state`` messages (the room's speakers merged over its
microphones, :mod:`streamer.room`), tests of the plain event flow filter them out with
:func:`events_only` / :func:`next_event`; the room-state tests assert them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streamer.hub import Hub, Subscriber


def speaker(stream: str = "s1", segment: int = 1, final: bool = False, person: str = "p_a",
            end: float = 2.0) -> dict[str, Any]:
    return {"type": "speaker", "room": "r", "mic": "m", "stream": stream, "segment": segment,
            "final": final, "start": 1.0, "end": end, "person": {"id": person, "name": person},
            "distance": 0.5, "candidates": [], "ts": 0.0}


def mark(kind: str, stream: str = "s1", segment: int = 1) -> dict[str, Any]:
    return {"type": kind, "room": "r", "mic": "m", "stream": stream, "segment": segment,
            "t": 1.0, "ts": 0.0}


def drain(sub: Subscriber) -> list[dict[str, Any]]:
    out = []
    while sub.pending:
        out.append(sub._queue.popleft())  # synchronous peek for assertions
    return out


def events_only(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The protocol v1 events, without the ``room_state`` extension messages."""
    return [m for m in messages if m["type"] != "room_state"]


def states(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == "room_state"]


async def next_event(sub: Subscriber) -> dict[str, Any] | None:
    """The next queued message that is not a ``room_state``."""
    while True:
        message = await sub.get()
        if message is None or message["type"] != "room_state":
            return message


async def test_publish_reaches_every_subscriber_of_the_room_only() -> None:
    hub = Hub(max_queued_events=8, recent_events=5)
    a1, a2, b = hub.subscribe("a"), hub.subscribe("a"), hub.subscribe("b")
    assert hub.subscriber_count == 3
    event = mark("speech_start")
    hub.publish("a", event)
    assert await a1.get() is event
    assert await a2.get() is event
    assert b.pending == 0
    assert hub.published == 1


async def test_get_waits_for_the_next_event() -> None:
    hub = Hub(8, 5)
    sub = hub.subscribe("r")
    task = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    assert not task.done()
    hub.publish("r", mark("speech_start"))
    assert (await asyncio.wait_for(task, 1.0))["type"] == "speech_start"


async def test_events_come_in_order() -> None:
    hub = Hub(8, 5)
    sub = hub.subscribe("r")
    events = [mark("speech_start"), speaker(), speaker(final=True), mark("speech_end")]
    for e in events:
        hub.publish("r", e)
    assert [await next_event(sub) for _ in events] == events
    assert sub.pending == 1  # the latest room state, queued after the events


def test_snapshot_of_an_unknown_room() -> None:
    assert Hub(8, 5).snapshot("nowhere") == {
        "type": "snapshot", "room": "nowhere", "speaking": [], "recent": []}


def test_snapshot_tracks_who_is_speaking() -> None:
    hub = Hub(8, 5)
    hub.publish("r", mark("speech_start", "s1"))
    assert hub.snapshot("r")["speaking"] == []
    first, newer = speaker("s1", end=2.0), speaker("s1", end=2.75)
    other = speaker("s2", person="p_b")
    hub.publish("r", first)
    hub.publish("r", other)
    hub.publish("r", newer)
    snap = hub.snapshot("r")
    assert snap["room"] == "r"
    assert snap["speaking"] == [newer, other]  # the latest per stream
    final = speaker("s1", final=True)
    hub.publish("r", final)  # a final clears the stream's current speaker ...
    assert hub.snapshot("r")["speaking"] == [other]
    assert hub.snapshot("r")["recent"] == [final]
    hub.publish("r", mark("speech_end", "s2"))  # ... and so does speech_end
    assert hub.snapshot("r")["speaking"] == []
    assert hub.snapshot("other")["speaking"] == []


def test_recent_keeps_the_last_finals_newest_last() -> None:
    hub = Hub(8, recent_events=3)
    finals = [speaker(segment=n, final=True) for n in range(1, 6)]
    for e in finals:
        hub.publish("r", e)
        hub.publish("r", speaker(segment=99))  # provisional events are not "recent"
    assert hub.snapshot("r")["recent"] == finals[-3:]


def test_recent_can_be_disabled() -> None:
    hub = Hub(8, recent_events=0)
    hub.publish("r", speaker(final=True))
    assert hub.snapshot("r")["recent"] == []


def test_full_queue_drops_the_oldest_provisional_first() -> None:
    sub = Subscriber("r", max_events=4)
    start, p1, p2, fin = mark("speech_start"), speaker(end=2.0), speaker(end=2.75), speaker(final=True)
    for e in (start, p1, p2, fin):
        sub.put(e)
    end = mark("speech_end")
    sub.put(end)  # full: p1 goes
    assert sub.dropped == 1 and not sub.overflowed
    p3 = speaker(segment=2, end=9.0)
    sub.put(p3)  # full: p2 goes
    assert sub.dropped == 2
    assert drain(sub) == [start, fin, end, p3]


def test_full_queue_of_a_hub_subscriber_keeps_finals_and_the_latest_state() -> None:
    hub = Hub(max_queued_events=4, recent_events=5)
    sub = hub.subscribe("r")
    start, p1, p2, fin = mark("speech_start"), speaker(end=2.0), speaker(end=2.75), speaker(final=True)
    end = mark("speech_end")
    for e in (start, p1, p2, fin, end):
        hub.publish("r", e)
    queued = drain(sub)
    assert events_only(queued) == [start, fin, end]  # provisionals went first
    assert queued[-1]["type"] == "room_state" and queued[-1]["speaking"] == []
    assert not sub.overflowed


async def test_overflow_with_only_finals_marks_the_subscriber() -> None:
    hub = Hub(max_queued_events=3, recent_events=5)
    sub, other = hub.subscribe("r"), hub.subscribe("r")
    for n in range(3):
        hub.publish("r", mark("speech_end", segment=n))
    hub.publish("r", speaker(final=True))
    assert sub.overflowed and other.overflowed
    assert sub.dropped == 0
    assert await sub.get() is None  # the server closes it with 1013
    hub.publish("r", mark("speech_start"))  # ignored from now on
    assert sub.pending == 3
    assert await sub.get() is None


async def test_a_waiting_get_sees_the_overflow() -> None:
    sub = Subscriber("r", max_events=1)
    sub.put(mark("speech_start"))
    assert await sub.get() is not None
    task = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    sub.put(mark("speech_end"))
    sub.put(mark("speech_end"))  # overflow before the waiting relay ran:
    assert await asyncio.wait_for(task, 1.0) is None  # it learns of the overflow
    assert await sub.get() is None


async def test_a_slow_display_does_not_slow_the_publisher_or_the_others() -> None:
    hub = Hub(max_queued_events=4, recent_events=5)
    slow, fast = hub.subscribe("r"), hub.subscribe("r")
    received = []
    for n in range(50):
        hub.publish("r", speaker(end=float(n)))
        received.append(await next_event(fast))
    assert len(received) == 50 and not fast.overflowed
    # the slow one keeps the newest guesses and one (the newest) room state
    assert slow.pending == 4 and not slow.overflowed
    queued = drain(slow)
    assert [e["end"] for e in events_only(queued)] == [47.0, 48.0, 49.0]
    assert len(states(queued)) == 1 and queued[-1]["type"] == "room_state"
    assert queued[-1]["speaking"][0]["end"] == 49.0
    assert slow.dropped == 47 and slow.replaced == 49


async def test_close_lets_get_return_none_after_draining() -> None:
    hub = Hub(8, 5)
    sub = hub.subscribe("r")
    hub.publish("r", mark("speech_start"))
    sub.close()
    assert (await sub.get())["type"] == "speech_start"  # type: ignore[index]
    assert (await sub.get())["type"] == "room_state"  # type: ignore[index]
    assert await sub.get() is None
    assert sub.closing


async def test_close_wakes_a_waiting_get() -> None:
    sub = Subscriber("r", 8)
    task = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    sub.close()
    assert await asyncio.wait_for(task, 1.0) is None


def test_unsubscribe_is_idempotent_and_forgets_empty_rooms() -> None:
    hub = Hub(8, 5)
    sub = hub.subscribe("r")
    hub.publish("r", mark("speech_start"))
    hub.unsubscribe(sub)
    hub.unsubscribe(sub)
    assert hub.subscriber_count == 0
    assert "r" in hub._rooms  # a stream is inside a segment: its room state is kept
    hub.publish("r", mark("speech_end"))
    sub = hub.subscribe("r")
    hub.unsubscribe(sub)
    assert "r" not in hub._rooms
    hub.publish("r", speaker())  # no subscribers: the state is still kept
    assert hub.snapshot("r")["speaking"]
    sub2 = hub.subscribe("r")
    hub.unsubscribe(sub2)
    assert "r" in hub._rooms  # someone is speaking there
    hub.unsubscribe(Subscriber("never-subscribed", 8))


def test_stream_closed_forgets_what_the_stream_was_saying() -> None:
    hub = Hub(8, 5)
    hub.publish("r", speaker("s1"))
    hub.publish("r", speaker("s2"))
    hub.stream_closed("r", "s1")
    assert [e["stream"] for e in hub.snapshot("r")["speaking"]] == ["s2"]
    hub.stream_closed("r", "s2")
    assert "r" not in hub._rooms  # nothing left to remember
    hub.stream_closed("r", "s2")
    hub.stream_closed("nowhere", "s1")


def test_rooms_with_recent_finals_are_kept() -> None:
    hub = Hub(8, 5)
    hub.publish("r", speaker("s1", final=True))
    hub.stream_closed("r", "s1")
    assert hub.snapshot("r")["recent"]


@pytest.mark.parametrize("kind", ["speech_start", "speech_end", "speaker"])
def test_put_never_blocks(kind: str) -> None:
    sub = Subscriber("r", 2)
    for _ in range(10):
        sub.put(speaker() if kind == "speaker" else mark(kind))
    assert sub.pending <= 2


def test_new_provisional_is_dropped_when_the_queue_holds_only_finals() -> None:
    from streamer.hub import Subscriber

    sub = Subscriber("r", 2)
    for segment in (1, 2):
        sub.put({"type": "speaker", "final": True, "segment": segment})
    sub.put({"type": "speaker", "final": False, "segment": 3})
    assert not sub.overflowed
    assert sub.dropped == 1
    assert sub.pending == 2


# -- room_state (the speakers merged over a room's microphones) ------------------------------


def test_room_state_of_an_unknown_room_is_silent() -> None:
    state = Hub(8, 5).room_state("nowhere")
    assert state["type"] == "room_state" and state["room"] == "nowhere"
    assert state["speaking"] == [] and isinstance(state["ts"], float)


def test_every_change_queues_a_room_state_after_its_event() -> None:
    hub = Hub(64, 5)
    sub = hub.subscribe("r")
    hub.publish("r", mark("speech_start"))
    queued = drain(sub)
    assert [m["type"] for m in queued] == ["speech_start", "room_state"]
    assert queued[1]["speaking"][0]["pending"] is True
    guess = speaker()
    hub.publish("r", guess)
    queued = drain(sub)
    assert queued[0] is guess and queued[1]["type"] == "room_state"
    (entry,) = queued[1]["speaking"]
    assert entry["person"] == guess["person"] and entry["mics"] == ["m"]
    assert entry["final"] is False and entry["pending"] is False
    assert hub.room_state("r")["speaking"] == queued[1]["speaking"]
    hub.publish("r", speaker(final=True))
    hub.publish("r", mark("speech_end"))
    assert [m["type"] for m in drain(sub)] == ["speaker", "speech_end", "room_state"]
    assert hub.room_state("r")["speaking"] == []
    hub.publish("r", mark("speech_end", segment=9))  # changes nothing: no room state
    assert [m["type"] for m in drain(sub)] == ["speech_end"]


def test_a_queue_holds_only_the_newest_room_state() -> None:
    hub = Hub(64, 5)
    sub = hub.subscribe("r")
    hub.publish("r", mark("speech_start"))
    for n in range(5):
        hub.publish("r", speaker(end=float(n)))
    queued = drain(sub)
    assert len(states(queued)) == 1 and queued[-1]["type"] == "room_state"
    assert queued[-1]["speaking"][0]["end"] == 4.0
    assert len(events_only(queued)) == 6 and sub.replaced == 5 and sub.dropped == 0


def test_two_mics_hearing_one_person_make_one_speaker() -> None:
    hub = Hub(64, 5)
    sub = hub.subscribe("r")
    a = speaker("s1") | {"mic": "ceiling-1", "distance": 0.6}
    b = speaker("s2") | {"mic": "ceiling-2", "distance": 0.4}
    hub.publish("r", a)
    hub.publish("r", b)
    (entry,) = hub.room_state("r")["speaking"]
    assert entry["mics"] == ["ceiling-1", "ceiling-2"] and entry["distance"] == 0.4
    assert len(hub.snapshot("r")["speaking"]) == 2  # the snapshot stays per stream (v1)
    hub.stream_closed("r", "s2")  # a mic goes away: a room state without it
    last = states(drain(sub))[-1]
    assert [e["mics"] for e in last["speaking"]] == [["ceiling-1"]]
    hub.stream_closed("r", "s1")
    assert states(drain(sub))[-1]["speaking"] == []
    hub.stream_closed("r", "s1")  # nothing to forget: no room state
    assert drain(sub) == []


# -- slow displays: overflow signal, drop counts, shutdown (issue 6) -------------------------


async def test_wait_overflowed_returns_once_only_finals_overflow() -> None:
    hub = Hub(max_queued_events=2, recent_events=0)
    sub = hub.subscribe("r")
    waiter = asyncio.create_task(sub.wait_overflowed())
    hub.publish("r", speaker(final=True, segment=1))
    hub.publish("r", speaker(final=True, segment=2))
    await asyncio.sleep(0)
    assert not waiter.done()
    hub.publish("r", speaker(final=True, segment=3))
    await asyncio.wait_for(waiter, 1.0)
    assert sub.overflowed


def test_dropped_events_count_live_and_gone_subscribers() -> None:
    hub = Hub(max_queued_events=1, recent_events=0)
    slow, other = hub.subscribe("r"), hub.subscribe("r")
    assert hub.dropped_events == 0
    hub.publish("r", speaker(end=1.0))
    hub.publish("r", speaker(end=2.0))  # each queue holds one: the older guess goes
    live = slow.dropped + other.dropped
    assert live >= 2 and hub.dropped_events == live
    hub.unsubscribe(slow)
    hub.unsubscribe(slow)  # idempotent: counted once
    assert hub.dropped_events == live
    hub.unsubscribe(other)
    assert hub.dropped_events == live


def test_room_count_follows_rooms_with_state() -> None:
    hub = Hub(max_queued_events=8, recent_events=0)
    assert hub.room_count == 0
    a, b = hub.subscribe("a"), hub.subscribe("b")
    assert hub.room_count == 2
    hub.unsubscribe(a)
    hub.unsubscribe(b)
    assert hub.room_count == 0


async def test_close_all_lets_every_relay_drain_then_stop() -> None:
    hub = Hub(max_queued_events=8, recent_events=0)
    a, b = hub.subscribe("a"), hub.subscribe("b")
    hub.publish("a", speaker(final=True))
    hub.close_all()
    got = [m for m in [await a.get(), await a.get()] if m is not None]
    assert [m["type"] for m in events_only(got)] == ["speaker"]
    assert await asyncio.wait_for(a.get(), 1.0) is None
    assert await asyncio.wait_for(b.get(), 1.0) is None
