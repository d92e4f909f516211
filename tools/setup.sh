#!/usr/bin/env bash
# Bring a fresh machine to the point where every Makefile target works:
#   1. uv (installed with pip when missing),
#   2. the system libraries that wheels cannot ship (open3d needs libusb-1.0; headless
#      MuJoCo rendering needs OSMesa/EGL), installed with apt-get when we are root,
#   3. the workspace environment (.venv) synced exactly to uv.lock.
# Safe to re-run: each step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*" >&2; }

# --- 1. uv --------------------------------------------------------------------------
if command -v uv >/dev/null 2>&1; then
  UV=(uv)
elif python3 -m uv --version >/dev/null 2>&1; then
  UV=(python3 -m uv)
else
  say "uv not found: installing it with pip"
  python3 -m pip install --quiet --disable-pip-version-check uv \
    || python3 -m pip install --quiet --disable-pip-version-check --user uv
  UV=(python3 -m uv)
fi

# --- 2. system libraries ------------------------------------------------------------
# library soname -> Debian package that provides it
declare -A SYSTEM_LIBS=(
  ["libusb-1.0.so.0"]="libusb-1.0-0"  # open3d (spatia's point-cloud memory)
  ["libOSMesa.so"]="libosmesa6"       # MuJoCo offscreen rendering without a GPU (internal-rl)
  ["libEGL.so.1"]="libegl1"           # MuJoCo EGL rendering on GPU machines
  ["libGL.so.1"]="libgl1"             # open3d / MuJoCo GL entry points
)
missing=()
for lib in "${!SYSTEM_LIBS[@]}"; do
  if ! ldconfig -p 2>/dev/null | grep -q "${lib}"; then
    missing+=("${SYSTEM_LIBS[$lib]}")
  fi
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    say "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "missing system packages: ${missing[*]}"
    say "install them first, e.g.: sudo apt-get install ${missing[*]}  (or your distribution's equivalent)"
    exit 1
  fi
fi

# --- 3. the workspace ---------------------------------------------------------------
# --locked: fail loudly if uv.lock is stale instead of silently re-resolving.
"${UV[@]}" sync --all-packages --locked --quiet
say "environment ready: $(.venv/bin/python -c 'import sys, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__}")')"
