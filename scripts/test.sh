#!/usr/bin/env bash
# Install what the tests need (first time only) and run the test suite offline.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$("$ROOT/scripts/setup.sh" --test)"
cd "$ROOT"
export EMOFLOW_OFFLINE=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
