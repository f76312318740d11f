"""Stereo calls through the flow's stages: split by channel, names, the emotion model hears the
speaker's own channel; a dual-mono copy is mixed. Real LibriSpeech voices, real weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tasks.core.config import load_config

SR = 16000



@pytest.fixture(scope="module")
def call(tmp_path_factory: pytest.TempPathFactory, librispeech_voices: list[list[Path]]) -> dict[str, Path]:
    """Agent (left) and customer (right) take turns; each channel hears the other at 12 %, 10 ms late."""
    v = librispeech_voices
    left, right = np.zeros(0, np.float32), np.zeros(0, np.float32)
    agent_turns = []
    for k, f in enumerate([v[0][0], v[3][0], v[0][1], v[3][1]]):
        x, _ = sf.read(f, dtype="float32")
        x = x[: 5 * SR]
        x = x * (0.05 / np.sqrt(np.mean(x**2)))  # each channel at a call's usual level (line AGC)
        pause = np.zeros(int(0.5 * SR), np.float32)
        own, other = np.concatenate([x, pause]), np.zeros(x.size + pause.size, np.float32)
        if k % 2 == 0:
            agent_turns.append((left.size / SR, (left.size + x.size) / SR))
            left, right = np.concatenate([left, own]), np.concatenate([right, other])
        else:
            left, right = np.concatenate([left, other]), np.concatenate([right, own])
    delay = int(0.01 * SR)
    bleed_l = np.concatenate([np.zeros(delay, np.float32), right[:-delay]]) * 0.12
    bleed_r = np.concatenate([np.zeros(delay, np.float32), left[:-delay]]) * 0.12
    stereo = np.stack([left + bleed_l, right + bleed_r], axis=1)
    d = tmp_path_factory.mktemp("calls")
    sf.write(d / "call.wav", stereo, SR)
    mono = (left + right) / 2
    sf.write(d / "dualmono.wav", np.stack([mono, mono * 0.8], axis=1), SR)
    return {"call": d / "call.wav", "dualmono": d / "dualmono.wav", "agent_turns": agent_turns}


def _run_stages(path: Path, out: Path, sets: list[str]) -> tuple[object, dict[str, object]]:
    from flows.pipeline import prepare_run
    from tasks.pipeline.runner import run_stage
    from tasks.stages import REGISTRY

    cfg = load_config(None, sets)
    jobs, _run = prepare_run([str(path)], config=cfg, out_dir=out)
    return jobs[0], {s: run_stage(jobs[0], s) for s in REGISTRY.order(cfg)}


def test_a_stereo_call_is_split_by_channel_and_heard_per_channel(call, tiny_model_dir, tmp_path: Path) -> None:
    from tasks.emotion.model import get_emotion_model
    from tasks.core.records import Segment

    sets = [f"emotion.model={tiny_model_dir}", "diarization.channel_names=[agent, customer]"]
    job, reports = _run_stages(call["call"], tmp_path, sets)
    decision = reports["channels"].facts
    assert decision["mode"] == "split", decision
    assert reports["diarize"].facts["speakers"] == ["agent", "customer"]
    assert reports["emotion"].facts["heard"] == "channel"
    assert len(reports["denoise"].facts["channels"]) == 2  # denoised per channel
    folder = tmp_path / "recordings" / "call"
    rttm = (folder / "diarization.rttm").read_text().splitlines()
    fields = [line.split() for line in rttm]
    agent = [(float(f[3]), float(f[3]) + float(f[4])) for f in fields if f[7] == "agent"]
    # the agent speaks turns 1 and 3; the customer's bleed in the agent's channel is not agent speech
    assert agent and all(any(a - 0.3 <= s and e <= b + 0.3 for a, b in call["agent_turns"]) for s, e in agent), agent
    # the scores come from the agent's own (denoised) channel, not from the mix
    docs = [json.loads(p.read_text()) for p in sorted((folder / "segments").glob("*.json"))]
    doc = next(d for d in docs if d["speaker"] == "agent")
    from tasks.pipeline import layout

    channel = layout.read_channels(job.artefact("denoise"))[0]
    seg = Segment(doc["segment_id"], "call", "agent", doc["start"], doc["end"])
    model = get_emotion_model(job.cfg.emotion, max_s=job.cfg.segmentation.max_s)
    direct = model.analyse([seg.cut(np.asarray(channel))])[0]
    got = np.array([doc["scores"][e] for e in doc["scores"]])
    np.testing.assert_allclose(got, direct.scores, atol=2e-6)


def test_a_dual_mono_copy_is_mixed(call, tiny_model_dir, tmp_path: Path) -> None:
    _job, reports = _run_stages(call["dualmono"], tmp_path, [f"emotion.model={tiny_model_dir}"])
    assert reports["channels"].facts["mode"] == "mix"
    assert "same signal" in reports["channels"].facts["reason"]
    assert reports["emotion"].facts["heard"] == "mix"
    assert all(not s.startswith("CH") for s in reports["diarize"].facts["speakers"])
