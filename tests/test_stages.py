"""Stage keys: each stage's code version covers every module that decides its output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tasks.stages import STAGE_MODULES, TASKS_DIR, code_version, module_closure

ROOT = Path(__file__).resolve().parent.parent

RUN_STAGES = """
import json, sys
from flows.pipeline import prepare_run
from flows.recording import STAGE_FUNCTIONS
from tasks.config import load_config
from tasks.stages import stage_dependencies
cfg = load_config(None, sys.argv[3:])
jobs, _ = prepare_run([sys.argv[1]], config=cfg, out_dir=sys.argv[2])
print(json.dumps({s: STAGE_FUNCTIONS[s](jobs[0]).status for s in stage_dependencies(cfg)}))
"""


def _names(paths: list[Path]) -> set[str]:
    return {p.name for p in paths}


def test_closure_follows_imports_inside_functions() -> None:
    screen = _names(module_closure(STAGE_MODULES["screen"]))
    # frame_scores_from_logits is imported inside screen_segments: emotion.py decides curves too
    assert {"screen.py", "layout.py", "emotion.py", "records.py", "config.py"} <= screen
    assert "diarize.py" not in screen and "report.py" not in screen
    assert "segment.py" in _names(module_closure(STAGE_MODULES["segment"]))
    # flows/ holds no stage logic, so no flow module is part of any code version
    assert all(p.parent == TASKS_DIR for s in STAGE_MODULES for p in module_closure(STAGE_MODULES[s]))


def test_editing_a_module_changes_only_the_stages_it_decides(tmp_path: Path) -> None:
    copy = tmp_path / "tasks"
    shutil.copytree(TASKS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    from tasks.artefacts import source_hash

    def versions() -> dict[str, str]:
        return {s: source_hash(*module_closure(STAGE_MODULES[s], tasks_dir=copy)) for s in STAGE_MODULES}

    before = versions()
    assert before == {s: code_version(s) for s in STAGE_MODULES}
    path = copy / "segment.py"
    path.write_text(path.read_text().replace("OVERLAP_SPEAKER = \"OVERLAP\"", "OVERLAP_SPEAKER = \"BOTH\""))
    after = versions()
    assert {s for s in STAGE_MODULES if before[s] != after[s]} == {"segment"}


@pytest.fixture(scope="module")
def short_recording(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    audio, sr = sf.read(shared_data / "ami" / "dev00.flac", dtype="float32")
    path = tmp_path_factory.mktemp("in") / "short.wav"
    sf.write(path, audio[: 12 * sr], sr)
    return path


def test_a_drill_rule_edited_in_a_copy_recomputes_screen(tmp_path: Path, short_recording: Path,
                                                         tiny_model_dir: Path) -> None:
    """Run the stages, edit the drill rule in a copy of the code, run again into the same
    folder: screen and export are computed anew, everything upstream is reused."""
    shutil.copytree(ROOT / "tasks", tmp_path / "code" / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "flows", tmp_path / "code" / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    screen_py = tmp_path / "code" / "tasks" / "screen.py"
    rule = "return bool(confidence < threshold)"
    assert rule in screen_py.read_text()
    out = tmp_path / "out"
    sets = [f"emotion.model={tiny_model_dir}", "denoise.enabled=false", "screen.threshold=0.5"]

    def run(code_root: Path) -> dict[str, str]:
        proc = subprocess.run([sys.executable, "-c", RUN_STAGES, str(short_recording), str(out), *sets],
                              cwd=code_root, capture_output=True, text=True, timeout=300,
                              env={**__import__("os").environ, "PYTHONPATH": str(code_root)})
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    from flows.pipeline import prepare_run
    from flows.recording import STAGE_FUNCTIONS
    from tasks.config import load_config
    from tasks.stages import stage_dependencies

    cfg = load_config(None, sets)  # first run here: the copy is still the same code
    jobs, _run = prepare_run([str(short_recording)], config=cfg, out_dir=out)
    assert {STAGE_FUNCTIONS[s](jobs[0]).status for s in stage_dependencies(cfg)} == {"computed"}
    screen_py.write_text(screen_py.read_text().replace(rule, "return bool(confidence <= threshold)"))
    second = run(tmp_path / "code")
    assert second == {"load": "reused", "channels": "reused", "denoise": "reused", "diarize": "reused",
                      "voices": "reused", "segment": "reused", "emotion": "reused", "screen": "computed",
                      "export": "computed"}


def test_export_reports_its_facts_when_reused(tmp_path: Path, short_recording: Path, tiny_model_dir: Path) -> None:
    from flows.pipeline import prepare_run
    from flows.recording import STAGE_FUNCTIONS
    from tasks.config import load_config
    from tasks.stages import stage_dependencies

    cfg = load_config(None, [f"emotion.model={tiny_model_dir}", "denoise.enabled=false"])
    facts = []
    for _ in range(2):
        jobs, _run = prepare_run([str(short_recording)], config=cfg, out_dir=tmp_path)
        reports = {s: STAGE_FUNCTIONS[s](jobs[0]) for s in stage_dependencies(cfg)}
        facts.append((reports["export"].status, reports["export"].facts))
    (s1, f1), (s2, f2) = facts
    assert (s1, s2) == ("computed", "reused")
    assert f1 == f2 and f1["segments"] > 0
    table = np.genfromtxt(tmp_path / "recordings" / "short" / "segments.csv", delimiter=",", names=True,
                          dtype=None, encoding="utf-8")
    assert len(np.atleast_1d(table)) == f1["segments"]


def test_tasks_never_import_flows() -> None:
    import ast

    for path in TASKS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "flows" or n.startswith("flows.") for n in names), f"{path.name} imports {names}"
