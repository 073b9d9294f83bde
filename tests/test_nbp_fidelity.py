"""nbp files as the nbp-web-gen app really writes them, and nbp files as it expects to read them.

The app (``useCharacterTransfer.js``) writes ``JSON.stringify`` of ``{version: 1, type:
"characters", exportedAt: Date.now(), appVersion, characters: [...]}``: timestamps are epoch
milliseconds, ``imageData`` is plain base64 of whatever ``image/*`` the user picked (GIF and BMP
included), ``thumbnail`` a plain-base64 WebP of at most 150 px, and a trait its extractor could
not tell is the text "unknown". Names have no length limit and are unique only with their case.
"""

from __future__ import annotations

import base64
import io
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from castbook.library import (
    CharacterLibrary,
    ExportFormat,
    ImageInput,
    export_characters,
    import_document,
    import_file,
    inject_characters,
    nbp_json,
)
from castbook.library.injection import character_phrases, is_placeholder
from castbook.library.models import MAX_NAME_LENGTH, CharacterFields, PhysicalTraits
from tests.conftest import make_image_bytes
from tests.support.api import ApiFactory
from tests.support.cli import castbook

LONG_NAME = "Lady Seraphine" + " of the Northern Reaches" * 6  # 158 characters
CREATED_MS = 1_750_000_000_123


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def gif_bytes() -> bytes:
    """A two-frame animated GIF with a transparent colour, as a browser would save one."""
    frames = [Image.new("P", (48, 40), 1), Image.new("P", (48, 40), 2)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 200, 40, 40, 40, 200, 40] + [0] * (256 * 3 - 9))
        frame.paste(0, (0, 0, 8, 8))  # transparent corner
    buffer = io.BytesIO()
    frames[0].save(
        buffer, "GIF", save_all=True, append_images=frames[1:], transparency=0, duration=100
    )
    return buffer.getvalue()


def bmp_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), (10, 120, 200)).save(buffer, "BMP")
    return buffer.getvalue()


def app_thumbnail(data: bytes) -> str:
    """What the app's generateThumbnail stores: WebP, longest side 150, base64 without prefix."""
    image = Image.open(io.BytesIO(data)).convert("RGBA")
    image.thumbnail((150, 150))
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", quality=80)
    return b64(buffer.getvalue())


def app_character(name: str, image: bytes | None, **overrides: Any) -> dict[str, Any]:
    character = {
        "uuid": "7b0e4f55-2b6e-4c1e-9a43-0f5d4c3b2a19",
        "name": name,
        "description": "A courier with a red scarf.",
        "physicalTraits": {
            "hair": "short silver",
            "eyes": "amber",
            "face": "oval",
            "body": "athletic",
            "skin": "fair",
        },
        "clothing": "red scarf, grey coat",
        "accessories": ["goggles"],
        "distinctiveFeatures": ["scar on chin"],
        "imageData": b64(image) if image is not None else None,
        "thumbnail": app_thumbnail(image) if image is not None else None,
        "createdAt": CREATED_MS,
    }
    character.update(overrides)
    return character


def app_export() -> dict[str, Any]:
    """An nbp file shaped exactly like the app's export (JSON.stringify drops no keys)."""
    return {
        "version": 1,
        "type": "characters",
        "exportedAt": 1_750_000_999_000,
        "appVersion": "0.25.3",
        "characters": [
            app_character(
                "Mira",
                gif_bytes(),
                uuid="3f0c1c6e-2d55-4a55-9a8e-0d7d9c1f5a11",
                # What the app's extractor writes for what it could not tell.
                physicalTraits={
                    "hair": "short silver",
                    "eyes": "amber",
                    "face": "unknown",
                    "body": "Unknown",
                    "skin": " UNKNOWN ",
                },
                accessories=["none"],
                distinctiveFeatures=["N/A", "scar on chin"],
            ),
            app_character("Bram", bmp_bytes(), uuid="5d1b2c3a-0000-4000-8000-000000000002"),
            app_character(
                LONG_NAME,
                make_image_bytes(fmt="JPEG"),
                uuid="5d1b2c3a-0000-4000-8000-000000000003",
            ),
            # "Alice" is in the library already: the app keeps both, castbook cannot.
            app_character("alice", make_image_bytes(), uuid="5d1b2c3a-0000-4000-8000-000000000004"),
            # The app writes null when a character's image is missing from its storage.
            app_character("Nix", None, uuid="5d1b2c3a-0000-4000-8000-000000000005"),
        ],
    }


