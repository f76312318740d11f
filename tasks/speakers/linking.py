"""The voices stage: one CAM++ vector per diarized speaker, and the enrolled names they match.

Per recording, :func:`compute_voices` embeds each diarized speaker's exclusive speech
(:func:`tasks.speakers.voiceprints.speaker_centroids`) and, when ``diarization.known_speakers`` names a
speakers directory, matches the vectors to its voiceprints (:func:`tasks.speakers.voiceprints.name_speakers`:
an assignment, so two speakers of one recording never share a name; below
``diarization.known_threshold`` a speaker keeps its ``SPEAKER_xx`` label). The names are a fact
of this stage, read by export (RTTM, tables, segment JSON) and by the run's cross-recording
linking (:func:`link_run_speakers`, the ``global_speaker`` column).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

import numpy as np


VOICE_KEYS = ("known_speakers", "known_threshold", "link_threshold")
"""Keys of the ``diarization`` section that only naming and linking read (not diarization)."""


def store_digest(store: str | None) -> str:
    """sha256 of a speakers directory's voiceprints (their names and bytes): enrolling or
    removing a voice changes it, so the voices stage names speakers anew."""
    if not store:
        return ""
    root = Path(store).expanduser()
    h = hashlib.sha256(str(root).encode())
    if root.is_dir():
        for f in sorted(root.glob("*")):
            if f.suffix in (".json", ".npy") and f.is_file():
                h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def rename_speaker(label: str, names: Mapping[str, str]) -> str:
    """A segment's speaker under ``names`` (an overlap's ``A+B`` renames each part)."""
    return "+".join(names.get(part, part) for part in str(label).split("+"))


def link_run_speakers(voices: Mapping[str, tuple[dict[str, np.ndarray], dict[str, str]]], *,
                      threshold: float) -> dict[tuple[str, str], str]:
    """Global speaker ids of a run: ``(recording id, speaker as exported)`` → id.

    ``voices`` maps each recording id to its (centroids, names) from the voices stage. Enrolled
    names are their own global ids; other voices get ``G00``, ``G01``... from
    :func:`tasks.speakers.voiceprints.link_speakers` (never two speakers of one recording in one id).
    """
    from tasks.speakers.voiceprints import link_speakers

    centroids = {rid: cents for rid, (cents, _) in voices.items()}
    named = {(rid, label): name for rid, (_, names) in voices.items() for label, name in names.items()
             if name != label}
    linked = link_speakers(centroids, threshold=threshold, names=named)
    out: dict[tuple[str, str], str] = {}
    for rid, (_, names) in voices.items():
        for label, name in names.items():
            gid = linked.get((rid, label))
            if gid is not None:
                out[(rid, name)] = gid
    return out
