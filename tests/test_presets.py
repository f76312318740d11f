"""Every shipped config file is valid against the schema."""

from pathlib import Path

import pytest

from tasks.core.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_files_validate(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.segmentation.max_s >= 2 * cfg.segmentation.min_s
