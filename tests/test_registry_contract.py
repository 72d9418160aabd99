"""One test suite for every registry implementation: SQLite and PostgreSQL.

Both implement :class:`streamer.registry.Registry`; what the server relies on (ids,
names, weighted centroids, exact distances, read-your-writes, erasure from searches,
restart) is checked here against each, on a real SQLite file and a real PostgreSQL
server (tests/cluster_support.py starts one).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from streamer.errors import RegistryError, UnknownPerson
from streamer.registry import Registry, SqliteRegistry
from streamer.registry.postgres import PostgresRegistry

DIM = 32
MODEL = "campplus-test"

Factory = Callable[..., Registry]


def unit(rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    shape = (DIM,) if n is None else (n, DIM)
    v = rng.standard_normal(shape)
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(params=["sqlite", "postgres"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """``make(model=MODEL, folder="a")``: a registry on this test's one database."""
    opened: list[Registry] = []
    url = request.getfixturevalue("postgres").database() if request.param == "postgres" else None

    def factory(model: str = MODEL, folder: str = "a", dim: int = DIM,
                keep_audio: bool = False) -> Registry:
        if url is None:
            reg: Registry = SqliteRegistry(tmp_path / "db", model, dim, keep_audio=keep_audio)
        else:
            reg = PostgresRegistry(url, tmp_path / folder, model, dim, keep_audio=keep_audio,
                                   poll_s=0.5)
        reg.open()
        opened.append(reg)
        return reg

    yield factory
    for reg in opened:
        reg.close()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_enrol_get_list_rename_delete(make: Factory, rng: np.random.Generator) -> None:
    reg = make()
    assert len(reg) == 0 and reg.people() == [] and reg.search(unit(rng), 3) == []
    v = unit(rng)
    alice = reg.add_person("Alice", {"team": "ops", "ñ": [1, 2]}, v, 6.5)
    assert alice.id.startswith("p_") and alice.name == "Alice" and alice.speech_s == 6.5
    assert alice.info == {"team": "ops", "ñ": [1, 2]}
    bob = reg.add_person("Bob", None, unit(rng), 4.0)
    assert [p.id for p in reg.people()] == [alice.id, bob.id] and len(reg) == 2
    assert reg.get(alice.id) == alice
    (best, *_) = reg.search(v, 2)
    assert (best.id, best.name) == (alice.id, "Alice") and best.distance < 1e-3
    renamed = reg.update_person(alice.id, name="Alice B.")
    assert renamed.name == "Alice B." and renamed.info == alice.info
    assert reg.search(v, 1)[0].name == "Alice B."  # the index knows the new name at once
    assert reg.update_person(alice.id, info={"x": 1}).info == {"x": 1}
    reg.delete_person(alice.id)
    assert [p.id for p in reg.people()] == [bob.id] and len(reg) == 1
    assert all(c.id != alice.id for c in reg.search(v, 5))
    with pytest.raises(UnknownPerson):
        reg.get(alice.id)


def test_people_in_pages_by_query(make: Factory, rng: np.random.Generator) -> None:
    """people_page answers in the database what people() + a filter + a slice would."""
    reg = make()
    names = ["Ada", "ÅSA Berg", "Bob", "åsa lind", "Cy", "Dana", "Ed", "ada twin"]
    people = [reg.add_person(name, None, unit(rng), 5.0) for name in names]
    reg.delete_person(people[6].id)  # Ed: gone from every page
    everyone = reg.people()
    assert [p.name for p in everyone] == [n for n in names if n != "Ed"]
    pages = [reg.people_page(offset, 3) for offset in (0, 3, 6, 9)]
    assert [total for _, total in pages] == [7] * 4
    assert [p for page, _ in pages for p in page] == everyone
    assert pages[-1][0] == []
    page, total = reg.people_page(0, 10, "ADA")  # any case
    assert [p.name for p in page] == ["Ada", "ada twin"] and total == 2
    page, total = reg.people_page(1, 1, "ada")
    assert [p.name for p in page] == ["ada twin"] and total == 2
    page, total = reg.people_page(0, 10, "åsa")  # beyond ASCII
    assert [p.name for p in page] == ["ÅSA Berg", "åsa lind"] and total == 2
    page, total = reg.people_page(0, 10, people[4].id)  # an id
    assert [p.id for p in page] == [people[4].id] and total == 1
    assert reg.people_page(0, 10, people[6].id) == ([], 0)  # deleted
    assert reg.people_page(0, 10, "%") == ([], 0)  # no wildcards
    assert reg.people_page(0, 5, "a") == (
        [p for p in everyone if "a" in p.name.casefold()][:5],
        sum("a" in p.name.casefold() for p in everyone))


