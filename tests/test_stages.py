"""Stages declared once: the registry, keys, code versions and the import graph of the house."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tasks.core.config import load_config
from tasks.pipeline.code_version import imported_modules, module_closure, source_hash
from tasks.pipeline.registry import StageRegistry, StageRegistryError
from tasks.pipeline.stage import Stage
from tasks.stages import REGISTRY

ROOT = Path(__file__).resolve().parent.parent

RUN_STAGES = """
import json, sys
from tasks.core.config import load_config
from tasks.pipeline.runner import run_stages
from tasks.run.plan import prepare_run
cfg = load_config(None, sys.argv[3:])
jobs, _ = prepare_run([sys.argv[1]], config=cfg, out_dir=sys.argv[2])
print(json.dumps({s: r.status for s, r in run_stages(jobs[0]).items()}))
"""

KEYS = """
import json
from tasks.core.config import load_config
from tasks.stages import REGISTRY
cfg = load_config(None, [])
print(json.dumps({"keys": REGISTRY.compute_keys(sha256="0" * 64, config=cfg, models={}),
                  "versions": {s: REGISTRY.code_version(s) for s in REGISTRY.names}}))
"""


def _copy_code(dest: Path) -> Path:
    for pkg in ("tasks", "flows", "configs"):
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _in(code_root: Path, script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-c", script, *args], cwd=code_root, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(code_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_every_stage_is_one_module_declaring_it() -> None:
    cfg = load_config(None, [])
    assert REGISTRY.order(cfg) == ("load", "channels", "diarize", "denoise", "voices", "segment", "emotion",
                                   "transcribe", "screen", "export")
    for stage in REGISTRY:
        assert stage.module == f"tasks.stages.{stage.name}"
    # which audio a stage hears is read from the config, by name
    assert REGISTRY["emotion"].inputs(cfg)["audio"] == "denoise"
    assert REGISTRY["emotion"].inputs(load_config(None, ["denoise.enabled=false"]))["audio"] == "load"
    assert "diarization" not in REGISTRY["denoise"].inputs(load_config(None, ["diarization.audio=denoised"]))


def test_the_registry_refuses_unknown_reads_and_cycles() -> None:
    def noop(ctx):  # type: ignore[no-untyped-def]
        return {}

    cfg = load_config(None, [])
    with pytest.raises(StageRegistryError, match="unknown"):
        StageRegistry([Stage("a", noop, reads={"x": "nowhere"})]).order(cfg)
    with pytest.raises(StageRegistryError, match="cycle"):
        StageRegistry([Stage("a", noop, reads={"x": "b"}), Stage("b", noop, reads={"x": "a"})]).order(cfg)
    with pytest.raises(StageRegistryError, match="share a name"):
        StageRegistry([Stage("a", noop), Stage("a", noop)])


def test_keys_change_exactly_downstream_of_a_config_change() -> None:
    base = load_config(None, [])
    keys = REGISTRY.compute_keys(sha256="s", config=base, models={})
    changed = {
        "screen.threshold=0.5": {"screen", "export"},
        "segmentation.max_s=8": {"segment", "emotion", "transcribe", "screen", "export"},
        "diarization.known_threshold=0.91": {"voices", "export"},
        "export.csv=false": {"export"},
    }
    for setting, expected in changed.items():
        other = REGISTRY.compute_keys(sha256="s", config=load_config(None, [setting]), models={})
        assert {s for s in keys if keys[s] != other[s]} == expected, setting
    assert REGISTRY.compute_keys(sha256="t", config=base, models={}).keys() == keys.keys()
    assert all(a != b for a, b in zip(keys.values(), REGISTRY.compute_keys(sha256="t", config=base,
                                                                           models={}).values()))


def test_closure_follows_imports_inside_functions_and_into_subpackages() -> None:
    screen = set(module_closure(["tasks.stages.screen"]))
    # screen_segments is imported inside compute, frame_scores_from_logits inside it: both decide curves
    assert {"tasks.emotion.screen", "tasks.emotion.model", "tasks.pipeline.layout", "tasks.core.records",
            "tasks.emotion", "tasks"} <= screen
    assert not any(m.startswith(("tasks.diarization", "tasks.output", "tasks.stages.emotion")) for m in screen)
    assert "tasks.diarization.segments" in module_closure(["tasks.stages.segment"])
    # flows/ holds no stage logic, so no flow module is part of any code version
    assert all(m.startswith("tasks") for s in REGISTRY for m in module_closure([s.module]))


def _dump(nodes: list) -> list[str]:
    return sorted(ast.dump(n, include_attributes=False) for n in nodes)


def test_the_import_scan_finds_what_a_full_parse_finds() -> None:
    """The quick scan (only import lines parsed) against a whole-file parse, on every module of
    the project and on awkward spellings."""
    from tasks.pipeline.code_version import import_statements

    for path in [*ROOT.glob("tasks/**/*.py"), *ROOT.glob("flows/*.py"), *ROOT.glob("tests/*.py"),
                 *ROOT.glob("benchmarks/*.py")]:
        source = path.read_text(encoding="utf-8")
        full = _dump([n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Import, ast.ImportFrom))])
        scanned = _dump(import_statements(source))
        if path.parts[-2] == "tests" or path.parts[-2] == "benchmarks":  # code held in strings adds some
            assert set(full) <= set(scanned), path
        else:
            assert scanned == full, path
    awkward = ("import a.b as c, d\nfrom .e import (f,  # a comment (with parens\n    g as h)\n"
               "def k():\n    from ..m import \\\n        n\n    if x: import o\n"
               "from p import q  # (unbalanced\n")
    got = {ast.unparse(n) for n in import_statements(awkward)}
    assert got == {"import a.b as c, d", "from .e import f, g as h", "from ..m import n", "from p import q"}


def test_relative_imports_are_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "toypkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("def f():\n    from .b import g\n    from .. import c\n")
    (pkg / "sub" / "b.py").write_text("from ..c import h\n")
    (pkg / "c.py").write_text("h = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert module_closure(["toypkg.sub.a"]) == ["toypkg", "toypkg.c", "toypkg.sub", "toypkg.sub.a", "toypkg.sub.b"]


def test_two_files_with_one_name_never_collide(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each file is hashed under its path relative to the package: swapping the contents of
    ``a/util.py`` and ``b/util.py`` is a different code version."""
    def build(first: str, second: str) -> str:
        root = tmp_path / f"{first}{second}"
        for sub, text in (("a", first), ("b", second)):
            (root / "pk" / sub).mkdir(parents=True)
            (root / "pk" / sub / "__init__.py").write_text("")
            (root / "pk" / sub / "util.py").write_text(text)
        (root / "pk" / "__init__.py").write_text("")
        (root / "pk" / "stage.py").write_text("import pk.a.util\nimport pk.b.util\n")
        return str(root)

    from tasks.pipeline import code_version as cv

    hashes = []
    for texts in (("x = 1\n", "x = 2\n"), ("x = 2\n", "x = 1\n")):
        root = build(*texts)
        monkeypatch.syspath_prepend(root)
        for f in (cv.module_path, cv._package_root, cv.imported_modules):
            f.cache_clear()
        sys.modules.pop("pk", None)
        hashes.append(source_hash(module_closure(["pk.stage"])))
        monkeypatch.undo()
    for f in (cv.module_path, cv._package_root, cv.imported_modules):
        f.cache_clear()
    assert hashes[0] != hashes[1]


