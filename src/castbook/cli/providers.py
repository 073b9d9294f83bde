"""``castbook providers``: the hosted providers and their keys in ``providers.toml``.

Keys are read from a hidden prompt, or from stdin when it is piped — never from the
command line, where they would land in the shell's history and in ``ps`` — and are shown
masked (``AIz…abcd``) everywhere.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from castbook.cli.console import console, print_json
from castbook.cli.errors import report_error, reports_errors
from castbook.errors import FieldError
from castbook.settings import Settings

__all__ = ["providers_app"]

providers_app = typer.Typer(
    help="Hosted providers (OpenAI-compatible, Gemini, ComfyUI) and their API keys.",
    no_args_is_help=True,
)
key_app = typer.Typer(
    help="Add or remove a provider's keys (read from a prompt or stdin).", no_args_is_help=True
)
providers_app.add_typer(key_app, name="key")


def _home():
    return Settings.from_env().home


def _cooling(seconds: float | None) -> str:
    return f"{seconds:g} s" if seconds else "—"


@providers_app.command("list")
@reports_errors
def list_providers(json_output: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every provider and its keys (masked), with each key's tier and what the last
    `castbook providers test` found: its error and the cool-down a 429 asked for."""
    from castbook.providers.manage import describe_providers

    providers = describe_providers(_home())
    if json_output:
        print_json(providers)
        return
    if not providers:
        console.print(
            "No providers yet. Add one with: castbook providers add NAME --kind gemini|openai|"
            "comfyui [--base-url URL] [--model MODEL]"
        )
        return
    for provider in providers:
        where = (
            "from the environment (CASTBOOK_EXTRACT_API_KEY …)"
            if provider["source"] == "environment"
            else ""
        )
        console.print(
            f"[bold]{escape(provider['name'])}[/] ({provider['kind']}) "
            f"{escape(provider['base_url'])}  model: {escape(provider['model'] or '—')}  "
            f"image work: {provider['image_keys_first']} keys first {where}".rstrip()
        )
        if not provider["keys"]:
            console.print(
                f"  no keys: castbook providers key add {escape(provider['name'])} --tier free"
            )
            continue
        for key in provider["keys"]:
            # One line per key, not a table: an error message is long and must stay whole.
            checked = f"checked {key['checked_at']}" if key["checked_at"] else "never checked"
            parts = [f"  #{key['index']} {key['key']} {key['tier']}", checked]
            if key["last_error"]:
                parts.append(f"last error: {key['last_error']}")
            if key["cooling_for"]:
                parts.append(f"cooling down for {_cooling(key['cooling_for'])} more")
            console.print(escape("  ".join(parts)))
    console.print(
        "[dim]Errors and cool-downs are those `castbook providers test` recorded; a running "
        "server or worker keeps the cool-downs it meets in its own memory.[/]"
    )


@providers_app.command("add")
@reports_errors
def add(
    name: str = typer.Argument(..., help="A name: letters, digits, '_' and '-'."),
    kind: str = typer.Option(..., "--kind", help="gemini, openai (OpenAI-compatible) or comfyui."),
    base_url: str | None = typer.Option(
        None, "--base-url", help="The API root (default for gemini: Google's public endpoint)."
    ),
    model: str | None = typer.Option(None, "--model", help="The default model."),
    prefer: str | None = typer.Option(
        None, "--prefer", help="free|paid: the tier image generation tries first (default paid)."
    ),
) -> None:
    """Add a provider (without keys: add them with `castbook providers key add`)."""
    from castbook.providers.manage import add_provider

    provider = add_provider(_home(), name, kind=kind, base_url=base_url, model=model, prefer=prefer)
    console.print(
        f"Added provider {escape(provider.name)} ({provider.kind}, {escape(provider.base_url)}). "
        f"Add a key with: castbook providers key add {escape(provider.name)} --tier free"
    )


