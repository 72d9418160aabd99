"""streamer.room: one room's "who is speaking now", merged over its microphones (pure)."""

from __future__ import annotations

from typing import Any

from streamer.room import RoomState, room_state_message

ADA = {"id": "p_ada", "name": "Ada Lovelace"}
BOB = {"id": "p_bob", "name": "Bob"}


def start(stream: str, mic: str, segment: int = 1) -> dict[str, Any]:
    return {"type": "speech_start", "room": "r", "mic": mic, "stream": stream,
            "segment": segment, "t": 1.0, "ts": 0.0}


def end(stream: str, mic: str, segment: int = 1) -> dict[str, Any]:
    return {"type": "speech_end", "room": "r", "mic": mic, "stream": stream,
            "segment": segment, "t": 3.0, "ts": 0.0}


def guess(stream: str, mic: str, person: dict[str, str] | None, distance: float,
          segment: int = 1, final: bool = False, end_s: float = 2.0) -> dict[str, Any]:
    candidates = [{"id": p["id"], "name": p["name"], "distance": d}
                  for p, d in ((ADA, distance), (BOB, distance + 0.3))]
    return {"type": "speaker", "room": "r", "mic": mic, "stream": stream, "segment": segment,
            "final": final, "start": 1.0, "end": end_s, "person": person,
            "distance": distance, "candidates": candidates, "ts": 0.0}


def feed(state: RoomState, *events: dict[str, Any]) -> list[bool]:
    return [state.update(e) for e in events]


def names(state: RoomState) -> list[str | None]:
    return [e["person"] and e["person"]["name"] for e in state.speaking()]


KEYS = {"person", "distance", "final", "pending", "candidates", "start", "end", "mics",
        "streams"}


def test_silent_room() -> None:
    state = RoomState("r")
    assert state.speaking() == [] and not state.active
    assert room_state_message(state, 12.5) == {"type": "room_state", "room": "r",
                                               "speaking": [], "ts": 12.5}


def test_one_mic_one_person() -> None:
    state = RoomState("r")
    event = guess("s1", "m1", ADA, 0.5)
    assert feed(state, start("s1", "m1"), event) == [True, True]
    (entry,) = state.speaking()
    assert set(entry) == KEYS
    assert entry["person"] == ADA and entry["distance"] == 0.5 and entry["final"] is False
    assert entry["pending"] is False and entry["mics"] == ["m1"] and entry["streams"] == ["s1"]
    assert entry["candidates"] == event["candidates"]
    assert (entry["start"], entry["end"]) == (1.0, 2.0)


def test_two_streams_same_person_make_one_entry_with_both_mics() -> None:
    state = RoomState("r")
    feed(state, start("s1", "near"), start("s2", "far"),
         guess("s1", "near", ADA, 0.45, end_s=2.0), guess("s2", "far", ADA, 0.8, end_s=2.5))
    (entry,) = state.speaking()
    assert entry["person"] == ADA
    assert entry["mics"] == ["near", "far"] and entry["streams"] == ["s1", "s2"]
    assert entry["distance"] == 0.45 and entry["end"] == 2.0  # the nearest guess wins
    # the far mic gets closer: its guess is now the one shown, still one entry
    feed(state, guess("s2", "far", ADA, 0.3, end_s=3.0))
    (entry,) = state.speaking()
    assert entry["distance"] == 0.3 and entry["end"] == 3.0
    assert sorted(entry["mics"]) == ["far", "near"]


def test_two_mics_with_the_same_name_list_the_mic_once() -> None:
    state = RoomState("r")
    feed(state, guess("s1", "ceiling", ADA, 0.5), guess("s2", "ceiling", ADA, 0.6))
    (entry,) = state.speaking()
    assert entry["mics"] == ["ceiling"] and entry["streams"] == ["s1", "s2"]


def test_two_people_at_once_are_both_shown_nearest_first() -> None:
    state = RoomState("r")
    feed(state, guess("s1", "m1", BOB, 0.7), guess("s2", "m2", ADA, 0.4))
    assert names(state) == ["Ada Lovelace", "Bob"]


def test_unknown_is_dropped_while_someone_is_named() -> None:
    state = RoomState("r")
    feed(state, start("s1", "near"), start("s2", "far"), guess("s2", "far", None, 1.2))
    (entry,) = state.speaking()
    assert entry["person"] is None and entry["mics"] == ["far"]
    feed(state, guess("s1", "near", ADA, 0.5))
    assert names(state) == ["Ada Lovelace"]
    assert state.speaking()[0]["mics"] == ["near"]
    feed(state, end("s1", "near"))  # the near mic's turn is over: the unknown is back
    assert names(state) == [None]


