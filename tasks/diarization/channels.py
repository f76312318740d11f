"""Channels as speakers: stereo calls with one speaker per channel.

Call-centre recordings usually put the agent on one channel and the customer on the other.
Three public steps:

:func:`decide_channel_mode`
    ``diarization.channels``: ``mix`` (diarize the channels' average, as for any recording),
    ``split`` (each channel is one speaker) or ``auto``: split when 2+ channels carry different
    speakers, judged from the channels' correlation (dual-mono copies correlate ~1), how much of
    one channel leaks into the other (isolated channels: bleed well below the talker) and the
    CAM++ embeddings of each channel's own speech; otherwise mix. The returned
    :class:`ChannelDecision` says which and why (one line for the manifest) with its figures.
:func:`channel_activity`
    Who speaks when, per channel, on the speech detector's frame grid: the bleed path between
    each channel pair (delay and filter) is measured where one channel talks alone (the
    detector's view of the raw channels, on a sample of a long recording) and
    subtracted from the other, and the detector the pipeline already uses
    (:func:`tasks.audio.vad.speech_probability`) decides speech on what is left; noise is the
    detector's to reject, whatever it is. A frame whose energy the remaining bleed explains is
    not speech, so a crosstalk or echo at 0-20 % of the level never becomes speech of the quiet
    channel, while two people talking at once stay overlap.
:func:`diarize_channels`
    The activity as a diarization (:class:`tasks.diarization.pipeline.DiarizationResult`): labels ``CH0``,
    ``CH1``... or ``diarization.channel_names``; the exclusive diarization gives each overlapped
    frame to the channel that is most above its bleed.
"""

from __future__ import annotations

from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pyannote.core import Annotation, Segment

from tasks.core.timebase import SAMPLE_RATE, compute_num_samples
from tasks.core.config import DiarizationConfig
from tasks.audio.vad import regions_from_probability, runs, speech_probability

ChannelMode = Literal["auto", "mix", "split"]

SPEECH_THRESHOLD = 0.5
"""Speech probability above which a channel's frame is heard as speech before its bleed is
cancelled (as the denoise stage's VAD): the frames the bleed paths are measured on."""
RAW_WHOLE_S = 240.0
"""The detector's pass before cancellation (it only finds where each channel talks alone, to
measure the bleed paths on) covers all of a recording up to this long: a sample would save
little there, and short calls hold little such evidence (the ``speech_kept.py --seeds 1,2``
calls, 46-118 s, show 19-440 bleed-path frames per pair on the whole call)."""
RAW_SAMPLE_S = 60.0
"""A longer recording's pass first covers this much of it, in evenly spaced stretches
(:func:`raw_stretches`), twice as much each time a sample shows some channel pair fewer than
:data:`RAW_ENOUGH_FRAMES` bleed-path frames, up to the whole recording (:func:`raw_samples`)."""
RAW_STRETCH_S = 15.0
"""Longest stretch of a sample."""
RAW_ENOUGH_FRAMES = 150
"""Bleed-path frames (:func:`bleed_filters`: 64 ms STFT frames where one channel talks alone)
a sample must show every channel pair (~10 s of each side talking alone). Measured on
``benchmarks/stereo_memory.py``'s 20-minute call: a 240 s sample (4 stretches) showed ~1300 per
pair, 120 s ~660, 60 s (4 x 15 s) 280-370; each gave the whole call's delays, gains within
0.2 dB and 0.006 / 0.007 / 0.013 % of frames decided otherwise. ``speech_kept.py --seeds 1,2``
with a forced 20 s sample of each call (4-66 frames per pair on seed 2 at 10 dB, no retry): 3 of
32 calls got a wrong delay or lost a filter (10 dB DER 0.93 -> 3.10 %)."""
OWN_SPEECH_THRESHOLD = 0.85
"""Speech probability, on a channel with the other channels' bleed cancelled, above which a
frame may be that channel's speech. Chosen on ``benchmarks/speech_kept.py --seeds 1,2`` (32 calls,
8 noises, 20 / 10 dB, each channel its own noise excerpt; DER at ±0.25 s over all calls / worst
noise cell, worst speaker's speech kept at 20 / 10 dB), with :data:`ABOVE_FLOOR_DB`:
0.7 without the floor gate: 2.8 / 1.3 % (cells up to 4.3 / 5.1 %), 99.7 / 95.7 %;
0.8: 1.3 / 0.8 % (2.6 / 2.0 %), 99.7 / 93.4 %; 0.85: 1.1 / 0.9 % (2.0 / 2.1 %), 99.5 / 93.4 %;
0.9 without the gate: 1.0 / 1.2 % (2.0 / 2.6 %), 99.4 / 91.8 %; 0.95 without: 1.0 / 2.3 %, 94.1 /
83.4 %. The false alarm left at 0.7 was almost all within 0.5 s of the channel's own speech
(pauses between words and turn tails the detector holds at 0.7-0.9, their energy at the
channel's noise floor), little remaining bleed or noise."""
SURE_SPEECH = 0.95
"""Speech probability from which the detector is taken at its word whatever the frame's energy."""
ABOVE_FLOOR_DB: float | None = -3.0
"""A frame the detector is not sure of (probability between :data:`OWN_SPEECH_THRESHOLD` and
:data:`SURE_SPEECH`) is speech only when its energy exceeds the channel's noise floor by this
share of the floor (-3 dB: half the floor's power; the floor is the median energy where no
channel's detector hears speech). None: no such gate. -6 / -3 dB gave the same speech kept; a
pure energy gate (every frame, -3 dB) lost quiet speech at 10 dB SNR (worst speaker 82.9 %)."""
PAUSE_FLOOR_DB = 2.0
"""A run of a channel's speech frames whose energy stays within this of the channel's noise floor
for :data:`PAUSE_MIN_S` is a pause the detector held (its hangover between words and after a
turn), cut when the channel's speech is loud enough for that to be safe
(:data:`PAUSE_CUT_MIN_SNR_DB`)."""
PAUSE_MIN_S = 0.25
"""Shortest pause cut (:data:`PAUSE_FLOOR_DB`): shorter dips are stops and word joins."""
PAUSE_CUT_MIN_SNR_DB = 12.0
"""Pauses are cut only on a channel whose median speech frame is at least this far above its
noise floor: there a frame within :data:`PAUSE_FLOOR_DB` of the floor is at least 10 dB below
the speaker's usual level. Chosen on ``benchmarks/speech_kept.py``'s tuning seeds 1-9 and 13-15
(192 calls, every one split; DER at ±0.25 s over all calls, worst noise cell, worst speaker):
20 dB no cut 0.86 % (FA 0.60 %), worst cell 1.36 %, 95.5 %; cut wherever the median is 12 dB up
0.68 % (FA 0.40 %), 1.26 %, 95.5 %; 10 dB: 1.43 %, 3.79 %, 91.3 % with or without (no channel of
a 10 dB call reaches 12 dB: 2.6-11.9, median 7.6; 20 dB calls 7.7-20.7, median 15.9). Cut on
every channel whatever its level, the 10 dB calls lost speech: worst speaker 91.3 -> 71.7 %.
Thresholds of 15 and 18 dB cut too few channels to matter (0.85 / 0.86 %)."""
BLEED_MARGIN_DB = 6.0
"""A channel's frame is its own speech only when its energy above the noise floor is at least
this far above the bleed left after cancellation (6 dB: four times its energy)."""
ENERGY_WINDOW_S = 0.1
"""Frame energies are measured over this window around each detector frame (longer than the
bleed's delay and a phoneme's dip, short enough to follow turn changes)."""
NOISE_GUARD = 0.05
"""``own_db`` (which channel keeps an overlapped frame) compares a frame's energy with the
remaining bleed plus this share of the channel's noise floor (-13 dB)."""
CHANNEL_MIN_GAP_S = 0.2
"""Gaps shorter than this within a channel's speech are filled. Chosen on the simulated calls of
``benchmarks/calls_and_speakers.py`` (3 calls, DER at the ±0.25 s collar): 0 s 3.5 / 2.6 /
6.4 %, 0.2 s 1.7 / 2.5 / 0.5 %, 0.58 s (pyannote's ``min_duration_off``) 1.8 / 4.5 / 2.6 %."""
SMOOTH_FRAMES = 5
"""Per-frame decisions are smoothed by a majority over this many detector frames (~85 ms)."""
MIN_SPEECH_S = 0.1
"""Shorter bursts of a channel's speech are dropped (clicks, bleed that slipped through)."""
SAME_SIGNAL_CORRELATION = 0.5
"""``auto``: channels whose normalised cross-correlation (best lag within ±50 ms) reaches this
carry the same signal (dual-mono, a stereo mix): never split. Measured: dual-mono copies 1.00
(also with a gain difference and independent 20 dB noise: 0.99); simulated calls with
10-15 % bleed 0.05-0.15."""
ISOLATED_BLEED_DB = -10.0
"""``auto``: channels are isolated when each one's estimated bleed into the others is below
this (calls: -14 to -20 dB for 10-20 % crosstalk; two room microphones hear everyone at a few
dB apart)."""
MIN_OWN_SPEECH_S = 2.0
"""``auto``: a channel needs this much speech of its own (nobody else talking) to count as a
speaker."""
SAME_VOICE_SIMILARITY = 0.5
"""``auto``: channels whose own-speech CAM++ embeddings are at least this cosine-similar carry
the same voice (e.g. one talker recorded on two microphones): not split. Same-voice pairs of
LibriSpeech utterances score 0.6-0.9 with CAM++, different voices below 0.35."""
MAX_CORRELATION_LAG_S = 0.05
CORRELATION_BLOCK_S = 10.0
MAX_CORRELATION_BLOCKS = 12
MAX_EMBED_SPEECH_S = 60.0
"""``auto`` embeds at most this much of each channel's own speech."""



