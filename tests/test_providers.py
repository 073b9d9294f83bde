"""Provider keys (castbook.providers): kinds, the tier order each work takes, cool-downs and
the private providers.toml."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import castbook.extract.keys as old_path
from castbook.errors import FieldError
from castbook.extract import Extractor
from castbook.providers import (
    IMAGE,
    TEXT,
    KeyRing,
    ProviderConfig,
    ProviderKey,
    load_providers,
    save_provider_key,
    tier_order,
)

FREE = "AIzaSyFREE-0123456789abcdefghij"
PAID = "AIzaSyPAID-0123456789abcdefghij"
OPENAI = "sk-openai-0123456789abcdef"


def write_private(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "providers.toml"
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_old_import_path_still_works() -> None:
    assert old_path.KeyRing is KeyRing
    assert old_path.load_providers is load_providers
    assert old_path.save_provider_key is save_provider_key


def test_a_provider_without_a_kind_is_openai_and_gemini_ones_default_to_google(
    tmp_path: Path,
) -> None:
    write_private(
        tmp_path,
        f"""
[providers.openai]
[[providers.openai.keys]]
key = "{OPENAI}"

[providers.google]
kind = "gemini"
[[providers.google.keys]]
key = "{FREE}"
tier = "free"
""",
    )
    openai, google = load_providers(tmp_path, environ={})
    assert (openai.kind, openai.base_url, openai.model) == (
        "openai",
        "https://api.openai.com/v1",
        "gpt-4o-mini",
    )
    assert (google.kind, google.base_url, google.model) == (
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta",
        "gemini-2.5-flash-image",
    )
    assert google.prefer is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('kind = "dalle"', "kind: must be one of openai, gemini, comfyui"),
        ('kind = "gemini"\nprefer = "cheap"', "prefer: must be 'free' or 'paid'"),
        ('kind = "comfyui"', "base_url: is required"),
    ],
)
def test_bad_kinds_and_preferences_are_clear_errors(
    tmp_path: Path, table: str, message: str
) -> None:
    write_private(tmp_path, f"[providers.x]\n{table}\n")
    with pytest.raises(FieldError, match=message):
        load_providers(tmp_path, environ={})


def test_a_comfyui_provider_needs_no_model(tmp_path: Path) -> None:
    write_private(tmp_path, '[providers.box]\nkind = "comfyui"\nbase_url = "http://gpu:8188"\n')
    [box] = load_providers(tmp_path, environ={})
    assert (box.kind, box.base_url, box.model) == ("comfyui", "http://gpu:8188", "")


def test_text_work_goes_free_first_and_image_work_paid_first_unless_preferred() -> None:
    plain = ProviderConfig("g", "https://example.com", "m", kind="gemini")
    free_first = ProviderConfig("g", "https://example.com", "m", kind="gemini", prefer="free")
    assert tier_order(plain, TEXT) == "free"
    assert tier_order(plain, IMAGE) == "paid"
    assert tier_order(None, IMAGE) == "paid"
    assert tier_order(free_first, IMAGE) == "free"
    with pytest.raises(FieldError):
        tier_order(plain, "video")  # type: ignore[arg-type]


def test_the_ring_orders_by_the_first_tier_and_falls_back_after_a_429() -> None:
    clock = Clock()
    keys = [ProviderKey("g", FREE, "free"), ProviderKey("g", PAID, "paid")]
    ring = KeyRing(keys, clock=clock)
    assert [k.tier for k in ring.ordered("g")] == ["free", "paid"]  # text (the default)
    assert [k.tier for k in ring.ordered("g", first="paid")] == ["paid", "free"]
    assert ring.ready_in("g") == 0

    ring.cool_down(keys[1], 30)  # the paid key got a 429 with retryDelay 30s
    assert [k.tier for k in ring.ordered("g", first="paid")] == ["free"]
    ring.cool_down(keys[0], 10)
    assert ring.ordered("g", first="paid") == []
    assert ring.ready_in("g") == pytest.approx(10)
    clock.now += 10  # the free key's time is up: it is tried again
    assert [k.tier for k in ring.ordered("g", first="paid")] == ["free"]
    clock.now += 20
    assert [k.tier for k in ring.ordered("g", first="paid")] == ["paid", "free"]
    assert ring.ready_in("nobody") is None
    with pytest.raises(FieldError):
        ring.ordered("g", first="gold")  # type: ignore[arg-type]


def test_a_world_readable_file_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = write_private(
        tmp_path, f'[providers.openai]\n[[providers.openai.keys]]\nkey = "{OPENAI}"\n'
    )
    os.chmod(path, 0o644)
    with pytest.raises(FieldError) as caught:
        load_providers(tmp_path, environ={})
    message = str(caught.value)
    assert f"chmod 600 {path}" in message
    assert OPENAI not in message
    # Saving refuses too (it reads the file first) and leaves it as it was.
    before = path.read_bytes()
    with pytest.raises(FieldError, match="chmod 600"):
        save_provider_key(tmp_path, "openai", PAID)
    assert path.read_bytes() == before
    os.chmod(path, 0o600)
    assert [p.name for p in load_providers(tmp_path, environ={})] == ["openai"]
    os.chmod(path, 0o640)  # group-readable is the owner's choice; only everyone is refused
    assert [p.name for p in load_providers(tmp_path, environ={})] == ["openai"]


def test_saving_a_gemini_key_round_trips_the_kind_and_stays_private(tmp_path: Path) -> None:
    path = save_provider_key(tmp_path, "google", FREE, "free", kind="gemini")
    save_provider_key(tmp_path, "google", PAID, "paid")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [google] = load_providers(tmp_path, environ={})
    assert google.kind == "gemini"
    assert [(k.key, k.tier) for k in google.keys] == [(FREE, "free"), (PAID, "paid")]
    assert FREE not in repr(google) and PAID not in repr(google)
    with pytest.raises(FieldError, match="kind"):
        save_provider_key(tmp_path, "google", PAID, kind="dalle")
    assert [p.kind for p in load_providers(tmp_path, environ={})] == ["gemini"]


def test_the_extractor_uses_only_openai_compatible_providers(tmp_path: Path) -> None:
    save_provider_key(tmp_path, "google", FREE, "free", kind="gemini")
    save_provider_key(tmp_path, "openai", OPENAI, "paid")
    extractor = Extractor(tmp_path, environ={})
    assert [p.name for p in extractor.providers] == ["openai"]
