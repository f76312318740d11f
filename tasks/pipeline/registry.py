"""The stages of a recording, in an order where each comes after what it reads, and their keys.

A stage's artefact key hashes everything that decides its output: the keys of the artefacts it
reads (the input's content hash for a stage that reads none), its config sections (less the
keys it declares it does not read), the checksums of the models it runs, anything else it
declares (:attr:`~tasks.pipeline.stage.Stage.key_inputs`) and its **code version**
(:mod:`tasks.pipeline.code_version`). So a change reruns exactly the stages downstream of it:
``screen.threshold`` reruns screen and export; ``denoise.*`` reruns denoise, what hears the
denoised audio, and export, but not the diarization of the original audio.
"""

from __future__ import annotations

import importlib
from typing import Any, Iterator, Sequence

from tasks.core.config import Config, canonical_hash
from tasks.pipeline.artefacts import stage_key
from tasks.pipeline.code_version import code_version
from tasks.pipeline.job import DEFAULT_REGISTRY
from tasks.pipeline.stage import Stage


class StageRegistryError(ValueError):
    """The stages do not form a graph: a name twice, an unknown stage read, or a cycle."""


class StageRegistry:
    """An ordered set of :class:`~tasks.pipeline.stage.Stage` (registration order breaks ties)."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self._stages = {s.name: s for s in stages}
        if len(self._stages) != len(stages):
            raise StageRegistryError("two stages share a name")

    def __getitem__(self, name: str) -> Stage:
        return self._stages[name]

    def __iter__(self) -> Iterator[Stage]:
        return iter(self._stages.values())

    def __contains__(self, name: object) -> bool:
        return name in self._stages

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._stages)

    def inputs(self, config: Config) -> dict[str, dict[str, str]]:
        """Stage → (role → stage read), in :meth:`order`."""
        return {name: self._stages[name].inputs(config) for name in self.order(config)}

    def order(self, config: Config) -> tuple[str, ...]:
        """The stages, each after every stage it reads (registration order otherwise)."""
        reads = {s.name: set(s.inputs(config).values()) for s in self}
        for name, deps in reads.items():
            unknown = deps - set(self._stages)
            if unknown:
                raise StageRegistryError(f"stage {name!r} reads unknown stage(s) {sorted(unknown)}")
        done: list[str] = []
        while len(done) < len(reads):
            ready = [n for n in self._stages if n not in done and reads[n] <= set(done)]
            if not ready:
                raise StageRegistryError(f"stages read each other in a cycle: {sorted(set(reads) - set(done))}")
            done.append(ready[0])
        return tuple(done)

    def code_version(self, name: str) -> str:
        """sha256 (16 hex) of the source that computes stage ``name``."""
        return code_version(self._stages[name].module)

    def compute_keys(self, *, sha256: str, config: Config, models: dict[str, dict[str, Any]]) -> dict[str, str]:
        """The artefact key of every stage of a recording whose content hash is ``sha256``."""
        plain = config.to_plain()
        keys: dict[str, str] = {}
        for name, roles in self.inputs(config).items():
            stage = self._stages[name]
            sections = {s: canonical_hash({k: v for k, v in plain[s].items()
                                           if k not in stage.keys_not_read.get(s, ())})
                        for s in stage.sections}
            model_shas = [models.get(m, {}).get("sha256", "") for m in stage.models]
            upstream = [f"{role}={keys[dep]}" for role, dep in sorted(roles.items())] or [sha256]
            extra = list(stage.key_inputs(config)) if stage.key_inputs is not None else []
            keys[name] = stage_key(name, upstream, sections, model_shas, self.code_version(name), *extra)
        return keys


def load_registry(ref: str = DEFAULT_REGISTRY) -> StageRegistry:
    """The registry named ``module:attribute`` (a job names its registry, so it pickles to workers)."""
    module, _, attr = ref.partition(":")
    registry = getattr(importlib.import_module(module), attr)
    if not isinstance(registry, StageRegistry):
        raise StageRegistryError(f"{ref} is not a stage registry")
    return registry