def write_app_file(path: Path) -> Path:
    path.write_text(json.dumps(app_export(), separators=(",", ":"), ensure_ascii=False))
    return path


# ---- 1. placeholders -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["unknown", "Unknown", " UNKNOWN ", "n/a", "N/A", "N/A.", "none", "None", "NULL", "-", "—",
     "?", "...", "", "   ", "not specified", "Not Visible", "ｕｎｋｎｏｗｎ", "未知"],
)  # fmt: skip
def test_placeholders_are_recognised(text: str) -> None:
    assert is_placeholder(text)


@pytest.mark.parametrize(
    "text", ["bald", "unknown origin scar", "none-too-clean coat", "nana", "fair", "🔥", "无袖"]
)
def test_real_values_are_not_placeholders(text: str) -> None:
    assert not is_placeholder(text)


def test_placeholders_are_never_injected() -> None:
    character = CharacterFields(
        name="Mira",
        style_prompt="unknown, young courier, N/A",
        negative_prompt="none, glasses",
        physical=PhysicalTraits(hair="short silver", eyes="N/A", face="oval", body="-", skin="?"),
        clothing="Unknown",
        accessories=("none", "goggles"),
        distinctive_features=("n/a", "scar on chin"),
    )
    result = inject_characters("portrait, park", [character], "lowres")
    assert result.prompt == (
        "young courier, short silver hair, oval, goggles, scar on chin, portrait, park"
    )
    assert result.negative_prompt == "lowres, glasses"
    # Several characters: the placeholders stay out of each one's parentheses too.
    bo = CharacterFields(name="Bo", physical=PhysicalTraits(hair="unknown", eyes="green"))
    two = inject_characters("", [character, bo])
    assert "unknown" not in two.prompt.casefold() and "n/a" not in two.prompt.casefold()
    assert two.prompt.endswith("Bo (green eyes)")


def test_a_placeholder_saved_by_hand_is_not_injected_either(library: CharacterLibrary) -> None:
    # Whatever the source (the CLI, the API, castbook's own format): stored, never injected.
    library.create({"name": "Kai", "hair": "black", "face": "unknown", "skin": "N/A"})
    kai = library.get("Kai")
    assert kai.physical.face == "unknown"  # kept as written
    assert character_phrases(kai) == ["black hair"]
    assert inject_characters("at the beach", [kai]).prompt == "black hair, at the beach"


# ---- 2. importing what the app writes ------------------------------------------------------


def test_the_apps_file_imports_without_failures(library: CharacterLibrary, tmp_path: Path) -> None:
    library.create({"name": "Alice", "hair": "long black"})
    report = import_file(library, write_app_file(tmp_path / "nbp-characters-1750000999000.json"))

    assert report.failed == []
    short = LONG_NAME[: MAX_NAME_LENGTH - 1].rstrip() + "…"
    assert report.imported == ["Mira", "Bram", short, "Nix"]
    [(skipped, reason)] = report.skipped
    assert skipped == "alice"
    assert "'Alice'" in reason and "ignoring case" in reason

    warnings = dict(report.warnings)
    assert set(warnings) == {"Mira", "Bram", short}
    assert "GIF" in warnings["Mira"] and "converted to PNG" in warnings["Mira"]
    assert "first frame" in warnings["Mira"]
    assert "BMP" in warnings["Bram"] and "converted to PNG" in warnings["Bram"]
    assert f"{len(LONG_NAME)} characters" in warnings[short] and repr(short) in warnings[short]
    # The report as the API and `--json` give it.
    as_dict = report.as_dict()
    assert {"name": "Bram", "warning": warnings["Bram"]} in as_dict["warnings"]

    mira = library.get("Mira")
    assert mira.physical == PhysicalTraits(hair="short silver", eyes="amber")  # "unknown" -> ""
    assert mira.accessories == () and mira.distinctive_features == ("scar on chin",)
    assert mira.id == "3f0c1c6e2d554a559a8e0d7d9c1f5a11"
    assert mira.created_at == datetime.fromtimestamp(CREATED_MS / 1000, UTC)
    (image,) = mira.images
    assert image.media_type == "image/png" and (image.width, image.height) == (48, 40)
    png = Image.open(io.BytesIO(library.image_bytes(image)))
    assert png.format == "PNG" and png.mode == "RGBA"  # the transparent corner survived
    assert png.getpixel((0, 0))[3] == 0
    bram = library.get("Bram")
    assert bram.images[0].media_type == "image/png"
    assert (bram.images[0].width, bram.images[0].height) == (30, 20)
    long_one = library.get(short)
    assert len(long_one.name) == MAX_NAME_LENGTH and long_one.images[0].media_type == "image/jpeg"
    assert library.get("Alice").physical.hair == "long black"  # never overwritten
    assert library.get("Nix").images == ()

    # The same file again: every name is taken now, the shortened one included.
    again = import_file(library, tmp_path / "nbp-characters-1750000999000.json")
    assert again.imported == [] and again.failed == [] and len(again.skipped) == 5


