"""emoflow stages: one module per stage, plain functions with a thin Prefect task."""
