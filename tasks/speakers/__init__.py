"""Voices: CAM++ embeddings, enrolled voiceprints, and linking one voice across recordings."""
