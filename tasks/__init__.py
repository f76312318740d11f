"""emoflow stages: one module per stage, plain functions with a thin Prefect task."""

import os

# oneDNN (PyTorch's CPU convolutions) caches one compiled primitive per input shape, up to 1024
# by default, each holding its own reordered weights and scratchpad. CAM++ sees a different
# length for almost every (window, speaker) it embeds, so with the default cache a long
# recording grew resident memory by ~80 MB per minute of audio (10 min: +1.9 GB), with no
# speed gain since shapes rarely repeat. 16 keeps it bounded at the same speed
# (benchmarks/diarization_memory.py). Read by oneDNN when it creates its first primitive, so it
# must be set before any convolution runs; an explicit setting in the environment wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")
