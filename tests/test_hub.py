"""streamer.hub: per-room fan-out, snapshots and the slow-display policy."""

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
    assert [await sub.get() for _ in events] == events


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
    hub = Hub(max_queued_events=4, recent_events=5)
    sub = hub.subscribe("r")
    start, p1, p2, fin = mark("speech_start"), speaker(end=2.0), speaker(end=2.75), speaker(final=True)
    for e in (start, p1, p2, fin):
        hub.publish("r", e)
    end = mark("speech_end")
    hub.publish("r", end)  # full: p1 goes
    assert sub.dropped == 1 and not sub.overflowed
    p3 = speaker(segment=2, end=9.0)
    hub.publish("r", p3)  # full: p2 goes
    assert sub.dropped == 2
    assert drain(sub) == [start, fin, end, p3]


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
        received.append(await fast.get())
    assert len(received) == 50 and not fast.overflowed
    assert slow.pending == 4 and slow.dropped == 46 and not slow.overflowed
    assert [e["end"] for e in drain(slow)] == [46.0, 47.0, 48.0, 49.0]


async def test_close_lets_get_return_none_after_draining() -> None:
    hub = Hub(8, 5)
    sub = hub.subscribe("r")
    hub.publish("r", mark("speech_start"))
    sub.close()
    assert (await sub.get())["type"] == "speech_start"  # type: ignore[index]
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
