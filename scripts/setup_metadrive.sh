#!/usr/bin/env bash
# Usage: scripts/setup_metadrive.sh VENV
#
# A virtual environment for `perception sim --simulator metadrive` (docs/simulators.md):
#   1. Debian's EGL/Mesa packages for headless rendering, when missing (apt-get, as root);
#   2. VENV with metadrive-simulator==0.4.3 (needs Python 3.11 or older: PYTHON=python3.11 by
#      default) and this project (editable, with the [cpu] extra). MetaDrive pins the GUI build
#      of OpenCV, which must not meet the project's own environment: hence a separate one;
#   3. MetaDrive's asset folder, built offline from PyPI (sim_bridge/metadrive_assets.py):
#      MetaDrive would otherwise download it from GitHub at first use.
# Each step says what failed; the script is safe to run again (what is there is kept).
set -euo pipefail
venv=${1:?usage: scripts/setup_metadrive.sh VENV}
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3.11}
fail() { echo "setup_metadrive: $*" >&2; exit 1; }
say() { echo "setup_metadrive: $*" >&2; }

gl_packages=(libegl1 libegl-mesa0 libgl1-mesa-dri libgl1)
missing=()
for package in "${gl_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        fail "Debian packages ${missing[*]} (EGL for headless rendering) are missing, and" \
             "this is not root with apt-get: install them, then run this again"
    fi
    say "installing ${missing[*]}"
    { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; } \
        || fail "apt-get could not install ${missing[*]}"
fi

command -v "$python" >/dev/null || fail "$python not found: MetaDrive 0.4.3 needs Python" \
    "3.11 or older (set PYTHON=/path/to/python3.11)"
"$python" -c 'import sys; sys.exit(not (3, 8) <= sys.version_info[:2] <= (3, 11))' \
    || fail "$python is not Python 3.8-3.11 (MetaDrive 0.4.3 requires <3.12)"
if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv"
    "$python" -m venv "$venv" || fail "could not create the virtual environment $venv"
fi
say "installing metadrive-simulator==0.4.3 and this project into $venv"
"$venv/bin/pip" install -q metadrive-simulator==0.4.3 \
    || fail "pip could not install metadrive-simulator==0.4.3"
# torch for the DQN behaviour layer (`perception behaviour`); 2.13.0 as the README's test command
"$venv/bin/pip" install -q 'torch==2.13.0' -e "$repo[cpu,behaviour]" \
    || fail "pip could not install $repo[cpu,behaviour]"

site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
assets="$site/metadrive/assets"
if ! "$venv/bin/python" -m sim_bridge.metadrive_assets --target "$assets" --check 2>/dev/null
then
    wheels=$(mktemp -d)
    trap 'rm -rf "$wheels"' EXIT
    say "building MetaDrive's assets from metadrive-simulator==0.2.6.0 (PyPI)"
    "$venv/bin/pip" download -q --no-deps -d "$wheels" metadrive-simulator==0.2.6.0 \
        || fail "pip could not download metadrive-simulator==0.2.6.0 (its assets)"
    "$venv/bin/python" -m sim_bridge.metadrive_assets --target "$assets" \
        --wheel "$wheels"/metadrive_simulator-0.2.6.0-*.whl \
        --sphere "$site/panda3d/models/misc" || fail "could not build $assets"
fi
say "ready: $venv/bin/perception sim --simulator metadrive --map SCrC"
