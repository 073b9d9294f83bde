"""Export and import: castbook's own format and the nbp character-library JSON."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from castbook.blobs import BlobStore
from castbook.db import Database
from castbook.errors import ImportFormatError, InvalidInputError
from castbook.library import (
    CharacterLibrary,
    ExportFormat,
    ImageInput,
    export_characters,
    export_to_file,
    import_document,
    import_file,
)
from tests.conftest import make_image_bytes
from tests.support.library_faults import snapshot


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png_bomb(width: int = 20000, height: int = 10000) -> bytes:
    """A 200 MP PNG of a few hundred KB: a valid header and compressed all-zero rows."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


@pytest.fixture
def populated(library: CharacterLibrary) -> CharacterLibrary:
    library.create(
        {
            "name": "Alice",
            "style_prompt": "long black hair, blue eyes",
            "negative_prompt": "glasses",
            "description": "Barista.",
            "hair": "long black",
            "eyes": "blue",
            "clothing": "white shirt",
            "accessories": ["silver necklace"],
            "distinctive_features": ["mole under left eye"],
            "tags": ["hero", "cafe"],
        },
        [
            ImageInput(make_image_bytes((200, 10, 10)), "a.png"),
            ImageInput(make_image_bytes((10, 10, 200), fmt="JPEG"), "b.jpg"),
            ImageInput(make_image_bytes((10, 200, 10), fmt="WEBP"), "c.webp"),
        ],
        primary_index=1,
    )
    library.create(
        {"name": "主角", "style_prompt": "红色围巾"}, [ImageInput(make_image_bytes(), "z.png")]
    )
    library.create({"name": "No Images", "hair": "bald"})
    return library


@pytest.fixture
def empty_library(tmp_path: Path) -> CharacterLibrary:
    target = tmp_path / "other"
    return CharacterLibrary(
        Database(f"sqlite:///{target / 'db.sqlite'}"), BlobStore(target / "blobs")
    )


def test_export_then_import_reproduces_the_library_exactly(
    populated: CharacterLibrary, empty_library: CharacterLibrary, tmp_path: Path
) -> None:
    path = tmp_path / "export.json"
    export_to_file(populated, populated.list(), path)
    report = import_file(empty_library, path)
    assert sorted(report.imported) == ["Alice", "No Images", "主角"]
    assert report.skipped == [] and report.failed == []
    assert [c.model_dump() for c in empty_library.list()] == [
        c.model_dump() for c in populated.list()
    ]
    for original in populated.list():
        copy = empty_library.get(original.name)
        for a, b in zip(original.images, copy.images, strict=True):
            assert populated.image_bytes(a) == empty_library.image_bytes(b)
            assert populated.thumbnail_bytes(a) == empty_library.thumbnail_bytes(b)
    assert sorted(populated.blobs) == sorted(empty_library.blobs)


def test_export_document_shape(populated: CharacterLibrary) -> None:
    document = export_characters(populated, [populated.get("Alice")])
    assert document["format"] == "castbook.characters" and document["version"] == 1
    (alice,) = document["characters"]
    assert alice["physical"]["hair"] == "long black"
    assert [image["primary"] for image in alice["images"]] == [False, True, False]
    assert [image["media_type"] for image in alice["images"]] == [
        "image/png",
        "image/jpeg",
        "image/webp",
    ]
    first = alice["images"][0]
    assert base64.b64decode(first["data"]) == make_image_bytes((200, 10, 10))
    assert first["thumbnail"]["media_type"] == "image/webp"
    json.dumps(document)  # serialisable as-is


def test_existing_names_are_skipped_not_overwritten(populated: CharacterLibrary) -> None:
    document = export_characters(populated, populated.list())
    document["characters"][0]["style_prompt"] = "changed"
    before = snapshot(populated)
    report = import_document(populated, document)
    assert report.imported == []
    assert {name for name, _ in report.skipped} == {"Alice", "No Images", "主角"}
    assert snapshot(populated) == before


def test_a_name_repeated_in_the_file_is_imported_once(
    populated: CharacterLibrary, empty_library: CharacterLibrary
) -> None:
    document = export_characters(populated, [populated.get("Alice")])
    twin = json.loads(json.dumps(document["characters"][0]))
    twin["name"] = "ALICE"
    document["characters"].append(twin)
    report = import_document(empty_library, document)
    assert report.imported == ["Alice"]
    assert report.skipped == [("ALICE", "the name appears earlier in the same file")]