def test_editing_a_module_deep_in_a_subpackage_rekeys_exactly_its_stages(tmp_path: Path) -> None:
    """In a copy of the code, edit tasks/diarization/segments.py: only the segment stage's code
    version changes, and the keys of segment and everything downstream of it."""
    code = _copy_code(tmp_path / "code")
    before = json.loads(_in(code, KEYS))
    path = code / "tasks" / "diarization" / "segments.py"
    path.write_text(path.read_text().replace('OVERLAP_SPEAKER = "OVERLAP"', 'OVERLAP_SPEAKER = "BOTH"'))
    after = json.loads(_in(code, KEYS))
    assert {s for s in before["versions"] if before["versions"][s] != after["versions"][s]} == {"segment"}
    assert {s for s in before["keys"] if before["keys"][s] != after["keys"][s]} == {
        "segment", "emotion", "transcribe", "screen", "export"}


def test_no_import_cycle_between_emoflows_own_modules() -> None:
    """Imports inside functions count: a cycle there is still one in the design."""
    graph: dict[str, set[str]] = {}
    for pkg in ("tasks", "flows"):
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            graph[name] = {m for top in ("tasks", "flows") for m in imported_modules(name, top=top)}
            graph[name] -= {name} | {p for p in graph[name] if name.startswith(p + ".")}  # own packages
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, set())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_engines_never_import_stage_glue_or_flows() -> None:
    for path in (ROOT / "tasks").rglob("*.py"):
        rel = path.relative_to(ROOT / "tasks").parts
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "flows" or n.startswith("flows.") for n in names), f"{path} imports {names}"
            if rel[0] not in ("stages", "run"):
                assert not any(n.startswith("tasks.stages") for n in names), f"{path} imports {names}"


