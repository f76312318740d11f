#!/usr/bin/env bash
# The screen.threshold rerun as the `emoflow run` command (a fresh process each time, imports
# included), this tree beside an older revision, alternated so both meet the same machine load.
# Needs a running Prefect server (PREFECT_API_URL). Tiny random emotion2vec and SenseVoice (TEST
# MODELS): a rerun reuses every model stage, so their size does not matter.
#
#   PREFECT_API_URL=http://127.0.0.1:4200/api benchmarks/rerun_command.sh [BASE_REV] [FILES] [TIMES]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="${1:-3b8f233}"; N="${2:-10}"; TIMES="${3:-3}"
PY="${PYTHON:-$("$ROOT/scripts/setup.sh")/bin/python}"
: "${PREFECT_API_URL:?start a Prefect server and set PREFECT_API_URL}"
export EMOFLOW_OFFLINE=1 HF_HUB_OFFLINE=1 EMOFLOW_PROGRESS=0
WORK="$(mktemp -d)"
trap 'git -C "$ROOT" worktree remove --force "$WORK/base" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
git -C "$ROOT" worktree add --detach -q "$WORK/base" "$BASE"
"$PY" - "$WORK" <<'PYEOF'
import sys
sys.path.insert(0, ".")
from tasks.models.testmodels import build_emotion2vec_dir
from tasks.transcription.testmodel import build_sensevoice_dir
build_emotion2vec_dir(f"{sys.argv[1]}/e2v", size="tiny", seed=0)
build_sensevoice_dir(f"{sys.argv[1]}/sv", size="tiny", seed=0)
PYEOF
mapfile -t FILES < <(head -n "$N" "$ROOT/../shared/data/ami/debug.train.lst" | sed "s#^#$ROOT/../shared/data/ami/#; s#\$#.flac#")
run() {  # code root, out dir, extra sets...
  local code="$1" out="$2"; shift 2
  (cd "$code" && PYTHONPATH="$code" "$PY" -m flows.cli run "${FILES[@]}" --out "$out" \
     --set "emotion.model=$WORK/e2v" "$@" >/dev/null 2>&1)
}
NEW_SETS=(--set "transcribe.model=$WORK/sv")
run "$WORK/base" "$WORK/out-base"; run "$ROOT" "$WORK/out-new" "${NEW_SETS[@]}"  # cold runs
echo "# ${#FILES[@]} AMI files, $TIMES alternations; base $BASE vs $(git -C "$ROOT" rev-parse --short HEAD) (+ working tree)"
for i in $(seq 1 "$TIMES"); do
  t="0.6$i"
  s=$(date +%s.%N); run "$WORK/base" "$WORK/out-base" --set "screen.threshold=$t"; e=$(date +%s.%N)
  printf 'base  threshold %s  %.2f s\n' "$t" "$(echo "$e - $s" | bc)"
  s=$(date +%s.%N); run "$ROOT" "$WORK/out-new" "${NEW_SETS[@]}" --set "screen.threshold=$t"; e=$(date +%s.%N)
  printf 'new   threshold %s  %.2f s\n' "$t" "$(echo "$e - $s" | bc)"
done
