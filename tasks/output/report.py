"""The run report: one static, self-contained ``report.html`` per run directory.

``build_report(run_dir)`` reads only the run directory contract (``manifest.json``,
``config.yaml``, ``segments.parquet``, ``failures.csv``, ``recordings/<id>/...``) and writes

- ``report.html``: opens offline from anywhere. Every image is an inline base64 PNG, CSS is
  inline, there is no JavaScript and no reference to any external resource;
- ``recordings/<id>/timeline.png`` for each recording (when ``report.timeline_png``).

Audio players (table of lowest-confidence segments) embed each clip as a base64
``data:audio/wav`` URI (16 kHz mono 16-bit PCM, at most :data:`MAX_CLIP_S` seconds), so the
report stays playable when it is mailed or moved away from the run directory. Clips are cut
from the original input (``source_path``); when it cannot be read, from
``recordings/<id>/denoised.wav`` when present; otherwise the row says "audio not available".
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from tasks.core.timebase import SAMPLE_RATE, compute_num_samples
from tasks.core.config import ReportConfig, ScreenConfig
from tasks.output.export import SCORE_COLUMNS
from tasks.output.plots import (
    EMOTION_COLOURS,
    EMOTION_EMOJI,
    confidence_histogram_png,
    frame_curves_figure,
    PlotCache,
    speaker_distribution,
    speaker_distribution_figure,
    timeline_figure,
)
from tasks.core.records import EMOTIONS
from tasks.core.storage import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

MAX_CLIP_S = 12.0
MAX_FRAME_PLOTS = 6
"""Drilled segments whose frame curves are drawn, per recording (lowest confidence first)."""


# --------------------------------------------------------------------------------------- reading
@dataclass
class RunData:
    """What a report needs from a run directory."""

    run_dir: Path
    manifest: dict[str, Any]
    config: dict[str, Any]
    config_text: str
    segments: pd.DataFrame
    failures: pd.DataFrame
    recordings: list[str] = field(default_factory=list)

    @property
    def threshold(self) -> float:
        try:
            return float(self.config.get("screen", {}).get("threshold"))
        except (TypeError, ValueError):
            return ScreenConfig().threshold

    @property
    def emotion_model(self) -> dict[str, Any]:
        models = self.manifest.get("models") or {}
        m = models.get("emotion") if isinstance(models, dict) else None
        return m if isinstance(m, dict) else {}

    @property
    def is_test_model(self) -> bool:
        return bool(self.emotion_model.get("is_test_model"))

    @property
    def transcribe_model(self) -> dict[str, Any]:
        models = self.manifest.get("models") or {}
        m = models.get("transcribe") if isinstance(models, dict) else None
        return m if isinstance(m, dict) else {}

    def duration(self, recording_id: str) -> float | None:
        for item in self.manifest.get("inputs") or []:
            if isinstance(item, dict) and item.get("recording_id") == recording_id and item.get("duration"):
                return float(item["duration"])
        rows = self.segments[self.segments["recording_id"] == recording_id]
        return float(rows["end"].max()) if len(rows) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def read_segments(run_dir: str | Path) -> pd.DataFrame:
    """``segments.parquet`` (or ``segments.csv``) with ``status`` filled and empty labels as NaN."""
    run = Path(run_dir)
    from tasks.output.export import coerce_table, read_table_csv

    if (run / "segments.parquet").is_file():
        seg = coerce_table(pd.read_parquet(run / "segments.parquet"))
    elif (run / "segments.csv").is_file():
        seg = read_table_csv(run / "segments.csv")
    else:
        seg = pd.DataFrame(columns=["recording_id", "segment_id", "speaker", "start", "end", "label", "confidence"])
    seg = seg.copy()
    if "status" not in seg.columns:
        seg["status"] = "ok"
    seg["status"] = seg["status"].fillna("ok").astype(str)
    seg["label"] = seg["label"].astype("object").where(seg["label"].notna() & (seg["label"].astype(str) != ""), None)
    seg["confidence"] = pd.to_numeric(seg["confidence"], errors="coerce")
    if "drilled" not in seg.columns:
        seg["drilled"] = False
    seg["drilled"] = seg["drilled"].fillna(False).astype(bool)
    for col in ("start", "end"):
        seg[col] = pd.to_numeric(seg[col], errors="coerce")
    seg["speaker"] = seg["speaker"].astype(str)
    seg["recording_id"] = seg["recording_id"].astype(str)
    return seg


def load_run(run_dir: str | Path) -> RunData:
    """Read the parts of a run directory the report shows."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: run directory not found")
    manifest = _read_json(run / "manifest.json")
    config_text = ""
    config: dict[str, Any] = {}
    if (run / "config.yaml").is_file():
        config_text = (run / "config.yaml").read_text(encoding="utf-8")
        try:
            loaded = yaml.safe_load(config_text)
            config = loaded if isinstance(loaded, dict) else {}
        except yaml.YAMLError:
            config = {}
    if not config and isinstance(manifest.get("config"), dict):
        config = manifest["config"]
        config_text = yaml.safe_dump(config, sort_keys=False)
    seg = read_segments(run)
    failures = pd.DataFrame(columns=["input", "stage", "error", "message"])
    if (run / "failures.csv").is_file():
        try:
            from tasks.core.csvsafe import read_csv

            failures = read_csv(run / "failures.csv").fillna("")
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            pass
    recs = list(dict.fromkeys(seg["recording_id"].tolist()))
    if (run / "recordings").is_dir():
        recs += sorted(p.name for p in (run / "recordings").iterdir() if p.is_dir() and p.name not in recs)
    return RunData(run, manifest, config, config_text, seg, failures, recs)