@providers_app.command("set")
@reports_errors
def set_(
    name: str = typer.Argument(..., help="The provider to change."),
    base_url: str | None = typer.Option(
        None, "--base-url", help='The API root ("" for the kind\'s default, where it has one).'
    ),
    model: str | None = typer.Option(None, "--model", help='The default model ("" clears it).'),
    prefer: str | None = typer.Option(
        None, "--prefer", help="free|paid: the tier image generation tries first."
    ),
) -> None:
    """Change a provider's base URL, default model or preferred tier; its keys stay."""
    from castbook.providers import IMAGE, tier_order
    from castbook.providers.manage import edit_provider

    given = {"base_url": base_url, "model": model, "prefer": prefer}
    changes = {field: value for field, value in given.items() if value is not None}
    if not changes:
        raise FieldError("set", "nothing to change: give --base-url, --model or --prefer")
    provider = edit_provider(_home(), name, changes)
    model_text = provider.model or "—"
    console.print(
        f"Provider {escape(provider.name)} ({provider.kind}): {escape(provider.base_url)}  "
        f"model: {escape(model_text)}  image work: {tier_order(provider, IMAGE)} keys first"
    )


@providers_app.command("remove")
@reports_errors
def remove(name: str = typer.Argument(..., help="The provider to remove, with its keys.")) -> None:
    """Remove a provider and every key it holds."""
    from castbook.providers.manage import remove_provider

    provider = remove_provider(_home(), name)
    console.print(f"Removed provider {escape(provider.name)} and its {len(provider.keys)} key(s).")


def _stdin_is_piped() -> bool:
    return not sys.stdin.isatty()


def _read_key() -> str:
    """The key from stdin when it is piped, else from a hidden prompt."""
    if _stdin_is_piped():
        text = sys.stdin.read()
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) != 1:
            raise FieldError("key", f"stdin must hold exactly one key, got {len(lines)} line(s)")
        return lines[0]
    return typer.prompt("API key (hidden)", hide_input=True).strip()


@key_app.command("add")
@reports_errors
def key_add(
    name: str = typer.Argument(..., help="The provider."),
    tier: str = typer.Option("paid", "--tier", help="free or paid."),
) -> None:
    """Add a key to a provider; the key is read from a hidden prompt, or from stdin
    (`pass show gemini | castbook providers key add google --tier free`)."""
    from castbook.providers.manage import add_key, find_provider

    if tier not in ("free", "paid"):
        raise FieldError("tier", f"must be 'free' or 'paid', not {tier!r}")
    find_provider(_home(), name)  # an unknown provider fails before asking for the key
    index, key, added = add_key(_home(), name, _read_key(), tier)
    what = "Added" if added else "Already there; set the tier of"
    console.print(
        f"{what} key #{index} {escape(key.masked)} ({key.tier}) of {escape(name)}. "
        f"Check it with: castbook providers test {escape(name)}"
    )


@key_app.command("remove")
@reports_errors
def key_remove(
    name: str = typer.Argument(..., help="The provider."),
    which: str = typer.Argument(
        ..., help="The key's index in `castbook providers list`, or its last 4+ characters."
    ),
) -> None:
    """Remove one key of a provider."""
    from castbook.providers.manage import remove_key

    key = remove_key(_home(), name, which)
    console.print(f"Removed key {escape(key.masked)} ({key.tier}) of {escape(name)}.")


@providers_app.command("test")
@reports_errors
def test(
    name: str = typer.Argument(..., help="The provider."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.5, help="Seconds per call."),
) -> None:
    """Make one cheap authenticated call with each key (listing models, or ComfyUI's
    system stats) and say which keys work; the outcome shows in `providers list`."""
    from castbook.providers.check import check_provider, check_url
    from castbook.providers.manage import find_provider, record_checks

    home = _home()
    provider = find_provider(home, name)
    checks = check_provider(provider, timeout=timeout)
    record_checks(
        home,
        name,
        [(c.key, None if c.ok else c.message, c.retry_after) for c in checks if c.key],
    )
    working = [c for c in checks if c.ok]
    if json_output:
        print_json(
            {
                "provider": name,
                "url": check_url(provider).split("?")[0],
                "working": len(working),
                "checks": [c.to_json() for c in checks],
            }
        )
    else:
        for check in checks:
            label = f"{check.key.masked} ({check.key.tier})" if check.key else "no key"
            mark = "[green]ok[/]" if check.ok else "[red]failed[/]"
            console.print(f"{escape(label)}: {mark} {escape(check.message)}")
    if not working:
        if provider.keys:
            raise report_error(f"no key of provider {name!r} works")
        raise report_error(f"provider {name!r} failed its check: {checks[0].message}")
