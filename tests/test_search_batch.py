"""Registry.search_many (the live batch of many streams' decisions) on a real SQLite
registry and a real USearch index: the same answers as one search per query, on the
exact path and on the HNSW path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamer.registry import SqliteRegistry
from streamer.registry import replica as replica_module

DIM = 32


@pytest.fixture
def reg(tmp_path: Path):
    r = SqliteRegistry(tmp_path / "data", "campplus-test", DIM)
    r.open()
    yield r
    r.close()


def units(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("exact_up_to", [replica_module.EXACT_SEARCH_MAX_VECTORS, 10])
def test_search_many_answers_as_search_does(reg: SqliteRegistry, monkeypatch: pytest.MonkeyPatch,
                                            exact_up_to: int) -> None:
    monkeypatch.setattr(replica_module, "EXACT_SEARCH_MAX_VECTORS", exact_up_to)
    rng = np.random.default_rng(7)
    for i, v in enumerate(units(rng, 60)):
        reg.add_person(f"P{i}", None, v, 5.0)
    queries = units(rng, 9) * 3.0  # any length: each is made unit first
    for k in (1, 5):
        many = reg.search_many(queries, k)
        assert many == [reg.search(q, k) for q in queries]
        assert all(len(found) == k for found in many)
    assert reg.search_many(queries[:1], 3) == [reg.search(queries[0], 3)]  # one row
    assert reg.search_many(np.zeros((0, DIM), np.float32), 3) == []


def test_search_many_with_nobody_enrolled_and_bad_input(reg: SqliteRegistry) -> None:
    rng = np.random.default_rng(8)
    assert reg.search_many(units(rng, 2), 3) == [[], []]
    with pytest.raises(ValueError, match="one per row"):
        reg.search_many(units(rng, 1)[0], 3)
    with pytest.raises(ValueError, match="shape"):
        reg.search_many(np.ones((2, DIM + 1), np.float32), 3)
    with pytest.raises(ValueError, match="finite and non-zero"):
        reg.search_many(np.zeros((1, DIM), np.float32), 3)
    with pytest.raises(ValueError, match="k must be"):
        reg.search_many(units(rng, 1), 0)
