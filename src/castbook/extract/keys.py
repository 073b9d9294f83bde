"""Provider keys moved to :mod:`castbook.providers` (floor 2) so that generation's hosted
backends can use them too; this module keeps the old import path working."""

from __future__ import annotations

from castbook.providers.keys import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    ENV_PROVIDER,
    PROVIDERS_FILE,
    KeyRing,
    ProviderConfig,
    ProviderKey,
    Tier,
    load_providers,
    mask,
    providers_path,
    save_provider_key,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "ENV_PROVIDER",
    "PROVIDERS_FILE",
    "KeyRing",
    "ProviderConfig",
    "ProviderKey",
    "Tier",
    "load_providers",
    "mask",
    "providers_path",
    "save_provider_key",
]
