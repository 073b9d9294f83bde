"""The end of scripts/start.sh: which presets can generate on this machine, and the one
command that makes one runnable when none can. Reads the local cache only (no network)."""

from __future__ import annotations

from castbook.generation import load_presets
from castbook.models import SizeBook, models_of
from castbook.models.status import STARTER_PRESET
from castbook.settings import Settings


def main() -> None:
    home = Settings.from_env().home
    sizes = SizeBook(home)
    local = [models_of(p, sizes) for p in load_presets(home) if p.backend == "diffusers"]
    runnable = [m.preset_id for m in local if m.runnable]
    print()
    if runnable:
        print(f"Local models ready: {', '.join(runnable)} (castbook models list shows all).")
        return
    starter = next((m for m in local if m.preset_id == STARTER_PRESET), local[0] if local else None)
    print("No local model is installed yet, so nothing can be generated on this machine.")
    if starter is not None:
        print(f"Make one runnable with:  .venv/bin/{starter.pull_command()}")
        print(f"  (or: CASTBOOK_PULL={starter.preset_id} bash scripts/start.sh)")
    print("See README.md, 'Getting a model', for sizes, disk and GPU needs.")


if __name__ == "__main__":
    main()
