"""The stages of a recording: what each reads, and the key of what it produces.

A stage's artefact key hashes everything that decides its output: the keys of the artefacts it
reads (the input's content hash for ``load``), its config sections, the checksums of the models
it runs and its **code version**: the source of the module that holds the stage's logic and of
every ``tasks`` module that module imports, directly or not (found by reading their ``import``
statements, so a helper moved to another module stays covered). ``flows/`` only orchestrates:
it picks the artefact directories and calls one function per stage, so no flow code decides an
output.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path
from typing import Any

from tasks.artefacts import source_hash, stage_key
from tasks.config import Config

TASKS_DIR = Path(__file__).resolve().parent
STAGES: tuple[str, ...] = ("load", "channels", "denoise", "diarize", "voices", "segment", "emotion", "screen",
                           "export")
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "load": ("audio", "layout"),
    "channels": ("channels", "layout"),
    "denoise": ("denoise", "layout"),
    "diarize": ("diarize", "layout"),
    "voices": ("voices", "speakers", "layout"),
    "segment": ("segment", "layout"),
    "emotion": ("emotion", "emotion_fast", "layout"),
    "screen": ("screen", "layout"),
    "export": ("export", "layout"),
}
"""The ``tasks`` modules whose functions compute each stage (their imports are followed)."""
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "load": ("audio",),
    "channels": ("diarization",),
    "denoise": ("denoise",),
    "diarize": ("diarization",),
    "voices": ("diarization",),
    "segment": ("segmentation",),
    "emotion": ("emotion",),
    "screen": ("screen", "drilldown"),
    "export": ("export",),
}
"""The config sections each stage reads."""
SECTION_KEYS_NOT_READ: dict[str, dict[str, tuple[str, ...]]] = {
    "diarize": {"diarization": ("known_speakers", "known_threshold", "link_threshold")},
    "channels": {"diarization": ("known_speakers", "known_threshold", "link_threshold")},
}
"""Keys of a section a stage does not read (naming speakers does not diarize again)."""
STAGE_MODELS: dict[str, tuple[str, ...]] = {
    "channels": ("segmentation", "embedding"), "denoise": ("segmentation",), "diarize": ("segmentation", "embedding"),
    "voices": ("embedding",),
    "emotion": ("emotion",),
}
"""The models each stage runs (their checksums are part of its key)."""


def reuses_diarization_for_denoise(config: Config) -> bool:
    """Whether the denoiser takes its speech regions from the diarization of the original audio
    (instead of running the segmentation model a second time for voice activity)."""
    return config.denoise.enabled and config.diarization.audio == "original"


def stage_dependencies(config: Config) -> dict[str, tuple[str, ...]]:
    """The stages whose artefacts each stage reads (its key includes theirs), in an order where
    every stage comes after what it reads.

    ``diarize``, ``voices`` and ``segment`` read the audio ``diarization.audio`` names, ``emotion``
    the audio ``emotion.audio`` names; the audio read is always the last dependency listed. The
    ``channels`` stage decides whether a recording is one mix or one speaker per channel; every
    stage that hears audio reads its decision.
    """
    diarized = "denoise" if config.diarization.audio == "denoised" else "load"
    heard = "denoise" if config.emotion.audio == "denoised" else "load"
    if reuses_diarization_for_denoise(config):
        first = {"load": (), "channels": ("load",), "diarize": ("channels", "load"),
                 "denoise": ("load", "channels", "diarize")}
    else:
        first = {"load": (), "channels": ("load",), "denoise": ("load", "channels"), "diarize": ("channels", diarized)}
    return {
        **first,
        "voices": ("diarize", "channels", diarized),
        "segment": ("diarize", diarized),
        "emotion": ("segment", "channels", heard),
        "screen": ("segment", "emotion"),
        "export": ("diarize", "segment", "screen", "emotion", "denoise", "voices"),
    }


def _imported_tasks_modules(path: Path) -> set[str]:
    """Names of the ``tasks`` modules ``path`` imports anywhere (top level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("tasks.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("tasks."):
                found.add(node.module.split(".")[1])
            elif node.module == "tasks":
                found |= {a.name for a in node.names}
    return {m for m in found if (TASKS_DIR / f"{m}.py").is_file()}


def module_closure(modules: tuple[str, ...], *, tasks_dir: Path = TASKS_DIR) -> list[Path]:
    """The source files of ``modules`` and of every ``tasks`` module they import, transitively."""
    todo, seen = list(modules), set()
    while todo:
        m = todo.pop()
        if m in seen or not (tasks_dir / f"{m}.py").is_file():
            continue
        seen.add(m)
        todo.extend(_imported_tasks_modules(tasks_dir / f"{m}.py"))
    return [tasks_dir / f"{m}.py" for m in sorted(seen)]


@lru_cache(maxsize=None)
def code_version(stage: str) -> str:
    """sha256 (16 hex) of the source that computes ``stage`` (see the module docstring)."""
    return source_hash(*module_closure(STAGE_MODULES[stage]))


def compute_keys(*, sha256: str, config: Config, models: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The artefact key of every stage (see the module docstring).

    So a change reruns exactly the stages downstream of it: ``screen.threshold`` reruns screen
    and export; ``denoise.*`` reruns denoise, emotion (when it hears denoised audio), screen and
    export, but not diarization of the original audio.
    """
    from tasks.config import canonical_hash
    from tasks.voices import store_digest

    plain = config.to_plain()
    keys: dict[str, str] = {}
    for stage, deps in stage_dependencies(config).items():
        skip = SECTION_KEYS_NOT_READ.get(stage, {})
        sections = {s: canonical_hash({k: v for k, v in plain[s].items() if k not in skip.get(s, ())})
                    for s in STAGE_SECTIONS[stage]}
        model_shas = [models.get(m, {}).get("sha256", "") for m in STAGE_MODELS.get(stage, ())]
        upstream = [keys[d] for d in deps] or [sha256]
        inputs = [store_digest(config.diarization.known_speakers)] if stage == "voices" else []
        keys[stage] = stage_key(stage, upstream, sections, model_shas, code_version(stage), *inputs)
    return keys