def test_an_unreadable_image_still_fails_alone(library: CharacterLibrary) -> None:
    document = app_export()
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>'
    document["characters"][1]["imageData"] = b64(svg)
    truncated = gif_bytes()[:30]
    document["characters"][2]["imageData"] = b64(truncated)
    report = import_document(library, document)
    assert [entry for entry, _ in report.failed] == [
        "characters[1] ('Bram')",
        f"characters[2] ({LONG_NAME!r})",
    ]
    assert "not an image castbook can read" in report.failed[0][1]
    assert "GIF" in report.failed[1][1]
    assert "Mira" in report.imported


def test_names_with_line_breaks_and_invisible_characters_are_tidied(
    library: CharacterLibrary,
) -> None:
    document = app_export()
    document["characters"] = [
        app_character("Astro\u200bnaut\nTwo", make_image_bytes()),
    ]
    report = import_document(library, document)
    assert report.imported == ["Astronaut Two"] and report.failed == []
    assert "invisible" in report.warnings[0][1]


def test_the_cli_shows_the_warnings(castbook_home: Path, tmp_path: Path) -> None:
    code, out, err = castbook("character", "import", str(write_app_file(tmp_path / "n.json")))
    assert code == 0, err
    assert "Imported 5, skipped 0, failed 0." in out
    assert "warning" in out and "converted to PNG" in out


# ---- 3. exporting what the app reads -------------------------------------------------------


@pytest.fixture
def populated(library: CharacterLibrary) -> CharacterLibrary:
    library.create(
        {"name": "Alice", "hair": "long black"},
        [
            ImageInput(make_image_bytes((200, 10, 10), size=(400, 300)), "a.png"),
            ImageInput(make_image_bytes((10, 10, 200), size=(120, 90), fmt="JPEG"), "b.jpg"),
        ],
    )
    library.create(
        {"name": "Tall", "eyes": "green"},
        [ImageInput(make_image_bytes(size=(200, 900), fmt="WEBP"), "t.webp")],
    )
    library.create({"name": "No Images", "hair": "bald"})
    return library


def test_export_matches_what_the_app_writes(populated: CharacterLibrary) -> None:
    before = time.time_ns() // 1_000_000
    warnings: list[str] = []
    document = nbp_json.export_document(populated, populated.list(), warnings)
    after = time.time_ns() // 1_000_000

    assert set(document) == {"version", "type", "exportedAt", "appVersion", "characters"}
    assert type(document["exportedAt"]) is int and before <= document["exportedAt"] <= after
    assert [c["name"] for c in document["characters"]] == ["Alice", "Tall"]
    assert warnings == [
        "'No Images' has no reference image and was left out: the nbp app cannot show a "
        "character without one"
    ]
    for exported in document["characters"]:
        character = populated.get(exported["name"])
        assert type(exported["createdAt"]) is int
        assert exported["createdAt"] == int(character.created_at.timestamp() * 1000)
        assert exported["imageData"] and not exported["imageData"].startswith("data:")
        assert base64.b64decode(exported["imageData"]) == populated.image_bytes(
            character.primary_image
        )
        assert not exported["thumbnail"].startswith("data:")
        thumbnail = Image.open(io.BytesIO(base64.b64decode(exported["thumbnail"])))
        assert thumbnail.format == "WEBP" and max(thumbnail.size) == 150
    alice, tall = document["characters"]
    assert Image.open(io.BytesIO(base64.b64decode(alice["thumbnail"]))).size == (150, 112)
    assert Image.open(io.BytesIO(base64.b64decode(tall["thumbnail"]))).size == (33, 150)
    # JSON as the app would parse it, and back in again.
    assert json.loads(json.dumps(document)) == document


