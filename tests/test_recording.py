"""RecordingJob: the config is validated once per job object and pickles stay plain."""

from __future__ import annotations

import pickle
from dataclasses import replace

import pytest

from tasks.pipeline.job import RecordingJob
from tasks.core.config import Config
from tasks.core.records import Recording


def _job(config: dict) -> RecordingJob:
    return RecordingJob(recording=Recording("rec", "/data/rec.wav", "0" * 64), out_dir="/tmp/out",
                        config=config, keys={"load": "k"}, models={})


def test_cfg_is_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = Config.model_validate.__func__

    def counting(cls, obj, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(cls, obj, *args, **kwargs)

    monkeypatch.setattr(Config, "model_validate", classmethod(counting))
    job = _job(Config().to_plain() | {"screen": {"threshold": 0.55}})
    first = job.cfg
    assert job.cfg is first and job.cfg.screen.threshold == 0.55 and len(calls) == 1
    assert "cfg" not in replace(job, out_dir="/tmp/other").__dict__  # a new job validates its own


def test_job_pickles_without_the_validated_config() -> None:
    job = _job(Config().to_plain())
    assert job.cfg.screen.threshold == Config().screen.threshold
    data = pickle.dumps(job)
    assert b"tasks.core.config" not in data  # the plain dict travels, not the pydantic model
    back = pickle.loads(data)
    assert back == job and "cfg" not in back.__dict__ and back.cfg == job.cfg
