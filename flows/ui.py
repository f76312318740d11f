"""Single-file web UI (Gradio): analyse one recording in the browser.

``emoflow ui`` calls :func:`launch_ui`; it binds 127.0.0.1:7860 by default (local only).

The page runs the same stage functions as the flow (``tasks.audio.decode.load_audio``,
``tasks.audio.denoise.denoise``, ``tasks.diarization.pipeline.diarize``, ``tasks.emotion.model.get_emotion_model``), and
the emotion model is loaded once, when the UI is built, then shared by every request.

Results: the top emotion with emoji and confidence, the 9 scores as bars, in frame mode a line
chart of the frame scores over time, and downloads of ``result.json`` (the segment JSON of the run
directory contract; frame scores are inlined under ``frames.scores`` since there is no run dir)
and ``embedding.npy`` ((D,) for one segment, (n, D) with diarization).

Bad input (over 10 MB, not audio, corrupt, too short) produces a one-line message in the page,
never a stack trace. The 10 MB limit (``MAX_UPLOAD_BYTES``) is also the server's own upload limit:
a larger upload is refused (HTTP 413) while it streams in, before it is stored, and the page checks
the size before sending (:data:`REJECT_OVERSIZE_JS`), so its message appears without an upload.
"""

from __future__ import annotations

import html
import json
import logging
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.config import Config, load_config
from tasks.output.plots import EMOTION_COLOURS, EMOTION_EMOJI, frame_curves_figure, scores_bar_figure
from tasks.core.records import EMOTIONS, make_recording_id, one_line, printable, top_emotion
from tasks.core.storage import atomic_write_json, atomic_write_npy

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # the UI's upload limit: the page, the check and the server's own
MAX_UPLOAD_MB = MAX_UPLOAD_BYTES // (1024 * 1024)
ACCEPTED_EXTENSIONS = (".wav", ".mp3", ".m4a", ".flac", ".ogg")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
UI_MAX_CLIP_S = 30.0
"""Without diarization the whole file is one segment: up to this long it is one forward pass; a
longer file is cut into equal windows (each <= this) whose frame logits are concatenated. The
classifier is linear on the mean frame feature, so the file's utterance logits are the mean of all
frame logits and its embedding the frame-weighted mean of the windows' embeddings."""


class UIInputError(ValueError):
    """The uploaded file cannot be analysed; the message is shown in the page."""


def example_audio_path() -> Path | None:
    """An example recording: the first audio file in the repo's ``data/``, else one of
    ``../shared/data/ami`` (CC BY 4.0 AMI excerpts); ``None`` when neither exists."""
    for folder, pattern in ((ROOT / "data", "*"), (ROOT.parent / "shared" / "data" / "ami", "*.flac")):
        if folder.is_dir():
            files = sorted(p for p in folder.glob(pattern) if p.suffix.lower() in ACCEPTED_EXTENSIONS and p.is_file())
            small = [p for p in files if p.stat().st_size <= MAX_UPLOAD_BYTES]
            if small:
                return small[0]
    return None


def too_big_message(name: str, size: int) -> str:
    """The one-line message for a file over ``MAX_UPLOAD_BYTES``."""
    return (f"{name} is {size / 1024 / 1024:.1f} MB: the limit is {MAX_UPLOAD_MB} MB. "
            "Cut it shorter, or use `emoflow run` for long recordings.")


def rejected_upload_message(payload: str | None) -> str | None:
    """The message for a file the page refused to send (``{"name", "size"}`` JSON from
    :data:`REJECT_OVERSIZE_JS`), or ``None`` when there is none."""
    try:
        info = json.loads(payload or "")
        return too_big_message(Path(str(info["name"])).name, int(info["size"]))
    except (ValueError, TypeError, KeyError):
        return None


def shown_name(path: str | Path) -> str:
    """A file's name as the page shows it (:func:`tasks.core.records.one_line`): a name that is
    not valid UTF-8 (a file put in place on the server, or the example) has its undecodable bytes
    as ``\\xNN``, control and invisible characters escaped, so every message and file the page
    gets is valid UTF-8 and one line."""
    return one_line(Path(path).name)