def test_unknown_people_and_bad_arguments(make: Factory, rng: np.random.Generator) -> None:
    reg = make()
    for call in (lambda: reg.get("p_nobody"), lambda: reg.delete_person("p_nobody"),
                 lambda: reg.update_person("p_nobody", name="x"),
                 lambda: reg.add_voiceprint("p_nobody", unit(rng), 3.0),
                 lambda: reg.distance_to("p_nobody", unit(rng))):
        with pytest.raises(UnknownPerson):
            call()
    for bad in (lambda: reg.add_person("", None, unit(rng), 3.0),
                lambda: reg.add_person("A", [], unit(rng), 3.0),  # type: ignore[arg-type]
                lambda: reg.add_person("A", None, np.zeros(DIM), 3.0),
                lambda: reg.add_person("A", None, unit(rng)[:5], 3.0),
                lambda: reg.add_person("A", None, unit(rng), 0.0),
                lambda: reg.search(unit(rng), 0)):
        with pytest.raises(ValueError):
            bad()
    assert reg.people() == []  # nothing half-written


def test_search_ranks_by_exact_distance_and_distance_to_agrees(
        make: Factory, rng: np.random.Generator) -> None:
    reg = make()
    vectors = unit(rng, 12)
    ids = [reg.add_person(f"P{i}", None, v, 5.0).id for i, v in enumerate(vectors)]
    query = unit(rng)
    expected = sorted((float(np.linalg.norm(v.astype(np.float64) - query)), pid)
                      for v, pid in zip(vectors, ids))
    found = reg.search(query, 12)
    assert [c.id for c in found] == [pid for _, pid in expected]
    np.testing.assert_allclose([c.distance for c in found], [d for d, _ in expected], atol=1e-5)
    assert reg.distance_to(ids[3], query) == next(c.distance for c in found if c.id == ids[3])


def test_voiceprints_are_weighted_by_speech(make: Factory, rng: np.random.Generator) -> None:
    reg = make()
    a, b = unit(rng), unit(rng)
    person = reg.add_person("A", None, a, 2.0)
    after = reg.add_voiceprint(person.id, b, 6.0)
    assert after.speech_s == pytest.approx(8.0)
    mean = 2.0 * a.astype(np.float64) + 6.0 * b
    centroid = mean / np.linalg.norm(mean)
    assert reg.distance_to(person.id, centroid) < 1e-3


def test_a_reopened_registry_finds_everyone(make: Factory, rng: np.random.Generator) -> None:
    reg = make()
    v = unit(rng)
    kept = reg.add_person("Kept", None, v, 5.0)
    gone = reg.add_person("Gone", None, unit(rng), 5.0)
    reg.delete_person(gone.id)
    reg.close()
    again = make()
    assert [p.id for p in again.people()] == [kept.id]
    assert [c.id for c in again.search(v, 5)] == [kept.id]


def test_other_models_voiceprints_are_not_searched(make: Factory,
                                                   rng: np.random.Generator) -> None:
    first = make(model="model-a")
    v = unit(rng)
    first.add_person("Only A", None, v, 5.0)
    second = make(model="model-b", folder="b")
    assert len(second) == 0 and second.search(v, 3) == []
    (person,) = second.people()  # listed, with no speech of this model
    assert person.name == "Only A" and person.speech_s == 0.0