def channel_labels(*, count: int, names: list[str] | None = None) -> list[str]:
    """Speaker labels of ``count`` channels: ``names`` when given, else ``CH0``, ``CH1``...

    Raises
    ------
    ValueError
        When fewer names than channels are given, or names repeat.
    """
    if names is None:
        return [f"CH{i}" for i in range(count)]
    names = [str(n) for n in names]
    if len(names) < count:
        raise ValueError(f"diarization.channel_names has {len(names)} names for {count} channels")
    if len(set(names[:count])) < count:
        raise ValueError(f"diarization.channel_names repeats a name: {names[:count]}")
    return names[:count]


# --------------------------------------------------------------------------- activity
@dataclass(frozen=True)
class ChannelActivity:
    """Per-channel speech on the speech detector's frame grid.

    ``speech[c, t]``: channel ``c`` speaks in frame ``t`` (its detector says speech once the
    other channels' bleed is cancelled, and its energy is above what bleed remains);
    ``own_db[c, t]``: how far (dB) that energy is above the remaining bleed (used to settle
    overlaps); ``bleed_db[o, c]``: power gain of channel ``o``'s bleed path into ``c`` before
    cancellation (dB; -inf on the diagonal or when none was measured); ``facts``: what the
    activity was found from (:func:`channel_activity`), for the manifest.
    """

    speech: np.ndarray
    own_db: np.ndarray
    bleed_db: np.ndarray
    frame_start: float
    frame_step: float
    duration: float
    facts: dict[str, Any] = field(default_factory=dict, compare=False)

    def regions(self, channel: int, *, min_gap_s: float = 0.0) -> list[tuple[float, float]]:
        """``(start, end)`` seconds where ``channel`` speaks, gaps < ``min_gap_s`` filled,
        bursts shorter than :data:`MIN_SPEECH_S` dropped."""
        regions = regions_from_probability(
            self.speech[channel].astype(np.float32), frame_start=self.frame_start, frame_step=self.frame_step,
            threshold=0.5, duration=self.duration, min_gap_s=min_gap_s,
        )
        return [(a, b) for a, b in regions if b - a >= MIN_SPEECH_S]

    def own_seconds(self) -> np.ndarray:
        """Seconds each channel speaks while no other channel does: (channels,)."""
        alone = self.speech & (self.speech.sum(axis=0, keepdims=True) == 1)
        return alone.sum(axis=1) * self.frame_step


