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
# Debian package -> why. On Debian/Ubuntu they are checked with dpkg and installed with
# apt-get when we are root; elsewhere the core sonames are checked and the user is told.
declare -A SYSTEM_PACKAGES=(
  ["libusb-1.0-0"]="open3d (spatia's point-cloud memory) links libusb-1.0"
  ["libgl1"]="GL entry points for open3d and MuJoCo"
  ["libosmesa6"]="MuJoCo offscreen rendering without a GPU (MUJOCO_GL=osmesa)"
  ["libegl1"]="MuJoCo EGL rendering (MUJOCO_GL=egl)"
  ["libegl-mesa0"]="Mesa's EGL vendor library: software EGL on machines without an NVIDIA driver"
  ["libgl1-mesa-dri"]="Mesa's software rasteriser used by EGL/OSMesa on CPU-only machines"
)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in "${!SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
else
  for lib in libusb-1.0.so.0 libGL.so.1 libEGL.so.1; do
    ldconfig -p 2>/dev/null | grep -q "$lib" || missing+=("$lib")
  done
fi
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    say "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1
  else
    say "missing system libraries: ${missing[*]}"
    for pkg in "${missing[@]}"; do say "  $pkg: ${SYSTEM_PACKAGES[$pkg]:-needed by open3d / MuJoCo}"; done
    say "install them first (Debian/Ubuntu: sudo apt-get install ${missing[*]}), then re-run"
    exit 1
  fi
fi

# --- 3. the workspace ---------------------------------------------------------------
# --locked: fail loudly if uv.lock is stale instead of silently re-resolving.
"${UV[@]}" sync --all-packages --locked --quiet
say "environment ready: $(.venv/bin/python -c 'import sys, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__}")')"
