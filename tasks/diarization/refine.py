"""Refine a diarization with a sharper speech detector: turn edges and unlabelled speech.

segmentation-3.0 (pyannote's pipeline) decides speech on ~17 ms frames averaged over
overlapping 10 s windows: its turns start late, end late and bridge short pauses, and it leaves
quiet speech without a speaker. Given the frame probabilities of a sharper detector (Silero VAD,
:mod:`tasks.audio.vad`), :func:`refine` edits a diarization on 10 ms frames:

1. **edges and pauses** -- a turn's leading and trailing frames that the detector calls
   non-speech are dropped, non-speech of at least ``pause_s`` inside a single-speaker turn is
   cut out, and a turn grows into adjacent speech no speaker holds, each edge by at most
   ``shift_s`` (onsets first: they are the late ones);
2. **pads** -- every turn is then widened by ``pad_onset_s`` / ``pad_offset_s`` into frames no
   speaker holds, so a turn (and the emotion segment cut from it) keeps its first syllable;
3. **recovered speech** -- speech the detector hears that still has no speaker is cut into
   pieces of at most ``piece_s`` and given, piece by piece, the speaker whose CAM++ centroid is
   nearest (cosine distance), when that distance is at most ``max_distance``; otherwise it stays
   unlabelled (it is not in the annotation).

Overlapped speech (two or more speakers) is never trimmed or relabelled. A turn of which the
detector hears nothing, or less than ``min_heard`` of it, is not trimmed: the detector missed
it, not the segmentation (Silero misses quiet and distant AMI speech that segmentation-3.0
rightly finds). Speaker
centroids come from up to ``CENTROID_WINDOWS`` evenly spaced windows of each speaker's
exclusive speech.
"""

from __future__ import annotations

import numpy as np
from pyannote.core import Annotation, Segment

from tasks.core.timebase import SAMPLE_RATE, compute_num_samples
from tasks.audio.vad import hysteresis, runs
from tasks.speakers.campplus import embed_pieces
from tasks.speakers.vectors import unit_centroids

FRAME_S = 0.01
CENTROID_WINDOWS = 40
CENTROID_WINDOW_S = 1.5
MIN_PIECE_S = 0.3  # CAM++ needs 0.25 s of audio (CamPlusPlusEmbedding.min_num_samples)


def to_frames(annotation: Annotation, labels: list[str], n: int) -> np.ndarray:
    """``(n, len(labels))`` bool activity of ``annotation`` on ``FRAME_S`` frames (a frame is on
    when its centre lies inside a segment)."""
    out = np.zeros((n, len(labels)), dtype=bool)
    for seg, _, lab in annotation.itertracks(yield_label=True):
        a = max(0, int(np.ceil(seg.start / FRAME_S - 0.5)))
        b = min(n, int(np.ceil(seg.end / FRAME_S - 0.5)))
        if b > a:
            out[a:b, labels.index(str(lab))] = True
    return out


def to_annotation(frames: np.ndarray, labels: list[str], *, uri: str | None, duration: float) -> Annotation:
    """Inverse of :func:`to_frames`: one segment per run, clipped to ``duration``."""
    out = Annotation(uri=uri)
    for k, lab in enumerate(labels):
        for a, b in runs(frames[:, k]):
            seg = Segment(round(a * FRAME_S, 3), round(min(b * FRAME_S, duration), 3))
            if seg.duration > 0:
                out[seg, out.new_track(seg)] = lab
    return out


def speech_frames(probs: np.ndarray, *, frame_step: float, n: int, onset: float, offset: float) -> np.ndarray:
    """The detector's speech (hysteresis ``onset``/``offset``) resampled to ``n`` 10 ms frames."""
    active = hysteresis(np.asarray(probs), onset=onset, offset=offset)
    if active.size == 0:
        return np.zeros(n, dtype=bool)
    idx = np.minimum(((np.arange(n) + 0.5) * FRAME_S / frame_step).astype(int), active.size - 1)
    return active[idx]


def _embed(audio: np.ndarray, pieces: list[tuple[float, float]], embedding) -> np.ndarray:
    """Unit CAM++ embeddings ``(len(pieces), D)`` of pieces given in seconds (NaN rows when too short)."""
    return embed_pieces(audio, [(compute_num_samples(a), compute_num_samples(b)) for a, b in pieces],
                        embedder=embedding, min_samples=compute_num_samples(MIN_PIECE_S))


def centroids(audio: np.ndarray, exclusive: np.ndarray, *, embedding) -> np.ndarray:
    """Unit centroid ``(K, D)`` of each speaker's CAM++ windows in its exclusive speech (NaN
    rows for speakers with no window)."""
    width = int(round(CENTROID_WINDOW_S / FRAME_S))
    pieces, owner = [], []
    for k in range(exclusive.shape[1]):
        starts = [a + i for a, b in runs(exclusive[:, k]) for i in range(0, b - a - width + 1, width)]
        if len(starts) > CENTROID_WINDOWS:
            starts = [starts[i] for i in np.linspace(0, len(starts) - 1, CENTROID_WINDOWS).round().astype(int)]
        pieces += [(s * FRAME_S, (s + width) * FRAME_S) for s in starts]
        owner += [k] * len(starts)
    emb = _embed(audio, pieces, embedding)
    return unit_centroids(emb, owner=np.asarray(owner, dtype=np.int64), count=exclusive.shape[1])