def _frame_energy(audio: np.ndarray, *, centres: np.ndarray, half_s: float) -> np.ndarray:
    """Mean square of ``audio`` in ``[centre - half_s, centre + half_s]`` per frame centre, at
    10 ms resolution (sums of 10 ms blocks, computed in chunks: memory stays at the frames')."""
    hop = SAMPLE_RATE // 100
    n = audio.shape[0]
    blocks = np.zeros(-(-n // hop), dtype=np.float64)
    step = hop * 6000  # one minute per chunk
    for s in range(0, n, step):
        piece = audio[s : s + step]
        full = piece.shape[0] // hop
        sq = np.square(piece[: full * hop].reshape(full, hop), dtype=np.float64).sum(axis=1)
        blocks[s // hop : s // hop + full] = sq
        if piece.shape[0] > full * hop:
            blocks[s // hop + full] = float(np.square(piece[full * hop :], dtype=np.float64).sum())
    csum = np.concatenate(([0.0], np.cumsum(blocks)))
    lo = np.clip(np.round((centres - half_s) * 100).astype(np.int64), 0, blocks.size)
    hi = np.clip(np.round((centres + half_s) * 100).astype(np.int64), 0, blocks.size)
    return (csum[hi] - csum[lo]) / (np.maximum(hi - lo, 1) * hop)


def _noise_floor(energy: np.ndarray, *, quiet: np.ndarray) -> float:
    """A channel's noise power: the median frame energy where no channel's detector hears
    speech (the 10th percentile of all frames when under 1 s of such frames)."""
    if quiet.sum() >= 60:
        return float(np.median(energy[quiet]))
    return float(np.percentile(energy, 10)) if energy.size else 0.0


def _majority(mask: np.ndarray, *, width: int) -> np.ndarray:
    """Each row of a boolean (rows, frames) mask smoothed by a sliding majority of ``width``
    (odd) frames: single-frame flickers at the decision's edge vanish."""
    if width <= 1 or mask.shape[1] == 0:
        return mask
    half = width // 2
    padded = np.pad(mask.astype(np.int32), ((0, 0), (half, half)))
    csum = np.concatenate((np.zeros((mask.shape[0], 1), np.int32), np.cumsum(padded, axis=1)), axis=1)
    return (csum[:, width:] - csum[:, :-width]) > half


def _db(x: np.ndarray | float) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(x, 1e-12))


def channel_activity(
    channels: np.ndarray,
    *,
    config: DiarizationConfig,
    threshold: float = OWN_SPEECH_THRESHOLD,
    margin_db: float = BLEED_MARGIN_DB,
) -> ChannelActivity:
    """Who speaks when on each channel: the speech detector's decision on the channel with the
    other channels' bleed cancelled.

    1. The detector (:func:`tasks.audio.vad.speech_probability`, ``config.segmentation_model``)
       runs on every channel (on all of a recording up to :data:`RAW_WHOLE_S`, else on evenly
       spaced stretches of it: :func:`raw_samples`); where one channel talks alone (its
       detector hears speech, it is 10 dB above its floor and above the other's excess) the
       bleed path into each other channel is measured (:func:`bleed_filters`: delay and
       filter) and subtracted (:func:`cancel_bleed`): what is left of the other voice is typically 20-40 dB below it.
    2. The detector runs again on each channel that had bleed cancelled: a frame is speech when
       it hears speech there (probability above ``threshold``) and, where it is not sure
       (below :data:`SURE_SPEECH`), the frame's energy is above the channel's own noise floor
       (:data:`ABOVE_FLOOR_DB`): the detector holds speech through pauses between words and past
       a turn's end at 0.7-0.9, where the channel carries only its noise. Noise is otherwise the
       detector's to reject (no threshold on the channel's noise level or spread alone: those
       lost whole quiet utterances in running-water noise).
    3. A frame is not this channel's speech when its energy above its floor is less than
       ``margin_db`` above what the remaining bleed explains (the cancelled channels' leak
       gain, measured where the other channel talks alone, times the other channel's energy):
       bleed that a non-linear or changing path left behind never becomes speech, while an
       interjection over the other talker stays overlap.

    Parameters
    ----------
    channels : np.ndarray
        (channels, n) float samples at 16 kHz.
    config : DiarizationConfig
        ``segmentation_model`` is the speech detector's model.
    threshold : float
        Speech probability (bleed cancelled) above which a frame is the channel's speech.
    margin_db : float
        How far above the remaining bleed a frame's energy must be.

    Returns
    -------
    ChannelActivity
        ``facts`` holds, per channel pair, the frames the bleed path was measured on, its delay,
        its gain before (``bleed_db``) and after cancellation (``residual_db``); per channel the
        seconds of speech its detector heard before cancellation (``heard_s``, within the
        ``raw_pass_s`` seconds that pass covered) and the seconds decided speech (``speech_s``).
    """
    return decide_activity(channel_evidence(channels, config=config), threshold=threshold, margin_db=margin_db)


@dataclass
class ChannelEvidence:
    """What :func:`channel_activity` decides from (the costly part: the detector runs and the
    bleed cancellation): per channel the detector's probability with the other channels' bleed
    cancelled (``probs``), its energy around each frame (``energy``), frames inside the audio
    (``inside``), the detector's raw decision before cancellation (``heard_raw``, False outside
    the stretches the raw pass covered), the frames that pass covered (``raw_seen``: all of a
    recording up to :data:`RAW_WHOLE_S`), the grid and the bleed paths (``filters``,
    ``facts``)."""

    probs: np.ndarray
    energy: np.ndarray
    inside: np.ndarray
    heard_raw: np.ndarray
    raw_seen: np.ndarray
    frame_start: float
    frame_step: float
    duration: float
    filters: dict
    facts: dict[str, Any]


def raw_stretches(*, n: int, sample_s: float = RAW_SAMPLE_S,
                  stretch_s: float = RAW_STRETCH_S) -> list[tuple[int, int]]:
    """Where the detector runs on the channels before their bleed is cancelled: sample ranges
    ``(start, stop)`` of a recording of ``n`` samples.

    The whole recording (one range) when it is at most ``sample_s`` long; otherwise
    ``ceil(sample_s / stretch_s)`` equal, disjoint stretches totalling ``sample_s``, evenly
    spaced from the first sample to the last (the call's start, end and middle all count).

    Parameters
    ----------
    n : int
        Samples in the recording (16 kHz).
    sample_s : float
        Seconds the stretches total at most.
    stretch_s : float
        Longest stretch (s).

    Returns
    -------
    list of (int, int)
        Sorted, disjoint ranges within ``[0, n)``.
    """
    total = int(round(sample_s * SAMPLE_RATE))
    if n <= total:
        return [(0, n)]
    count = max(1, int(np.ceil(sample_s / stretch_s)))
    length = total // count
    starts = np.round(np.linspace(0, n - length, count)).astype(int)
    return [(int(a), int(a) + length) for a in starts]


def raw_samples(*, n: int, whole_s: float = RAW_WHOLE_S, sample_s: float = RAW_SAMPLE_S,
                stretch_s: float = RAW_STRETCH_S) -> list[list[tuple[int, int]]]:
    """The samples the detector's pass before cancellation tries in turn on a recording of ``n``
    samples (:func:`channel_evidence` stops at the first that shows enough bleed-path frames).

    Up to ``whole_s``: the whole recording only. Longer: ``sample_s`` seconds in stretches of
    at most ``stretch_s`` (:func:`raw_stretches`), then twice, four times... as much while that
    is shorter than the recording, and last the whole recording.

    Parameters
    ----------
    n : int
        Samples in the recording (16 kHz).
    whole_s : float
        Recordings up to this long are covered whole at once.
    sample_s : float
        Seconds of the first sample.
    stretch_s : float
        Longest stretch (s).

    Returns
    -------
    list of list of (int, int)
        Each sample's sorted, disjoint ranges; the last is ``[(0, n)]``.
    """
    out = []
    size = sample_s
    while n > max(whole_s, size) * SAMPLE_RATE:
        out.append(raw_stretches(n=n, sample_s=size, stretch_s=stretch_s))
        size *= 2
    return out + [[(0, n)]]


def raw_speech(channels: np.ndarray, *, stretches: list[tuple[int, int]],
               model_ref: str | None) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Speech probability of each channel before its bleed is cancelled, on the detector's frame
    grid of the whole recording, found by running the detector
    (:func:`tasks.audio.vad.speech_probability`) on ``stretches`` only (:func:`raw_stretches`).

    A stretch's frames are placed on the recording's grid by their time; those whose centre
    falls past a stretch's end (the detector pads its last window) are dropped, except after
    the recording's last sample. With one stretch covering the recording the probabilities are
    the detector's on the whole channel.

    Parameters
    ----------
    channels : np.ndarray
        (channels, n) float samples at 16 kHz.
    stretches : list of (int, int)
        Sample ranges the detector runs on.
    model_ref : str or None
        The detector's model (``DiarizationConfig.segmentation_model``).

    Returns
    -------
    probs : np.ndarray
        (channels, frames) float32; 0 outside the stretches.
    seen : np.ndarray
        (frames,) bool: frames the stretches covered.
    frame_start, frame_step : float
        The grid: frame ``i`` is centred at ``frame_start + i * frame_step`` s.
    """
    count, n = channels.shape
    pieces: list[tuple[int, list[np.ndarray]]] = []
    start = step = 0.0
    for a, b in stretches:
        found = []
        for c in range(count):
            p, start, step = speech_probability(channels[c, a:b], model_ref=model_ref)
            found.append(p)
        keep = min(len(p) for p in found)
        if b < n:  # frames centred past the stretch hold the detector's padding
            keep = min(keep, int(np.ceil(((b - a) / SAMPLE_RATE - start) / step)))
        offset = int(round(a / SAMPLE_RATE / step))
        pieces.append((offset, [p[:keep] for p in found]))
    frames = max(offset + len(ps[0]) for offset, ps in pieces)
    probs = np.zeros((count, frames), dtype=np.float32)
    seen = np.zeros(frames, dtype=bool)
    for offset, ps in pieces:
        for c, p in enumerate(ps):
            probs[c, offset : offset + p.size] = p
        seen[offset : offset + ps[0].size] = True
    return probs, seen, float(start), float(step)


def _fit_frames(x: np.ndarray, frames: int) -> np.ndarray:
    """``x`` cut or padded with zeros (False) along its last axis to ``frames``."""
    if x.shape[-1] >= frames:
        return x[..., :frames]
    return np.concatenate((x, np.zeros(x.shape[:-1] + (frames - x.shape[-1],), dtype=x.dtype)), axis=-1)


def channel_evidence(channels: np.ndarray, *, config: DiarizationConfig, whole_s: float = RAW_WHOLE_S,
                     sample_s: float = RAW_SAMPLE_S, stretch_s: float = RAW_STRETCH_S,
                     enough_frames: int = RAW_ENOUGH_FRAMES) -> ChannelEvidence:
    """The detector's view of each channel once the others' bleed is cancelled
    (:func:`channel_activity`, steps 1-2, before any decision).

    The detector's pass before cancellation only finds where one channel talks alone, to
    measure the bleed paths on: on a recording longer than ``whole_s`` it runs on a sample
    (``sample_s`` seconds in evenly spaced stretches of ``stretch_s``), doubled while it shows
    some channel pair fewer than ``enough_frames`` bleed-path frames, up to the whole recording
    (:func:`raw_samples`, :func:`raw_speech`). The pass after cancellation covers the whole
    recording, once per channel; a channel that has nothing cancelled reuses the first pass
    when that covered the whole recording, so the detector never runs twice on all of a
    channel's audio.
    """
    channels = np.atleast_2d(np.asarray(channels, dtype=np.float32))
    count, n = channels.shape
    duration = n / SAMPLE_RATE
    facts: dict[str, Any] = {}
    filters: dict = {}
    # one channel has no bleed to measure: its one pass is the whole recording's
    samples = raw_samples(n=n, whole_s=whole_s, sample_s=sample_s, stretch_s=stretch_s) if count >= 2 else [[(0, n)]]
    for stretches in samples:
        whole = stretches == [(0, n)]
        raw, seen, start, step = raw_speech(channels, stretches=stretches, model_ref=config.segmentation_model)
        talking = raw > SPEECH_THRESHOLD
        if count >= 2:
            filters, facts["bleed_paths"] = bleed_filters(channels, talking=talking, frame_start=start, frame_step=step)
        shown = [path["frames"] for path in facts.get("bleed_paths", {}).values()]
        if whole or min(shown, default=enough_frames) >= enough_frames:
            break
    probs, energy = [], []
    for c in range(count):  # one cancelled channel at a time: memory stays at one more channel
        mine = {key: f for key, f in filters.items() if key[1] == c}
        own = cancel_bleed(channels, mine, channel=c) if mine else channels[c]
        p = raw[c] if whole and not mine else speech_probability(own, model_ref=config.segmentation_model)[0]
        probs.append(p)
        energy.append(_frame_energy(own, centres=start + step * np.arange(p.size), half_s=ENERGY_WINDOW_S / 2))
        del own
    frames = min(p.size for p in probs)
    # frames past the end of the audio (the detector pads its last window) are not speech
    inside = start + step * np.arange(frames) < duration
    facts["raw_pass_s"] = round(float(np.sum(_fit_frames(seen, frames) & inside) * step), 1)
    return ChannelEvidence(np.stack([p[:frames] for p in probs]), np.stack([e[:frames] for e in energy]), inside,
                           _fit_frames(talking, frames), _fit_frames(seen, frames), float(start), float(step),
                           float(duration), filters, facts)


def _cut_floor_pauses(speech: np.ndarray, energy: np.ndarray, floor: np.ndarray, *, step: float,
                      floor_db: float = PAUSE_FLOOR_DB, min_s: float = PAUSE_MIN_S,
                      min_snr_db: float = PAUSE_CUT_MIN_SNR_DB) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Speech without the pauses the detector held, on channels loud enough for it.

    Returns
    -------
    speech : ndarray of bool
        ``speech`` with every run of at least ``min_s`` whose energy stays below
        ``floor_db`` over the channel's floor set to False, on channels whose median speech
        frame is at least ``min_snr_db`` above their floor (:data:`PAUSE_CUT_MIN_SNR_DB`).
    snr_db : ndarray
        Each channel's median speech frame over its floor, dB (NaN without speech or floor).
    cut_s : ndarray
        Seconds cut per channel.
    """
    speech = speech.copy()
    count = speech.shape[0]
    snr_db = np.full(count, np.nan)
    cut_s = np.zeros(count)
    least = max(1, int(round(min_s / step)))
    for c in range(count):
        if not speech[c].any() or floor[c] <= 0:
            continue
        snr_db[c] = 10.0 * np.log10(max(float(np.median(energy[c, speech[c]])), 1e-30) / floor[c])
        if snr_db[c] < min_snr_db:
            continue
        low = speech[c] & (energy[c] < floor[c] * 10.0 ** (floor_db / 10.0))
        for a, b in runs(low):
            if b - a >= least:
                speech[c, a:b] = False
                cut_s[c] += (b - a) * step
    return speech, snr_db, cut_s


def decide_activity(ev: ChannelEvidence, *, threshold: float = OWN_SPEECH_THRESHOLD,
                    margin_db: float = BLEED_MARGIN_DB, above_floor_db: float | None = ABOVE_FLOOR_DB,
                    sure: float = SURE_SPEECH) -> ChannelActivity:
    """Who speaks when, from :func:`channel_evidence` (:func:`channel_activity`, steps 2-3)."""
    import copy

    count = ev.probs.shape[0]
    start, step, duration, inside, filters = ev.frame_start, ev.frame_step, ev.duration, ev.inside, ev.filters
    heard_raw, energy, facts = ev.heard_raw, ev.energy, copy.deepcopy(ev.facts)
    probs = ev.probs
    vad = (probs > threshold) & inside[None]
    quiet = inside & ~vad.any(axis=0)
    floor = np.array([_noise_floor(energy[c], quiet=quiet) for c in range(count)])
    excess = np.maximum(energy - floor[:, None], 0.0)
    # the bleed left after cancellation: c's energy over its floor per unit of o's, where o
    # talks alone (sums, not a median: a leak below c's noise is still measured on average)
    gain = np.zeros((count, count))
    for o in range(count):
        for c in range(count):
            if o == c:
                continue
            alone = vad[o] & (excess[o] > 10.0 * excess[c]) & (excess[o] > 10.0 * floor[o])
            if alone.sum() >= 10:
                gain[o, c] = max(float(np.sum(energy[c, alone] - floor[c])), 0.0) / float(np.sum(excess[o, alone]))
    expected = gain.T @ excess  # (count, frames): sum over o of gain[o, c] * excess[o]
    margin = 10.0 ** (margin_db / 10.0)
    speech = vad & (excess >= margin * expected)
    if above_floor_db is not None:
        # a frame the detector is not sure of needs energy above the channel's own noise floor
        audible = excess > 10.0 ** (above_floor_db / 10.0) * floor[:, None]
        speech &= (probs > sure) | audible
    speech = _majority(speech, width=SMOOTH_FRAMES)
    speech, snr_db, cut = _cut_floor_pauses(speech, energy, floor, step=step)
    facts["speech_snr_db"] = [round(float(v), 1) if np.isfinite(v) else None for v in snr_db]
    facts["pauses_cut_s"] = [round(float(v), 2) for v in cut]
    own_db = _db(excess) - _db(expected + NOISE_GUARD * floor[:, None])
    with np.errstate(divide="ignore"):
        bleed_db = np.full((count, count), -np.inf)
        for (o, c), (_, fir) in filters.items():
            bleed_db[o, c] = 10.0 * np.log10(max(float(np.sum(np.square(fir, dtype=np.float64))), 1e-12))
        residual_db = np.where(np.eye(count, dtype=bool) | (gain <= 0), -np.inf, 10.0 * np.log10(np.maximum(gain, 1e-12)))
    for (o, c), (_, fir) in filters.items():
        left = float(residual_db[o, c])
        facts["bleed_paths"][f"{o}-{c}"].update(bleed_db=round(float(bleed_db[o, c]), 1),
                                                 residual_db=round(left, 1) if np.isfinite(left) else None)
    facts["heard_s"] = [round(float(heard_raw[c, inside & ev.raw_seen].sum() * step), 1) for c in range(count)]
    facts["speech_s"] = [round(float(speech[c].sum() * step), 1) for c in range(count)]
    return ChannelActivity(
        speech=speech, own_db=own_db.astype(np.float32), bleed_db=bleed_db,
        frame_start=float(start), frame_step=float(step), duration=float(duration), facts=facts,
    )

# --------------------------------------------------------------------------- bleed cancellation
BLEED_FFT = 2048
"""STFT size (128 ms) of the bleed-path estimate: a crosstalk delay of tens of ms stays well
inside one window."""
BLEED_LAGS_S = (-0.008, 0.056)
"""Lags (s) the bleed filter keeps: the other channel's voice arrives up to 56 ms late (a few ms
early tolerated)."""
BLEED_MIN_FRAMES = 20
"""STFT frames (64 ms hop) of the other channel talking alone needed to estimate its bleed path."""
BLEED_ALONE_DB = 10.0
"""A frame shows ``o``'s bleed path into ``c`` when ``o``'s energy is this far above its noise
floor and above ``c``'s energy over ``c``'s floor (``o`` talks, ``c`` does not)."""
BLEED_BLOCK_S = 60.0
"""Audio is transformed and filtered in blocks of this length (memory stays at one block's)."""


def _stft_frames(x: np.ndarray, *, n_fft: int, hop: int) -> np.ndarray:
    """Hann-windowed rFFT frames of ``x`` (frames, n_fft // 2 + 1), frame ``i`` at ``i * hop``."""
    if x.shape[0] < n_fft:
        x = np.pad(x, (0, n_fft - x.shape[0]))
    view = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    return np.fft.rfft(view * np.hanning(n_fft).astype(np.float32), axis=1)


def _hop_energy(x: np.ndarray, hop: int, frames: int) -> np.ndarray:
    """Mean square of ``x`` over ``[i * hop, i * hop + 2 * hop)`` for ``frames`` frames."""
    full = x.shape[0] // hop
    blocks = np.zeros(frames + 1)
    sums = np.square(x[: full * hop].reshape(full, hop), dtype=np.float64).sum(axis=1)
    blocks[: min(full, frames + 1)] = sums[: frames + 1]
    return (blocks[:-1] + blocks[1:]) / (2 * hop)


def _segment(x: np.ndarray, start: int, length: int) -> np.ndarray:
    """``x[start : start + length]``, zeros where that falls outside ``x``."""
    out = np.zeros(length, dtype=np.float32)
    i0, i1 = max(start, 0), min(start + length, x.shape[0])
    if i1 > i0:
        out[i0 - start : i1 - start] = x[i0:i1]
    return out


def _transfer(channels: np.ndarray, select: dict, delays: dict, frames: int) -> dict:
    """Least-squares transfer function ``C / O`` per pair over its selected STFT frames, ``o``
    read ``delays[(o, c)]`` samples earlier than ``c`` (so a late bleed sits near lag 0, where
    the windowed spectra see all of it)."""
    hop = BLEED_FFT // 2
    cross = {key: np.zeros(BLEED_FFT // 2 + 1, np.complex128) for key in select}
    power = {key: np.zeros(BLEED_FFT // 2 + 1) for key in select}
    per_block = max(1, int(BLEED_BLOCK_S * SAMPLE_RATE) // hop)
    for first in range(0, frames, per_block):
        k = min(per_block, frames - first)
        s, length = first * hop, (k - 1) * hop + BLEED_FFT
        for (o, c), sel in select.items():
            rows = sel[first : first + k]
            if rows.any():
                C = _stft_frames(_segment(channels[c], s, length), n_fft=BLEED_FFT, hop=hop)[:k][rows]
                O = _stft_frames(_segment(channels[o], s - delays[(o, c)], length), n_fft=BLEED_FFT, hop=hop)[:k][rows]
                cross[(o, c)] += np.sum(C * np.conj(O), axis=0)
                power[(o, c)] += np.sum(np.abs(O) ** 2, axis=0)
    return {key: cross[key] / np.maximum(power[key], 1e-9 * max(float(power[key].max()), 1e-30)) for key in select}


def bleed_filters(channels: np.ndarray, *, talking: np.ndarray, frame_start: float,
                  frame_step: float) -> tuple[dict[tuple[int, int], tuple[int, np.ndarray]], dict[str, Any]]:
    """The bleed path of every channel pair, ``(o, c) -> (first_lag, fir)``: what of channel
    ``o`` is heard in channel ``c``, ``c[t] ~ sum_k fir[k] * o[t - first_lag - k]``.

    Least squares per frequency (cross-spectrum of ``c`` and ``o`` over the power of ``o``) on
    the STFT frames where ``o`` talks alone: its detector hears speech (``talking[o]``, bool on
    the detector's frame grid ``frame_start + i * frame_step``) and its energy is
    :data:`BLEED_ALONE_DB` above its noise floor and above ``c``'s energy over ``c``'s floor.
    Two passes: the first finds the bleed's delay (the filter's largest tap within
    :data:`BLEED_LAGS_S`), the second estimates the filter with ``o`` advanced by it (a
    windowed spectrum underestimates a late copy: by ~20 % at 20 ms in 128 ms windows). Pairs
    with fewer than :data:`BLEED_MIN_FRAMES` such frames get no filter (nothing of ``o`` is
    cancelled from ``c``). Also returns, per pair ``"o-c"``, the frames used and the delay (ms)."""
    count, n = channels.shape
    hop = BLEED_FFT // 2
    frames = max(1, (max(n, BLEED_FFT) - BLEED_FFT) // hop + 1)
    energy = np.stack([_hop_energy(channels[c], hop, frames) for c in range(count)])
    floor = np.percentile(energy, 20, axis=1)
    centres = (np.arange(frames) * hop + BLEED_FFT / 2) / SAMPLE_RATE
    idx = np.clip(np.round((centres - frame_start) / frame_step).astype(int), 0, talking.shape[1] - 1)
    talk = talking[:, idx]
    excess = np.maximum(energy - floor[:, None], 0.0)
    ratio = 10.0 ** (BLEED_ALONE_DB / 10.0)
    select: dict[tuple[int, int], np.ndarray] = {}
    facts: dict[str, Any] = {}
    for o in range(count):
        for c in range(count):
            if o != c:
                sel = talk[o] & (energy[o] > ratio * floor[o]) & (excess[o] > ratio * excess[c])
                facts[f"{o}-{c}"] = {"frames": int(sel.sum())}
                if sel.sum() >= BLEED_MIN_FRAMES:
                    select[(o, c)] = sel
    if not select:
        return {}, facts
    lo, hi = (int(round(s * SAMPLE_RATE)) for s in BLEED_LAGS_S)
    first = _transfer(channels, select, {key: 0 for key in select}, frames)
    delays = {}
    for key, H in first.items():
        h = np.fft.irfft(H, n=BLEED_FFT)
        lags = np.r_[lo:hi]
        delays[key] = int(lags[int(np.argmax(np.abs(h[lags % BLEED_FFT])))])
    aligned = _transfer(channels, select, delays, frames)
    taper = np.hanning(128)[:64]
    out = {}
    for key, H in aligned.items():
        h = np.fft.irfft(H, n=BLEED_FFT)
        fir = h[np.r_[lo:hi] % BLEED_FFT].copy()  # lags delay + lo ... delay + hi - 1
        fir[: taper.size] *= taper
        fir[-taper.size :] *= taper[::-1]
        out[key] = (delays[key] + lo, fir.astype(np.float32))
        facts[f"{key[0]}-{key[1]}"]["delay_ms"] = round(1000.0 * delays[key] / SAMPLE_RATE, 1)
    return out, facts


def cancel_bleed(channels: np.ndarray, filters: dict[tuple[int, int], tuple[int, np.ndarray]], *,
                 channel: int | None = None) -> np.ndarray:
    """A copy of ``channels`` with each other channel's bleed (:func:`bleed_filters`) subtracted
    (only ``channels[channel]``, 1-D, when ``channel`` is given), filtered in blocks of
    :data:`BLEED_BLOCK_S`."""
    from scipy.signal import oaconvolve

    count, n = channels.shape
    if channel is not None:
        filters = {(o, 0): f for (o, c), f in filters.items() if c == channel}
        out = np.array(channels[channel : channel + 1], dtype=np.float32, copy=True)
    else:
        out = np.array(channels, dtype=np.float32, copy=True)
    block = int(BLEED_BLOCK_S * SAMPLE_RATE)
    for (o, c), (lag, fir) in filters.items():
        taps = fir.size
        for s in range(0, n, block):
            e = min(n, s + block)
            # bleed[t] = sum_k fir[k] * o[t - lag - k] for t in [s, e): o[a:b], zeros outside
            a = s - lag - (taps - 1)
            seg = _segment(channels[o], a, (e - lag) - a)
            out[c, s:e] -= oaconvolve(seg, fir, mode="valid")[: e - s].astype(np.float32)
    return out[0] if channel is not None else out


# --------------------------------------------------------------------------- decision
@dataclass(frozen=True)
class ChannelDecision:
    """How a recording's channels are diarized: ``mode`` is ``mix`` or ``split``; ``reason`` is
    one line for the manifest; ``figures`` what it was decided from (JSON-ready).
    ``activity`` (when computed) is reused by :func:`diarize_channels`."""

    mode: Literal["mix", "split"]
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)
    activity: ChannelActivity | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """``{"mode", "reason", "figures"}`` for the manifest."""
        return {"mode": self.mode, "reason": self.reason, "figures": self.figures}


def channel_correlation(channels: np.ndarray) -> np.ndarray:
    """Pairwise normalised cross-correlation of channels at their best lag within ±50 ms.

    Computed over up to :data:`MAX_CORRELATION_BLOCKS` blocks of 10 s spread over the
    recording (numerators and energies summed over blocks). 1 on the diagonal.

    Parameters
    ----------
    channels : np.ndarray
        (channels, n) float samples at 16 kHz.

    Returns
    -------
    np.ndarray
        (channels, channels) in [0, 1].
    """
    channels = np.atleast_2d(np.asarray(channels, dtype=np.float32))
    count, n = channels.shape
    block = min(n, compute_num_samples(CORRELATION_BLOCK_S))
    max_lag = compute_num_samples(MAX_CORRELATION_LAG_S)
    starts = np.unique(np.linspace(0, max(0, n - block), num=max(1, min(MAX_CORRELATION_BLOCKS, n // max(block, 1)))).astype(int))
    size = 1 << int(np.ceil(np.log2(2 * block + 1)))
    lags = np.r_[0 : max_lag + 1, size - max_lag : size]
    num = np.zeros((count, count, lags.size))
    power = np.zeros(count)
    for s in starts:
        x = channels[:, s : s + block].astype(np.float64)
        x = x - x.mean(axis=1, keepdims=True)
        spec = np.fft.rfft(x, n=size, axis=1)
        power += np.sum(x * x, axis=1)
        for a in range(count):
            for b in range(a + 1, count):
                num[a, b] += np.fft.irfft(spec[a] * np.conj(spec[b]), n=size)[lags]
    out = np.eye(count)
    for a in range(count):
        for b in range(a + 1, count):
            denom = np.sqrt(power[a] * power[b])
            out[a, b] = out[b, a] = float(np.max(np.abs(num[a, b])) / denom) if denom > 0 else 0.0
    return out


def decide_channel_mode(
    channels: np.ndarray,
    *,
    mode: ChannelMode,
    config: DiarizationConfig,
    embedder: Any = None,
) -> ChannelDecision:
    """Split the channels into speakers or mix them, and say why.

    ``mix`` and ``split`` are obeyed (a mono file is always mixed). ``auto`` splits when the
    recording has 2+ channels that are not copies of one signal (correlation below
    :data:`SAME_SIGNAL_CORRELATION`), hear little of each other (bleed below
    :data:`ISOLATED_BLEED_DB`), each have :data:`MIN_OWN_SPEECH_S` of speech of their own, and
    whose own speech is pairwise different voices (CAM++ cosine similarity below
    :data:`SAME_VOICE_SIMILARITY`); otherwise it mixes. Checks stop at the first that decides,
    so dual-mono files cost one correlation and no model.

    Parameters
    ----------
    channels : np.ndarray
        (channels, n) float samples at 16 kHz (:func:`tasks.audio.decode.load_channels`).
    mode : {"auto", "mix", "split"}
        ``diarization.channels``.
    config : DiarizationConfig
        Speech detector and CAM++ model references, device.
    embedder : CamPlusPlusEmbedding, optional
        Loaded CAM++ (default: :func:`tasks.speakers.campplus.load_embedding_model` of ``config``).

    Returns
    -------
    ChannelDecision
    """
    channels = np.atleast_2d(np.asarray(channels, dtype=np.float32))
    count = channels.shape[0]
    figures: dict[str, Any] = {"channels": int(count), "requested": mode}
    if count < 2:
        return ChannelDecision("mix", "mono recording", figures)
    if mode == "mix":
        return ChannelDecision("mix", "diarization.channels=mix", figures)
    if mode == "split":
        return ChannelDecision("split", f"diarization.channels=split: {count} channels, one speaker each", figures)
    corr = channel_correlation(channels)
    upper = corr[np.triu_indices(count, 1)]
    figures["correlation"] = round(float(upper.max()), 3)
    if upper.max() >= SAME_SIGNAL_CORRELATION:
        a, b = np.unravel_index(np.argmax(np.where(np.eye(count, dtype=bool), -1, corr)), corr.shape)
        return ChannelDecision(
            "mix", f"channels {a} and {b} carry the same signal (correlation {corr[a, b]:.2f} >= "
                   f"{SAME_SIGNAL_CORRELATION}): dual-mono, mixed", figures)
    activity = channel_activity(channels, config=config)
    own = activity.own_seconds()
    figures["own_speech_s"] = [round(float(s), 1) for s in own]
    bleed = activity.bleed_db[~np.eye(count, dtype=bool)]
    figures["bleed_db"] = round(float(bleed.max()), 1) if np.isfinite(bleed).any() else None
    figures.update(plain_figures(activity.facts))
    speaking = [c for c in range(count) if own[c] >= MIN_OWN_SPEECH_S]
    if len(speaking) < 2:
        return ChannelDecision(
            "mix", f"fewer than 2 channels have {MIN_OWN_SPEECH_S:g} s of speech of their own "
                   f"({', '.join(f'{s:.1f}' for s in own)} s): mixed", figures, activity)
    if np.isfinite(bleed).any() and bleed.max() > ISOLATED_BLEED_DB:
        return ChannelDecision(
            "mix", f"channels hear each other (bleed {bleed.max():.1f} dB > {ISOLATED_BLEED_DB:g} dB): "
                   "not one speaker per channel, mixed", figures, activity)
    from tasks.speakers.voiceprints import embed_speech

    if embedder is None:
        from tasks.speakers.campplus import load_embedding_model

        embedder = load_embedding_model(config.embedding_model, config.device)
    alone = activity.speech & (activity.speech.sum(axis=0, keepdims=True) == 1)
    vectors = {}
    for c in speaking:
        only = ChannelActivity(alone, activity.own_db, activity.bleed_db, activity.frame_start,
                               activity.frame_step, activity.duration)
        regions = _first_seconds(only.regions(c), MAX_EMBED_SPEECH_S)
        vector, _ = embed_speech(channels[c], regions=regions, embedder=embedder)
        if vector is not None:  # no piece of its own speech long enough for CAM++
            vectors[c] = vector
    speaking = [c for c in speaking if c in vectors]
    if len(speaking) < 2:
        return ChannelDecision(
            "mix", "fewer than 2 channels have own speech long enough to embed: mixed", figures, activity)
    sims = {(a, b): float(np.dot(vectors[a], vectors[b])) for i, a in enumerate(speaking) for b in speaking[i + 1 :]}
    figures["voice_similarity"] = {f"{a}-{b}": round(s, 3) for (a, b), s in sims.items()}
    (a, b), top = max(sims.items(), key=lambda kv: kv[1])
    if top >= SAME_VOICE_SIMILARITY:
        return ChannelDecision(
            "mix", f"channels {a} and {b} carry the same voice (CAM++ similarity {top:.2f} >= "
                   f"{SAME_VOICE_SIMILARITY}): mixed", figures, activity)
    return ChannelDecision(
        "split", f"{len(speaking)} channels carry different voices (correlation {upper.max():.2f}, bleed "
                 f"{figures['bleed_db']} dB, CAM++ similarity <= {top:.2f}): one speaker per channel",
        figures, activity)


def _first_seconds(regions: list[tuple[float, float]], limit: float) -> list[tuple[float, float]]:
    out, total = [], 0.0
    for a, b in regions:
        if total >= limit:
            break
        b = min(b, a + limit - total)
        out.append((a, b))
        total += b - a
    return out


# --------------------------------------------------------------------------- diarization
def diarize_channels(
    channels: np.ndarray,
    *,
    config: DiarizationConfig,
    recording_id: str = "recording",
    names: list[str] | None = None,
    activity: ChannelActivity | None = None,
    min_gap_s: float = CHANNEL_MIN_GAP_S,
):
    """Diarize a recording with one speaker per channel.

    Parameters
    ----------
    channels : np.ndarray
        (channels, n) float samples at 16 kHz.
    config : DiarizationConfig
        Speech detector, ``channel_names`` and ``exclude_overlap``.
    recording_id : str
        The annotations' ``uri``.
    names : list of str, optional
        Speaker label of each channel; default ``config.channel_names``, else ``CH0``, ``CH1``...
    activity : ChannelActivity, optional
        Already computed (``ChannelDecision.activity``); computed here when None.
    min_gap_s : float
        Gaps shorter than this within a channel's speech are filled.

    Returns
    -------
    tasks.diarization.pipeline.DiarizationResult
        ``annotation``: every channel's speech under its label, overlaps kept; ``exclusive``:
        overlapped frames given to the channel most above its expected bleed.
    """
    from tasks.diarization.pipeline import DiarizationResult

    channels = np.atleast_2d(np.asarray(channels, dtype=np.float32))
    count = channels.shape[0]
    labels = channel_labels(count=count, names=names if names is not None else config.channel_names)
    if activity is None:
        activity = channel_activity(channels, config=config)
    annotation = Annotation(uri=recording_id)
    speech = np.zeros_like(activity.speech)
    for c, label in enumerate(labels):
        for k, (a, b) in enumerate(activity.regions(c, min_gap_s=min_gap_s)):
            annotation[Segment(a, b), f"{label}_{k}"] = label
            i0 = max(0, int(np.ceil((a - activity.frame_start) / activity.frame_step - 0.5)))
            i1 = int(np.floor((b - activity.frame_start) / activity.frame_step - 0.5)) + 1
            speech[c, i0:i1] = True
    # exclusive: each frame with speech goes to the channel most above its bleed
    winner = np.argmax(np.where(speech, activity.own_db, -np.inf), axis=0)
    any_speech = speech.any(axis=0)
    exclusive = Annotation(uri=recording_id)
    for c, label in enumerate(labels):
        regions = regions_from_probability(
            (any_speech & (winner == c)).astype(np.float32), frame_start=activity.frame_start,
            frame_step=activity.frame_step, threshold=0.5, duration=activity.duration,
        )
        for k, (a, b) in enumerate(regions):
            exclusive[Segment(a, b), f"{label}_{k}"] = label
    return DiarizationResult(annotation, exclusive.support(), config.exclude_overlap)


ACTIVITY_FILE = "activity.npz"
"""Who speaks when per channel, as the channels stage found it (the diarize stage reads it)."""


def write_activity(folder: Path, activity: ChannelActivity) -> None:
    """Store ``activity`` in a channels artefact folder (:func:`read_activity` reads it back)."""
    np.savez(folder / ACTIVITY_FILE, speech=activity.speech, own_db=activity.own_db, bleed_db=activity.bleed_db,
             grid=np.array([activity.frame_start, activity.frame_step, activity.duration]))


def read_activity(folder: Path) -> ChannelActivity | None:
    """The channel activity a channels artefact stored (split recordings), else None."""
    path = folder / ACTIVITY_FILE
    if not path.is_file():
        return None
    with np.load(path) as npz:
        start, step, duration = (float(v) for v in npz["grid"])
        return ChannelActivity(npz["speech"].astype(bool), npz["own_db"], npz["bleed_db"], start, step, duration)


def plain_figures(value: Any) -> Any:
    """JSON-ready copy of figures (numpy scalars and arrays as Python values)."""
    if isinstance(value, dict):
        return {str(k): plain_figures(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_figures(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
