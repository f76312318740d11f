"""Two emoflow versions give the same results: run each on the same inputs, compare the tables.

Issue 22's check ("nothing a user sees changes"): the code of a git revision (checked out in a
temporary worktree) and the working tree each run on ``data/`` and 3 AMI excerpts with the same
randomly initialised tiny emotion2vec (TEST MODEL, seed 0), with a running Prefect server when
PREFECT_API_URL is set. Printed: the columns both tables have and whether every value matches
(ids, speakers, times, labels, scores, drilled, statuses, checksums), the embeddings, the RTTM
files and the segment JSON documents (keys both versions write).

    python benchmarks/same_results.py --base 3b8f233
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AMI = ROOT.parent / "shared" / "data" / "ami"
RUN = """
import os, sys
if os.path.exists("tasks/core/config.py"):
    from tasks.core.config import load_config
else:  # before the package layout of 0.3 (an import attempt would find the installed checkout's)
    from tasks.config import load_config
from flows.pipeline import run_pipeline
out, model, *inputs = sys.argv[1:]
cfg = load_config(None, [f"emotion.model={model}", "transcribe.enabled=false"] if "transcribe" in
                  load_config(None, []).to_plain() else [f"emotion.model={model}"])
print(run_pipeline(inputs, config=cfg, out_dir=out).describe())
"""


def run(code_root: Path, out: Path, model: Path, inputs: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(code_root), "EMOFLOW_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", RUN, str(out), str(model), *inputs], cwd=code_root, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{code_root}: run failed\n{proc.stderr[-3000:]}")
    print(f"{code_root}: {proc.stdout.strip().splitlines()[-1]}")


def compare(a: Path, b: Path) -> bool:
    import numpy as np
    import pandas as pd

    ta, tb = pd.read_parquet(a / "segments.parquet"), pd.read_parquet(b / "segments.parquet")
    common = [c for c in ta.columns if c in tb.columns]
    same = len(ta) == len(tb)
    print(f"segments: {len(ta)} vs {len(tb)} rows; {len(common)} common columns "
          f"(only in the newer: {[c for c in tb.columns if c not in ta.columns]})")
    for c in common:
        x, y = ta[c], tb[c]
        ok = bool((x.isna() == y.isna()).all() and (x[x.notna()].astype(str) == y[y.notna()].astype(str)).all())
        if not ok:
            print(f"  column {c} differs")
        same &= ok
    emb = np.array_equal(np.load(a / "embeddings.npy"), np.load(b / "embeddings.npy"))
    print(f"embeddings.npy identical: {emb}")
    same &= emb
    for rid in sorted(set(ta["recording_id"])):
        ra, rb = a / "recordings" / rid, b / "recordings" / rid
        rttm = (ra / "diarization.rttm").read_text() == (rb / "diarization.rttm").read_text()
        docs = 0
        for f in sorted((ra / "segments").glob("*.json")):
            da, db = json.loads(f.read_text()), json.loads((rb / "segments" / f.name).read_text())
            same &= all(da[k] == db[k] for k in da if k in db)
            docs += 1
        print(f"  {rid}: RTTM identical {rttm}; {docs} segment JSON compared")
        same &= rttm
    print("SAME RESULTS" if same else "RESULTS DIFFER")
    return same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="3b8f233", help="git revision to compare the working tree with")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from tasks.models.testmodels import build_emotion2vec_dir

    work = Path(tempfile.mkdtemp(prefix="emoflow-same-"))
    model = build_emotion2vec_dir(work / "tiny", size="tiny", seed=0)
    base = work / "base"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), args.base], cwd=ROOT, check=True)
    inputs = [str(p) for p in sorted((ROOT / "data").glob("*.*")) if p.suffix in (".flac", ".mp3", ".wav")]
    inputs += [str(AMI / f"{n}.flac") for n in ("trn00", "trn01", "dev01")]
    try:
        run(base, work / "out-base", model, inputs)
        run(ROOT, work / "out-new", model, inputs)
        ok = compare(work / "out-base", work / "out-new")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
