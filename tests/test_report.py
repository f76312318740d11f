"""The run report: every element present, self-contained, timeline PNGs written."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest

from tasks.core.config import ReportConfig
from tasks.output.report import build_report, load_run
from tests.rundir_factory import make_run_dir

SHARED_AMI = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ami"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    audio_dir = SHARED_AMI if (SHARED_AMI / "dev00.flac").is_file() else None
    rttm = SHARED_AMI / "debug.development.rttm"
    return make_run_dir(tmp_path_factory.mktemp("runs") / "run", seed=3,
                        reference_rttm=rttm if rttm.is_file() else None, audio_dir=audio_dir)


@pytest.fixture(scope="module")
def report(run) -> str:
    path = build_report(run.path)
    assert path == run.path / "report.html"
    return path.read_text(encoding="utf-8")


def test_timeline_png_per_recording(run, report):
    for rid in run.recording_ids:
        png = run.path / "recordings" / rid / "timeline.png"
        assert png.is_file(), rid
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert f'id="rec-{rid}"' in report
        assert f'alt="timeline of {rid}"' in report


def test_report_has_every_element(run, report):
    for alt in ("confidence histogram, threshold 0.7", "emotion distribution per speaker in",
                "frame scores of drilled segments in"):
        assert f'alt="{alt}' in report, alt
    assert 'id="lowest"' in report and "Lowest-confidence segments" in report
    assert "Resolved config (config.yaml)" in report and "threshold: 0.7" in report
    assert "tiny-test-model" in report  # model facts
    assert run.segments.model_sha256.iloc[0] in report
    assert "CorruptAudioError" in report  # failures.csv


def test_lowest_confidence_table_is_sorted_and_sized(run, report):
    scored = run.segments[run.segments.status == "ok"].sort_values("confidence")
    table = report.split('id="lowest"')[1].split("</section>")[0]
    ids = re.findall(r"<code>([^<]+_\d{4})</code>", table)
    assert ids == scored.segment_id.head(20).tolist()
    # every row has a playable, embedded clip
    clips = re.findall(r'<audio controls preload="none" src="data:audio/wav;base64,([A-Za-z0-9+/=]+)"', table)
    assert len(clips) == len(ids)
    wav = base64.b64decode(clips[0])
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE" and len(wav) > 1000


def test_report_is_self_contained(report):
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", report, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", report, re.I)
    assert "@import" not in report
    assert "<script" not in report.lower()  # nothing to fetch, nothing to run
    images = re.findall(r'<img [^>]*src="([^"]+)"', report)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    for src in images:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC


def test_test_model_banner(run, report, tmp_path):
    assert 'id="test-model-banner"' in report and "TEST MODEL (random weights)" in report
    real = make_run_dir(tmp_path / "real", seed=4, test_model=False, n_recordings=1, duration_s=20)
    text = build_report(real.path, config=ReportConfig(audio_players=False, lowest_confidence_rows=5)).read_text()
    assert "TEST MODEL" not in text
    assert "<audio" not in text
    table = text.split('id="lowest"')[1].split("</section>")[0]
    assert len(re.findall(r"<tr>", table)) == 1 + min(5, int((real.segments.status == "ok").sum()))


def test_unscored_segments_and_timeline_png_option(tmp_path):
    fake = make_run_dir(tmp_path / "r", seed=5, n_recordings=1, duration_s=25)
    text = build_report(fake.path, config=ReportConfig(timeline_png=False)).read_text()
    assert not (fake.path / "recordings" / fake.recording_ids[0] / "timeline.png").exists()
    assert 'alt="timeline of ' in text  # still inline in the report
    data = load_run(fake.path)
    unscored = data.segments[data.segments.status != "ok"]
    assert unscored.label.isna().all()
    assert f"{len(data.segments)} segments" in text


def test_empty_run_dir_still_renders(tmp_path):
    (tmp_path / "empty").mkdir()
    text = build_report(tmp_path / "empty").read_text()
    assert "No scored segments" in text and "<html" in text


def test_missing_run_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        build_report(tmp_path / "nope")


def test_csv_only_run_with_empty_labels_and_a_silent_recording(tmp_path):
    """segments.csv fallback, empty-string labels of unscored rows, a recording without segments."""
    import pandas as pd

    fake = make_run_dir(tmp_path / "r", seed=6, n_recordings=1, duration_s=20)
    seg = pd.read_parquet(fake.path / "segments.parquet")
    seg["label"] = seg["label"].fillna("")
    (fake.path / "segments.parquet").unlink()
    seg.to_csv(fake.path / "segments.csv", index=False)
    (fake.path / "recordings" / "silent").mkdir()
    text = build_report(fake.path).read_text()
    data = load_run(fake.path)
    assert data.segments.loc[data.segments.status != "ok", "label"].isna().all()
    assert 'id="rec-silent"' in text and (fake.path / "recordings" / "silent" / "timeline.png").is_file()
    assert f"{int((seg.status == 'ok').sum())} scored" in text


def _outlined(fig) -> int:
    """Bars drawn with a black edge (the timeline's "drilled down" outline)."""
    from matplotlib.colors import to_rgba

    black = to_rgba("black")
    return sum(tuple(edge) == black for coll in fig.axes[0].collections for edge in coll.get_edgecolors())


@pytest.mark.parametrize("drilldown", [False, True])
def test_report_and_plots_read_the_drilled_column(tmp_path, monkeypatch, drilldown):
    """With drill-down disabled nothing is drilled, although some confidences are below the
    threshold: the report, the histogram and the timelines say so (they read ``drilled``)."""
    import tasks.output.report as report_module

    fake = make_run_dir(tmp_path / "r", seed=7, n_recordings=2, duration_s=40, threshold=0.7, drilldown=drilldown)
    seg = fake.segments
    ok = seg[seg.status == "ok"]
    below = int((ok.confidence < 0.7).sum())
    assert below > 0 and seg.drilled.sum() == (below if drilldown else 0)
    figures: dict[str, list] = {"timeline": [], "histogram": []}

    def spy(name, real):
        def wrapped(*args, **kwargs):
            fig = real(*args, **kwargs)
            figures[name].append(fig)
            return fig
        return wrapped

    monkeypatch.setattr(report_module, "timeline_figure", spy("timeline", report_module.timeline_figure))
    import tasks.output.plots as plots_module

    monkeypatch.setattr(plots_module, "threshold_caption", spy("histogram", plots_module.threshold_caption))
    text = build_report(fake.path).read_text()
    drilled = below if drilldown else 0

    assert f"{below} segments below, {drilled} drilled down)" in text
    assert f'alt="confidence histogram, threshold 0.7, {drilled} drilled down"' in text
    (caption,) = figures["histogram"]
    assert f"{below} of {len(ok)} below" in caption and f"{drilled} drilled down" in caption
    assert len(figures["timeline"]) == len(fake.recording_ids)
    for rid, fig in zip(fake.recording_ids, figures["timeline"]):
        n = int(seg[(seg.recording_id == rid)].drilled.sum())
        assert _outlined(fig) == n, rid
        assert ("outlined: drilled down" in fig.axes[0].get_title(loc="left")) == bool(n)
        assert f"{n} drilled down)" in text.split(f'id="rec-{rid}"')[1].split("</section>")[0]
    assert ("Frame-level scores of drilled-down segments" in text) == drilldown


def test_the_report_writes_nothing_through_a_link(tmp_path):
    """``emoflow report`` on a run whose plot cache or a recording folder is a link (emoflow did
    not make it): the report is written, nothing lands in what the links point to."""
    import os
    import shutil

    fake = make_run_dir(tmp_path / "r", seed=6, n_recordings=2, duration_s=15)
    rid = fake.recording_ids[0]
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "plots").mkdir(parents=True)
    plots = fake.path / ".emoflow" / "plots"
    if plots.exists():
        shutil.rmtree(plots)
    plots.parent.mkdir(parents=True, exist_ok=True)
    plots.symlink_to(elsewhere / "plots")
    shutil.move(str(fake.path / "recordings" / rid), elsewhere / rid)
    (fake.path / "recordings" / rid).symlink_to(elsewhere / rid)
    before = {p: p.stat().st_mtime_ns for p in elsewhere.rglob("*") if p.is_file()}
    assert build_report(fake.path).is_file()
    after = {p: p.stat().st_mtime_ns for p in elsewhere.rglob("*") if p.is_file()}
    assert after == before and not list((elsewhere / "plots").iterdir())
    other = fake.path / "recordings" / fake.recording_ids[1] / "timeline.png"
    assert other.is_file()  # a folder of emoflow's own still gets its timeline
    assert os.path.islink(plots) and os.path.islink(fake.path / "recordings" / rid)


