"""Which provider of ``providers.toml`` a hosted backend uses, shared by the OpenAI-compatible,
ComfyUI and Gemini backends.

The preset's ``provider`` option names one (of the backend's kind): a name that is not there
is a :class:`~castbook.errors.FieldError` naming the file and the providers it holds, so a
typo never silently falls back to another key. Without the option, the first provider of
that kind whose ``base_url`` is the backend's is used (same endpoint, same keys), if any —
or, for a kind with one public endpoint (Gemini), the first provider of that kind.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from castbook.errors import FieldError
from castbook.providers import ProviderConfig, ProviderKey, load_providers, providers_path

__all__ = ["find_provider", "provider_keys"]


def find_provider(
    home: str | os.PathLike[str],
    environ: Mapping[str, str],
    kind: str,
    name: object = None,
    *,
    base_url: str | None = None,
    first_of_kind: bool = False,
) -> ProviderConfig | None:
    """The ``kind`` provider named ``name``, else the first at ``base_url`` (or the first of
    its kind with ``first_of_kind``), else None.

    The file is read on every call, so a key added with ``castbook providers key add`` is
    used by a running server without a restart."""
    providers = [p for p in load_providers(home, environ) if p.kind == kind]
    if name is not None:
        for provider in providers:
            if provider.name == str(name):
                return provider
        known = ", ".join(p.name for p in providers) or "none"
        raise FieldError(
            "options.provider",
            f"no provider {str(name)!r} of kind {kind} in {providers_path(Path(home))} "
            f"({kind} providers there: {known}; add it with `castbook providers add "
            f"{name} --kind {kind}`)",
        )
    if first_of_kind:
        return providers[0] if providers else None
    if base_url is None:
        return None
    wanted = base_url.strip().rstrip("/")
    for provider in providers:
        if provider.base_url.strip().rstrip("/") == wanted:
            return provider
    return None


def provider_keys(
    provider: ProviderConfig | None, fallback_name: str, environ: Mapping[str, str], env: str
) -> tuple[str, list[ProviderKey]]:
    """The key ring's name and the keys a hosted backend tries: the provider's, then the key
    in the environment variable ``env`` (a paid one) unless the provider already holds it."""
    name = provider.name if provider is not None else fallback_name
    keys = list(provider.keys) if provider is not None else []
    from_env = (environ.get(env) or "").strip()
    if from_env and all(key.key != from_env for key in keys):
        keys.append(ProviderKey(name, from_env, "paid", name=env))
    return name, keys
