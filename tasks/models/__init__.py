"""Model files: resolution and download (hub), safe checkpoint reading, devices, the per-process model cache, vetting, and randomly initialised test models."""
