"""transcribe: what was said in every segment row (SenseVoice via funasr): text, word times,
audio events and SenseVoice's own emotion.

Every segment row is transcribed as it is, short and overlap rows included, from the audio the
emotion model hears (the speaker's own channel of a split call; an overlap row from the mix).
Segments are cut at the quietest point of a turn (:mod:`tasks.diarization.segments`), so a
word rarely straddles two rows, and every word belongs to exactly the row it was heard in.
"""

from __future__ import annotations

from typing import Any

from tasks.core.config import Config
from tasks.pipeline import layout
from tasks.pipeline.heard import audio_stage
from tasks.pipeline.stage import Stage, StageContext


def reads(config: Config) -> dict[str, str]:
    return {"segments": "segment", "channels": "channels", "audio": audio_stage(config, heard_by="emotion")}


def compute(ctx: StageContext) -> dict[str, Any]:
    """``transcripts.json``: one record per segment position (None where nothing could be heard)."""
    config = ctx.config.transcribe
    segments = layout.read_segments(ctx["segments"], recording_id="recording")
    if not config.enabled:
        layout.write_transcripts(ctx.out, [None] * len(segments))
        return {"enabled": False, "segments": 0}
    from tasks.models.devices import cpu_workers, torch_threads
    from tasks.transcription.sensevoice import MIN_SAMPLES, get_sensevoice, transcribe_clips

    heard = layout.HeardAudio(audio=ctx["audio"], channels=ctx["channels"])
    clips = {i: s.cut(heard.of(s.speaker)) for i, s in enumerate(segments)}
    clips = {i: c for i, c in clips.items() if c.size >= MIN_SAMPLES}
    model = get_sensevoice(config)
    progress = ctx.progress()
    order = sorted(clips)
    on_cpu = str(model.device) == "cpu"
    threads = config.threads if on_cpu else 0
    workers = cpu_workers(config.workers, threads=threads or _torch_threads(), device=str(model.device))
    with torch_threads(threads):
        results = transcribe_clips(model, [clips[i] for i in order], language=config.language, itn=config.itn,
                                   batch_seconds=config.batch_seconds, workers=workers, progress=progress)
    records: list[dict[str, Any] | None] = [None] * len(segments)
    for i, t in zip(order, results):
        start = segments[i].start
        records[i] = {"text": t.text, "language": t.language, "emotion": t.emotion, "events": list(t.events),
                      "words": [[w, round(start + a, 3), round(start + b, 3)] for w, a, b in t.clean_words]}
    layout.write_transcripts(ctx.out, records)
    done = [r for r in records if r is not None]
    return {"enabled": True, "segments": len(done), "words": sum(len(r["words"]) for r in done),
            "with_text": sum(1 for r in done if r["text"]),
            "languages": sorted({r["language"] for r in done if r["language"]}),
            "events": sorted({e for r in done for e in r["events"]}),
            "seconds_of_audio": round(sum(segments[i].duration for i in order), 3),
            "is_test_model": model.is_test_model}


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


STAGE = Stage(name="transcribe", compute=compute, reads=reads, sections=("transcribe",), models=("transcribe",),
              progress_unit="s")