def check_upload(path: str | Path | None) -> Path:
    """Reject what the UI does not take (missing, > 10 MB, wrong extension) with a one-line message."""
    if path is None or str(path) == "":
        raise UIInputError(f"No file: drop an audio file (WAV, MP3, M4A, FLAC or OGG, up to {MAX_UPLOAD_MB} MB) "
                           "or load the example.")
    p = Path(path)
    name = shown_name(p)
    if not p.is_file():
        raise UIInputError(f"{name}: the upload did not arrive, please try again.")
    size = p.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise UIInputError(too_big_message(name, size))
    if p.suffix.lower() not in ACCEPTED_EXTENSIONS:
        raise UIInputError(f"{name}: not a supported audio file (expected "
                           f"{', '.join(e[1:].upper() for e in ACCEPTED_EXTENSIONS)}).")
    return p


@dataclass
class Analysis:
    """One UI request's results."""

    segments: list[dict[str, Any]]  # segment JSON documents (DESIGN.md format)
    embeddings: np.ndarray | None
    frames: list[np.ndarray] = field(default_factory=list)  # (T, 9) per segment, frame mode
    hop_s: float = 0.02
    duration: float = 0.0
    notes: list[str] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # diarized segments not scored (status != ok)

    @property
    def overall_scores(self) -> np.ndarray:
        """Duration-weighted mean of the segments' scores."""
        w = np.array([max(s["end"] - s["start"], 1e-6) for s in self.segments])
        s = np.array([[seg["scores"][e] for e in EMOTIONS] for seg in self.segments])
        return (w[:, None] * s).sum(0) / w.sum()


