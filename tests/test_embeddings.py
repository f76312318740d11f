"""Embedding tools: cosine neighbours and k-means over one or several run directories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from tasks.output.similarity import EmbeddingError, cluster, load_embeddings, similar
from tests.rundir_factory import make_run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("emb")
    # one run with three recordings and three planted clusters, a second run for cross-run checks
    a = make_run_dir(root / "a", seed=11, n_recordings=3, duration_s=60, n_clusters=3)
    b = make_run_dir(root / "b", seed=12, n_recordings=2, duration_s=40, n_clusters=3)
    return a, b


def test_similar_returns_itself_first(runs):
    a, _ = runs
    sid = next(iter(a.clusters))
    df = similar([a.path], sid, top=5)
    assert len(df) == 5
    assert df.segment_id.iloc[0] == sid and df.similarity.iloc[0] == 1.0 and df["rank"].iloc[0] == 0
    assert df.similarity.is_monotonic_decreasing
    # neighbours come from the same planted cluster
    same = [a.clusters[s] == a.clusters[sid] for s in df.segment_id.iloc[1:4]]
    assert all(same)
    assert {"recording_id", "speaker", "start", "end", "label", "confidence", "run"} <= set(df.columns)


def test_similar_matches_numpy_cosine(runs):
    a, _ = runs
    meta, vecs = load_embeddings(a.path)
    sid = meta.segment_id.iloc[4]
    df = similar(a.path, sid, top=len(meta))
    q = vecs[4] / np.linalg.norm(vecs[4])
    expected = {s: float(v @ q / np.linalg.norm(v)) for s, v in zip(meta.segment_id, vecs)}
    for s, sim in zip(df.segment_id, df.similarity):
        assert sim == pytest.approx(expected[s], abs=1e-6)


def test_similar_across_runs_and_unknown_segment(runs):
    a, b = runs
    sid = next(iter(b.clusters))
    df = similar([a.path, b.path], sid, top=1000)
    assert df.iloc[0].segment_id == sid and df.iloc[0].run == str(b.path.resolve())
    assert set(df.run) == {str(a.path.resolve()), str(b.path.resolve())}
    assert len(df) == len(a.clusters) + len(b.clusters)
    with pytest.raises(EmbeddingError, match="no exported embedding"):
        similar([a.path], "nope_0001")


def test_cluster_auto_finds_planted_clusters(runs, tmp_path):
    a, _ = runs
    df = cluster([a.path], k="auto", out_dir=tmp_path)
    assert df.attrs["k"] == 3
    truth = [a.clusters[s] for s in df.segment_id]
    assert adjusted_rand_score(truth, df.cluster) == pytest.approx(1.0)
    written = pd.read_csv(tmp_path / "clusters.csv")
    assert list(written.segment_id) == list(df.segment_id)
    assert {"cluster", "pc1", "pc2", "label", "speaker"} <= set(written.columns)
    assert (tmp_path / "clusters.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cluster_fixed_k_across_runs(runs, tmp_path):
    a, b = runs
    df = cluster([a.path, b.path], k=4, out_dir=tmp_path / "out")
    assert df.attrs["k"] == 4 and df.cluster.nunique() == 4
    assert df.run.nunique() == 2
    with pytest.raises(EmbeddingError, match="must be between"):
        cluster([a.path], k=0, out_dir=tmp_path)


def test_per_segment_files_fallback(runs, tmp_path):
    import shutil

    a, _ = runs
    copy = tmp_path / "copy"
    shutil.copytree(a.path, copy)
    (copy / "embeddings.npy").unlink()
    meta, vecs = load_embeddings(copy)
    ref_meta, ref_vecs = load_embeddings(a.path)
    order = [ref_meta.segment_id.tolist().index(s) for s in meta.segment_id]
    np.testing.assert_array_equal(vecs, ref_vecs[order])