def _document_with(character: dict[str, Any]) -> dict[str, Any]:
    return {"format": "castbook.characters", "version": 1, "characters": [character]}


GOOD_PNG = make_image_bytes()


@pytest.mark.parametrize(
    ("character", "reason"),
    [
        ({"name": 42}, "name: must be text"),
        ({"name": ""}, "name: must not be empty"),
        ({"name": "A", "accessories": "hat"}, "accessories"),
        ({"name": "A", "physical": "tall"}, "physical must be an object"),
        ({"name": "A", "images": [{"data": b64(GOOD_PNG)[:-7]}]}, "not valid base64"),
        ({"name": "A", "images": [{"data": "!!!!"}]}, "not valid base64"),
        ({"name": "A", "images": [{"data": b64(GOOD_PNG[: len(GOOD_PNG) // 2])}]}, "truncated"),
        ({"name": "A", "images": [{"data": b64(b"hello, I am text")}]}, "images[0].data"),
        ({"name": "A", "images": [{"data": b64(png_bomb())}]}, "200 MP"),
        ({"name": "A", "images": [{"data": b64(GOOD_PNG), "sha256": "0" * 64}]}, "sha256"),
        ({"name": "A", "images": [{"data": 12}]}, "images[0].data must be text"),
        ({"name": "A", "images": ["x"]}, "images[0] must be an object"),
        ({"name": "A", "created_at": "yesterday"}, "ISO 8601"),
        ("just a string", "must be an object"),
    ],
)
def test_invalid_characters_fail_with_a_reason_and_write_nothing(
    library: CharacterLibrary, character: Any, reason: str
) -> None:
    before = snapshot(library)
    report = import_document(library, _document_with(character))
    assert report.imported == []
    ((entry, message),) = report.failed
    assert entry.startswith("characters[0]")
    assert reason.lower() in message.lower()
    assert snapshot(library) == before


def test_valid_characters_are_imported_beside_failed_ones(library: CharacterLibrary) -> None:
    document = _document_with({"name": "Good", "images": [{"data": b64(GOOD_PNG)}]})
    document["characters"].append({"name": "Bad", "images": [{"data": "%%%"}]})
    report = import_document(library, document)
    assert report.imported == ["Good"]
    assert [entry for entry, _ in report.failed] == ["characters[1] ('Bad')"]
    assert [c.name for c in library.list()] == ["Good"]


def test_strict_import_writes_nothing_when_anything_is_invalid(library: CharacterLibrary) -> None:
    document = _document_with({"name": "Good", "images": [{"data": b64(GOOD_PNG)}]})
    document["characters"].append({"name": "Bad", "images": [{"data": "%%%"}]})
    with pytest.raises(ImportFormatError, match="nothing was imported"):
        import_document(library, document, strict=True)
    assert library.list() == [] and list(library.blobs) == []


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not valid JSON"),
        (b'{"format": "castbook.characters", "version": 1, "characters": [{"na', "cut short"),
        (b"\xff\xfe\x00garbage", "JSON"),
        (b"[1, 2, 3]", "not a character export"),
        (b'{"format": "castbook.characters", "version": 99, "characters": []}', "newer castbook"),
        (b'{"format": "castbook.characters", "version": 1, "characters": {}}', "'characters' list"),
        (b'{"type": "characters", "version": 1}', "'characters' list"),
    ],
)
def test_unreadable_files_are_refused_as_a_whole(
    library: CharacterLibrary, tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "broken.json"
    path.write_bytes(content)
    with pytest.raises(ImportFormatError, match=reason):
        import_file(library, path)
    assert library.list() == []


def test_missing_import_file(library: CharacterLibrary, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not found"):
        import_file(library, tmp_path / "nope.json")


def test_a_failure_while_writing_an_import_leaves_the_library_as_before(
    populated: CharacterLibrary, empty_library: CharacterLibrary, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.library_faults import Boom, fail_commit

    document = export_characters(populated, populated.list())
    empty_library.create({"name": "Keeper"}, [ImageInput(make_image_bytes((200, 10, 10)), "a.png")])
    before = snapshot(empty_library)
    with monkeypatch.context() as patch:
        fail_commit(patch)
        with pytest.raises(Boom):
            import_document(empty_library, document)
    assert snapshot(empty_library) == before


def test_interrupted_export_leaves_the_old_file(
    populated: CharacterLibrary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "exports" / "export.json"
    path.parent.mkdir()
    path.write_text("old")

    def explode(*_: object, **__: object) -> None:
        raise RuntimeError("interrupted")

    monkeypatch.setattr(json, "dump", explode)
    with pytest.raises(RuntimeError):
        export_to_file(populated, populated.list(), path)
    assert path.read_text() == "old"
    assert [p.name for p in path.parent.iterdir()] == ["export.json"]


# ---- nbp -----------------------------------------------------------------------------------


def nbp_document() -> dict[str, Any]:
    jpeg = make_image_bytes((90, 60, 30), fmt="JPEG")
    return {
        "version": 1,
        "type": "characters",
        "exportedAt": "2025-06-01T12:00:00.000Z",
        "appVersion": "1.4.2",
        "characters": [
            {
                "uuid": "3f0c1c6e-2d55-4a55-9a8e-0d7d9c1f5a11",
                "name": "Mira",
                "description": "A courier with a red scarf.",
                "physicalTraits": {
                    "hair": "short silver",
                    "eyes": "amber",
                    "face": "sharp jaw",
                    "body": "athletic",
                    "skin": "tan",
                },
                "clothing": "red scarf, grey coat",
                "accessories": ["goggles"],
                "distinctiveFeatures": ["scar on chin"],
                "imageData": "data:image/jpeg;base64," + b64(jpeg),
                "thumbnail": "data:image/jpeg;base64," + b64(jpeg),
                "createdAt": 1717243200000,
            },
            {
                "uuid": "not-a-uuid",
                "name": "Kai",
                "description": "",
                "physicalTraits": {"hair": "black"},
                "clothing": "",
                "accessories": "cap, watch",
                "distinctiveFeatures": [],
                "imageData": b64(make_image_bytes((10, 10, 10))),
                "createdAt": "2025-05-01T08:00:00Z",
            },
        ],
    }


def test_nbp_import(library: CharacterLibrary) -> None:
    report = import_document(library, nbp_document())
    assert report.imported == ["Mira", "Kai"] and report.failed == []
    mira = library.get("Mira")
    assert mira.physical.hair == "short silver" and mira.physical.skin == "tan"
    assert mira.distinctive_features == ("scar on chin",) and mira.accessories == ("goggles",)
    assert mira.id == "3f0c1c6e2d554a559a8e0d7d9c1f5a11"
    assert mira.created_at.isoformat().startswith("2024-06-01T12:00:00")
    assert mira.images[0].media_type == "image/jpeg"
    kai = library.get("Kai")
    assert kai.accessories == ("cap", "watch")
    assert kai.created_at.year == 2025 and len(kai.id) == 32


def test_nbp_export_and_round_trip(
    populated: CharacterLibrary, empty_library: CharacterLibrary
) -> None:
    document = export_characters(populated, populated.list(), ExportFormat.NBP)
    assert document["type"] == "characters" and document["version"] == 1
    alice = next(c for c in document["characters"] if c["name"] == "Alice")
    assert set(alice) == {
        "uuid",
        "name",
        "description",
        "physicalTraits",
        "clothing",
        "accessories",
        "distinctiveFeatures",
        "imageData",
        "thumbnail",
        "createdAt",
    }
    # nbp holds one image: the primary one.
    primary = populated.get("Alice").primary_image
    assert base64.b64decode(alice["imageData"]) == populated.image_bytes(primary)
    report = import_document(empty_library, document)
    # The app cannot show a character without an image: "No Images" is left out of the
    # export (tests/test_nbp_fidelity.py checks the warning).
    assert sorted(report.imported) == ["Alice", "主角"]
    copy = empty_library.get("Alice")
    assert copy.physical == populated.get("Alice").physical
    assert copy.id == populated.get("Alice").id
    assert len(copy.images) == 1
    assert empty_library.image_bytes(copy.images[0]) == populated.image_bytes(primary)


def test_nbp_bad_entry_is_reported(library: CharacterLibrary) -> None:
    document = nbp_document()
    document["characters"][1]["imageData"] = "data:image/png;base64,AAAA"
    report = import_document(library, document)
    assert report.imported == ["Mira"]
    assert report.failed[0][0] == "characters[1] ('Kai')"


def test_png_bomb_is_small_on_disk() -> None:
    # The bomb must stay cheap to carry around in tests.
    assert len(png_bomb()) < 2_000_000
    from castbook.errors import ImageTooLargeError
    from castbook.images import open_image

    with pytest.raises(ImageTooLargeError, match="MP"):
        open_image(png_bomb())