class Analyser:
    """Holds the model (loaded once) and analyses one file per request.

    With diarization the file goes through the flow's own stages
    (:func:`tasks.pipeline.runner.run_stages`)
    into a private run folder, so it is diarized, segmented, screened and exported exactly as
    ``emoflow run`` would with the same config: the page shows the exported segment JSON. The
    folder doubles as a cache: the same file analysed again with other options reuses every stage
    those options do not change. Without diarization the whole file is one segment.
    """

    def __init__(self, config: Config, model: Any = None, *, workdir: str | Path | None = None) -> None:
        self.config = config
        self._lock = threading.Lock()
        self.models: dict[str, dict[str, Any]] = {}
        if model is None:
            from flows.pipeline import resolve_models
            from tasks.emotion.model import get_emotion_model

            self.models = resolve_models(config)  # the run's model records (ids, checksums), vetted
            # the process-wide model: the flow's stages (clips <= segmentation.max_s) get the same one
            model = get_emotion_model(config.emotion, max_s=UI_MAX_CLIP_S)
        self.model = model
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="emoflow-ui-")
        self.workdir = Path(workdir) if workdir is not None else Path(self._tmp.name)  # type: ignore[union-attr]

    @property
    def is_test_model(self) -> bool:
        return bool(getattr(self.model, "is_test_model", False))

    @property
    def model_info(self) -> dict[str, Any]:
        """The emotion model's record, as a run's manifest has it."""
        return self.models.get("emotion") or {"id": str(getattr(self.model, "model_id", "")),
                                              "sha256": str(getattr(self.model, "sha256", "")),
                                              "is_test_model": self.is_test_model}

    def request_config(self, *, denoise: bool) -> Config:
        """The run config of one request: the UI's config with the page's denoise choice."""
        plain = self.config.to_plain()
        plain["denoise"] = {**plain["denoise"], "enabled": bool(denoise)}
        return Config.model_validate(plain)

    def analyse(self, path: str | Path, *, granularity: str = "utterance", embedding: bool = False,
                denoise: bool = False, diarize: bool = False) -> Analysis:
        p = check_upload(path)
        with self._lock:
            if diarize:
                analysis = self._analyse_diarized(p, config=self.request_config(denoise=denoise),
                                                  frame_mode=granularity == "frame", embedding=embedding)
                if analysis is not None:
                    return analysis
            return self._analyse_whole(p, config=self.request_config(denoise=denoise),
                                       frame_mode=granularity == "frame", embedding=embedding,
                                       notes=["diarization found no speech segment long enough: analysing the whole file"]
                                       if diarize else [])

    def _analyse_diarized(self, p: Path, *, config: Config, frame_mode: bool, embedding: bool) -> Analysis | None:
        """The flow's stages over ``p``; None when no segment could be scored."""
        from tasks.core.records import Recording
        from tasks.core.storage import sha256_file
        from tasks.emotion.model import frame_scores_from_logits
        from tasks.pipeline import layout
        from tasks.pipeline.job import RecordingJob
        from tasks.pipeline.runner import run_stages
        from tasks.stages import REGISTRY

        sha = sha256_file(p)
        models = {**self.models, "emotion": self.model_info}
        job = RecordingJob(recording=Recording.from_path(make_recording_id(p.stem), p, sha), out_dir=str(self.workdir),
                           config=config.to_plain(), keys=REGISTRY.compute_keys(sha256=sha, config=config, models=models),
                           models=models)
        reports = run_stages(job)
        segments = layout.read_segments(job.artefact("segment"), recording_id=job.recording_id)
        notes = list(reports["load"].facts.get("warnings", []))
        scored = [s for s in segments if s.status == "ok"]
        if not scored:
            return None
        folder = job.recording_dir
        transcript = folder / "transcript.json"  # what was said in every row, scored or not
        said = ({d["segment_id"]: d["text"] for d in json.loads(transcript.read_text(encoding="utf-8"))["segments"]}
                if transcript.is_file() else {})
        skipped = [{"segment_id": s.segment_id, "speaker": s.speaker, "start": round(s.start, 3),
                    "end": round(s.end, 3), "status": s.status, "text": said.get(s.segment_id, "")}
                   for s in segments if s.status != "ok"]
        if skipped:
            notes.append(f"{len(skipped)} segment(s) not scored (too short or overlapped speech)")
        docs = [json.loads((folder / "segments" / f"{s.segment_id}.json").read_text(encoding="utf-8"))
                for s in scored]
        art = layout.EmotionArtefact(job.artefact("emotion"))
        rows = [art.row(i) for i, s in enumerate(segments) if s.status == "ok"]
        hop = config.drilldown.frame_hop_s
        frames = []
        if frame_mode:
            for doc, row in zip(docs, rows):
                fr = frame_scores_from_logits(art.frame_logits(row), smooth_s=config.drilldown.smooth_s, hop_s=hop)
                frames.append(fr.astype(np.float32))
                _inline_frames(doc, fr, hop)
        emb = np.asarray(art.embeddings()[rows], np.float32) if embedding else None
        duration = float(reports["load"].facts.get("duration") or 0.0)
        return Analysis(docs, emb, frames, hop, duration, notes, skipped)

    def _analyse_whole(self, p: Path, *, config: Config, frame_mode: bool, embedding: bool,
                       notes: list[str]) -> Analysis:
        """The whole file as one segment (windows combined exactly: :func:`tasks.emotion.model.analyse_whole`)."""
        from tasks.core.timebase import SAMPLE_RATE
        from tasks.audio.decode import load_audio
        from tasks.emotion.model import analyse_whole, frame_scores_from_logits
        from tasks.output.export import segment_json
        from tasks.core.records import EmotionResult, Segment, segment_id

        audio, info = load_audio(p, config=config.audio)
        notes = list(info.warnings) + notes
        from tasks.pipeline.heard import audio_stage

        if audio_stage(config, heard_by="emotion") == "denoise":  # what the emotion stage would hear
            from tasks.audio.denoise import denoise as denoise_audio

            audio, _stats = denoise_audio(audio, config=config.denoise)
        rid = make_recording_id(p.stem)
        result = analyse_whole(self.model, audio, max_clip_s=float(getattr(self.model, "max_s", UI_MAX_CLIP_S)))
        seg = Segment(segment_id(rid, 0), rid, "SPEAKER_00", 0.0, round(len(audio) / SAMPLE_RATE, 3))
        doc = segment_json(result=EmotionResult(seg.segment_id, tuple(float(v) for v in result.scores)),
                           segment=seg, model=self.model_info, hop_s=None)
        hop = config.drilldown.frame_hop_s
        frames = []
        if frame_mode:
            fr = frame_scores_from_logits(result.frame_logits, smooth_s=config.drilldown.smooth_s, hop_s=hop)
            frames.append(fr.astype(np.float32))
            _inline_frames(doc, fr, hop)
        emb = np.asarray(result.embedding, np.float32)[None, :] if embedding else None
        return Analysis([doc], emb, frames, hop, len(audio) / SAMPLE_RATE, notes, [])


