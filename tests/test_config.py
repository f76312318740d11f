"""Config schema: defaults documented, overrides typed and validated, hashes stable."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.core.config import DEFAULT_CONFIG_PATH, SECTIONS, Config, ConfigError, load_config


def test_default_yaml_matches_schema_defaults() -> None:
    assert load_config(DEFAULT_CONFIG_PATH) == Config()


def test_every_option_is_commented_in_default_yaml() -> None:
    text = DEFAULT_CONFIG_PATH.read_text()
    tree = yaml.safe_load(text)
    assert set(tree) == set(SECTIONS)
    lines = text.splitlines()
    for section in SECTIONS:
        assert set(tree[section]) == set(Config.model_fields[section].annotation.model_fields), section
        for key in tree[section]:
            idx = next(i for i, line in enumerate(lines) if re.match(rf"\s+{key}:", line))
            # The key is preceded by a comment (directly, or through sibling keys of one comment).
            above = [line for line in lines[max(0, idx - 4) : idx] if line.strip().startswith("#")]
            assert above, f"{section}.{key} has no comment"


def test_overrides_are_typed() -> None:
    cfg = load_config(None, ["screen.threshold=0.6", "denoise.enabled=false", "diarization.num_speakers=2",
                             "emotion.model=/models/e2v"])
    assert cfg.screen.threshold == 0.6
    assert cfg.denoise.enabled is False
    assert cfg.diarization.num_speakers == 2
    assert cfg.emotion.model == "/models/e2v"


@pytest.mark.parametrize(
    "override,pattern",
    [
        ("screen.threshold=2", r"screen\.threshold: Input should be less than or equal to 1"),
        ("screen.threshold=high", r"screen\.threshold"),
        ("nosuch.key=1", r"unknown section 'nosuch'"),
        ("screen.nokey=1", r"unknown key 'nokey'"),
        ("threshold", r"expected section\.key=value"),
        ("denoise.method=magic", r"denoise\.method"),
        ("segmentation.max_s=2", r"max_s .* at least twice min_s"),
    ],
)
def test_bad_overrides_are_one_line_errors(override: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as err:
        load_config(None, [override])
    assert "\n" not in str(err.value)


def test_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("screen: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    typo = tmp_path / "typo.yaml"
    typo.write_text("screen:\n  treshold: 0.5\n")
    with pytest.raises(ConfigError, match=r"typo.yaml.*screen\.treshold: Extra inputs"):
        load_config(typo)


def test_section_hashes_change_only_with_their_section() -> None:
    a = load_config(None)
    b = load_config(None, ["screen.threshold=0.5"])
    assert a.section_hash("screen") != b.section_hash("screen")
    for name in SECTIONS:
        if name != "screen":
            assert a.section_hash(name) == b.section_hash(name)
    assert a.sha256() != b.sha256()


def test_hash_is_stable_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("screen:\n  threshold: 0.65\ndenoise:\n  method: rnnoise\n")
    code = ("from tasks.core.config import load_config; c = load_config(%r); "
            "print(c.sha256(), *(c.section_hash(s) for s in ('screen', 'denoise')))" % str(path))
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(seed), "PATH": ""}, cwd=Path(__file__).parent.parent).stdout
            for seed in (1, 2)}
    assert len(outs) == 1 and len(next(iter(outs)).split()) == 3


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    from tasks.core.config import write_config

    cfg = load_config(None, ["screen.threshold=0.55"])
    path = write_config(cfg, tmp_path / "config.yaml")
    assert load_config(path) == cfg