# --------------------------------------------------------------------------------------- audio
class _AudioCache:
    """Cuts clips from sources; decodes a whole file through ffmpeg only when soundfile cannot seek it."""

    def __init__(self) -> None:
        self._full: dict[str, np.ndarray | None] = {}

    def clip(self, path: str | Path, start: float, end: float) -> np.ndarray | None:
        import soundfile as sf
        import soxr

        end = min(end, start + MAX_CLIP_S)
        p = Path(path)
        if not p.is_file():
            return None
        try:
            with sf.SoundFile(str(p)) as fh:
                sr = fh.samplerate
                first = max(0, compute_num_samples(start, sample_rate=sr))
                fh.seek(first)
                data = fh.read(max(1, compute_num_samples(end, sample_rate=sr) - first), dtype="float32",
                               always_2d=True)
            mono = data.mean(axis=1)
            if sr != SAMPLE_RATE:
                mono = soxr.resample(mono, sr, SAMPLE_RATE)
            return mono.astype(np.float32)
        except Exception:  # noqa: BLE001 - formats soundfile cannot read go through ffmpeg
            pass
        key = str(p)
        if key not in self._full:
            try:
                from tasks.audio.decode import load_audio

                self._full[key] = load_audio(p)[0]
            except Exception as exc:  # noqa: BLE001
                log.warning("report: cannot read %s for audio players: %s", p, exc)
                self._full[key] = None
        audio = self._full[key]
        if audio is None:
            return None
        return audio[compute_num_samples(start): compute_num_samples(end)]


