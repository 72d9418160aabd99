"""Unit tests of streamer.fanout.peers (pure): stamping, state for a peer, gaps, silence."""

from __future__ import annotations

from typing import Any

from streamer.fanout.peers import LocalStreams, RemoteStreams


def ev(kind: str, stream: str = "s1", final: bool = False, **more: Any) -> dict[str, Any]:
    event = {"type": kind, "stream": stream, "segment": 0, **more}
    if kind == "speaker":
        event["final"] = final
    return event


def test_local_events_are_stamped_with_node_and_a_sequence_per_stream() -> None:
    local = LocalStreams("a", recent_events=2)
    first, second = local.stamp("r", ev("speech_start")), local.stamp("r", ev("speech_start", "s2"))
    third = local.stamp("r", ev("speaker", guess=1))
    assert (first["node"], first["seq"]) == ("a", 1)
    assert (second["seq"], third["seq"]) == (1, 2)


def test_local_state_is_recent_finals_then_open_segments() -> None:
    local = LocalStreams("a", recent_events=2)
    assert local.state("r") == []
    finals = []
    for segment in range(3):
        local.stamp("r", ev("speech_start", segment=segment))
        local.stamp("r", ev("speaker", guess="old"))
        finals.append(local.stamp("r", ev("speaker", final=True, segment=segment)))
        local.stamp("r", ev("speech_end", segment=segment))
    start = local.stamp("r", ev("speech_start", "s2"))
    local.stamp("r", ev("speaker", "s2", guess=1))
    latest = local.stamp("r", ev("speaker", "s2", guess=2))
    assert local.state("r") == finals[-2:] + [start, latest]  # only the latest guess
    local.stamp("r", ev("speech_end", "s2"))
    assert local.state("r") == finals[-2:]
    local.stamp("r", ev("speaker", "s3", guess=3))  # a guess without its start
    local.closed("r", "s3")
    assert local.state("r") == finals[-2:]
    assert local.stamp("r", ev("speaker", "s3"))["seq"] == 1  # a closed stream starts over
    assert local.live == ["s1", "s2", "s3"]
    local.closed("nowhere", "s9")
    assert LocalStreams("a", recent_events=0).stamp("r", ev("speaker", final=True))["seq"] == 1


def test_remote_events_repeats_are_dropped_and_gaps_counted() -> None:
    remote = RemoteStreams()
    assert remote.accept("b", "r", {"stream": "s", "seq": 1}, 0.0)
    assert remote.accept("b", "r", {"stream": "s", "seq": 2}, 0.1)
    assert not remote.accept("b", "r", {"stream": "s", "seq": 2}, 0.2)  # a repeat (sync)
    assert not remote.accept("b", "r", {"stream": "s", "seq": 1}, 0.2)  # older
    assert remote.gaps == 0
    assert remote.accept("b", "r", {"stream": "s", "seq": 5}, 0.3)
    assert remote.gaps == 1
    assert remote.accept("b", "r", {"stream": "t"}, 0.3)  # no seq: taken as is
    assert remote.accept("c", "r", {"stream": "s", "seq": 1}, 0.3)  # another node's stream
    remote.closed("b", "r", "s")
    assert remote.accept("b", "r", {"stream": "s", "seq": 1}, 0.4)  # a new stream, same id


def test_silent_and_departed_peers_give_back_their_streams() -> None:
    remote = RemoteStreams()
    remote.heard("a", 0.0)
    remote.accept("b", "r1", {"stream": "s1", "seq": 1}, 0.0)
    remote.accept("b", "r2", {"stream": "s2", "seq": 1}, 0.5)
    assert remote.peers == 2 and remote.alive(1.0, 0.8) == {"b"}
    assert remote.silent(1.0, 0.8) == ["a"]
    assert remote.gone("a") == []
    assert remote.gone("b") == [("r1", "s1"), ("r2", "s2")]
    assert remote.peers == 0 and remote.silent(9.0, 0.8) == []


def test_leaving_a_room_forgets_its_remote_streams() -> None:
    remote = RemoteStreams()
    remote.accept("b", "r1", {"stream": "s1", "seq": 3}, 0.0)
    remote.accept("b", "r2", {"stream": "s2", "seq": 1}, 0.0)
    assert remote.forget_room("r1") == ["s1"]
    assert remote.accept("b", "r1", {"stream": "s1", "seq": 1}, 0.1)  # followed afresh
    assert remote.gone("b") == [("r1", "s1"), ("r2", "s2")]


def test_a_heartbeat_ends_streams_whose_closed_message_was_lost() -> None:
    remote = RemoteStreams()
    remote.accept("b", "r1", {"stream": "s1", "seq": 1}, 0.0)
    remote.accept("b", "r2", {"stream": "s2", "seq": 1}, 0.0)
    assert remote.reconcile("b", {"s2"}) == [("r1", "s1")]
    assert remote.reconcile("b", {"s2"}) == []
    assert remote.reconcile("nobody", set()) == []
    assert remote.gone("b") == [("r2", "s2")]