def test_a_deleted_person_is_never_found_after_delete_returns(
        make: Factory, rng: np.random.Generator) -> None:
    reg = make()
    victims = [reg.add_person(f"V{i}", None, v, 5.0) for i, v in enumerate(unit(rng, 6))]
    query = unit(rng)
    stop = threading.Event()
    seen_after: list[str] = []
    deleted: set[str] = set()

    def searcher() -> None:
        while not stop.is_set():
            gone = set(deleted)
            for c in reg.search(query, 6):
                if c.id in gone:
                    seen_after.append(c.id)

    thread = threading.Thread(target=searcher)
    thread.start()
    try:
        for person in victims[:4]:
            reg.delete_person(person.id)
            deleted.add(person.id)
    finally:
        stop.set()
        thread.join()
    assert seen_after == []
    assert {c.id for c in reg.search(query, 6)} == {p.id for p in victims[4:]}


def test_calls_on_a_closed_registry_raise_registry_error(make: Factory,
                                                         rng: np.random.Generator) -> None:
    reg = make()
    reg.close()
    with pytest.raises(RegistryError):
        reg.add_person("A", None, unit(rng), 3.0)
    with pytest.raises(RegistryError):
        reg.people()
    with pytest.raises(RegistryError):
        reg.check()


def test_room_rosters_are_kept_searched_and_cleaned(make: Factory,
                                                    rng: np.random.Generator) -> None:
    reg = make()
    vectors = unit(rng, 5)
    ids = [reg.add_person(f"P{i}", None, v, 5.0).id for i, v in enumerate(vectors)]
    assert reg.rooms() == {} and reg.search_roster("board", vectors[0], 3) is None
    assert reg.set_room("board", [ids[1], ids[2], ids[1]]) == (ids[1], ids[2])
    assert reg.rooms() == {"board": (ids[1], ids[2])}
    # only roster members, exact, nearest first, with the same distances as search
    found = reg.search_roster("board", vectors[0], 5)
    assert found is not None and {c.id for c in found} == {ids[1], ids[2]}
    everyone = {c.id: c.distance for c in reg.search(vectors[0], 5)}
    assert [c.distance for c in found] == sorted(everyone[c.id] for c in found)
    with pytest.raises(UnknownPerson):
        reg.set_room("board", [ids[0], "p_nobody"])
    assert reg.rooms() == {"board": (ids[1], ids[2])}  # unchanged
    for bad in (lambda: reg.set_room("", [ids[0]]),
                lambda: reg.set_room("x", "p_1"),  # type: ignore[arg-type]
                lambda: reg.set_room("x", [1])):  # type: ignore[list-item]
        with pytest.raises(ValueError):
            bad()
    assert reg.set_room("empty", []) == ()
    assert reg.search_roster("empty", vectors[0], 3) == []
    reg.delete_person(ids[1])  # a deleted person leaves every roster
    assert reg.rooms() == {"board": (ids[2],), "empty": ()}
    assert reg.set_room("empty", None) is None
    reg.close()
    again = make()
    assert again.rooms() == {"board": (ids[2],)}


def test_a_cache_left_behind_by_a_crash_is_caught_up(make: Factory,
                                                     rng: np.random.Generator) -> None:
    """The cache is saved in the background, so a crash can leave it generations behind
    the database: the next start brings it up to date (and the cache file that held a
    deleted person's vector is gone once it has opened)."""
    reg = make()
    vectors = unit(rng, 6)
    ids = [reg.add_person(f"P{i}", None, v, 5.0).id for i, v in enumerate(vectors)]
    reg.close()  # writes the cache at this generation
    index_path, meta_path = reg.replica.index_path, reg.replica.meta_path
    old_index, old_meta = index_path.read_bytes(), meta_path.read_bytes()
    reg = make()
    newcomer = unit(rng)
    new_id = reg.add_person("New", None, newcomer, 5.0).id
    reg.delete_person(ids[0])
    reg.update_person(ids[1], name="Renamed")
    reg.add_voiceprint(ids[2], unit(rng), 20.0)
    moved = reg.search(vectors[2], 1)[0].distance
    reg.close()
    index_path.write_bytes(old_index)  # as if the process died before saving since
    meta_path.write_bytes(old_meta)
    again = make()
    assert {c.id for c in again.search(newcomer, 10)} == set(ids[1:]) | {new_id}
    assert again.search(vectors[1], 1)[0].name == "Renamed"
    assert again.search(vectors[2], 1)[0].distance == pytest.approx(moved, abs=1e-5)
    assert again.search(newcomer, 1)[0].id == new_id
    secret = vectors[0].astype("<f4").tobytes()
    assert secret in old_index
    assert not any(secret in p.read_bytes() for p in index_path.parent.iterdir()
                   if p.is_file() and p.name.startswith("index-"))


