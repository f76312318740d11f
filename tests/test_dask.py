"""Scale-out: the same run on a local 2-worker Dask cluster gives the same results."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from flows.pipeline import run_pipeline
from tasks.core.config import load_config

pytestmark = pytest.mark.slow


def test_dask_runner_matches_thread_runner(prefect_harness, shared_data: Path, tiny_model_dir: Path,
                                           tmp_path: Path) -> None:
    pytest.importorskip("prefect_dask")
    from distributed import LocalCluster

    files = [str(shared_data / "ami" / "dev00.flac"), str(shared_data / "ami" / "trn03.flac")]
    base = [f"emotion.model={tiny_model_dir}", "report.enabled=false", "denoise.enabled=false"]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        cfg = load_config(None, [*base, "runner.kind=dask", f"runner.address={cluster.scheduler_address}"])
        dask_summary = run_pipeline(files, config=cfg, out_dir=tmp_path / "dask")
        workers = set(cluster.scheduler_info["workers"])
    assert dask_summary.recordings == 2 and not dask_summary.failed and len(workers) == 2
    thread_summary = run_pipeline(files, config=load_config(None, base), out_dir=tmp_path / "thread")
    assert thread_summary.recordings == 2
    a = pd.read_parquet(tmp_path / "dask" / "segments.parquet")
    b = pd.read_parquet(tmp_path / "thread" / "segments.parquet")
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-5)