def _inline_frames(doc: dict[str, Any], frames: np.ndarray, hop_s: float) -> None:
    """Frame mode: the document carries its frame scores (there is no run folder to point to)."""
    doc["granularity"] = "frame"
    doc["frames"] = {"hop_s": hop_s, "labels": list(EMOTIONS),
                     "scores": [[round(float(x), 5) for x in row] for row in frames]}


# --------------------------------------------------------------------------------------- page
REJECT_OVERSIZE_JS = """<script>
// A file over the upload limit is not sent (the server would refuse it with HTTP 413): the page
// puts its name and size in the hidden #rejected-upload box, whose change handler shows the message.
(() => {
  const limit = %d;
  function guard(event, files) {
    if (!(event.target instanceof Element) || !event.target.closest("#audio-input")) return;
    const big = Array.from(files || []).find((f) => f.size > limit);
    if (!big) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    if (event.type === "change") event.target.value = "";
    const box = document.querySelector("#rejected-upload textarea, #rejected-upload input");
    if (!box) return;
    box.value = JSON.stringify({name: big.name, size: big.size, at: Date.now()});
    box.dispatchEvent(new Event("input", {bubbles: true}));
  }
  document.addEventListener("change", (e) => guard(e, e.target.files), true);
  document.addEventListener("drop", (e) => guard(e, e.dataTransfer && e.dataTransfer.files), true);
})();
</script>""" % MAX_UPLOAD_BYTES

TEST_MODEL_HTML = ('<div id="test-model-banner" style="background:#b71c1c;color:#fff;padding:10px 14px;'
                   'border-radius:6px;font-weight:bold">⚠ TEST MODEL (random weights): the emotion scores on this '
                   "page are meaningless. Set <code>emotion.model</code> to a real emotion2vec+ model.</div>")


def _message(text: str, kind: str = "error") -> str:
    colour = {"error": "#b71c1c", "info": "#1b5e20", "warn": "#e65100"}[kind]
    icon = {"error": "⚠", "info": "✓", "warn": "ℹ"}[kind]
    return (f'<div class="emoflow-message emoflow-{kind}" style="color:{colour};font-weight:600">'
            f"{icon} {html.escape(printable(text))}</div>")  # valid UTF-8 whatever a name held


def _top_html(analysis: Analysis, test_model: bool) -> str:
    label, confidence = top_emotion(analysis.overall_scores)
    n = len(analysis.segments)
    scope = f"over {n} speaker segments" if n > 1 else f"{analysis.duration:.1f} s"
    note = ' <span style="color:#b71c1c">(random test model)</span>' if test_model else ""
    return (f'<div id="top-emotion" style="font-size:1.6em;padding:6px 0">'
            f'<span class="emoji">{EMOTION_EMOJI[label]}</span> '
            f'<b class="label" style="color:{EMOTION_COLOURS[label]}">{label}</b> '
            f'<span class="confidence">{confidence * 100:.1f}%</span></div>'
            f'<div style="color:#666">{scope}{note}</div>')


def _segments_table(analysis: Analysis) -> list[list[Any]]:
    rows = [[d["segment_id"], d["speaker"], d["start"], d["end"], f"{EMOTION_EMOJI[d['emotion']]} {d['emotion']}",
             round(d["confidence"], 3), "ok", d.get("text", "")] for d in analysis.segments]
    rows += [[d["segment_id"], d["speaker"], d["start"], d["end"], "", None, d["status"], d.get("text", "")]
             for d in analysis.skipped]
    return sorted(rows, key=lambda r: r[2])


