"""Who spoke when: the pyannote pipeline, channels as speakers, resegmentation, Silero refinement, and turns cut into segments."""
