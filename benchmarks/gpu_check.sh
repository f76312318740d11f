#!/usr/bin/env bash
# One device check: on a machine with a GPU it prints, in under 8 minutes,
#   1. the emotion engine against funasr's loop (full-size random emotion2vec_plus_large, batched),
#   2. the transcribe stage's engine against funasr's loop and against the emotion engine
#      (full-size random SenseVoiceSmall, one clip per forward and batched),
#   3. the pipeline's real-time factor on the 10 AMI debug.train excerpts (cold run, then a
#      screen.threshold rerun).
# It runs on the CPU too (--quick: fewer clips, 2 AMI files), so it is known to work before it
# ever meets a GPU. Random-weight models: speed and memory only, never their outputs.
#
#   benchmarks/gpu_check.sh            # on the GPU machine
#   benchmarks/gpu_check.sh --quick    # anywhere, a few minutes on 2 CPU cores
#
# PYTHON=... picks the interpreter (default: the emoflow venv, installed by scripts/setup.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$("$ROOT/scripts/setup.sh")/bin/python}"
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
export EMOFLOW_OFFLINE=1 HF_HUB_OFFLINE=1 EMOFLOW_PROGRESS=0 PYTHONUNBUFFERED=1
if [ "$QUICK" = 1 ]; then N_EMO=6; N_SV=4; FILES=2; else N_EMO=60; N_SV=40; FILES=10; fi

echo "== device"
"$PY" - <<'PYEOF'
import platform, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU run)"
print(f"python {platform.python_version()}, torch {torch.__version__}, GPU: {gpu}, CPU threads {torch.get_num_threads()}")
PYEOF
# padded batches on a GPU; on a CPU each engine's default (one clip per forward, measured faster)
BATCH=()
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" && BATCH=(--batch-seconds 60)
echo "== 1. emotion engine vs funasr loop ($N_EMO segments ${BATCH[*]:-one clip per forward})"
"$PY" benchmarks/emotion_speed.py --n "$N_EMO" "${BATCH[@]}"
echo "== 2. transcription vs funasr loop vs emotion engine ($N_SV clips)"
"$PY" benchmarks/transcribe_speed.py --n "$N_SV" "${BATCH[@]}"
echo "== 3. pipeline real-time factor on $FILES AMI debug.train excerpts (temporary Prefect server)"
"$PY" benchmarks/pipeline_speed.py --files "$FILES" --model large