def build_ui(config: Config | str | Path | None = None, *, model: Any = None):
    """The Gradio app (``gr.Blocks``). ``config``: a Config, a YAML path or None (defaults).

    The emotion model is loaded here, once (``model`` injects an already loaded one).
    """
    import gradio as gr

    cfg = config if isinstance(config, Config) else load_config(config)
    analyser = Analyser(cfg, model=model)
    out_root = Path(tempfile.mkdtemp(prefix="emoflow-ui-"))
    counter = iter(range(1, 1 << 62))
    model_id = html.escape(str(getattr(analyser.model, "model_id", cfg.emotion.model)))

    def on_upload(path: str | None) -> tuple[str, str]:
        if not path:
            return "", ""
        try:
            p = check_upload(path)
        except UIInputError as exc:
            return _message(str(exc)), ""
        return _message(f"{shown_name(p)} ({p.stat().st_size / 1024:.0f} kB) ready: press Analyse.", "info"), ""

    def on_rejected(payload: str):  # type: ignore[no-untyped-def]
        text = rejected_upload_message(payload)  # none when on_upload clears the box: change nothing
        return (_message(text), None) if text else (gr.update(), gr.update())

    def run(path, granularity, want_embedding, want_denoise, want_diarize, rejected):  # type: ignore[no-untyped-def]
        from tasks.audio.decode import AudioError

        # bars, frame chart, segments table, result.json, embedding.npy (after the message and top)
        empty = (None, gr.update(value=None, visible=False), gr.update(value=None, visible=False), None, None)
        refused = None if path else rejected_upload_message(rejected)  # the page refused a file over the limit
        if refused:
            return (_message(refused), "", *empty)
        try:
            analysis = analyser.analyse(path, granularity=granularity, embedding=bool(want_embedding),
                                        denoise=bool(want_denoise), diarize=bool(want_diarize))
        except UIInputError as exc:
            return (_message(str(exc)), "", *empty)
        except AudioError as exc:
            shown = one_line(exc.path)  # the message names the file as one_line() shows it
            return (_message(str(exc).replace(shown, shown_name(exc.path))), "", *empty)
        except Exception as exc:  # noqa: BLE001 - the page shows one line, the log has the traceback
            log.exception("analysis failed")
            first = printable((str(exc).splitlines() or [""])[0][:300])
            return (_message(f"analysis failed: {type(exc).__name__}: {first}"), "", *empty)
        req = out_root / f"{next(counter):06d}"
        doc: Any = analysis.segments[0] if len(analysis.segments) == 1 else analysis.segments
        json_path = atomic_write_json(req / "result.json", doc)
        emb_path = None
        if analysis.embeddings is not None:
            emb = analysis.embeddings[0] if len(analysis.embeddings) == 1 else analysis.embeddings
            emb_path = atomic_write_npy(req / "embedding.npy", emb)
        bars = scores_bar_figure(analysis.overall_scores, title="scores (9 emotions)")
        frame_fig = None
        if analysis.frames:
            curves = [(f"{d['speaker']} {d['start']:.1f}–{d['end']:.1f} s", d["start"], analysis.hop_s, fr)
                      for d, fr in list(zip(analysis.segments, analysis.frames))[:6]]
            frame_fig = frame_curves_figure(curves, ncols=1)
        notes = "; ".join(analysis.notes)
        msg = _message(f"done: {len(analysis.segments)} segment(s)" + (f" ({notes})" if notes else ""), "info")
        table = _segments_table(analysis)
        return (msg, _top_html(analysis, analyser.is_test_model), bars,
                gr.update(value=frame_fig, visible=frame_fig is not None),
                gr.update(value=table, visible=bool(want_diarize)),
                str(json_path), str(emb_path) if emb_path else None)

    def load_example():  # type: ignore[no-untyped-def]
        p = example_audio_path()
        if p is None:
            return None, _message("No example audio found (data/ or ../shared/data/ami).")
        # Gradio serves only files under the cwd or the temp dir: hand it a copy in ours
        from tasks.core.storage import atomic_write_bytes

        copy = out_root / "examples" / shown_name(p)  # a name the page can carry (valid UTF-8)
        if not copy.is_file():
            atomic_write_bytes(copy, p.read_bytes())
        return str(copy), _message(f"example {shown_name(p)} loaded: press Analyse.", "info")

    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    with gr.Blocks(title="emoflow: speech emotion", analytics_enabled=False) as demo:
        gr.Markdown(f"## emoflow · speech emotion (emotion2vec+)\nModel: `{model_id}`")
        if analyser.is_test_model:
            gr.HTML(TEST_MODEL_HTML)
        with gr.Row():
            with gr.Column(scale=1):
                audio_in = gr.File(label=f"Audio file (WAV, MP3, M4A, FLAC, OGG; up to {MAX_UPLOAD_MB} MB): "
                                         "drop it here", file_count="single", type="filepath", elem_id="audio-input")
                rejected = gr.Textbox("", visible="hidden", elem_id="rejected-upload")
                example_btn = gr.Button("Load example audio", elem_id="example-button")
                granularity = gr.Radio(["utterance", "frame"], value="utterance", label="Granularity",
                                       elem_id="granularity")
                want_emb = gr.Checkbox(label="Extract embedding", value=False, elem_id="extract-embedding")
                with gr.Accordion("Options", open=False):
                    want_denoise = gr.Checkbox(label="Denoise first", value=False, elem_id="denoise")
                    want_diarize = gr.Checkbox(label="Diarize (results per speaker segment)", value=False,
                                               elem_id="diarize")
                analyse_btn = gr.Button("Analyse", variant="primary", elem_id="analyse-button")
                message = gr.HTML("", elem_id="message")
            with gr.Column(scale=2):
                top = gr.HTML("", elem_id="top-emotion-panel")
                bars = gr.Plot(label="Scores", format="png", elem_id="scores-chart")
                frame_chart = gr.Plot(label="Frame scores over time", format="png", visible=False,
                                      elem_id="frame-chart")
                seg_table = gr.Dataframe(headers=["segment", "speaker", "start", "end", "emotion", "confidence", "status",
                                                  "what was said"],
                                         visible=False, label="Speaker segments", elem_id="segments-table")
                with gr.Row():
                    json_out = gr.File(label="result.json", elem_id="result-json", interactive=False)
                    emb_out = gr.File(label="embedding.npy", elem_id="embedding-npy", interactive=False)
        audio_in.upload(on_upload, audio_in, [message, rejected])
        rejected.change(on_rejected, rejected, [message, audio_in])
        example_btn.click(load_example, None, [audio_in, message])
        analyse_btn.click(run, [audio_in, granularity, want_emb, want_denoise, want_diarize, rejected],
                          [message, top, bars, frame_chart, seg_table, json_out, emb_out])
    demo.emoflow_analyser = analyser  # type: ignore[attr-defined]
    demo.emoflow_theme = theme  # type: ignore[attr-defined]  # Gradio 6 takes the theme in launch()
    return demo


def launch_ui(*, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, config: Config | str | Path | None = None,
              block: bool = True, model: Any = None):
    """Build and serve the UI on ``host:port`` (local only by default). Returns the Blocks.

    ``block=False`` returns once the server is up (tests); ``demo.close()`` stops it.
    """
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_ui(config, model=model)
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=host, server_port=port, share=False, inbrowser=False, show_error=False,
                prevent_thread_lock=not block, max_file_size=MAX_UPLOAD_BYTES, quiet=True,
                theme=getattr(demo, "emoflow_theme", None), head=REJECT_OVERSIZE_JS)
    return demo


__all__ = ["build_ui", "launch_ui", "example_audio_path", "check_upload", "too_big_message", "rejected_upload_message",
           "Analyser", "Analysis", "UIInputError", "MAX_UPLOAD_BYTES"]
