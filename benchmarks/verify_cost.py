"""What checking the cache costs: time to verify every artefact of a run (sizes and sha256
against meta.json / .export.json), in a fresh process and again with the per-process cache.

    python benchmarks/verify_cost.py [--files 10] [--out DIR]

Runs the stages of ``--files`` AMI excerpts in this process (tiny random emotion model) into
``--out`` (kept, so a second call only measures), then times, in a new process, one pass of
:meth:`ArtefactStore.get` over every artefact plus :func:`published_facts` over every published
folder (what a full rerun reads), and a second pass (the per-process digest cache).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
AMI = ROOT.parent / "shared" / "data" / "ami"

MEASURE = r"""
import json, sys, time
from pathlib import Path
from tasks.pipeline.artefacts import ArtefactStore, published_facts, read_meta, PUBLISHED_RECORD
out = Path(sys.argv[1])
store = ArtefactStore(out / ".emoflow" / "artefacts")
folders = [d for s in sorted(store.root.iterdir()) for d in sorted(s.iterdir()) if (d / "meta.json").is_file()]
pubs = [d for d in sorted((out / "recordings").iterdir()) if (d / PUBLISHED_RECORD).is_file()]
nbytes = sum(p.stat().st_size for d in folders + pubs for p in d.rglob("*") if p.is_file())
times = []
for _ in range(2):
    t0 = time.perf_counter()
    ok = sum(store.get(d.parent.name, d.name) is not None for d in folders)
    ok += sum(published_facts(d, key=json.loads((d / PUBLISHED_RECORD).read_text())["key"]) is not None for d in pubs)
    times.append(time.perf_counter() - t0)
print(json.dumps({"artefacts": len(folders), "published": len(pubs), "verified": ok, "mb": round(nbytes / 2**20, 1),
                  "first_pass_s": round(times[0], 3), "cached_pass_s": round(times[1], 4)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="verify-cost-"))
    if not (out / "recordings").is_dir():
        from tasks.core.config import load_config
        from tasks.models.testmodels import build_emotion2vec_dir
        from tasks.pipeline.runner import run_stages
        from tasks.run.plan import prepare_run

        from tasks.transcription.testmodel import build_sensevoice_dir

        model = build_emotion2vec_dir(Path(tempfile.mkdtemp()), size="tiny", seed=0)
        sv = build_sensevoice_dir(Path(tempfile.mkdtemp()), size="tiny", seed=0)
        files = sorted(AMI.glob("*.flac"))[: args.files]
        cfg = load_config(None, [f"emotion.model={model}", f"transcribe.model={sv}"])
        t0 = time.perf_counter()
        jobs, _ = prepare_run([str(f) for f in files], config=cfg, out_dir=out)
        for job in jobs:
            run_stages(job)
        print(f"cold stages of {len(jobs)} files: {time.perf_counter() - t0:.1f} s in {out}", flush=True)
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(out)], cwd=ROOT, capture_output=True, text=True)
    print(proc.stdout.strip() or proc.stderr[-2000:])


if __name__ == "__main__":
    main()