def test_a_small_image_keeps_its_size_in_the_thumbnail(library: CharacterLibrary) -> None:
    library.create({"name": "Tiny"}, [ImageInput(make_image_bytes(size=(64, 80)), "t.png")])
    (tiny,) = export_characters(library, library.list(), ExportFormat.NBP)["characters"]
    assert Image.open(io.BytesIO(base64.b64decode(tiny["thumbnail"]))).size == (64, 80)


def test_export_round_trips_through_the_importer(
    populated: CharacterLibrary, tmp_path: Path
) -> None:
    document = export_characters(populated, populated.list(), ExportFormat.NBP)
    from castbook.blobs import BlobStore
    from castbook.db import Database

    database = Database(f"sqlite:///{tmp_path / 'copy.db'}")
    try:
        copy = CharacterLibrary(database, BlobStore(tmp_path / "copy-blobs"))
        report = import_document(copy, document)
        assert report.imported == ["Alice", "Tall"] and report.failed == []
        assert report.warnings == []
        assert copy.get("Alice").created_at == populated.get("Alice").created_at.replace(
            microsecond=populated.get("Alice").created_at.microsecond // 1000 * 1000
        )
    finally:
        database.dispose()


def test_the_cli_and_api_say_what_was_left_out(
    castbook_home: Path, tmp_path: Path, make_api: ApiFactory
) -> None:
    png = tmp_path / "a.png"
    png.write_bytes(make_image_bytes())
    assert castbook("character", "add", "--name", "Alice", "--image", str(png))[0] == 0
    assert castbook("character", "add", "--name", "Bob")[0] == 0
    out_file = tmp_path / "n.json"
    export = ("character", "export", "--all", "--format", "nbp", "-o")
    code, out, err = castbook(*export, str(out_file))
    assert code == 0, err
    assert "'Bob' has no reference image and was left out" in " ".join(err.split())
    assert "Exported 1 character (1 image)" in out
    assert [c["name"] for c in json.loads(out_file.read_text())["characters"]] == ["Alice"]
    # To stdout: the document alone on stdout, the warning on stderr.
    code, out, err = castbook(*export, "-")
    assert code == 0 and [c["name"] for c in json.loads(out)["characters"]] == ["Alice"]
    assert "Bob" in err

    api = make_api()
    headers = api.key("carol")
    api.client.post("/v1/characters", json={"name": "主角"}, headers=headers)
    answer = api.client.get("/v1/characters/export?format=nbp", headers=headers)
    assert answer.status_code == 200 and answer.json()["characters"] == []
    assert json.loads(answer.headers["X-Castbook-Warnings"]) == [
        "'主角' has no reference image and was left out: the nbp app cannot show a "
        "character without one"
    ]
    castbook_format = api.client.get("/v1/characters/export", headers=headers)
    assert "X-Castbook-Warnings" not in castbook_format.headers


@pytest.mark.parametrize(("fmt", "mode"), [("TIFF", "I;16"), ("TIFF", "CMYK"), ("ICO", "RGBA")])
def test_other_browser_image_formats_are_converted(
    library: CharacterLibrary, fmt: str, mode: str
) -> None:
    buffer = io.BytesIO()
    Image.new(mode, (32, 32), 30000 if mode == "I;16" else None).save(buffer, fmt)
    document = app_export()
    document["characters"] = [app_character("Vex", buffer.getvalue())]
    report = import_document(library, document)
    assert report.imported == ["Vex"] and report.failed == []
    assert report.warnings == [("Vex", f"imageData was a {fmt} image; converted to PNG")]
    assert library.get("Vex").images[0].media_type == "image/png"
