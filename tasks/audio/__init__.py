"""Audio engines: decoding any file to 16 kHz float32, denoising, voice activity (Silero)."""