def test_a_rerun_leaves_no_output_derived_from_the_previous_tables(tmp_path):
    """report.html and `emoflow cluster`'s clusters.csv/png describe the tables they were made
    from: gone once a run writes new tables (a link among them is removed, not followed)."""
    from tasks.output.report import remove_report

    run = tmp_path / "run"
    run.mkdir()
    kept = tmp_path / "elsewhere.csv"
    kept.write_text("keep")
    for name in ("report.html", "clusters.png", "segments.csv"):
        (run / name).write_text("old")
    (run / "clusters.csv").symlink_to(kept)
    remove_report(run)
    assert sorted(p.name for p in run.iterdir()) == ["segments.csv"] and kept.read_text() == "keep"


@pytest.mark.parametrize("threshold", [0.05, 0.5, 0.7, 0.93, 1.0])
def test_histogram_threshold_drawn_where_matplotlib_draws_it(threshold):
    """The report draws the threshold on kept bars with Pillow: the line falls on matplotlib's
    own line (within a pixel), the bars and axes are matplotlib's pixels, the note is there in
    the threshold's colour, and a note near confidence 1 widens the picture instead of being cut."""
    import io

    from PIL import Image

    from tasks.output.plots import THRESHOLD_COLOUR, _histogram_axes, confidence_histogram_png, png_bytes, \
        threshold_caption

    def confidence_histogram_figure(conf, *, threshold, drilled):  # the same picture, all matplotlib
        fig, ax, conf = _histogram_axes(conf, 20)
        ax.axvline(threshold, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1.5)
        ax.text(threshold, ax.get_ylim()[1] * 0.95, threshold_caption(conf, threshold=threshold, drilled=drilled),
                color=THRESHOLD_COLOUR, va="top", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none", "pad": 1.5})
        return fig

    conf = np.random.default_rng(3).beta(5, 2, size=120)
    ours = np.asarray(Image.open(io.BytesIO(confidence_histogram_png(conf, threshold=threshold, drilled=4)))
                      .convert("RGB")).astype(int)
    theirs = np.asarray(Image.open(io.BytesIO(png_bytes(confidence_histogram_figure(conf, threshold=threshold,
                                                                                    drilled=4))))
                        .convert("RGB")).astype(int)

    def line_columns(img):
        red = (np.abs(img[..., 0] - 0xD6) < 40) & (img[..., 1] < 100) & (img[..., 2] < 100)
        return set(np.nonzero(red.sum(axis=0) > 60)[0].tolist())

    mine, mpl = line_columns(ours), line_columns(theirs)
    assert mine and mpl and max(abs(a - b) for a in mine for b in mpl) <= 1
    assert ours.shape[0] == theirs.shape[0]
    assert ours.shape[1] >= min(mine) + 60  # the note fits in the picture
    left = min(mpl) - 4  # left of the line (and its note) both pictures are matplotlib's bars and axes
    assert np.array_equal(ours[:, :left], theirs[:, :left])


def test_a_threshold_rerun_report_needs_no_matplotlib(tmp_path):
    """A report whose bars are kept (another ``screen.threshold`` over the same confidences)
    draws the threshold without importing matplotlib (0.4 s of a rerun)."""
    import subprocess
    import sys

    fake = make_run_dir(tmp_path / "r", seed=8, n_recordings=1, duration_s=30, threshold=0.7)
    first = build_report(fake.path).read_text()
    assert "plot histogram" in first
    code = (
        "import sys, yaml, pathlib\n"
        f"cfg = pathlib.Path({str(fake.path / 'config.yaml')!r})\n"
        "data = yaml.safe_load(cfg.read_text()); data['screen']['threshold'] = 0.55\n"
        "cfg.write_text(yaml.safe_dump(data))\n"
        "from tasks.output.report import build_report\n"
        f"html = build_report(pathlib.Path({str(fake.path)!r})).read_text()\n"
        "assert 'threshold 0.55' in html, 'new threshold not shown'\n"
        "print('matplotlib' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