def test_a_line_registry_follows_the_main_one(make: Factory, rng: np.random.Generator) -> None:
    """Line voiceprints (:mod:`streamer.line_voiceprints`): a second registry object of
    the model id MODEL+telephone on the same database, kept in step by
    :class:`~streamer.line_voiceprints.Lines` with changes made through the main one."""
    from streamer.line_voiceprints import Lines, line_model_id

    main = make()
    before = main.add_person("Early", None, unit(rng), 6.0)
    lines = Lines(main, lambda model_id: _unopened(make, model_id), ("telephone",))
    lines.open()
    line = lines.registry("telephone")
    assert line.model_id == line_model_id(MODEL, "telephone")
    # filled in at open: the wideband voiceprint stands in
    early_vector = main.replica.vector_of(before.id)
    assert early_vector is not None
    assert line.distance_to(before.id, early_vector[1]) < 1e-3
    ann = main.add_person("Ann", None, unit(rng), 7.0)
    own = unit(rng)
    lines.add(ann.id, {"telephone": own}, 7.0)
    assert line.search(own, 1)[0].id == ann.id and main.search(own, 1)[0].distance > 0.1
    main.update_person(ann.id, name="Ann B.")
    lines.renamed(ann.id, "Ann B.")
    assert line.search(own, 1)[0].name == "Ann B."
    roster = main.set_room("dial-in", [before.id])
    lines.roster_set("dial-in", roster)
    assert [c.id for c in line.search_roster("dial-in", own, 3) or []] == [before.id]
    main.delete_person(ann.id)
    lines.deleted(ann.id)
    assert ann.id not in line.replica and [c.id for c in line.search(own, 5)] == [before.id]
    # the people list stays the main model's
    assert [p.id for p in main.people()] == [before.id]
    assert main.get(before.id).speech_s == 6.0


def test_first_voiceprints_are_added_in_one_call(make: Factory,
                                                 rng: np.random.Generator) -> None:
    """``add_first_voiceprints`` (the batched fill-in of a derived index): everyone who
    exists and has no voiceprint of the registry's model gets theirs, searchable at
    once and after a reopen; people who have one, unknown ids and people of no model
    are skipped; a bad entry writes nothing."""
    main = make()
    people = [main.add_person(f"P{i}", None, unit(rng), 5.0 + i) for i in range(5)]
    line = make(model="other")
    had = unit(rng)
    line.add_voiceprint(people[0].id, had, 4.0)
    vectors = unit(rng, 5)
    entries = [(p.id, v, 5.0 + i) for i, (p, v) in enumerate(zip(people, vectors))]
    with pytest.raises(ValueError):
        line.add_first_voiceprints(entries + [("p_x", np.zeros(DIM, np.float32), 1.0)])
    assert len(line.replica) == 1
    added = line.add_first_voiceprints(entries + [("p_nobody", unit(rng), 3.0)])
    assert added == 4
    assert line.add_first_voiceprints(entries) == 0  # once
    assert line.distance_to(people[0].id, had) < 1e-3  # kept its own
    for p, v in zip(people[1:], vectors[1:]):
        assert line.search(v, 1)[0].id == p.id and line.search(v, 1)[0].distance < 1e-3
        assert main.distance_to(p.id, v) > 0.1  # the main model's voiceprints untouched
    line.close()
    again = make(model="other", folder="b")
    assert len(again.replica) == 5
    assert again.search(vectors[3], 1)[0].name == "P3"


def _unopened(make: Factory, model_id: str) -> Registry:
    """A registry of ``model_id`` on the test's database, closed again (``make`` opens
    what it makes; :meth:`Lines.open` opens it itself, and ``make`` closes it at the end)."""
    reg = make(model=model_id, folder="a")
    reg.close()
    return reg
