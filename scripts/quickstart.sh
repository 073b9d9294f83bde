#!/usr/bin/env bash
# The library quick start: builds a small library in ./.castbook-quickstart (never your own
# ~/.castbook) and walks through add, list, show, edit, prompt, export, import and delete.
set -euo pipefail
cd "$(dirname "$0")/.."

demo="$PWD/.castbook-quickstart"
rm -rf "$demo"
mkdir -p "$demo/pictures"
export CASTBOOK_HOME="$demo/library"
unset CASTBOOK_DATABASE_URL CASTBOOK_BLOB_DIR
cb=(.venv/bin/castbook)
step() {
    printf '\n\033[1m$ castbook'
    for arg in "$@"; do
        if [[ $arg == *" "* ]]; then printf " '%s'" "$arg"; else printf ' %s' "$arg"; fi
    done
    printf '\033[0m\n'
    "${cb[@]}" "$@"
}

.venv/bin/python scripts/make_demo_pictures.py "$demo/pictures"

step character add --name Alice --image "$demo/pictures/alice-front.png" \
    --image "$demo/pictures/alice-side.png" \
    --style "long black hair, blue eyes, white shirt, silver necklace" \
    --hair "long black" --eyes blue --clothing "white shirt" \
    --accessory "silver necklace" --feature "small mole under the left eye" --tag cafe
step character add --name Bob --image "$demo/pictures/bob.png" \
    --style "short red hair, green eyes, denim jacket" --negative "beard" --tag cafe
step character add --name 主角 --image "$demo/pictures/hero.jpg" --style "黑色长发，红色围巾"
step character list
step character show Alice
step character edit Alice --primary 2 --accessory "silver necklace" --accessory "round glasses"
step prompt "sharing a table at a cafe, morning light" --character Alice --character Bob
step character export --all --output "$demo/library.json"
step character export Alice Bob --format nbp --output "$demo/library-nbp.json"
step character delete Bob --yes
step character list

export CASTBOOK_HOME="$demo/second-library"
step character import "$demo/library.json"
step character list

printf '\nDone. The demo library is in %s; your own library is untouched.\n' "$demo"
