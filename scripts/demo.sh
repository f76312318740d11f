#!/usr/bin/env bash
# Install emoflow (first time only) and run the main job on the example recordings in data/.
# The emotion model (iic/emotion2vec_plus_large) is fetched on first use where a hub is reachable;
# to use a local copy: scripts/demo.sh --set emotion.model=/path/to/emotion2vec_plus_large
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$("$ROOT/scripts/setup.sh")"
cd "$ROOT"
exec "$VENV/bin/emoflow" run data/ --out runs/demo "$@"
