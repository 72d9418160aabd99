"""What a registry's replica holds of people's vectors, for erasure tests."""

from __future__ import annotations

from streamer.registry.replica import Replica


def held_bytes(replica: Replica) -> bytes:
    """Everything the replica holds of people's vectors, as its next save would write
    it: the int8 index, then the float32 vectors."""
    with replica._change_lock:
        return bytes(replica._file_bytes()[0])


def int8_bytes(replica: Replica, person_id: str) -> bytes:
    """The bytes the int8 index holds for ``person_id`` (192 values: unique enough to
    search files for)."""
    return bytes(replica._index.get(replica._keys[person_id]).tobytes())
