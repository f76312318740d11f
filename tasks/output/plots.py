"""Plots shared by the run report and the web UI (matplotlib, no pyplot: thread-safe, headless).

Every function returns a :class:`matplotlib.figure.Figure`; :func:`png_bytes` renders one.
matplotlib is imported only when a figure is drawn: a report whose plots are all kept
(:class:`PlotCache`) never imports it.
Colours and emoji per emotion are fixed here so the report, the timeline PNGs and the UI agree.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from tasks.core.records import EMOTIONS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

EMOTION_COLOURS: dict[str, str] = {
    "angry": "#d62728",
    "disgusted": "#8c8c00",
    "fearful": "#9467bd",
    "happy": "#f2b701",
    "neutral": "#7f7f7f",
    "other": "#8c564b",
    "sad": "#1f77b4",
    "surprised": "#ff7f0e",
    "unknown": "#c7c7c7",
}
EMOTION_EMOJI: dict[str, str] = {
    "angry": "😠", "disgusted": "🤢", "fearful": "😨", "happy": "😊", "neutral": "😐",
    "other": "🤔", "sad": "😢", "surprised": "😮", "unknown": "❓",
}
UNSCORED_COLOUR = "#e6e6e6"


def literal(text: Any) -> str:
    """``text`` as matplotlib draws it literally: a speaker, channel or recording name like
    ``$x^{$`` is not TeX (mathtext would fail to parse it, or typeset it). Every name drawn in
    this module goes through here; :func:`png_bytes` also turns ``text.usetex`` off."""
    return str(text).replace("$", r"\$")


def png_bytes(fig: Figure, *, dpi: int = 100, metadata: dict[str, str] | None = None) -> bytes:
    """Render ``fig`` as PNG bytes (``metadata``: extra PNG text chunks)."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"text.usetex": False}):  # names are text, never LaTeX
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata=metadata)
    return buf.getvalue()


def _digest(value: Any, h: "hashlib._Hash") -> None:
    """Feed ``value`` (frames, arrays, containers of them, plain values) into ``h``."""
    if isinstance(value, (pd.DataFrame, pd.Series)):
        names = value.columns if isinstance(value, pd.DataFrame) else [value.name]
        h.update(json.dumps([str(c) for c in names]).encode())
        h.update(pd.util.hash_pandas_object(value, index=True).to_numpy().tobytes())
    elif isinstance(value, np.ndarray):
        h.update(f"{value.dtype}{value.shape}".encode() + np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (list, tuple)):
        h.update(b"[")
        for v in value:
            _digest(v, h)
        h.update(b"]")
    elif isinstance(value, dict):
        for k in sorted(value):
            h.update(str(k).encode())
            _digest(value[k], h)
    else:
        h.update(json.dumps(value, default=str).encode())


class PlotCache:
    """PNG renders keyed by everything that draws them (their inputs and this module's source),
    kept in ``folder``: a plot whose inputs did not change is not drawn again on a rerun.

    :meth:`prune` removes the renders the last report did not use.
    """

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.used: set[str] = set()
        self.drawn = 0
        self._code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]

    def png(self, name: str, inputs: Any, build: Callable[[], Figure]) -> bytes:
        """The PNG of ``build()``, drawn only when no render of (``name``, ``inputs``) is kept."""
        return self.png_bytes(name, inputs, lambda: png_bytes(build()))

    def png_bytes(self, name: str, inputs: Any, render: Callable[[], bytes]) -> bytes:
        """The PNG ``render()`` returns, called only when no render of (``name``, ``inputs``) is kept."""
        if self.folder is None:
            self.drawn += 1
            return render()
        h = hashlib.sha256(f"{name}\0{self._code}\0".encode())
        _digest(inputs, h)
        key = h.hexdigest()[:32]
        self.used.add(key)
        # a kept render is named after its content too: one edited or damaged on disk is drawn again
        for path in self.folder.glob(f"{key}.*.png"):
            try:
                if path.is_symlink() or not path.is_file():
                    raise OSError("not a regular file")
                kept = path.read_bytes()
                if hashlib.sha256(kept).hexdigest()[:16] == path.name.split(".")[1]:
                    return kept
            except OSError:
                pass
            path.unlink(missing_ok=True)
        png = render()
        self.drawn += 1
        from tasks.core.storage import atomic_write_bytes

        try:
            atomic_write_bytes(self.folder / f"{key}.{hashlib.sha256(png).hexdigest()[:16]}.png", png)
        except OSError:  # a read-only run folder: the report is still written elsewhere or fails there
            pass
        return png

    def prune(self) -> None:
        """Remove kept renders not used since this cache was made."""
        if self.folder is None or not self.folder.is_dir():
            return
        for f in self.folder.glob("*.png"):
            if f.name.split(".")[0] not in self.used:
                f.unlink(missing_ok=True)


