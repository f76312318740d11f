"""emoflow's time base: one sample rate and one seconds → samples conversion.

Every stage works on 16 kHz mono float32 audio; times are seconds from the start of the
recording, and a clip ``[start, end)`` is ``audio[compute_num_samples(start):compute_num_samples(end)]``.
"""

from __future__ import annotations

import math

SAMPLE_RATE = 16000
"""The one sample rate of emoflow: every stage works on 16 kHz mono audio."""


def compute_num_samples(seconds: float, *, sample_rate: int = SAMPLE_RATE) -> int:
    """The sample index of a time (or the sample count of a duration) in seconds.

    The one seconds → samples conversion of emoflow (like lhotse's ``compute_num_samples``):
    the nearest integer, halves rounded up, after snapping float error at 1e-6 samples (so
    ``0.3 * 16000`` gives 4800, not 4799). A clip ``[start, end)`` of a recording is
    ``audio[compute_num_samples(start) : compute_num_samples(end)]``.

    Parameters
    ----------
    seconds : float
        Time from the start of the audio, or a duration.
    sample_rate : int
        Samples per second (:data:`SAMPLE_RATE` unless the audio is at another rate).

    Returns
    -------
    int
    """
    return int(math.floor(round(float(seconds) * sample_rate, 6) + 0.5))