def wav_data_uri(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
    """A ``data:audio/wav;base64,...`` URI of 16-bit PCM mono audio."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1, 1), sample_rate, subtype="PCM_16", format="WAV")
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# --------------------------------------------------------------------------------------- html
def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _img(png: bytes, alt: str, cls: str = "plot") -> str:
    return f'<img class="{cls}" alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _fmt_time(t: float) -> str:
    if t is None or not math.isfinite(t):
        return ""
    m, s = divmod(float(t), 60.0)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:05.2f}" if h else f"{m}:{s:05.2f}"


def _label_html(label: Any) -> str:
    if label is None or (isinstance(label, float) and math.isnan(label)) or label == "":
        return '<span class="muted">—</span>'
    colour = EMOTION_COLOURS.get(str(label), "#000")
    return (f'<span class="chip" style="background:{colour}"></span>{EMOTION_EMOJI.get(str(label), "")} '
            f"{_e(label)}")


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _kv_rows(d: dict[str, Any], prefix: str = "") -> list[list[str]]:
    rows = []
    for k, v in d.items():
        if isinstance(v, dict):
            rows += _kv_rows(v, f"{prefix}{k}.")
        else:
            rows.append([f"<code>{_e(prefix + str(k))}</code>", _e(json.dumps(v) if isinstance(v, (list, bool)) else v)])
    return rows


CSS = """
.transcript .line{margin:2px 0;padding:2px 8px} .event{background:#eceff1;border-radius:3px;padding:0 4px}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:1.4em} header .sub{opacity:.8;font-size:.9em}
main{padding:8px 24px 40px;max-width:1400px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:12px 18px;margin:16px 0}
h2{font-size:1.15em;margin:.2em 0 .6em} h3{font-size:1em;margin:1em 0 .4em}
.banner{background:#b71c1c;color:#fff;font-weight:bold;padding:10px 24px;font-size:1.1em;letter-spacing:.03em}
table{border-collapse:collapse;font-size:.85em;margin:.4em 0}
th,td{border-bottom:1px solid #e6e6e6;padding:4px 8px;text-align:left;vertical-align:middle}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
img.plot{max-width:100%;height:auto;display:block;margin:6px 0}
.chip{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:3px;vertical-align:middle}
.muted{color:#888} pre{background:#f5f5f5;padding:10px;overflow:auto;font-size:.8em;max-height:480px}
nav a{margin-right:12px} audio{height:28px;width:240px}
.facts td:first-child{white-space:nowrap}
"""


TIMELINE_COLUMNS = ["segment_id", "speaker", "start", "end", "status", "label", "confidence", "drilled"]
"""What a timeline draws (its render is reused while these are unchanged)."""


def _recording_section(data: RunData, rid: str, cfg: ReportConfig, plots: PlotCache) -> str:
    seg = data.segments[data.segments["recording_id"] == rid].sort_values("start")
    rec_dir = data.run_dir / "recordings" / rid
    duration = data.duration(rid)
    parts = [f'<section id="rec-{_e(rid)}"><h2>Recording {_e(rid)}</h2>']
    src = seg["source_path"].iloc[0] if "source_path" in seg.columns and len(seg) else ""
    n_ok = int((seg["status"] == "ok").sum())
    parts.append(
        f'<p class="muted">source: <code>{_e(src)}</code> · duration {_fmt_time(duration or float("nan"))} · '
        f"{len(seg)} segments ({n_ok} scored, {int(seg['drilled'].sum())} drilled down) · "
        f"speakers: {_e(', '.join(sorted(seg['speaker'].unique())))}</p>"
    )
    # timeline (also written next to the recording's artefacts)
    png = plots.png("timeline", [seg[[c for c in TIMELINE_COLUMNS if c in seg.columns]], rid, duration],
                    lambda: timeline_figure(seg, recording_id=rid, duration=duration))
    if cfg.timeline_png and _owned_dir(rec_dir, data.run_dir):  # never into a linked folder
        atomic_write_bytes(rec_dir / "timeline.png", png)
    parts.append("<h3>Timeline</h3>" + _img(png, f"timeline of {rid}", "plot timeline"))
    # per-speaker distribution
    dist = speaker_distribution(seg)
    if len(dist):
        parts.append("<h3>Emotion distribution per speaker</h3>")
        title = f"{rid}: share of speech time per emotion"
        parts.append(_img(plots.png("distribution", [dist, title],
                                    lambda: speaker_distribution_figure(dist, title=title)),
                          f"emotion distribution per speaker in {rid}", "plot distribution"))
        present = [e for e in EMOTIONS if dist[e].any()]
        rows = [[_e(spk)] + [f'<span class="num">{dist.loc[spk, e] * 100:.0f}%</span>' for e in present]
                for spk in dist.index]
        parts.append(_table(["speaker"] + [f"{EMOTION_EMOJI[e]} {e}" for e in present], rows, "distribution"))
    # frame-score curves of drilled segments
    drilled = seg[seg["drilled"]].sort_values("confidence")
    curves = []
    for _, row in drilled.iterrows():
        frames_path = rec_dir / "frames" / f"{row['segment_id']}.npy"
        if not frames_path.is_file():
            continue
        hop = 0.02
        doc = _read_json(rec_dir / "segments" / f"{row['segment_id']}.json")
        if isinstance(doc.get("frames"), dict) and doc["frames"].get("hop_s"):
            hop = float(doc["frames"]["hop_s"])
            if doc["frames"].get("file"):
                alt = rec_dir / doc["frames"]["file"]
                frames_path = alt if alt.is_file() else frames_path
        try:
            frames = np.load(frames_path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("report: cannot read %s: %s", frames_path, exc)
            continue
        if frames.ndim != 2 or frames.shape[1] != len(EMOTIONS) or frames.shape[0] == 0:
            continue
        title = f"{row['segment_id']} · {row['speaker']} · {row['label']} {row['confidence']:.2f}"
        curves.append((title, float(row["start"]), hop, frames))
        if len(curves) >= MAX_FRAME_PLOTS:
            break
    if curves:
        more = f" (the {len(curves)} lowest-confidence of {len(drilled)})" if len(drilled) > len(curves) else ""
        parts.append(f"<h3>Frame-level scores of drilled-down segments{more}</h3>")
        parts.append(_img(plots.png("frames", curves, lambda: frame_curves_figure(curves)),
                          f"frame scores of drilled segments in {rid}",
                          "plot frames"))
    elif len(drilled):
        parts.append('<p class="muted">Drilled-down segments have no frame scores on disk.</p>')
    parts.append(_transcript_html(seg))
    parts.append("</section>")
    return "".join(parts)


EVENT_MARKS = {"laughter": "😂", "crying": "😢", "cough": "🤧", "sneeze": "🤧", "applause": "👏", "music": "🎵",
               "breath": "💨"}
"""How an audio event is marked beside the text it was heard with."""
MAX_SHOWN_TEXT = 300


def _said_html(row: Any) -> str:
    """A segment's text with its audio events marked (escaped; long text cut)."""
    text = row.get("text") if hasattr(row, "get") else None
    text = text if isinstance(text, str) else ""
    events = row.get("events") if hasattr(row, "get") else None
    marks = [f'<span class="event">{EVENT_MARKS.get(e, "🔊")} {_e(e)}</span>'
             for e in (events.split(";") if isinstance(events, str) and events else [])]
    shown = _e(text[:MAX_SHOWN_TEXT] + ("…" if len(text) > MAX_SHOWN_TEXT else ""))
    return " ".join([*marks, shown]).strip() or '<span class="muted">—</span>'


def _transcript_html(seg: Any) -> str:
    """The recording's transcript, one line per segment with something said or heard, in time
    order, each line coloured by the segment's emotion (emotion2vec+), SenseVoice's emotion beside."""
    if "text" not in seg.columns:
        return ""
    lines = []
    for _, r in seg.sort_values("start").iterrows():
        said = _said_html(r)
        if said == '<span class="muted">—</span>':
            continue
        label = r.get("label")
        colour = EMOTION_COLOURS.get(str(label), "#bdbdbd") if isinstance(label, str) else "#bdbdbd"
        sv = r.get("sv_emotion")
        second = (f' <span class="muted">(SenseVoice: {_e(sv)}{"" if r.get("emotion_agree") is not False else ", differs"})'
                  "</span>" if isinstance(sv, str) and sv else "")
        lines.append(f'<p class="line" style="border-left:4px solid {colour}">'
                     f'<span class="num">{_fmt_time(r["start"])}</span> <b>{_e(r["speaker"])}</b> '
                     f"{_label_html(label)}{second}: {said}</p>")
    if not lines:
        return '<h3>Transcript</h3><p class="muted">Nothing was transcribed.</p>'
    return '<h3>Transcript</h3><div class="transcript">' + "".join(lines) + "</div>"


def _lowest_confidence_section(data: RunData, cfg: ReportConfig) -> str:
    seg = data.segments
    scored = seg[(seg["status"] == "ok") & seg["confidence"].notna()]
    low = scored.sort_values("confidence").head(cfg.lowest_confidence_rows)
    if cfg.lowest_confidence_rows == 0:
        return ""
    cache = _AudioCache()
    rows = []
    for _, r in low.iterrows():
        scores = np.array([r.get(c, np.nan) for c in SCORE_COLUMNS], dtype=float)
        second = ""
        if np.isfinite(scores).all():
            order = np.argsort(-scores)
            second = f"{EMOTION_EMOJI[EMOTIONS[order[1]]]} {EMOTIONS[order[1]]} {scores[order[1]]:.2f}"
        cells = [_e(r["recording_id"]), f"<code>{_e(r['segment_id'])}</code>", _e(r["speaker"]),
                 f'<span class="num">{_fmt_time(r["start"])}–{_fmt_time(r["end"])}</span>',
                 _label_html(r["label"]), f'<span class="num">{r["confidence"]:.3f}</span>', _e(second),
                 _said_html(r)]
        if cfg.audio_players:
            audio = None
            if "source_path" in r and isinstance(r["source_path"], str) and r["source_path"]:
                audio = cache.clip(r["source_path"], float(r["start"]), float(r["end"]))
            if audio is None:
                denoised = data.run_dir / "recordings" / str(r["recording_id"]) / "denoised.wav"
                audio = cache.clip(denoised, float(r["start"]), float(r["end"]))
            cells.append(f'<audio controls preload="none" src="{wav_data_uri(audio)}"></audio>'
                         if audio is not None and audio.size else '<span class="muted">audio not available</span>')
        rows.append(cells)
    headers = ["recording", "segment", "speaker", "time", "emotion", "confidence", "runner-up", "what was said"]
    if cfg.audio_players:
        headers.append("audio")
    body = _table(headers, rows, "lowest") if rows else '<p class="muted">No scored segments.</p>'
    return (f'<section id="lowest"><h2>Lowest-confidence segments ({len(rows)})</h2>'
            f'<p class="muted">The segments the model is least sure about: listen to them first.</p>{body}</section>')


def _speakers_section(data: RunData, plots: PlotCache) -> str:
    """Each voice of the run (enrolled name or global id) across its recordings: its emotion
    distribution per recording, in recording order (the trend), and its totals."""
    seg = data.segments
    if "global_speaker" not in seg.columns:
        return ""
    single = seg[seg["global_speaker"].notna() & ~seg["speaker"].astype(str).str.contains("+", regex=False)]
    if not len(single):
        return ""
    order = {rid: i for i, rid in enumerate(data.recordings)}
    single = single.assign(_rec=single["recording_id"].map(order).fillna(len(order)))
    single = single.sort_values(["global_speaker", "_rec", "start"], kind="stable")
    rows = []
    for gid, grp in single.groupby("global_speaker", sort=True):
        scored = grp[grp["status"] == "ok"]
        dist = speaker_distribution(scored.assign(speaker=str(gid)))
        top = dist.iloc[0].idxmax() if len(dist) and dist.iloc[0].max() > 0 else None
        recs = list(dict.fromkeys(grp["recording_id"].astype(str)))
        rows.append([_e(gid), _e(", ".join(recs)), f'<span class="num">{(grp["end"] - grp["start"]).sum():.1f} s</span>',
                     _label_html(top) if top else "—"])
    parts = ['<section id="speakers"><h2>Speakers across recordings</h2>',
             '<p class="muted">One voice, one id across the run: an enrolled name, or <code>Gnn</code> from '
             "clustering the recordings' speaker voices (<code>global_speaker</code> column).</p>",
             _table(["speaker", "recordings", "speech", "most frequent emotion"], rows, "speakers")]
    trend = single.assign(speaker=single["global_speaker"].astype(str) + " · " + single["recording_id"].astype(str))
    dist = speaker_distribution(trend)
    dist = dist.reindex([k for k in dict.fromkeys(trend["speaker"]) if k in dist.index])
    if len(dist):
        title = "share of speech time per emotion, per speaker and recording"
        parts.append(_img(plots.png("speakers", [dist, title], lambda: speaker_distribution_figure(dist, title=title)),
                          "emotion distribution of each speaker per recording", "plot distribution"))
    parts.append("</section>")
    return "".join(parts)


def render_report(data: RunData, cfg: ReportConfig, *, plots: PlotCache | None = None) -> str:
    """The report HTML of a loaded run (writes each recording's timeline.png as a side effect);
    plots come from ``plots`` when their inputs are unchanged."""
    plots = plots if plots is not None else PlotCache(None)
    threshold = data.threshold
    seg = data.segments
    m = data.manifest
    run_id = m.get("run_id") or data.run_dir.name
    model = data.emotion_model
    scored = seg[(seg["status"] == "ok") & seg["confidence"].notna()]
    n_drilled = int(seg["drilled"].sum())
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>emoflow report · {_e(run_id)}</title><style>{CSS}</style></head><body>",
    ]
    if data.is_test_model:
        out.append('<div class="banner" id="test-model-banner">⚠ TEST MODEL (random weights): '
                   "these emotion scores are meaningless; the run used a randomly initialised model "
                   f"({_e(model.get('id') or model.get('path') or '')}).</div>")
    if data.transcribe_model.get("is_test_model"):
        out.append('<div class="banner" id="test-transcribe-banner">⚠ TEST MODEL (random weights): '
                   "these transcripts, events and SenseVoice emotions are meaningless; the run used a randomly "
                   f"initialised SenseVoice ({_e(data.transcribe_model.get('id') or '')}).</div>")
    out.append(f'<header><h1>emoflow run report</h1><div class="sub">run <code>{_e(run_id)}</code> · '
               f"{len(data.recordings)} recordings · {len(seg)} segments ({len(scored)} scored) · "
               f"model {_e(model.get('id', 'unknown'))}</div></header><main>")
    nav = ['<a href="#summary">summary</a>', '<a href="#lowest">lowest confidence</a>',
           '<a href="#confidence">confidence</a>', '<a href="#speakers">speakers</a>',
           '<a href="#config">config &amp; model</a>']
    nav += [f'<a href="#rec-{_e(r)}">{_e(r)}</a>' for r in data.recordings]
    out.append("<nav>" + " ".join(nav) + "</nav>")

    # summary
    counts = seg["status"].value_counts().to_dict()
    label_counts = scored["label"].value_counts()
    summary_rows = [
        ["segments", f"{len(seg)} ({', '.join(f'{k}: {v}' for k, v in counts.items())})"],
        ["scored speech", f"{(scored['end'] - scored['start']).sum():.1f} s"],
        ["screen threshold", f"{threshold:g} ({int((scored['confidence'] < threshold).sum())} segments below, "
                             f"{n_drilled} drilled down)"],
        ["labels", ", ".join(f"{EMOTION_EMOJI.get(k, '')} {_e(k)}: {v}" for k, v in label_counts.items()) or "—"],
        ["failed inputs", str(len(data.failures))],
    ]
    out.append('<section id="summary"><h2>Summary</h2>' + _table(["", ""], summary_rows, "facts"))
    if len(data.failures):
        frows = [[_e(v) for v in row] for row in data.failures.astype(str).values.tolist()]
        out.append("<h3>Failures</h3>" + _table(list(data.failures.columns), frows, "failures"))
    out.append("</section>")

    out.append(_lowest_confidence_section(data, cfg))

    out.append('<section id="confidence"><h2>Confidence histogram</h2>')
    conf = scored["confidence"]
    out.append(_img(confidence_histogram_png(conf, threshold=threshold, drilled=n_drilled, cache=plots),
                    f"confidence histogram, threshold {threshold:g}, {n_drilled} drilled down", "plot histogram"))
    out.append("</section>")

    out.append(_speakers_section(data, plots))

    for rid in data.recordings:
        out.append(_recording_section(data, rid, cfg, plots))

    # config and model facts
    out.append('<section id="config"><h2>Configuration and models</h2>')
    facts = {k: m.get(k) for k in ("run_id", "started", "finished", "emoflow_version", "config_sha256") if k in m}
    if facts:
        out.append("<h3>Run</h3>" + _table(["key", "value"], _kv_rows(facts), "facts"))
    models = m.get("models") or {}
    if isinstance(models, dict) and models:
        out.append("<h3>Models</h3>" + _table(["key", "value"], _kv_rows(models), "facts models"))
    inputs = m.get("inputs") or []
    if isinstance(inputs, list) and inputs:
        keys = list(dict.fromkeys(k for i in inputs if isinstance(i, dict) for k in i))
        rows = [[_e(i.get(k, "")) for k in keys] for i in inputs if isinstance(i, dict)]
        out.append("<h3>Inputs</h3>" + _table(keys, rows, "inputs"))
    stages = m.get("recordings") or {}
    if isinstance(stages, dict) and stages:
        rows = []
        for rid, info in stages.items():
            st = (info or {}).get("stages", info) if isinstance(info, dict) else {}
            for stage, s in (st or {}).items():
                if isinstance(s, dict):
                    secs = s.get("seconds")
                    rows.append([_e(rid), _e(stage), _e(s.get("status", "")),
                                 f'<span class="num">{secs:.2f}</span>' if isinstance(secs, (int, float)) else ""])
        if rows:
            out.append("<h3>Stages</h3>" + _table(["recording", "stage", "computed / reused", "seconds"], rows, "stages"))
    out.append("<h3>Resolved config (config.yaml)</h3>")
    out.append(f"<pre>{_e(data.config_text) or 'config.yaml not found'}</pre></section>")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out.append(f'<p class="muted">Generated by emoflow on {now}. Self-contained: images and audio are embedded.</p>')
    out.append("</main></body></html>")
    return "\n".join(out)


REPORT_NAME = "report.html"


def _owned_dir(path: Path, base: Path) -> bool:
    """Whether ``path`` is an existing folder below ``base`` with no link (or file) on the way:
    a folder emoflow may write into."""
    try:
        parts = path.relative_to(base).parts
    except ValueError:
        return False
    current = base
    for part in parts:
        current = current / part
        try:
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                return False
        except OSError:
            return False
    return True


STALE_OUTPUTS = (REPORT_NAME, "clusters.csv", "clusters.png")
"""What an earlier run or command derived from a run directory's tables (the report,
``emoflow cluster``'s default output): removed when a run writes new tables, so none of it is
left describing other results."""


def remove_report(run_dir: str | Path) -> None:
    """Remove ``report.html`` of ``run_dir`` and the other :data:`STALE_OUTPUTS` (a link is
    removed, never followed; a folder of that name is left to fail the report with its own
    message)."""
    for name in STALE_OUTPUTS:
        path = Path(run_dir) / name
        try:
            if path.is_symlink() or path.is_file():
                path.unlink()
        except FileNotFoundError:
            pass


def build_report(run_dir: str | Path, *, config: ReportConfig | None = None) -> Path:
    """Write ``report.html`` (and each ``recordings/<id>/timeline.png``) for a run directory.

    Parameters
    ----------
    run_dir : path-like
        A run directory (see DESIGN.md, "Run directory").
    config : ReportConfig, optional
        Defaults to the ``report`` section of the run's ``config.yaml`` (else the defaults).

    Returns
    -------
    Path of ``report.html``.
    """
    data = load_run(run_dir)
    if config is None:
        try:
            config = ReportConfig.model_validate(data.config.get("report") or {})
        except Exception:  # noqa: BLE001 - an old or foreign config: fall back to the defaults
            config = ReportConfig()
    from tasks.core.storage import real_dir

    try:  # kept renders only in a folder of emoflow's own: a link there is neither read nor written
        plots = PlotCache(real_dir(data.run_dir / ".emoflow" / "plots", base=data.run_dir))
    except OSError:
        plots = PlotCache(None)
    text = render_report(data, config, plots=plots)
    plots.prune()
    return atomic_write_text(data.run_dir / REPORT_NAME, text)
