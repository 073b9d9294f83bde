"""Shared set-up for Batch Render and Story Mode tests: Alice and Bob, a tiny local model."""

from __future__ import annotations

from pathlib import Path

from castbook.blobs import BlobStore
from castbook.db import Database
from castbook.library import CharacterLibrary, ImageInput
from tests.support.drawings import ALICE, BOB, character, png_bytes


def library_with_alice_and_bob(root: Path) -> CharacterLibrary:
    library = CharacterLibrary(
        Database(f"sqlite:///{root / 'db.sqlite'}"), BlobStore(root / "blobs")
    )
    library.create(
        {"name": "Alice", "style_prompt": "long black hair"},
        [ImageInput(png_bytes(character(**ALICE)), "alice.png")],
    )
    library.create({"name": "Bob"}, [ImageInput(png_bytes(character(**BOB)), "bob.png")])
    return library


def tiny_preset(root: Path):
    """A preset on a tiny SD 1.5 + IP-Adapter saved under ``root``."""
    from castbook.generation import Mode, Preset
    from tests.support.tiny_diffusers import (
        IP_ADAPTER_WEIGHT,
        make_tiny_ip_adapter,
        make_tiny_sd15,
    )

    return Preset(
        id="tiny",
        backend="diffusers",
        model=str(make_tiny_sd15(root / "sd15")),
        modes=(Mode.T2I, Mode.I2I),
        defaults={"width": 256, "height": 256, "steps": 2},
        options={
            "family": "sd15",
            "ip_adapter": str(make_tiny_ip_adapter(root / "ip")),
            "ip_adapter_subfolder": "",
            "ip_adapter_weight": IP_ADAPTER_WEIGHT,
            "image_encoder_folder": "image_encoder",
        },
    )


def tiny_setup(root: Path):
    from castbook.generation.diffusers_backend import DiffusersBackend

    preset = tiny_preset(root)
    return library_with_alice_and_bob(root), preset, DiffusersBackend(preset)
