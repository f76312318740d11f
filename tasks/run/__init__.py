"""A run as a whole: finding inputs, the run folder and its lock, planning, finalising tables and manifest."""