def _is_scored(seg: pd.DataFrame) -> pd.Series:
    label = seg["label"].astype("object")
    ok = label.notna() & (label.astype(str) != "") & seg["confidence"].notna()
    if "status" in seg.columns:
        ok &= seg["status"].fillna("ok").astype(str).eq("ok")
    return ok


def _is_drilled(seg: pd.DataFrame) -> pd.Series:
    """The run's own ``drilled`` flags (all False when the table has none)."""
    if "drilled" not in seg.columns:
        return pd.Series(False, index=seg.index)
    return seg["drilled"].astype("boolean").fillna(False).astype(bool)


def _time_axis(ax, duration: float) -> None:  # type: ignore[no-untyped-def]
    if duration > 600:
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(v // 60)}:{int(v % 60):02d}"))
        ax.set_xlabel("time (min:s)")
    else:
        ax.set_xlabel("time (s)")


def timeline_figure(seg: pd.DataFrame, *, recording_id: str = "", duration: float | None = None) -> Figure:
    """Speakers × time, each segment coloured by its top emotion.

    Opacity follows confidence; segments the screen drilled down (the ``drilled`` column, as the
    run wrote it) get a black outline; segments that were not scored (too short, overlapped
    speech) are light grey and hatched.
    """
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    speakers = sorted(seg["speaker"].astype(str).unique()) if len(seg) else []
    height = 1.2 + 0.45 * max(len(speakers), 1)
    fig = Figure(figsize=(11, height))
    ax = fig.add_subplot(111)
    scored = _is_scored(seg) if len(seg) else pd.Series(dtype=bool)
    drilled = _is_drilled(seg)
    for y, spk in enumerate(speakers):
        rows = seg[seg["speaker"].astype(str) == spk]
        srows = rows[scored.loc[rows.index]]
        urows = rows[~scored.loc[rows.index]]
        if len(urows):
            ax.broken_barh(list(zip(urows["start"], urows["end"] - urows["start"])),
                           (y - 0.35, 0.7), facecolors=UNSCORED_COLOUR, edgecolors="#b0b0b0", hatch="///", linewidth=0.4)
        for label, grp in srows.groupby(srows["label"].astype(str)):
            conf = grp["confidence"].astype(float).clip(0, 1).to_numpy()
            colour = EMOTION_COLOURS.get(label, "#000000")
            alphas = 0.35 + 0.65 * conf
            edge = ["black" if d else colour for d in drilled.loc[grp.index]]
            ax.broken_barh(list(zip(grp["start"], grp["end"] - grp["start"])), (y - 0.35, 0.7),
                           facecolors=[to_rgba(colour, a) for a in alphas], edgecolors=edge, linewidth=0.6)
    ax.set_yticks(range(len(speakers)), [literal(s) for s in speakers])
    ax.set_ylim(-0.6, max(len(speakers), 1) - 0.4)
    end = float(duration) if duration else float(seg["end"].max()) if len(seg) else 1.0
    ax.set_xlim(0, max(end, 1e-3))
    ax.invert_yaxis()
    _time_axis(ax, end)
    ax.grid(axis="x", alpha=0.3)
    present = [e for e in EMOTIONS if len(seg) and (seg.loc[scored, "label"].astype(str) == e).any()]
    handles = [Patch(facecolor=EMOTION_COLOURS[e], label=e) for e in present]
    if len(seg) and (~scored).any():
        handles.append(Patch(facecolor=UNSCORED_COLOUR, edgecolor="#b0b0b0", hatch="///", label="not scored"))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    title = f"{literal(recording_id)}: speakers × time, coloured by emotion" if recording_id else "speakers × time"
    if drilled.any():
        title += " (outlined: drilled down)"
    ax.set_title(title, fontsize=10, loc="left")  # built from literal() names above
    return fig


def frame_curves_figure(curves: Sequence[tuple[str, float, float, np.ndarray]], *, ncols: int = 2) -> Figure:
    """Small multiples of frame-level scores: ``(title, start_s, hop_s, frames (T, 9))`` each."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    n = max(len(curves), 1)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(5.5 * ncols, 2.3 * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[len(curves):]:
        ax.set_visible(False)
    for ax, (title, start, hop, frames) in zip(axes.flat, curves):
        frames = np.asarray(frames, dtype=np.float32).reshape(-1, len(EMOTIONS))
        t = start + (np.arange(frames.shape[0]) + 0.5) * hop
        for k, emo in enumerate(EMOTIONS):
            ax.plot(t, frames[:, k], color=EMOTION_COLOURS[emo], linewidth=1.1, label=emo)
        ax.set_ylim(0, 1)
        ax.set_title(literal(title), fontsize=9, loc="left")
        ax.set_xlabel("time (s)", fontsize=8)
        ax.set_ylabel("score", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if curves:
        handles = [Patch(facecolor=EMOTION_COLOURS[e], label=e) for e in EMOTIONS]
        ncol = 9 if ncols > 1 else 5
        fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7, frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.06 if ncols > 1 else 0.1, 1, 1))
    return fig


def speaker_distribution(seg: pd.DataFrame) -> pd.DataFrame:
    """Fraction of each speaker's scored speech time per emotion (rows: speakers, columns: EMOTIONS)."""
    scored = seg[_is_scored(seg)] if len(seg) else seg
    if not len(scored):
        return pd.DataFrame(columns=list(EMOTIONS), dtype=float)
    dur = scored["end"].astype(float) - scored["start"].astype(float)
    table = (dur.groupby([scored["speaker"].astype(str), scored["label"].astype(str)]).sum().unstack(fill_value=0.0)
             .reindex(columns=list(EMOTIONS), fill_value=0.0))
    return table.div(table.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)


def speaker_distribution_figure(dist: pd.DataFrame, *, title: str = "") -> Figure:
    """Stacked horizontal bars: per speaker, the share of speech time per emotion."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 1.0 + 0.4 * max(len(dist), 1)))
    ax = fig.add_subplot(111)
    left = np.zeros(len(dist))
    for emo in EMOTIONS:
        vals = dist[emo].to_numpy() if emo in dist else np.zeros(len(dist))
        if vals.any():
            ax.barh(range(len(dist)), vals, left=left, color=EMOTION_COLOURS[emo], label=emo, height=0.7)
        left += vals
    ax.set_yticks(range(len(dist)), [literal(s) for s in dist.index])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of scored speech time")
    if len(dist):
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_title(literal(title) if title else "emotion distribution per speaker", fontsize=10, loc="left")
    return fig


HISTOGRAM_DPI = 100
THRESHOLD_COLOUR = "#d62728"
_AXES_KEY = "emoflow:axes"  # PNG text chunk of a histogram base: where its data coordinates lie


def _finite(confidence: Iterable[float]) -> np.ndarray:
    """The confidences a histogram counts (NaN, a segment not scored, left out)."""
    return np.asarray([c for c in confidence if c == c], dtype=float)


def _histogram_axes(confidence: Iterable[float], bins: int) -> tuple[Figure, Any, np.ndarray]:
    """The histogram without the threshold: the figure, its axes and the finite confidences."""
    from matplotlib.figure import Figure

    conf = _finite(confidence)
    fig = Figure(figsize=(7, 2.8), dpi=HISTOGRAM_DPI)
    ax = fig.add_subplot(111)
    ax.hist(conf, bins=np.linspace(0, 1, bins + 1), color="#4c72b0", edgecolor="white")
    ax.set_xlim(0, 1)
    ax.set_xlabel("confidence of the top emotion")
    ax.set_ylabel("segments")
    ax.set_title("confidence histogram", fontsize=10, loc="left")
    return fig, ax, conf


def threshold_caption(conf: np.ndarray, *, threshold: float, drilled: int) -> str:
    """The histogram's note beside the threshold line."""
    below = int((conf < threshold).sum())
    return f"  threshold {threshold:g}\n  {below} of {conf.size} below\n  {int(drilled)} drilled down"


def confidence_histogram_base_png(confidence: Iterable[float], *, bins: int = 20) -> bytes:
    """The histogram's bars and axes as PNG, with where its data coordinates lie in the
    picture (a PNG text chunk): x pixels of confidence 0 and 1, y pixels of count 0 and the
    axes' top, the top's count. :func:`confidence_histogram_png` draws the threshold on it."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig, ax, _ = _histogram_axes(confidence, bins)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.get_tightbbox(renderer).padded(matplotlib.rcParams["savefig.pad_inches"])
    ymax = float(ax.get_ylim()[1])
    (x0, y0), (x1, y1) = ax.transData.transform([(0.0, 0.0), (1.0, ymax)])
    left, top = box.x0 * HISTOGRAM_DPI, box.y1 * HISTOGRAM_DPI
    axes = {"x0": x0 - left, "x1": x1 - left, "y0": top - y0, "y1": top - y1, "ymax": ymax}
    return png_bytes(fig, dpi=HISTOGRAM_DPI, metadata={_AXES_KEY: json.dumps(axes)})


def confidence_histogram_png(confidence: Iterable[float], *, threshold: float, drilled: int,
                             cache: "PlotCache | None" = None, bins: int = 20) -> bytes:
    """The report's confidence histogram of top-label confidences, the screening threshold drawn.

    ``drilled`` is how many segments the run drilled down (its ``drilled`` column): with
    drill-down disabled that is 0 however many fall below the threshold. The bars depend on the confidences only and are kept in ``cache``; the threshold line
    and its note are drawn on them with Pillow (matplotlib's dashes, font and box), so a
    rerun with another ``screen.threshold`` neither imports matplotlib nor draws the bars.
    """
    from PIL import Image, ImageDraw

    conf = _finite(confidence)
    build = lambda: confidence_histogram_base_png(conf, bins=bins)  # noqa: E731
    base = (cache or PlotCache(None)).png_bytes("histogram-base", [conf, bins], build)
    with Image.open(io.BytesIO(base)) as im:
        axes = json.loads(im.text[_AXES_KEY])
        picture = im.convert("RGB")
    px = HISTOGRAM_DPI / 72.0  # pixels per point
    x = axes["x0"] + (axes["x1"] - axes["x0"]) * float(threshold)
    draw = ImageDraw.Draw(picture)
    width = max(1, round(1.5 * px))
    dash, gap = 3.7 * 1.5 * px, 1.6 * 1.5 * px  # matplotlib's "--", scaled by the line width
    xl = round(x - width / 2)
    y, bottom = axes["y1"], axes["y0"]
    while y < bottom:  # Pillow's rectangles include both corners: the last row is one before the end
        draw.rectangle([xl, round(y), xl + width - 1, round(min(y + dash, bottom)) - 1], fill=THRESHOLD_COLOUR)
        y += dash + gap
    font = _dejavu(8 * px)
    caption = threshold_caption(conf, threshold=threshold, drilled=drilled)
    spacing = 0.2 * 8 * px  # matplotlib's line spacing 1.2
    ty = axes["y1"] + (axes["y0"] - axes["y1"]) * 0.05  # 95 % of the axes' height
    left, top, right, bottom = draw.multiline_textbbox((x, ty), caption, font=font, spacing=spacing)
    pad = 1.5 * px
    box = (left - pad, ty - pad, right + pad, bottom + pad)
    if box[2] + 1 > picture.width:  # a note near confidence 1 runs past the bars' picture: widen it
        wider = Image.new("RGB", (int(math.ceil(box[2] + 2 * px)), picture.height), "white")
        wider.paste(picture, (0, 0))
        picture = wider
        draw = ImageDraw.Draw(picture)
    overlay = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    ImageDraw.Draw(overlay).rectangle(box, fill=(255, 255, 255, int(0.85 * 255)))
    picture = Image.alpha_composite(picture.convert("RGBA"), overlay).convert("RGB")
    ImageDraw.Draw(picture).multiline_text((x, ty), caption, font=font, fill=THRESHOLD_COLOUR, spacing=spacing)
    out = io.BytesIO()
    picture.save(out, format="PNG", dpi=(HISTOGRAM_DPI, HISTOGRAM_DPI))
    return out.getvalue()


def _dejavu(size: float):
    """DejaVu Sans (matplotlib's default font, from its package folder) at ``size`` pixels,
    found without importing matplotlib; Pillow's default font where it is missing."""
    import importlib.util

    from PIL import ImageFont

    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return ImageFont.truetype(str(path), size=size)
    return ImageFont.load_default(size=size)


def scores_bar_figure(scores: Sequence[float], *, title: str = "") -> Figure:
    """The 9 emotion scores as horizontal bars (the UI's utterance view)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot(111)
    vals = np.asarray(scores, dtype=float)
    ax.barh(range(len(EMOTIONS)), vals, color=[EMOTION_COLOURS[e] for e in EMOTIONS])
    ax.set_yticks(range(len(EMOTIONS)), [f"{e}" for e in EMOTIONS])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    for i, v in enumerate(vals):
        ax.text(min(v + 0.01, 0.9), i, f"{v:.3f}", va="center", fontsize=8)
    ax.set_title(literal(title), fontsize=10, loc="left")
    return fig
