"""Identity search: the stored index (SQLite and PostgreSQL), the search and its score,
``castbook identify``, ``POST /v1/identify`` and the "looks like Alice" warning."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from PIL import ImageDraw
from sqlalchemy import func, select

from castbook.blobs import BlobStore
from castbook.db import Database, IdentityVectorRow
from castbook.db.database import _MIGRATIONS as MIGRATIONS
from castbook.errors import CastbookError, InvalidInputError
from castbook.evaluation import ImageFeatures, Scorer, identity_search
from castbook.evaluation.appearance import DIMENSIONS
from castbook.evaluation.identity import (
    OPEN_SET_FALSE_MATCH_RATE,
    OPEN_SET_THRESHOLDS,
    IdentityIndex,
    IdentityVectors,
    _open_set,
)
from castbook.evaluation.identity_search import IdentitySearch, _alike
from castbook.evaluation.scoring import default_calibration
from castbook.library import CharacterLibrary, ImageInput
from castbook.library import identity_vectors as stored
from castbook.library.identity_vectors import clear_vectors
from tests.support.api import ApiFactory
from tests.support.cli import castbook
from tests.support.drawings import ALICE, BOB, character, png_bytes

COUNTER_MIGRATION = "0013"  # identity_revisions and its triggers
CAROL = dict(hair=(120, 40, 160), shirt=(30, 160, 60))  # like neither Alice nor Bob


def drawing(person: dict, seed: int = 0) -> bytes:
    """A drawn character seen from behind: dlib finds the drawings' faces and they all look
    alike to it (score 100), so the face would decide instead of the palette."""
    image = character(**person, seed=seed)
    ImageDraw.Draw(image).ellipse((98, 80, 158, 160), fill=person["hair"])
    return png_bytes(image)


class AppearanceFeatures:
    """A real feature source (the scorer, faces off: the drawings show none) that counts
    the images it was asked for."""

    def __init__(self) -> None:
        self.scorer = Scorer(faces=False)
        self.computed: list[str] = []
        self.batches: list[int] = []

    def key(self) -> str:
        return self.scorer.key

    def features(
        self, images: Sequence[tuple[bytes, str]]
    ) -> tuple[str, list[ImageFeatures | CastbookError]]:
        results: list[ImageFeatures | CastbookError] = []
        self.batches.append(len(images))
        for data, name in images:
            self.computed.append(name)
            try:
                results.append(self.scorer.features(data, name))
            except CastbookError as exc:
                results.append(exc)
        return self.scorer.key, results


def ask(library: CharacterLibrary, source: AppearanceFeatures, *images: bytes, top: int = 3):
    queries = [(data, f"query {n}") for n, data in enumerate(images)]
    search, features = IdentitySearch.for_queries(library, source, queries)
    return search.identify([(name, f) for (_, name), f in zip(queries, features, strict=True)], top)


def vector_rows(library: CharacterLibrary) -> int:
    with library.database.session() as session:
        return session.scalar(select(func.count()).select_from(IdentityVectorRow)) or 0


# ---- the stored index, on SQLite and PostgreSQL (the ``library`` fixture runs both) -------


def test_identify_ranks_characters_with_the_consistency_score(library: CharacterLibrary) -> None:
    source = AppearanceFeatures()
    alice = library.create(
        {"name": "Alice"},
        [ImageInput(drawing(BOB, 5), "odd one"), ImageInput(drawing(ALICE, 1), "alice")],
    )
    library.create({"name": "Bob"}, [ImageInput(drawing(BOB), "bob")])
    query = drawing(ALICE, 3)
    [answer] = ask(library, source, query)
    assert answer.known and answer.best is not None
    assert [m["name"] for m in answer.matches] == ["Alice", "Bob"]
    # The score `castbook eval --character Alice` gives: Alice's references as a set.
    scorer = source.scorer
    references = [scorer.features(library.image_bytes(image)) for image in alice.images]
    expected = scorer.score_one(references, query, "query")
    assert answer.matches[0]["score"] == pytest.approx(expected.score, abs=0.01)
    assert answer.matches[0]["reference"] == alice.images[expected.reference].sha256
    assert answer.matches[0]["basis"] == "appearance"
    # Alice's odd reference (drawn like Bob) matches a Bob drawing as well as Bob's own
    # does; Alice's references count as a set, so Bob comes first, Alice after (her odd
    # reference is her best match).
    [for_bob] = ask(library, source, drawing(BOB, 2))
    assert [m["name"] for m in for_bob.matches] == ["Bob", "Alice"]
    by_name = {m["name"]: m for m in for_bob.matches}
    assert by_name["Alice"]["score"] > OPEN_SET_THRESHOLDS["appearance"]
    assert by_name["Alice"]["score"] < by_name["Bob"]["score"]
    assert by_name["Alice"]["reference"] == alice.images[0].sha256


def test_unknown_below_the_open_set_threshold(library: CharacterLibrary) -> None:
    source = AppearanceFeatures()
    library.create({"name": "Alice"}, [ImageInput(drawing(ALICE), "alice")])
    library.create({"name": "Bob"}, [ImageInput(drawing(BOB), "bob")])
    [answer] = ask(library, source, drawing(CAROL))
    assert not answer.known and answer.best is None
    assert answer.to_json()["character"] is None
    assert len(answer.matches) == 2 and not any(m["known"] for m in answer.matches)


def test_the_index_is_stored_once_and_follows_the_library(library: CharacterLibrary) -> None:
    source = AppearanceFeatures()
    library.create(
        {"name": "Alice"}, [ImageInput(drawing(ALICE), "a1"), ImageInput(drawing(ALICE, 1), "a2")]
    )
    library.create({"name": "Bob"}, [ImageInput(drawing(BOB), "bob")])
    ask(library, source, drawing(ALICE, 3))
    assert vector_rows(library) == 3
    references_computed = len(source.computed) - 1
    assert references_computed == 3
    # Searched from stored vectors: only the query is computed again.
    ask(library, source, drawing(BOB, 3))
    assert len(source.computed) - references_computed == 2
    # Removing an image or deleting a character removes its vectors (the database cascades).
    library.update("Alice", remove_images=["2"])
    assert vector_rows(library) == 2
    library.delete("Bob")
    assert vector_rows(library) == 1
    [answer] = ask(library, source, drawing(BOB, 3))
    assert [m["name"] for m in answer.matches] == ["Alice"] and not answer.known
    # --reindex: dropped and stored again from the features the library keeps, not images.
    computed = len(source.computed)
    assert clear_vectors(library) == 1
    assert IdentitySearch(library, source, source.key()).update_index() == 1
    assert len(source.computed) == computed and vector_rows(library) == 1


class Loads:
    """Counts what a search asks of the database beyond the change counter."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reloads = self.unindexed_checks = 0
        load, unindexed = stored.load_vectors, stored.unindexed_images

        def counted_load(*args, **kwargs):
            if len(args) + len(kwargs) == 2:  # the whole index, not a lookalike check's rows
                self.reloads += 1
            return load(*args, **kwargs)

        def counted_unindexed(*args, **kwargs):
            self.unindexed_checks += 1
            return unindexed(*args, **kwargs)

        monkeypatch.setattr(stored, "load_vectors", counted_load)
        monkeypatch.setattr(stored, "unindexed_images", counted_unindexed)


