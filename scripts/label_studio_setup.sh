#!/usr/bin/env bash
# Install Label Studio in its own virtual environment, .venv-label-studio (its pins: label_studio_requirements.txt
# beside this script; they stay out of the tool's .venv). Re-installs only when the pins changed (a stamp, like
# ./run's). Used by `al-loop label-studio --setup` and by `./run test` (the Label Studio tests start a real server).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-label-studio
req=scripts/label_studio_requirements.txt
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
stamp=$venv/.al_label_studio_installed
want=$(sha1sum "$req" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -r "$req"
    echo "$want" > "$stamp"
fi
