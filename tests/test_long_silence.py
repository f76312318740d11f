"""Long digital silence costs little: peak memory and cache per hour of input stay within the
bounds the README states (measured on 10 minutes; ``benchmarks/silence_memory.py`` measures 2 h)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tasks.core.config import load_config

MINUTES = 10
PEAK_MB_FIXED, PEAK_MB_PER_HOUR = 250, 500
"""Peak RSS growth bound: models and buffers (fixed) + the float32 audio held per hour."""
CACHE_MB_PER_HOUR = 240
"""Cache bound: one float32 16 kHz copy of the audio (230 MB/h); the denoised copy of digital
silence is a hard link to it, and nothing else grows with the silence."""


def _unique_bytes(folder: Path) -> int:
    seen = {}
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())


def test_ten_minutes_of_silence_stay_within_the_memory_and_cache_bounds(tmp_path: Path, tiny_model_dir: Path) -> None:
    psutil = pytest.importorskip("psutil")
    from tasks.pipeline.runner import run_stages
    from tasks.run.plan import prepare_run

    wav = tmp_path / "silence.wav"
    sf.write(wav, np.zeros(MINUTES * 60 * 16000, np.int16), 16000, subtype="PCM_16")
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        jobs, _ = prepare_run([str(wav)], config=load_config(None, [f"emotion.model={tiny_model_dir}"]),
                              out_dir=tmp_path / "out")
        reports = run_stages(jobs[0])
    finally:
        stop.set()
        sampler.join()
    hours = MINUTES / 60
    assert reports["export"].facts.get("segments", 0) == 0
    growth_mb = (peak[0] - base) / 2**20
    assert growth_mb < PEAK_MB_FIXED + PEAK_MB_PER_HOUR * hours, growth_mb
    cache_mb = _unique_bytes(tmp_path / "out" / ".emoflow" / "artefacts") / 2**20
    assert cache_mb / hours < CACHE_MB_PER_HOUR, cache_mb
