"""Embedding tools over one or more run directories: nearest segments and k-means clusters.

Embeddings are read from a run's ``embeddings.npy`` + ``embeddings_index.csv`` (falling back to
``recordings/<id>/embeddings/<segment_id>.npy`` when the joint file is missing) and joined with
``segments.parquet`` for their metadata. Segments are keyed by ``(run, segment_id)``, so the same
segment id in two runs stays two rows. All runs must share one embedding dimension (one model
family); mixing e.g. D=1024 and D=768 raises :class:`EmbeddingError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Literal

import numpy as np
import pandas as pd

from tasks.core.storage import atomic_write_bytes

META_COLUMNS = ["run", "segment_id", "recording_id", "speaker", "start", "end", "label", "confidence", "text"]


class EmbeddingError(ValueError):
    """Embeddings cannot be loaded or compared; the message is one line for the user."""


def _as_list(run_dirs: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    out: list[Path] = []
    for r in run_dirs:
        p = Path(r).resolve()
        if p not in out:
            out.append(p)
    if not out:
        raise EmbeddingError("no run directories given")
    return out


def _load_one(run: Path) -> tuple[pd.DataFrame, np.ndarray]:
    if not run.is_dir():
        raise EmbeddingError(f"{run}: run directory not found")
    from tasks.output.report import read_segments

    seg = read_segments(run)
    if (run / "embeddings.npy").is_file() and (run / "embeddings_index.csv").is_file():
        emb = np.load(run / "embeddings.npy", allow_pickle=False)
        idx = pd.read_csv(run / "embeddings_index.csv", dtype={"segment_id": str})
        if len(idx) and (idx["row"].max() >= len(emb) or idx["row"].min() < 0):
            raise EmbeddingError(f"{run}: embeddings_index.csv points past embeddings.npy ({len(emb)} rows)")
        vectors = emb[idx["row"].to_numpy(dtype=int)] if len(idx) else np.zeros((0, emb.shape[-1] if emb.ndim == 2 else 0))
        from tasks.core.csvsafe import unguard

        ids = [unguard(i) for i in idx["segment_id"].tolist()]
    else:
        files = sorted((run / "recordings").glob("*/embeddings/*.npy"))
        ids = [f.stem for f in files]
        vectors = np.stack([np.load(f, allow_pickle=False).reshape(-1) for f in files]) if files else np.zeros((0, 0))
    meta = pd.DataFrame({"segment_id": ids})
    cols = [c for c in META_COLUMNS if c in seg.columns and c != "segment_id"]
    meta = meta.merge(seg[["segment_id"] + cols].drop_duplicates("segment_id"), on="segment_id", how="left")
    meta.insert(0, "run", str(run))
    return meta, np.asarray(vectors, dtype=np.float32)


def load_embeddings(run_dirs: str | Path | Iterable[str | Path]) -> tuple[pd.DataFrame, np.ndarray]:
    """Metadata (``run, segment_id, recording_id, speaker, start, end, label, confidence``) and (n, D) vectors."""
    metas, vecs = [], []
    for run in _as_list(run_dirs):
        meta, v = _load_one(run)
        if len(meta):
            metas.append(meta)
            vecs.append(v)
    if not metas:
        raise EmbeddingError("no exported embeddings in " + ", ".join(str(r) for r in _as_list(run_dirs)))
    dims = {v.shape[1] for v in vecs}
    if len(dims) > 1:
        raise EmbeddingError(f"runs have different embedding dimensions {sorted(dims)}: compare runs of one model")
    return pd.concat(metas, ignore_index=True), np.concatenate(vecs)


def _normalise(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(n == 0, 1.0, n)


def similar(run_dirs: str | Path | Iterable[str | Path], segment_id: str, *, top: int = 10) -> pd.DataFrame:
    """The ``top`` segments most similar (cosine) to ``segment_id``, most similar first.

    The query itself is included (first, similarity 1). ``segment_id`` may be
    ``"<run_dir>:<segment_id>"`` to pick it from one run when several runs hold that id; otherwise
    the first run (in the order given) that has it is used.

    Returns
    -------
    DataFrame: ``rank, similarity`` and the metadata columns.
    """
    meta, vecs = load_embeddings(run_dirs)
    run_key = None
    sid = segment_id
    if ":" in segment_id and not (meta["segment_id"] == segment_id).any():
        run_part, sid = segment_id.rsplit(":", 1)
        run_key = str(Path(run_part).resolve())
    hits = meta.index[(meta["segment_id"] == sid) & ((meta["run"] == run_key) if run_key else True)]
    if not len(hits):
        raise EmbeddingError(f"segment {segment_id!r} has no exported embedding in the given runs")
    q = int(hits[0])
    unit = _normalise(vecs.astype(np.float64))
    sims = unit @ unit[q]
    sims[q] = 1.0  # exactly, despite rounding
    order = np.argsort(-sims, kind="stable")
    order = np.concatenate([[q], order[order != q]])[: max(int(top), 1)]
    out = meta.iloc[order].reset_index(drop=True)
    out.insert(0, "similarity", np.clip(sims[order], -1.0, 1.0))
    out.insert(0, "rank", np.arange(len(out)))
    return out


def cluster(run_dirs: str | Path | Iterable[str | Path], *, k: int | Literal["auto"] = "auto",
            out_dir: str | Path, k_max: int = 10, seed: int = 0) -> pd.DataFrame:
    """k-means on L2-normalised embeddings (k by best silhouette when ``"auto"``).

    Writes ``clusters.csv`` (metadata, ``cluster``, ``pc1``, ``pc2``) and ``clusters.png`` (PCA
    projection coloured by cluster, marker by top emotion) into ``out_dir``.

    Returns
    -------
    The ``clusters.csv`` table; ``attrs`` holds ``k``, ``silhouette`` (of the chosen k) and
    ``silhouettes`` ({k: score} tried when auto).
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    meta, vecs = load_embeddings(run_dirs)
    n = len(meta)
    x = _normalise(vecs.astype(np.float64))
    scores: dict[int, float] = {}
    if k == "auto":
        if n < 3:
            raise EmbeddingError(f"k='auto' needs at least 3 embeddings, got {n}")
        best = None
        for kk in range(2, min(k_max, n - 1) + 1):
            labels = KMeans(n_clusters=kk, n_init=10, random_state=seed).fit_predict(x)
            if len(set(labels)) < 2:
                continue
            scores[kk] = float(silhouette_score(x, labels))
            if best is None or scores[kk] > scores[best[0]] + 1e-12:
                best = (kk, labels)
        if best is None:
            raise EmbeddingError("k-means found no two distinct clusters (all embeddings equal?)")
        k_final, labels = best
    else:
        k_final = int(k)
        if not 1 <= k_final <= n:
            raise EmbeddingError(f"k={k_final} must be between 1 and the number of embeddings ({n})")
        labels = KMeans(n_clusters=k_final, n_init=10, random_state=seed).fit_predict(x)
    sil = float(silhouette_score(x, labels)) if 1 < len(set(labels)) < n else float("nan")
    n_comp = min(2, n, x.shape[1])
    proj = PCA(n_components=n_comp, random_state=seed).fit_transform(x) if n_comp >= 1 else np.zeros((n, 0))
    proj = np.pad(proj, ((0, 0), (0, 2 - proj.shape[1])))
    table = meta.copy()
    table["cluster"] = labels.astype(int)
    table["pc1"], table["pc2"] = proj[:, 0], proj[:, 1]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from tasks.core.csvsafe import write_csv

    write_csv(table, out / "clusters.csv")  # text quoted, formula-like cells guarded
    atomic_write_bytes(out / "clusters.png", _cluster_png(table, k_final, sil))
    table.attrs.update(k=k_final, silhouette=sil, silhouettes=scores)
    return table