def names(answer) -> list[str]:
    return [m["name"] for m in answer.matches]


def test_the_next_search_sees_every_change_and_nothing_else_reloads(
    library: CharacterLibrary, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = AppearanceFeatures()
    loads = Loads(monkeypatch)
    library.create({"name": "Alice"}, [ImageInput(drawing(ALICE), "alice")])
    library.create({"name": "Bob"}, [ImageInput(drawing(BOB), "bob")])
    [answer] = ask(library, source, drawing(ALICE, 3))
    assert names(answer) == ["Alice", "Bob"] and answer.known
    assert loads.reloads == 1
    # Unchanged: the index in memory answers; no rows are counted or looked for.
    for seed in (4, 5):
        [answer] = ask(library, source, drawing(BOB, seed))
        assert names(answer)[0] == "Bob"
    assert (loads.reloads, loads.unindexed_checks) == (1, 2)  # two rounds, the first load

    # Added: indexed and found by the very next search.
    library.create({"name": "Carol"}, [ImageInput(drawing(CAROL), "carol")])
    [answer] = ask(library, source, drawing(CAROL, 2))
    assert answer.best is not None and answer.best["name"] == "Carol"
    assert loads.reloads == 2
    # Edited: Carol's only reference replaced by a drawing like Bob.
    library.update("Carol", replace_images=[ImageInput(drawing(BOB, 9), "carol as bob")])
    [answer] = ask(library, source, drawing(CAROL, 2))
    assert not answer.known
    [answer] = ask(library, source, drawing(BOB, 2))
    assert set(names(answer)[:2]) == {"Bob", "Carol"}
    # Renamed: names are read per search, the index is not reloaded for it.
    reloads = loads.reloads
    library.update("Bob", {"name": "Robert"})
    [answer] = ask(library, source, drawing(BOB, 2))
    assert "Robert" in names(answer) and "Bob" not in names(answer)
    assert loads.reloads == reloads
    # Deleted.
    library.delete("Alice")
    [answer] = ask(library, source, drawing(ALICE, 3))
    assert "Alice" not in names(answer) and not answer.known
    assert loads.reloads == reloads + 1


def test_a_change_by_another_writer_is_seen(library: CharacterLibrary) -> None:
    """The counter is kept by the database (triggers), not by castbook's write path: another
    process's library, or any SQL at all, moves it too."""
    source = AppearanceFeatures()
    library.create({"name": "Alice"}, [ImageInput(drawing(ALICE), "alice")])
    [answer] = ask(library, source, drawing(ALICE, 3))
    assert names(answer) == ["Alice"]
    elsewhere = Database(library.database.url)  # another engine: another process's view
    try:
        CharacterLibrary(elsewhere, library.blobs).create(
            {"name": "Bob"}, [ImageInput(drawing(BOB), "bob")]
        )
        [answer] = ask(library, source, drawing(BOB, 3))
        assert names(answer)[0] == "Bob" and answer.known
        with elsewhere.engine.begin() as connection:
            connection.execute(
                sa.text(
                    "DELETE FROM reference_images WHERE character_id IN "
                    "(SELECT id FROM characters WHERE name = 'Bob')"
                )
            )
        [answer] = ask(library, source, drawing(BOB, 3))
        assert names(answer) == ["Alice"] and not answer.known
    finally:
        elsewhere.dispose()


def test_the_counter_moves_only_for_its_owner_and_survives_a_downgrade(
    database_url: str, tmp_path: Path
) -> None:
    database = Database(database_url)
    blobs = BlobStore(tmp_path / "blobs")
    mine, theirs = CharacterLibrary(database, blobs), CharacterLibrary(database, blobs, "mallory")
    try:
        assert stored.index_revision(mine) == 0
        mine.create({"name": "Alice"}, [ImageInput(drawing(ALICE), "alice")])
        moved = stored.index_revision(mine)
        assert moved > 0 and stored.index_revision(theirs) == 0
        mine.update("Alice", {"style_prompt": "ink"})  # no reference moved
        assert stored.index_revision(mine) == moved
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with database.engine.begin() as connection:
            config.attributes["connection"] = connection
            # To just before the counter's migration (and back up to the newest below).
            before = ScriptDirectory.from_config(config).get_revision(COUNTER_MIGRATION)
            command.downgrade(config, str(before.down_revision))
            assert "identity_revisions" not in sa.inspect(connection).get_table_names()
        database.upgrade()
        mine.update("Alice", add_images=[ImageInput(drawing(ALICE, 1), "alice 2")])
        assert stored.index_revision(mine) == 1  # the counter starts again, and moves
    finally:
        database.dispose()


def test_many_unindexed_references_are_computed_in_batches(library: CharacterLibrary) -> None:
    source = AppearanceFeatures()
    for n in range(17):
        library.create({"name": f"C{n}"}, [ImageInput(drawing(ALICE, n), f"c{n}")])
    assert IdentitySearch(library, source, source.key()).update_index() == 17
    assert source.batches == [16, 1] and vector_rows(library) == 17


def test_an_owner_searches_only_their_own_characters(library: CharacterLibrary) -> None:
    source = AppearanceFeatures()
    other = CharacterLibrary(library.database, library.blobs, owner="mallory")
    other.create({"name": "Alice"}, [ImageInput(drawing(ALICE), "alice")])
    library.create({"name": "Bob"}, [ImageInput(drawing(BOB), "bob")])
    [answer] = ask(library, source, drawing(ALICE, 2))
    assert [m["name"] for m in answer.matches] == ["Bob"] and not answer.known
    [theirs] = ask(other, source, drawing(ALICE, 2))
    assert [m["name"] for m in theirs.matches] == ["Alice"] and theirs.known


def test_indexes_held_in_memory_are_bounded_least_recently_searched_first(
    library: CharacterLibrary, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = AppearanceFeatures()
    loads = Loads(monkeypatch)
    owners = {
        name: CharacterLibrary(library.database, library.blobs, owner=name)
        for name in ("ann", "ben", "cat")
    }
    for n, owned in enumerate(owners.values()):
        owned.create({"name": "Alice"}, [ImageInput(drawing(ALICE, n), "a1")])
        owned.create({"name": "Bob"}, [ImageInput(drawing(BOB, n), "b1")])
    monkeypatch.setenv("CASTBOOK_IDENTIFY_CACHE_REFERENCES", "4")  # two owners' two each
    for name in ("ann", "ben", "ann"):  # ann searched last: ben is the older
        [answer] = ask(owners[name], source, drawing(ALICE, 7))
        assert names(answer)[0] == "Alice"
    assert loads.reloads == 2
    [answer] = ask(owners["cat"], source, drawing(BOB, 7))  # 6 held: ben's goes
    assert names(answer)[0] == "Bob" and loads.reloads == 3
    [answer] = ask(owners["ann"], source, drawing(BOB, 7))
    assert names(answer)[0] == "Bob" and loads.reloads == 3  # still held
    [answer] = ask(owners["ben"], source, drawing(BOB, 7))  # reloaded from the database
    assert names(answer)[0] == "Bob" and loads.reloads == 4
    held = [key[1] for key in identity_search._cache if key[0] == library.database.url]
    assert sorted(held) == ["ann", "ben"]  # cat was the least recently searched
    # One owner bigger than the whole budget is still kept (alone) while it is searched.
    monkeypatch.setenv("CASTBOOK_IDENTIFY_CACHE_REFERENCES", "1")
    owners["cat"].create({"name": "Cleo"}, [ImageInput(drawing(CAROL), "c1")])
    ask(owners["cat"], source, drawing(CAROL, 2))
    ask(owners["cat"], source, drawing(CAROL, 3))
    assert loads.reloads == 5
    assert [key[1] for key in identity_search._cache if key[0] == library.database.url] == ["cat"]


def test_a_lookalike_reference_is_reported(library: CharacterLibrary) -> None:
    source = AppearanceFeatures()
    alice = library.create({"name": "Alice"}, [ImageInput(drawing(ALICE), "alice")])
    # The first character has nothing to look like; its vectors are stored all the same.
    assert IdentitySearch.check_added(library, source, [alice]) == []
    assert vector_rows(library) == 1
    copy = library.create({"name": "Alicia"}, [ImageInput(drawing(ALICE, 4), "alicia")])
    [found] = IdentitySearch.check_added(library, source, [copy])
    assert found.other == "Alice" and found.character == "Alicia"
    assert found.message == f"Alicia looks like Alice (score {found.score:.0f})"
    assert found.image == copy.images[0].sha256
    carol = library.create({"name": "Carol"}, [ImageInput(drawing(CAROL), "carol")])
    assert IdentitySearch.check_added(library, source, [carol]) == []


def test_a_face_match_that_looks_different_is_no_lookalike() -> None:
    """The face model sees simple drawn faces as one face (the quick start's Alice and Bob
    score 100 by face): a lookalike also needs the appearance to agree."""
    rng = np.random.default_rng(7)
    alice = _random_vectors(rng, faces=1)
    other_look = rng.normal(size=DIMENSIONS).astype(np.float32)
    bob = IdentityVectors(other_look / np.linalg.norm(other_look), alice.faces)  # same face
    twin = IdentityVectors(alice.appearance, alice.faces)
    index = IdentityIndex([("alice", alice)])
    [bob_match] = index.search(bob, 1)
    [twin_match] = index.search(twin, 1)
    assert bob_match.basis == twin_match.basis == "face" and bob_match.score == 100.0
    assert index.appearance_score(bob, bob_match) < OPEN_SET_THRESHOLDS["appearance"]
    assert index.appearance_score(twin, twin_match) >= OPEN_SET_THRESHOLDS["appearance"]
    assert not _alike(index, bob, bob_match)
    assert _alike(index, twin, twin_match)


# ---- the index itself --------------------------------------------------------------------


def _random_vectors(rng: np.random.Generator, faces: int) -> IdentityVectors:
    appearance = rng.normal(size=DIMENSIONS).astype(np.float32)
    face_rows = rng.normal(scale=0.05, size=(faces, 128)).astype(np.float32)
    return IdentityVectors(appearance / np.linalg.norm(appearance), face_rows)


def test_the_ann_index_finds_what_exact_search_finds() -> None:
    rng = np.random.default_rng(7)
    entries = [(f"c{i // 2:04d}", _random_vectors(rng, i % 3)) for i in range(1200)]
    exact = IdentityIndex(entries)
    approximate = IdentityIndex(entries, ann_from=1)
    assert approximate.approximate and not exact.approximate
    found = 0
    for n in range(20):
        query = entries[n * 57][1] if n % 2 else _random_vectors(rng, 1)
        want = exact.search(query, 10)
        got = approximate.search(query, 10, exact=False)
        found += len({m.character_id for m in want} & {m.character_id for m in got})
        scores = {m.character_id: m.score for m in want}
        assert all(scores[m.character_id] == m.score for m in got if m.character_id in scores)
    assert found / 200 >= 0.95


def test_exact_search_of_a_large_library_scores_only_references_that_can_rank(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import castbook.evaluation.identity as identity

    rng = np.random.default_rng(11)
    entries = [(f"c{i // 3:04d}", _random_vectors(rng, (i * 7) % 3 % 2)) for i in range(900)]
    # A character with twelve near copies of one picture: its references fill the top of
    # the raw ranking, and the characters after it must still be found.
    twin = entries[62][1]
    for _ in range(12):
        shift = rng.normal(scale=0.01, size=DIMENSIONS).astype(np.float32)
        entries.append(("zz-copies", IdentityVectors(twin.appearance + shift, twin.faces)))
    index = IdentityIndex(entries)
    queries = [entries[n * 31][1] for n in range(10)] + [_random_vectors(rng, 1)]
    everything = [index.search(q, 5, exclude=["c0003"]) for q in queries]
    monkeypatch.setattr(identity, "_SCORE_ALL_UP_TO", 0)
    monkeypatch.setattr(identity, "_TIE_MARGIN", 0)
    assert [index.search(q, 5, exclude=["c0003"]) for q in queries] == everything


def test_a_large_index_answers_exactly_while_its_ann_index_builds() -> None:
    rng = np.random.default_rng(3)
    entries = [(f"c{i:04d}", _random_vectors(rng, 1)) for i in range(300)]
    index = IdentityIndex(entries, ann_from=100)
    query = entries[5][1]
    first = index.search(query, 3)  # starts the build, answers exactly meanwhile
    assert first == IdentityIndex(entries).search(query, 3)
    assert first[0].character_id == "c0005"
    builder = index._ann_builder
    assert builder is not None
    builder.join(timeout=120)
    assert index._ann is not None
    assert index.search(query, 3)[0].character_id == "c0005"


def test_index_refuses_bad_input() -> None:
    with pytest.raises(InvalidInputError, match="top must be at least 1"):
        IdentityIndex([]).search(_random_vectors(np.random.default_rng(1), 0), 0)
    assert IdentityIndex([]).search(_random_vectors(np.random.default_rng(1), 0)) == []
    with pytest.raises(InvalidInputError, match="castbook identify --reindex"):
        IdentityVectors.from_bytes(b"\0" * 40, None)
    with pytest.raises(InvalidInputError, match="not a multiple of 128"):
        IdentityVectors.from_bytes(b"\0" * (4 * DIMENSIONS), b"\0" * 12)


def test_the_open_set_thresholds_come_from_the_calibration() -> None:
    shipped = default_calibration()
    assert shipped.open_set["made_by"] == "benchmarks/calibrate_eval.py"
    assert OPEN_SET_FALSE_MATCH_RATE == shipped.open_set["false_match_rate"] == 0.01
    assert {b: shipped.open_set[b] for b in ("face", "appearance")} == OPEN_SET_THRESHOLDS
    assert all(0 < threshold < 100 for threshold in OPEN_SET_THRESHOLDS.values())
    stale = replace(shipped, open_set={"false_match_rate": 0.01, "appearance": 91.4})
    with pytest.raises(InvalidInputError, match=r"calibrate_eval.py --open-set-only"):
        _open_set(stale)


# ---- castbook identify -------------------------------------------------------------------


@pytest.fixture
def pictures(castbook_home: Path, tmp_path: Path) -> dict[str, Path]:
    made = {
        "alice.png": drawing(ALICE),
        "alice-2.png": drawing(ALICE, 2),
        "alicia.png": drawing(ALICE, 4),
        "bob.png": drawing(BOB),
        "carol.png": drawing(CAROL),
        "notes.png": b"not a picture at all",
    }
    for name, data in made.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in made}


def test_cli_identify(pictures: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASTBOOK_IDENTIFY_ON_ADD", "1")
    code, _, err = castbook("identify", str(pictures["alice-2.png"]))
    assert code == 1 and "no character with a reference image" in err
    for name in ("alice", "bob"):
        code, _, err = castbook(
            "character", "add", "--name", name.title(), "--image", str(pictures[f"{name}.png"])
        )
        assert code == 0 and "looks like" not in err, err
    code, out, _ = castbook(
        "identify", str(pictures["alice-2.png"]), str(pictures["carol.png"]), "--json", "--top", "1"
    )
    assert code == 0
    alice, carol = json.loads(out)["results"]
    assert alice["character"]["name"] == "Alice" and alice["known"]
    assert len(alice["matches"]) == 1
    assert carol["character"] is None and not carol["known"]
    code, out, _ = castbook("identify", str(pictures["carol.png"]), str(pictures["bob.png"]))
    assert "carol.png: no known character" in out and "bob.png: Bob (score" in out
    code, out, err = castbook("identify", str(pictures["notes.png"]), str(pictures["bob.png"]))
    assert code == 1 and "notes.png" in err and "bob.png: Bob" in out
    code, _, err = castbook("identify", str(pictures["bob.png"]), "--top", "0")
    assert code == 1 and "--top must be between 1 and 50" in err
    # Adding a character whose reference matches Alice warns, and still adds it.
    code, out, err = castbook(
        "character", "add", "--name", "Alicia", "--image", str(pictures["alicia.png"])
    )
    assert code == 0 and "Added Alicia" in out
    assert "Alicia looks like Alice (score" in err
    code, _, err = castbook("identify", "--reindex")
    assert code == 0 and "3 entries dropped, 3 stored" in err


# ---- POST /v1/identify -------------------------------------------------------------------


def _upload(api, headers, name: str, data: bytes):
    made = api.client.post("/v1/characters", json={"name": name}, headers=headers)
    assert made.status_code == 201, made.text
    return api.client.post(
        f"/v1/characters/{made.json()['id']}/images",
        files=[("image", (f"{name}.png", data, "image/png"))],
        headers=headers,
    )


def test_api_identify(make_api: ApiFactory) -> None:
    api = make_api(identify_on_add=True)
    # One evaluation worker (a face model to load) is enough for one client.
    api.services.settings = replace(api.services.settings, eval_workers=1)
    ann, bob = api.key("ann"), api.key("bob")
    empty = api.client.post(
        "/v1/identify", files=[("image", ("q.png", drawing(ALICE, 2), "image/png"))], headers=ann
    )
    assert empty.status_code == 422 and "no character with a reference image" in empty.text
    assert _upload(api, ann, "Alice", drawing(ALICE)).status_code == 201
    first = _upload(api, ann, "Bob", drawing(BOB))
    assert first.json()["looks_like"] == [] and "X-Castbook-Warnings" not in first.headers
    lookalike = _upload(api, ann, "Alicia", drawing(ALICE, 4))
    assert lookalike.status_code == 201
    [warning] = lookalike.json()["looks_like"]
    assert (
        warning["looks_like"]["name"] == "Alice"
        and warning["score"] >= OPEN_SET_THRESHOLDS["appearance"]
    )
    assert json.loads(lookalike.headers["X-Castbook-Warnings"]) == [warning["message"]]

    answer = api.client.post(
        "/v1/identify",
        files=[
            ("image", ("bob-2.png", drawing(BOB, 2), "image/png")),
            ("image", ("carol.png", drawing(CAROL), "image/png")),
            ("image", ("notes.png", b"not an image", "image/png")),
        ],
        data={"top": "2"},
        headers=ann,
    )
    assert answer.status_code == 200, answer.text
    known, unknown, broken = answer.json()["results"]
    assert known["character"]["name"] == "Bob" and len(known["matches"]) == 2
    assert unknown["character"] is None and unknown["matches"]
    assert "notes.png" in broken["error"] and broken["matches"] == []

    uri = "data:image/png;base64," + base64.b64encode(drawing(ALICE, 2)).decode()
    by_json = api.client.post("/v1/identify", json={"images": [uri], "top": 1}, headers=ann)
    assert by_json.status_code == 200, by_json.text
    assert by_json.json()["results"][0]["character"]["name"] in ("Alice", "Alicia")

    # Bob's key sees none of Ann's characters.
    theirs = api.client.post("/v1/identify", json={"images": [uri]}, headers=bob)
    assert theirs.status_code == 422 and "no character with a reference image" in theirs.text
    assert _upload(api, bob, "Zed", drawing(CAROL)).status_code == 201
    theirs = api.client.post("/v1/identify", json={"images": [uri]}, headers=bob)
    assert [m["name"] for m in theirs.json()["results"][0]["matches"]] == ["Zed"]

    for body, field in (
        ({"images": []}, "image"),
        ({"images": [uri], "top": 0}, "top"),
        ({"images": ["/etc/passwd"]}, "images.0"),
        ({"images": [uri], "colour": 1}, "colour"),
    ):
        refused = api.client.post("/v1/identify", json=body, headers=ann)
        assert refused.status_code == 422 and refused.json()["field"] == field, refused.text


def test_a_lookalike_check_that_cannot_run_does_not_fail_the_add(
    pictures: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from castbook.evaluation.identity_search import LocalFeatures

    def broken(self: LocalFeatures) -> str:
        raise CastbookError("the face model is missing")

    monkeypatch.setenv("CASTBOOK_IDENTIFY_ON_ADD", "1")
    monkeypatch.setattr(LocalFeatures, "key", broken)
    code, out, err = castbook(
        "character", "add", "--name", "Alice", "--image", str(pictures["alice.png"])
    )
    assert code == 0 and "Added Alice" in out
    assert "could not check for lookalikes: the face model is missing" in err
    code, out, _ = castbook("character", "list", "--json")
    assert [c["name"] for c in json.loads(out)] == ["Alice"]


def test_characters_rank_by_the_unrounded_score() -> None:
    """Both show as 100.0; the picture's own character (a later id) still comes first."""
    rng = np.random.default_rng(5)
    own = _random_vectors(rng, 1)
    near = IdentityVectors(own.appearance, own.faces + np.float32(0.02 / np.sqrt(128)))
    matches = IdentityIndex([("a-lookalike", near), ("b-own", own)]).search(own, 2)
    assert [m.score for m in matches] == [100.0, 100.0]
    assert [m.character_id for m in matches] == ["b-own", "a-lookalike"]
    assert all(m.basis == "face" for m in matches)
