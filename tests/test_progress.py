"""Progress inside a recording: the on-disk reporter, ETA text, the stages' callbacks, and the
plain progress lines of a pipeline run whose stderr is not a terminal."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from flows.pipeline import run_pipeline  # imports Prefect, which binds its console log handler now
from tasks.core.progress import (
    ProgressReporter,
    clear_progress,
    describe_stage,
    eta_seconds,
    format_duration,
    progress_line,
    progress_path,
    read_progress,
    report_progress,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _monotonic_to_total(calls: list[tuple[float, float]]) -> None:
    assert calls, "the callback was never called"
    totals = {t for _, t in calls}
    assert len(totals) == 1 and totals.pop() > 0
    done = [d for d, _ in calls]
    assert done == sorted(done) and all(0 <= d <= t for d, t in calls)
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1]


# --------------------------------------------------------------------------- reporter and reader
def test_reporter_writes_rate_limited_and_reader_reads(tmp_path: Path) -> None:
    clock = FakeClock()
    rep = ProgressReporter(out_dir=tmp_path, recording_id="rec1", stage="diarize", unit="‰", min_interval_s=0.5,
                           clock=clock)
    assert read_progress(out_dir=tmp_path, recording_id="rec1") is None and rep.started is None
    rep(0, 1000)  # the first call is written, and starts the stage's clock
    clock.now = 0.2
    rep(100, 1000)  # within 0.5 s: skipped
    assert read_progress(out_dir=tmp_path, recording_id="rec1")["done"] == 0
    clock.now = 0.6
    rep(420, 1000)
    record = read_progress(out_dir=tmp_path, recording_id="rec1")
    assert record["done"] == 420 and record["total"] == 1000 and record["stage"] == "diarize"
    assert record["unit"] == "‰" and record["recording_id"] == "rec1" and record["started"] == rep.started
    clock.now = 0.7
    rep(1000, 1000)  # completion is always written
    assert read_progress(out_dir=tmp_path, recording_id="rec1")["done"] == 1000
    assert rep.writes == 3
    path = progress_path(out_dir=tmp_path, recording_id="rec1")
    assert path == tmp_path / ".emoflow" / "progress" / "rec1.json"
    assert not [p for p in path.parent.iterdir() if p.name != "rec1.json"]  # no temporary files left
    clear_progress(out_dir=tmp_path, recording_ids=["rec1", "never-written"])
    assert not path.exists()


def test_reader_ignores_partial_or_foreign_files(tmp_path: Path) -> None:
    path = progress_path(out_dir=tmp_path, recording_id="r")
    path.parent.mkdir(parents=True)
    path.write_text('{"stage": "diar')
    assert read_progress(out_dir=tmp_path, recording_id="r") is None
    path.write_text(json.dumps({"something": 1}))
    assert read_progress(out_dir=tmp_path, recording_id="r") is None
    report_progress(out_dir=tmp_path, recording_id="r", stage="emotion", done=3.5, total=7.0, unit="s", started=10.0)
    assert read_progress(out_dir=tmp_path, recording_id="r")["started"] == 10.0


def test_format_duration_and_eta() -> None:
    assert [format_duration(s) for s in (0, 4.4, 59.6, 70, 3599, 3600, 7500)] == \
        ["0s", "4s", "1m00s", "1m10s", "59m59s", "1h00m", "2h05m"]
    assert eta_seconds(done=4, total=100, elapsed=10) is None  # under 5 %: no ETA yet
    assert eta_seconds(done=5, total=100, elapsed=10) == pytest.approx(190)
    assert eta_seconds(done=42, total=100, elapsed=42) == pytest.approx(58)
    assert eta_seconds(done=1, total=0, elapsed=1) is None


def test_describe_stage_and_progress_line() -> None:
    record = {"stage": "diarize", "done": 420, "total": 1000, "started": 1000.0}
    assert describe_stage(record, stage="diarize", now=1050.7) == "diarize 42% (ETA 1m10s)"
    assert describe_stage({**record, "done": 30}, stage="diarize", now=1010.0) == "diarize 3%"
    assert describe_stage({**record, "done": 1000}, stage="diarize", now=1010.0) == "diarize 100%"
    assert describe_stage(record, stage="segment", now=1010.0) == "segment"  # the record is about another stage
    assert describe_stage(None, stage="load") == "load"
    line = progress_line(finished=0, total=1, segments=0, activities=["rec1 diarize 42% (ETA 1m10s)"], elapsed=125)
    assert line == "emoflow: progress 0/1 recordings · rec1 diarize 42% (ETA 1m10s) · 0 segments · 2m05s elapsed"


# --------------------------------------------------------------------------- the stages' callbacks
def test_emotion_engine_reports_seconds_of_audio(tiny_model_dir: Path, shared_data: Path) -> None:
    from tasks.core.config import EmotionConfig
    from tasks.emotion.model import get_emotion_model

    audio, sr = sf.read(shared_data / "ami" / "dev00.flac", dtype="float32")
    bounds = [(0.0, 1.5), (1.5, 4.0), (4.0, 4.8), (5.0, 8.2), (9.0, 12.0)]
    clips = [audio[int(a * sr): int(b * sr)] for a, b in bounds]
    model = get_emotion_model(EmotionConfig(model=str(tiny_model_dir), device="cpu"))
    calls: list[tuple[float, float]] = []
    results = model.analyse(clips, batch_seconds=6.0, progress=lambda d, t: calls.append((d, t)))
    assert len(results) == len(clips)
    _monotonic_to_total(calls)
    assert calls[-1][1] == pytest.approx(sum(b - a for a, b in bounds))
    assert len(calls) >= 3  # several batches, each reported


def test_diarization_hook_maps_steps_to_one_monotonic_fraction() -> None:
    from tasks.diarization.pipeline import PROGRESS_TOTAL, _ProgressHook

    calls: list[tuple[float, float]] = []
    hook = _ProgressHook(lambda d, t: calls.append((d, t)))
    hook("segmentation", None, completed=0, total=10)
    hook("segmentation", None, completed=5, total=10)
    hook("segmentation", None, completed=40, total=10)  # pyannote overshoots on its last batch
    hook("segmentation", "artefact")  # end of step (no completed/total)
    hook("speaker_counting", "artefact")
    hook("embeddings", None, completed=1, total=2)
    hook("embeddings", "artefact")
    hook("resegmentation", None, completed=50, total=100)
    hook("resegmentation", None, completed=100, total=100)
    hook("refinement", None, completed=1, total=2)
    hook("refinement", None, completed=2, total=2)
    assert [d for d, _ in calls] == [0, 100, 200, 485, 770, 850, 930, 965, 1000]
    assert {t for _, t in calls} == {PROGRESS_TOTAL}
    plain: list[tuple[float, float]] = []
    _ProgressHook(lambda d, t: plain.append((d, t)), skip=("resegmentation", "refinement"))("embeddings", "artefact")
    assert plain == [(PROGRESS_TOTAL, PROGRESS_TOTAL)]  # without resegmentation and refinement embeddings end the work
    no_refine: list[tuple[float, float]] = []
    hook = _ProgressHook(lambda d, t: no_refine.append((d, t)), skip=("refinement",))
    hook("embeddings", "artefact")
    hook("resegmentation", "artefact")
    assert [d for d, _ in no_refine] == [828, 1000]  # 0.77 / 0.93 of the work, stretched


def test_progress_steps_skipped_follow_the_config() -> None:
    from tasks.core.config import DiarizationConfig
    from tasks.diarization.pipeline import progress_steps_skipped

    assert progress_steps_skipped(DiarizationConfig()) == ()
    assert progress_steps_skipped(DiarizationConfig(speech_detector="none")) == ("refinement",)
    assert progress_steps_skipped(DiarizationConfig(resegment_window_s=0)) == ("resegmentation",)
    assert progress_steps_skipped(DiarizationConfig(pipeline="pyannote/speaker-diarization-community-1")) == (
        "resegmentation", "refinement")


def test_speech_probability_reports_its_chunks(shared_data: Path) -> None:
    from tasks.audio import vad

    audio, _ = sf.read(shared_data / "ami" / "dev00.flac", dtype="float32")
    for detector in ("silero", "segmentation"):
        calls: list[tuple[float, float]] = []
        probs, _, _ = vad.speech_probability(audio, detector=detector, progress=lambda d, t: calls.append((d, t)))
        _monotonic_to_total(calls)
        assert len(calls) >= 3, detector
        quiet, _, _ = vad.speech_probability(audio, detector=detector)
        np.testing.assert_array_equal(probs, quiet)  # reporting changes nothing


def test_diarize_reports_progress_on_a_real_recording(shared_data: Path) -> None:
    from tasks.diarization import pipeline as D
    from tasks.core.config import DiarizationConfig

    audio, _ = sf.read(shared_data / "ami" / "dev00.flac", dtype="float32")
    calls: list[tuple[float, float]] = []
    with D.torch_threads(1):
        result = D.diarize(audio, recording_id="dev00", config=DiarizationConfig(device="cpu", threads=1),
                           progress=lambda d, t: calls.append((d, t)))
    assert len(result.speakers) >= 2
    _monotonic_to_total(calls)
    done = [d for d, _ in calls]
    assert len(set(done)) == len(done)  # strictly increasing: no repeated reports
    assert any(0 < d <= 200 for d in done) and any(200 < d < 770 for d in done)  # segmentation, embeddings
    assert any(930 < d < 1000 for d in done)  # the Silero pass reports inside the refinement's span


# --------------------------------------------------------------------------- the flow's display
class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class _Future:
    """What the display reads of a Prefect future: its wrapped concurrent future."""

    def __init__(self) -> None:
        import concurrent.futures

        self.wrapped_future: concurrent.futures.Future = concurrent.futures.Future()

    def start(self) -> "_Future":
        self.wrapped_future.set_running_or_notify_cancel()
        return self

    def finish(self) -> "_Future":
        if not self.wrapped_future.running():
            self.start()
        self.wrapped_future.set_result(None)
        return self


@pytest.mark.parametrize("console", [False, True])
def test_run_progress_names_running_recordings_with_stage_and_eta(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   console: bool) -> None:
    import time
    from types import SimpleNamespace

    from flows.display import RunProgress

    monkeypatch.setenv("EMOFLOW_PROGRESS_INTERVAL_S", "0")
    monkeypatch.setenv("EMOFLOW_PROGRESS", "1" if console else "0")
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    run_log = _Records()
    logger = logging.getLogger("test-run-progress")
    logger.addHandler(run_log)
    logger.setLevel(logging.INFO)
    jobs = [SimpleNamespace(recording_id="rec1"), SimpleNamespace(recording_id="rec2")]
    order = ("load", "diarize", "emotion")
    rec1 = [_Future().finish(), _Future().start(), _Future()]
    rec2 = [_Future(), _Future(), _Future()]  # still queued: not named
    chains = [list(zip(order, rec1)), list(zip(order, rec2))]
    stale = report_progress(out_dir=tmp_path, recording_id="rec1", stage="diarize", done=999, total=1000)
    with RunProgress(jobs, out_dir=str(tmp_path), logger=logger) as progress:
        assert not stale.exists()  # an earlier run's record is not shown as this run's
        progress.update(chains, settled=0, segments=0)
        report_progress(out_dir=tmp_path, recording_id="rec1", stage="diarize", done=420, total=1000,
                        started=time.time() - 50.7)
        progress.update(chains, settled=0, segments=0)
        rec1[1].finish()
        rec1[2].start()
        progress.update(chains, settled=0, segments=0)
        rec1[2].finish()
        progress.update(chains, settled=1, segments=7)
    assert not (tmp_path / ".emoflow" / "progress" / "rec1.json").exists()
    logger.removeHandler(run_log)
    if console:  # the rich bar, not plain lines
        assert not run_log.messages and "1/2 recordings · 7 segments" in stderr.getvalue()
        return
    assert stderr.getvalue().splitlines() == run_log.messages
    assert [re.sub(r" · \S+ elapsed$", "", m) for m in run_log.messages] == [
        "emoflow: progress 0/2 recordings · rec1 diarize · 0 segments",
        "emoflow: progress 0/2 recordings · rec1 diarize 42% (ETA 1m10s) · 0 segments",
        "emoflow: progress 0/2 recordings · rec1 emotion · 0 segments",
        "emoflow: progress 1/2 recordings · 7 segments",
    ]


# --------------------------------------------------------------------------- a pipeline run, not on a terminal
def test_pipeline_logs_progress_lines_when_stderr_is_not_a_terminal(prefect_harness, tiny_model_dir: Path,
                                                                    shared_data: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.core.config import load_config

    monkeypatch.setenv("EMOFLOW_PROGRESS_INTERVAL_S", "0.2")
    monkeypatch.delenv("EMOFLOW_PROGRESS", raising=False)
    stderr = io.StringIO()  # not a terminal, like a scheduled run's log file
    monkeypatch.setattr(sys, "stderr", stderr)
    run_log = _Records()
    logging.getLogger("prefect.flow_runs").addHandler(run_log)  # what the Prefect run logger sends
    cfg = load_config(None, [f"emotion.model={tiny_model_dir}", "emotion.device=cpu", "diarization.device=cpu",
                             "diarization.threads=1", "denoise.enabled=false", "report.enabled=false",
                             "runner.retries=0"])
    out = tmp_path / "run"
    try:
        summary = run_pipeline([str(shared_data / "ami" / "dev00.flac")], config=cfg, out_dir=out)
    finally:
        logging.getLogger("prefect.flow_runs").removeHandler(run_log)
    assert summary.recordings == 1 and not summary.failed
    pattern = re.compile(r"^emoflow: progress [01]/1 recordings · dev00 (diarize|emotion) (\d+)%.* · \d+ segments "
                         r"· \S+ elapsed$", re.M)
    found = pattern.findall(stderr.getvalue())
    assert found, stderr.getvalue()[-3000:]
    assert all(0 <= int(pct) <= 100 for _, pct in found)
    assert "diarize" in {stage for stage, _ in found}
    assert any(pattern.match(m) for m in run_log.messages)  # the same lines go to the Prefect run log
    assert not (out / ".emoflow" / "progress" / "dev00.json").exists()  # cleared when the run ends