def test_no_folder_holds_more_than_twelve_modules() -> None:
    for folder in [ROOT / "flows", *(p for p in (ROOT / "tasks").rglob("*") if p.is_dir() and p.name != "__pycache__")]:
        assert len(list(folder.glob("*.py"))) <= 12, folder


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
    code = _copy_code(tmp_path / "code")
    screen_py = code / "tasks" / "emotion" / "screen.py"
    rule = "return bool(confidence < threshold)"
    assert rule in screen_py.read_text()
    out = tmp_path / "out"
    sets = [f"emotion.model={tiny_model_dir}", "denoise.enabled=false", "screen.threshold=0.5"]
    first = json.loads(_in(code, RUN_STAGES, str(short_recording), str(out), *sets))
    assert set(first.values()) == {"computed"}
    screen_py.write_text(screen_py.read_text().replace(rule, "return bool(confidence <= threshold)"))
    second = json.loads(_in(code, RUN_STAGES, str(short_recording), str(out), *sets))
    assert second == {"load": "reused", "channels": "reused", "denoise": "reused", "diarize": "reused",
                      "voices": "reused", "segment": "reused", "emotion": "reused", "transcribe": "reused",
                      "screen": "computed", "export": "computed"}


def test_export_reports_its_facts_when_reused(tmp_path: Path, short_recording: Path, tiny_model_dir: Path) -> None:
    from tasks.pipeline.runner import run_stages
    from tasks.run.plan import prepare_run

    cfg = load_config(None, [f"emotion.model={tiny_model_dir}", "denoise.enabled=false"])
    facts = []
    for _ in range(2):
        jobs, _run = prepare_run([str(short_recording)], config=cfg, out_dir=tmp_path)
        reports = run_stages(jobs[0])
        facts.append((reports["export"].status, reports["export"].facts))
    (s1, f1), (s2, f2) = facts
    assert (s1, s2) == ("computed", "reused")
    assert f1 == f2 and f1["segments"] > 0
    table = np.genfromtxt(tmp_path / "recordings" / "short" / "segments.csv", delimiter=",", names=True,
                          dtype=None, encoding="utf-8")
    assert len(np.atleast_1d(table)) == f1["segments"]


TOY_STAGES = '''
"""A toy stage registered beside emoflow's own: the loudness of each segment's audio."""
import json
import numpy as np
from tasks.pipeline import layout
from tasks.pipeline.stage import Stage
from tasks.stages import REGISTRY as EMOFLOW


def compute(ctx):
    audio = layout.read_audio(ctx["audio"])
    segments = layout.read_segments(ctx["segments"], recording_id="recording")
    rms = [float(np.sqrt(np.mean(np.square(s.cut(audio))))) for s in segments]
    (ctx.out / "loudness.json").write_text(json.dumps(rms))
    return {"segments": len(rms), "loudest": max(rms, default=0.0) > 0}


STAGE = Stage("loudness", compute, reads={"segments": "segment", "audio": "load"}, sections=("segmentation",))
REGISTRY = type(EMOFLOW)([*EMOFLOW, STAGE])
'''


def test_a_toy_stage_runs_through_the_real_pipeline_computed_then_reused(
        prefect_harness, tmp_path: Path, short_recording: Path, tiny_model_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.pipeline import run_pipeline

    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "toy_stages.py").write_text(textwrap.dedent(TOY_STAGES))
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    cfg = load_config(None, [f"emotion.model={tiny_model_dir}", "denoise.enabled=false", "report.enabled=false"])
    statuses = []
    for _ in range(2):
        summary = run_pipeline([str(short_recording)], config=cfg, out_dir=tmp_path / "out",
                               registry="toy_stages:REGISTRY")
        assert not summary.failed
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        recording = manifest["recordings"]["short"]
        statuses.append(recording["stages"]["loudness"]["status"])
        assert recording["facts"]["loudness"] == {"segments": recording["facts"]["segment"]["segments"],
                                                  "loudest": True}
    assert statuses == ["computed", "reused"]
    (art,) = (tmp_path / "out" / ".emoflow" / "artefacts" / "loudness").iterdir()
    assert len(json.loads((art / "loudness.json").read_text())) == recording["facts"]["segment"]["segments"]