def refine(
    audio: np.ndarray,
    annotation: Annotation,
    exclusive: Annotation,
    *,
    speech_probs: np.ndarray,
    frame_step: float,
    embedding=None,
    onset: float = 0.5,
    offset: float = 0.35,
    shift_s: float = 0.5,
    pause_s: float = 0.2,
    min_heard: float = 0.0,
    max_distance: float = 0.0,
    pad_onset_s: float = 0.0,
    pad_offset_s: float = 0.0,
    piece_s: float = 2.0,
    min_recover_s: float = 0.5,
) -> tuple[Annotation, Annotation]:
    """Move turn edges to the detector's speech and label the speech it alone hears (module doc).

    Parameters
    ----------
    audio : np.ndarray
        The diarized 16 kHz mono waveform.
    annotation, exclusive : Annotation
        The overlap-aware and exclusive diarizations.
    speech_probs : np.ndarray
        The detector's frame speech probabilities (:func:`tasks.audio.vad.speech_probability`), frames
        of ``frame_step`` seconds starting at 0.
    embedding
        CAM++ model with ``embed_features`` (needed when ``max_distance`` > 0).
    onset, offset : float
        Hysteresis thresholds on ``speech_probs``.
    shift_s : float
        Most an edge moves (either way); 0 leaves edges alone.
    pause_s : float
        Non-speech at least this long inside a single-speaker turn is cut; 0 = never.
    min_heard : float
        Edges are trimmed and pauses cut only in turns of which the detector calls at least this
        share speech (quiet, distant voices it does not hear well are left alone).
    max_distance : float
        Largest cosine distance to a speaker centroid at which unlabelled speech is given that
        speaker; 0 = no speech recovered.
    pad_onset_s, pad_offset_s : float
        After the edges moved, every turn is widened by this much before its onset / after its
        offset into frames no speaker holds (the detector's 32 ms frames start speech late).
    piece_s, min_recover_s : float
        Recovered speech is labelled in pieces of at most ``piece_s``; runs shorter than
        ``min_recover_s`` stay unlabelled.

    Returns
    -------
    annotation, exclusive : Annotation
        Refined copies with the same labels.
    """
    labels = sorted({str(x) for x in annotation.labels()} | {str(x) for x in exclusive.labels()})
    duration = audio.shape[0] / SAMPLE_RATE
    n = int(np.ceil(duration / FRAME_S - 1e-9))
    if not labels or n == 0:
        return annotation, exclusive
    full = to_frames(annotation, labels, n)
    excl = to_frames(exclusive, labels, n)
    speech = speech_frames(speech_probs, frame_step=frame_step, n=n, onset=onset, offset=offset)
    shift = int(round(shift_s / FRAME_S))
    pause = int(round(pause_s / FRAME_S))

    count = full.sum(axis=1)
    if shift > 0 or pause > 0:  # trim non-speech edges and cut pauses of single-speaker turns
        drop = np.zeros_like(full)
        for k in range(len(labels)):
            for a, b in runs(full[:, k]):
                heard = np.flatnonzero(speech[a:b])
                if heard.size == 0 or heard.size < min_heard * (b - a):
                    continue  # the detector misses (much of) this turn: trust the segmentation
                lead = min(int(heard[0]), shift)
                trail = min(b - a - 1 - int(heard[-1]), shift)
                drop[a : a + lead, k] = True
                drop[b - trail : b, k] = True
                if pause > 0:
                    for p, q in runs(~speech[a:b]):
                        if q - p >= pause and p > 0 and q < b - a:
                            drop[a + p : a + q, k] = True
        drop &= (count == 1)[:, None]  # overlapped speech keeps its labels
        full &= ~drop
        excl &= ~drop
    if shift > 0:  # grow onsets backwards, then offsets forwards, into speech no one holds
        for forwards in (False, True):
            free = speech & ~full.any(axis=1)
            for k in range(len(labels)):
                for a, b in runs(full[:, k]):
                    j, steps = (b, 0) if forwards else (a - 1, 0)
                    while 0 <= j < n and steps < shift and free[j]:
                        full[j, k] = excl[j, k] = True
                        free[j] = False
                        j += 1 if forwards else -1
                        steps += 1
    for forwards, pad in ((False, int(round(pad_onset_s / FRAME_S))), (True, int(round(pad_offset_s / FRAME_S)))):
        if pad > 0:  # widen every turn into frames no speaker holds (keeps word edges whole)
            held = full.any(axis=1)
            for k in range(len(labels)):
                for a, b in runs(full[:, k]):
                    span = range(b, min(n, b + pad)) if forwards else range(a - 1, max(-1, a - 1 - pad), -1)
                    for j in span:
                        if held[j]:
                            break
                        full[j, k] = excl[j, k] = held[j] = True  # a neighbour's pad cannot take it too
    if max_distance > 0 and embedding is not None:
        free = speech & ~full.any(axis=1)
        width = max(1, int(round(piece_s / FRAME_S)))
        pieces = []
        for a, b in runs(free):
            if b - a < int(round(min_recover_s / FRAME_S)):
                continue
            m = int(np.ceil((b - a) / width))
            edges = np.linspace(a, b, m + 1).round().astype(int)
            pieces += list(zip(edges[:-1].tolist(), edges[1:].tolist()))
        if pieces:
            cents = centroids(audio, excl, embedding=embedding)
            emb = _embed(audio, [(a * FRAME_S, b * FRAME_S) for a, b in pieces], embedding)
            dist = 1.0 - np.nan_to_num(emb @ np.nan_to_num(cents, nan=0.0).T, nan=-1.0)
            for (a, b), d in zip(pieces, dist):
                k = int(np.argmin(d))
                if d[k] <= max_distance:
                    full[a:b, k] = excl[a:b, k] = True
    return (to_annotation(full, labels, uri=annotation.uri, duration=duration),
            to_annotation(excl, labels, uri=exclusive.uri, duration=duration))