def test_several_unknown_entries_merge_into_one() -> None:
    state = RoomState("r")
    feed(state, guess("s1", "m1", None, 1.3), guess("s2", "m2", None, 1.1))
    (entry,) = state.speaking()
    assert entry["person"] is None and entry["distance"] == 1.1
    assert entry["mics"] == ["m1", "m2"]


def test_pending_until_the_first_guess() -> None:
    state = RoomState("r")
    feed(state, start("s1", "m1"))
    (entry,) = state.speaking()
    assert set(entry) == KEYS
    assert entry["pending"] is True and entry["person"] is None and entry["mics"] == ["m1"]
    assert entry["streams"] == ["s1"]
    feed(state, start("s2", "m2"))
    assert state.speaking()[0]["mics"] == ["m1", "m2"]  # still one pending entry
    feed(state, guess("s2", "m2", None, 1.2))
    (entry,) = state.speaking()
    assert entry["pending"] is False and entry["mics"] == ["m2"]  # a guess beats pending
    feed(state, guess("s1", "m1", ADA, 0.5))
    assert names(state) == ["Ada Lovelace"]


def test_final_is_shown_until_speech_end_clears_it() -> None:
    state = RoomState("r")
    feed(state, start("s1", "m1"), guess("s1", "m1", ADA, 0.6))
    assert feed(state, guess("s1", "m1", ADA, 0.5, final=True)) == [True]
    assert state.speaking()[0]["final"] is True
    assert feed(state, end("s1", "m1")) == [True]
    assert state.speaking() == [] and not state.active


def test_speech_end_of_another_segment_changes_nothing() -> None:
    state = RoomState("r")
    feed(state, start("s1", "m1", segment=2), guess("s1", "m1", ADA, 0.5, segment=2))
    assert feed(state, end("s1", "m1", segment=5)) == [True]  # a later segment ended: gone
    state = RoomState("r")
    feed(state, start("s1", "m1", segment=2))
    assert feed(state, end("s2", "m1", segment=2)) == [False]  # another stream
    assert state.active


def test_a_late_event_of_an_ended_segment_leaves_no_ghost() -> None:
    state = RoomState("r")
    feed(state, start("s1", "m1"), guess("s1", "m1", ADA, 0.5), end("s1", "m1"))
    assert feed(state, guess("s1", "m1", ADA, 0.5)) == [False]
    assert feed(state, start("s1", "m1")) == [False]
    assert state.speaking() == []
    # the next segment of the stream counts again
    assert feed(state, start("s1", "m1", segment=2)) == [True]
    assert state.speaking()[0]["pending"] is True


def test_a_guess_for_an_older_segment_than_the_open_one_is_ignored() -> None:
    state = RoomState("r")
    feed(state, start("s1", "m1", segment=3), guess("s1", "m1", ADA, 0.5, segment=3))
    assert feed(state, guess("s1", "m1", BOB, 0.4, segment=2)) == [False]
    assert names(state) == ["Ada Lovelace"]


def test_speaker_change_without_a_pause() -> None:
    state = RoomState("r")
    feed(state, start("s1", "m1", 1), guess("s1", "m1", ADA, 0.5, 1),
         guess("s1", "m1", ADA, 0.5, 1, final=True), end("s1", "m1", 1),
         start("s1", "m1", 2), guess("s1", "m1", BOB, 0.6, 2))
    assert names(state) == ["Bob"]


def test_a_guess_without_speech_start_still_counts() -> None:
    state = RoomState("r")
    assert feed(state, guess("s1", "m1", ADA, 0.5, segment=4)) == [True]
    assert names(state) == ["Ada Lovelace"]


def test_stream_closed_forgets_the_stream() -> None:
    state = RoomState("r")
    feed(state, start("s1", "m1"), guess("s1", "m1", ADA, 0.5),
         start("s2", "m2"), guess("s2", "m2", ADA, 0.7))
    assert state.stream_closed("s1") is True
    (entry,) = state.speaking()
    assert entry["mics"] == ["m2"] and entry["distance"] == 0.7
    assert state.stream_closed("s1") is False
    assert state.stream_closed("s2") is True
    assert state.speaking() == [] and not state.active
    # a closed stream's ended segments are forgotten with it
    feed(state, start("s3", "m1"), end("s3", "m1"))
    state.stream_closed("s3")
    assert state._ended == {}


def test_other_messages_change_nothing() -> None:
    state = RoomState("r")
    assert feed(state, {"type": "bye", "stats": {}}, {"type": "room_state"}) == [False, False]
    assert state.speaking() == []
