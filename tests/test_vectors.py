"""The float32 vector store beside the int8 index (streamer.vector_store)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from streamer.vector_store import FREE, VectorStore

DIM = 8
FAR = np.eye(DIM, dtype=np.float32)[0] * 1000


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(5)


def test_put_get_replace_and_erase(rng: np.random.Generator) -> None:
    store = VectorStore(DIM, FAR, capacity=2)
    v = unit(rng, 4)
    store.put([10, 11, 12], v[:3])
    assert len(store) == 3 and 11 in store and 13 not in store
    np.testing.assert_array_equal(store.get([12, 10]), v[[2, 0]])
    store.put([11], v[3])  # replaced in place
    np.testing.assert_array_equal(store.get([11])[0], v[3])
    assert len(store) == 3
    store.erase([11, 99])  # an unknown key is ignored
    assert len(store) == 2 and 11 not in store
    with pytest.raises(KeyError):
        store.get([11])
    np.testing.assert_array_equal(store.keys(), np.array([10, 12], np.uint64))


def test_an_erased_row_is_overwritten_and_reused(rng: np.random.Generator) -> None:
    store = VectorStore(DIM, FAR)
    v = unit(rng, 3)
    store.put([1, 2], v[:2])
    store.erase([1])
    matrix, keys = store.matrix()
    assert v[0].tobytes() not in matrix.tobytes()
    np.testing.assert_array_equal(matrix[0], FAR)  # far from every unit vector
    assert keys[0] == FREE and keys[1] == 2
    store.put([3], v[2])  # takes the free row: no growth
    matrix, keys = store.matrix()
    assert len(matrix) == 2 and keys[0] == 3


def test_growing_zeroes_the_old_buffer(rng: np.random.Generator) -> None:
    store = VectorStore(DIM, FAR, capacity=2)
    v = unit(rng, 5)
    store.put([1, 2], v[:2])
    old = store._matrix
    store.put([3, 4, 5], v[2:])
    assert not old.any()
    np.testing.assert_array_equal(store.get([1, 2, 3, 4, 5]), v)


def test_wipe_zeroes_everything(rng: np.random.Generator) -> None:
    store = VectorStore(DIM, FAR)
    store.put([1, 2], unit(rng, 2))
    buffer = store._matrix
    store.wipe()
    assert len(store) == 0 and not buffer.any() and len(store.matrix()[0]) == 0
    store.put([7], unit(rng, 1))  # usable again
    assert 7 in store


def test_dump_and_read_round_trip_only_live_rows(rng: np.random.Generator) -> None:
    store = VectorStore(DIM, FAR)
    v = unit(rng, 4)
    store.put([5, 6, 7, 8], v)
    store.erase([6])
    data = bytearray(b"HEAD") + bytearray(store.dump_size())
    store.dump_into(data, 4)
    assert store.dump_size() == 3 * (8 + 4 * DIM)
    assert v[1].tobytes() not in bytes(data)
    file = io.BytesIO(bytes(data))
    file.seek(4)
    again = VectorStore.read(file, 3, DIM, FAR)
    np.testing.assert_array_equal(again.keys(), np.array([5, 7, 8], np.uint64))
    np.testing.assert_array_equal(again.get([8, 5, 7]), v[[3, 0, 2]])
    again.put([9], v[1])  # grows past what was read
    assert len(again) == 4


def test_read_refuses_a_short_file_or_repeated_keys(rng: np.random.Generator) -> None:
    store = VectorStore(DIM, FAR)
    store.put([1, 2], unit(rng, 2))
    data = bytearray(store.dump_size())
    store.dump_into(data, 0)
    with pytest.raises(ValueError, match="ends"):
        VectorStore.read(io.BytesIO(bytes(data[:-1])), 2, DIM, FAR)
    np.frombuffer(data, "<u8", count=2)[:] = 1  # both rows under key 1
    with pytest.raises(ValueError, match="repeat"):
        VectorStore.read(io.BytesIO(bytes(data)), 2, DIM, FAR)


def test_an_empty_store_round_trips() -> None:
    store = VectorStore(DIM, FAR)
    data = bytearray(store.dump_size())
    store.dump_into(data, 0)
    again = VectorStore.read(io.BytesIO(bytes(data)), 0, DIM, FAR)
    assert len(again) == 0 and len(again.keys()) == 0