def _cluster_png(table: pd.DataFrame, k: int, sil: float) -> bytes:
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from tasks.output.plots import png_bytes
    from tasks.core.records import EMOTIONS

    fig = Figure(figsize=(7.5, 5.5))
    ax = fig.add_subplot(111)
    cmap = matplotlib.colormaps["tab10"]
    markers = dict(zip(EMOTIONS, "o^sDvP*XH"))
    for label, grp in table.groupby(table["label"].fillna("unknown").astype(str)):
        ax.scatter(grp["pc1"], grp["pc2"], c=[cmap(c % 10) for c in grp["cluster"]], marker=markers.get(label, "o"),
                   s=28, edgecolors="black", linewidths=0.3, alpha=0.85)
    handles = [Line2D([], [], marker="o", linestyle="", color=cmap(c % 10), label=f"cluster {c}") for c in range(k)]
    handles += [Line2D([], [], marker=markers.get(e, "o"), linestyle="", color="#555", label=e)
                for e in EMOTIONS if (table["label"] == e).any()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    runs = table["run"].nunique()
    ax.set_title(f"{len(table)} segment embeddings from {runs} run(s): k-means k={k}, silhouette {sil:.2f}",
                 fontsize=10, loc="left")
    ax.grid(alpha=0.3)
    return png_bytes(fig)
