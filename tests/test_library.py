"""The character library against real databases: SQLite and PostgreSQL (see conftest)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from castbook.errors import (
    CharacterNotFoundError,
    DuplicateNameError,
    FieldError,
    ImageError,
    StorageError,
)
from castbook.library import CharacterLibrary, ImageInput
from tests.conftest import make_image_bytes
from tests.support.library_faults import Boom, fail_commit, snapshot


def red() -> ImageInput:
    return ImageInput(make_image_bytes((220, 30, 30)), "red.png")


def blue() -> ImageInput:
    return ImageInput(make_image_bytes((30, 30, 220)), "blue.png")


def green() -> ImageInput:
    return ImageInput(make_image_bytes((30, 200, 30), fmt="JPEG"), "green.jpg")


def test_create_and_read_back_every_field(library: CharacterLibrary) -> None:
    created = library.create(
        {
            "name": "Alice",
            "style_prompt": "long black hair, blue eyes, white shirt, silver necklace",
            "negative_prompt": "glasses",
            "description": "A calm barista.",
            "hair": "long black",
            "eyes": "blue",
            "face": "oval, freckles",
            "body": "slim",
            "skin": "pale",
            "clothing": "white shirt",
            "accessories": ["silver necklace", "watch"],
            "distinctive_features": ["scar over left eyebrow"],
            "tags": ["hero"],
        },
        [red(), blue()],
    )
    again = library.get("alice")
    assert again == created
    assert again.physical.hair == "long black"
    assert again.accessories == ("silver necklace", "watch")
    assert [i.is_primary for i in again.images] == [True, False]
    assert again.primary_image is not None
    assert library.image_bytes(again.images[0]) == red().data
    assert again.images[0].sha256 == hashlib.sha256(red().data).hexdigest()
    assert again.created_at.tzinfo is not None


def test_names_are_unique_ignoring_case(library: CharacterLibrary) -> None:
    library.create({"name": "Alice"})
    with pytest.raises(DuplicateNameError, match="already exists"):
        library.create({"name": "ALICE"})
    with pytest.raises(DuplicateNameError):
        library.create({"name": "  alice  "})
    assert [c.name for c in library.list()] == ["Alice"]


def test_unicode_names(library: CharacterLibrary) -> None:
    library.create({"name": "主角", "style_prompt": "黑色长发，蓝色眼睛"}, [red()])
    library.create({"name": "Zoë"})
    assert library.get("主角").style_prompt == "黑色长发，蓝色眼睛"
    # NFD input finds the NFC-stored name.
    assert library.get("Zoe\u0308").name == "Zoë"
    with pytest.raises(DuplicateNameError):
        library.create({"name": "主角"})


@pytest.mark.parametrize(
    ("name", "problem"),
    [("", "empty"), ("   ", "empty"), ("x" * 101, "101 characters"), ("a\nb", "control")],
)
def test_bad_names_are_refused(library: CharacterLibrary, name: str, problem: str) -> None:
    with pytest.raises(FieldError, match=problem):
        library.create({"name": name})
    assert library.list() == []


def test_a_hundred_character_name_is_fine(library: CharacterLibrary) -> None:
    assert library.create({"name": "名" * 100}).name == "名" * 100


def test_fields_are_validated_with_their_names(library: CharacterLibrary) -> None:
    with pytest.raises(FieldError, match="accessories"):
        library.create({"name": "A", "accessories": "hat"})
    with pytest.raises(FieldError, match="style_prompt"):
        library.create({"name": "A", "style_prompt": "x" * 5000})
    with pytest.raises(FieldError, match="haircut"):
        library.create({"name": "A", "haircut": "bob"})


def test_primary_image_can_be_chosen(library: CharacterLibrary) -> None:
    character = library.create({"name": "A"}, [red(), blue()], primary_index=1)
    assert character.primary_image.sha256 == hashlib.sha256(blue().data).hexdigest()


def test_list_is_sorted_by_name(library: CharacterLibrary) -> None:
    for name in ["carol", "Bob", "alice"]:
        library.create({"name": name})
    assert [c.name for c in library.list()] == ["alice", "Bob", "carol"]


def test_missing_character(library: CharacterLibrary) -> None:
    with pytest.raises(CharacterNotFoundError, match="Nobody"):
        library.get("Nobody")
    with pytest.raises(CharacterNotFoundError):
        library.update("Nobody", {"style_prompt": "x"})
    with pytest.raises(CharacterNotFoundError):
        library.delete("Nobody")


def test_edit_fields_and_rename(library: CharacterLibrary) -> None:
    library.create({"name": "Alice", "hair": "black", "tags": ["a"]})
    library.create({"name": "Bob"})
    edited = library.update("alice", {"name": "Alicia", "hair": "", "tags": ["b", "c"]})
    assert edited.name == "Alicia" and edited.physical.hair == "" and edited.tags == ("b", "c")
    assert edited.updated_at >= edited.created_at
    with pytest.raises(CharacterNotFoundError):
        library.get("Alice")
    with pytest.raises(DuplicateNameError):
        library.update("Alicia", {"name": "bob"})
    # Changing only the case of one's own name is allowed.
    assert library.update("Alicia", {"name": "ALICIA"}).name == "ALICIA"


def test_add_remove_and_replace_images(library: CharacterLibrary) -> None:
    library.create({"name": "A"}, [red()])
    character = library.update("A", add_images=[blue(), green()], primary="3")
    assert len(character.images) == 3
    assert character.primary_image.media_type == "image/jpeg"
    character = library.update("A", remove_images=["3"])
    assert [i.is_primary for i in character.images] == [True, False]  # first became primary
    blue_sha = hashlib.sha256(blue().data).hexdigest()
    character = library.update("A", remove_images=[blue_sha[:8]])
    assert len(character.images) == 1
    character = library.update("A", replace_images=[green(), blue()])
    assert [i.media_type for i in character.images] == ["image/jpeg", "image/png"]
    assert character.images[0].is_primary
    # The red image is no longer used by anyone: its blob is gone.
    assert not library.blobs.exists(hashlib.sha256(red().data).hexdigest())


def test_image_references_are_checked(library: CharacterLibrary) -> None:
    library.create({"name": "A"}, [red()])
    with pytest.raises(FieldError, match="no image 5"):
        library.update("A", remove_images=["5"])
    with pytest.raises(FieldError, match="position"):
        library.update("A", primary="zz")
    with pytest.raises(FieldError, match="already a reference"):
        library.update("A", add_images=[red()])
    with pytest.raises(FieldError, match="twice"):
        library.create({"name": "B"}, [red(), red()])


def test_bad_image_is_refused_before_anything_is_written(library: CharacterLibrary) -> None:
    before = snapshot(library)
    with pytest.raises(ImageError, match=r"notes\.png"):
        library.create({"name": "A"}, [red(), ImageInput(b"just text", "notes.png")])
    assert snapshot(library) == before


def test_delete_removes_only_unshared_blobs(library: CharacterLibrary) -> None:
    library.create({"name": "A"}, [red(), blue()])
    library.create({"name": "B"}, [blue()])
    library.delete("a")
    blue_sha = hashlib.sha256(blue().data).hexdigest()
    red_sha = hashlib.sha256(red().data).hexdigest()
    assert library.blobs.exists(blue_sha)
    assert not library.blobs.exists(red_sha)
    assert [c.name for c in library.list()] == ["B"]
    library.delete("B")
    assert list(library.blobs) == []


def test_delete_touches_nothing_else(library: CharacterLibrary) -> None:
    library.create({"name": "A"}, [red()])
    library.create({"name": "B"}, [blue()])
    b_before = library.get("B")
    library.delete("A")
    assert library.get("B") == b_before
    assert library.image_bytes(b_before.images[0]) == blue().data


def test_failed_create_leaves_everything_as_before(
    library: CharacterLibrary, monkeypatch: pytest.MonkeyPatch
) -> None:
    library.create({"name": "Existing"}, [red()])
    before = snapshot(library)
    with monkeypatch.context() as patch:
        fail_commit(patch)
        # red is shared with Existing and must survive; blue is new and must be removed.
        with pytest.raises(Boom):
            library.create({"name": "New"}, [red(), blue()])
    assert snapshot(library) == before


def test_failed_edit_leaves_everything_as_before(
    library: CharacterLibrary, monkeypatch: pytest.MonkeyPatch
) -> None:
    library.create({"name": "A", "hair": "black"}, [red(), blue()])
    before = snapshot(library)
    with monkeypatch.context() as patch:
        fail_commit(patch)
        with pytest.raises(Boom):
            library.update(
                "A", {"hair": "red"}, add_images=[green()], remove_images=["1"], primary="2"
            )
        with pytest.raises(Boom):
            library.update("A", replace_images=[green()])
    assert snapshot(library) == before


def test_failed_delete_leaves_everything_as_before(
    library: CharacterLibrary, monkeypatch: pytest.MonkeyPatch
) -> None:
    library.create({"name": "A"}, [red()])
    before = snapshot(library)
    with monkeypatch.context() as patch:
        fail_commit(patch)
        with pytest.raises(Boom):
            library.delete("A")
    assert snapshot(library) == before


def test_libraries_of_different_owners_are_separate(library: CharacterLibrary) -> None:
    other = CharacterLibrary(library.database, library.blobs, owner="someone-else")
    library.create({"name": "Alice"}, [red()])
    other.create({"name": "Alice"}, [red()])
    assert [c.name for c in other.list()] == ["Alice"]
    library.delete("Alice")
    # The shared blob is still used by the other owner's Alice.
    assert other.image_bytes(other.get("Alice").images[0]) == red().data


def test_bad_database_url_is_a_clear_error(tmp_path: Path) -> None:
    from castbook.db import Database

    with pytest.raises(StorageError, match="SQLite and PostgreSQL"):
        Database("mysql://localhost/x")
    with pytest.raises(StorageError, match="not a database URL"):
        Database("::nonsense::")
