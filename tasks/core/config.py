"""The one configuration schema of emoflow.

Every stage reads its own section (``cfg.denoise``, ``cfg.emotion`` ...). A section's hash
keys the artefacts that stage produces, so a rerun with an unchanged section reuses them.

Hashes are computed from canonical JSON of plain values (never from pickles of pydantic
models), so they are identical across processes and Python sessions.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"


class ConfigError(ValueError):
    """A config file or an override is invalid; the message is one line for the user."""


def _numeric(annotation: Any) -> bool:
    """Whether a field holds a number (``float``, ``int``, or either or None)."""
    import typing

    if annotation in (float, int):
        return True
    args = typing.get_args(annotation)
    return bool(args) and all(a in (float, int, type(None)) for a in args) and any(a in (float, int) for a in args)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)  # .inf is a mistake too

    @model_validator(mode="before")
    @classmethod
    def _no_bools_as_numbers(cls, data: Any) -> Any:
        """``true``/``false`` for a number is a mistake (pydantic would take True as 1.0)."""
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name)
                if isinstance(value, bool) and field is not None and _numeric(field.annotation):
                    raise ValueError(f"{name}: expected a number, got {str(value).lower()}")
        return data


class AudioConfig(_Section):
    sample_rate: Literal[16000] = 16000
    min_duration_s: float = Field(0.5, ge=0.025)
    max_duration_s: float = Field(4 * 3600.0, gt=0)
    silence_dbfs: float = Field(-60.0, le=0)
    on_truncated: Literal["error", "warn"] = "error"
    extensions: list[str] = Field(
        default_factory=lambda: [
            ".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".webm", ".mp4",
            ".wma", ".aif", ".aiff", ".au", ".caf",
        ]
    )


    @model_validator(mode="after")
    def _bounds(self) -> "AudioConfig":
        if self.min_duration_s > self.max_duration_s:
            raise ValueError(f"min_duration_s ({self.min_duration_s:g}) is greater than max_duration_s "
                             f"({self.max_duration_s:g})")
        return self


class DenoiseConfig(_Section):
    # Defaults from benchmarks/denoise_quality.py (held-out seed, 5 dB): stationary with the
    # speech-activity noise profile +3.8 dB SI-SDR and no loss in speech detection; rnnoise
    # +4.8 dB but 3-4 points more VAD error. freq/time_mask_smooth: noisereduce's mask
    # smoothing (0 = none).
    enabled: bool = True
    method: Literal["stationary", "non_stationary", "rnnoise"] = "stationary"
    prop_decrease: float = Field(0.9, ge=0.0, le=1.0)
    n_fft: int = Field(512, ge=64)
    n_std_thresh_stationary: float = Field(1.5, gt=0)
    freq_mask_smooth_hz: float = Field(125.0, ge=0)
    time_mask_smooth_ms: float = Field(50.0, ge=0)
    noise_profile: Literal["speech_activity", "whole_file"] = "speech_activity"
    min_noise_s: float = Field(1.0, ge=0)
    vad_threshold: float = Field(0.5, gt=0, lt=1)


class DiarizationConfig(_Section):
    pipeline: str = "offline"
    segmentation_model: str = "pyannote/segmentation-3.0"
    embedding_model: str = "iic/speech_campplus_sv_zh_en_16k-common_advanced"
    # Agglomerative clustering (centroid linkage, cosine distance) of CAM++ embeddings.
    # clustering_threshold 0.875: lowest DER on AMI debug.train (10 x 30 s; collar 0, overlap
    # scored) in a sweep 0.45..1.0 step 0.025 (`benchmarks/diarization_der.py --tune`); DER is
    # flat at 27.5-27.6 % over 0.725-0.90 and rises on both sides (31 % at 0.65, 28.6 % at 1.0).
    # debug.development was not used for the choice. min_cluster_size 12 (pyannote's default):
    # 2..12 give the same train DER (pyannote caps it at 10 % of the embeddings, so 30 s files
    # cannot tell sizes apart; 1 is 0.0-3.5 points worse at low thresholds); the larger size keeps
    # tiny spurious clusters from becoming speakers in long recordings.
    clustering_threshold: float = Field(0.875, gt=0, lt=2)
    min_cluster_size: int = Field(12, ge=1)
    num_speakers: int | None = Field(None, ge=1)
    min_speakers: int | None = Field(None, ge=1)
    max_speakers: int | None = Field(None, ge=1)
    exclude_overlap: bool = True
    # Which audio is diarized. "original": measured on the 12 AMI excerpts
    # (benchmarks/denoise_der.py), diarizing denoised audio made DER worse (+4.4 points with
    # stationary, +6.7 with rnnoise), so segment times come from the original by default.
    audio: Literal["original", "denoised"] = "original"
    segmentation_batch_size: int = Field(32, ge=1)
    embedding_batch_size: int = Field(32, ge=1)
    # step of the 10 s segmentation window, as a share of it (pyannote's default 0.1); every
    # (window, speaker) pair gets one CAM++ embedding, so 0.2 halves the embedding cost
    segmentation_step: float = Field(0.1, gt=0, le=1)
    # gaps shorter than this within one speaker's speech are filled (pyannote's
    # segmentation.min_duration_off); figures in configs/default.yaml
    min_duration_off: float = Field(0.0, ge=0, le=5)
    # window (s) of the CAM++ embeddings that relabel single-speaker speech after clustering
    # (tasks/diarization/resegment.py); 0 = off. Figures in configs/default.yaml.
    resegment_window_s: float = Field(1.0, ge=0, le=10)
    # Refinement by a sharper speech detector after resegmentation (tasks/diarization/refine.py), each
    # step's measured effect in configs/default.yaml: "silero" (Silero VAD) or "none".
    speech_detector: Literal["silero", "none"] = "silero"
    # hysteresis thresholds on the detector's speech probability
    vad_onset: float = Field(0.5, gt=0, lt=1)
    vad_offset: float = Field(0.35, gt=0, lt=1)
    # most a turn edge moves to where the detector's speech starts / stops (s); 0 = edges kept
    boundary_shift_s: float = Field(0.25, ge=0, le=5)
    # detector pauses at least this long inside a single-speaker turn are cut (s); 0 = never
    cut_pause_s: float = Field(0.2, ge=0, le=10)
    # edges are trimmed and pauses cut only in turns the detector hears at least this share of
    cut_min_heard: float = Field(0.85, ge=0, le=1)
    # speech only the detector hears gets the nearest speaker (CAM++ centroid) when the cosine
    # distance is at most this; 0 = left unlabelled
    recover_max_distance: float = Field(0.0, ge=0, le=2)
    # every turn then widened this much before its onset / after its offset into frames no
    # speaker holds (s)
    pad_onset_s: float = Field(0.03, ge=0, le=1)
    pad_offset_s: float = Field(0.0, ge=0, le=1)
    # torch CPU threads while diarizing (0 = leave torch's setting). Default 1: with 2 threads
    # on a busy 2-core machine OpenMP oversubscription made CAM++ 5-30x slower; with 1 the AMI
    # set runs at RTF ~0.12 on that CPU. Raise it on a dedicated many-core machine.
    threads: int = Field(1, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Recordings with several channels (tasks/diarization/channels.py): "auto" splits when the channels carry
    # different speakers (one speaker per channel, e.g. agent / customer), otherwise mixes;
    # "mix" always averages them; "split" always treats each channel as one speaker.
    channels: Literal["auto", "mix", "split"] = "auto"
    # Labels of split channels, in channel order (default CH0, CH1, ...).
    channel_names: list[str] | None = None
    # Directory of enrolled voiceprints (`emoflow speakers enroll`); speakers matching one are
    # named after it. null: no naming.
    known_speakers: str | None = None
    # Least CAM++ cosine similarity of a speaker's centroid to a voiceprint for its name (0.5),
    # and of two recordings' speakers to be linked as one global speaker (0.55): chosen on the
    # simulated calls of benchmarks/calls_and_speakers.py --seed 1 (see default.yaml).
    known_threshold: float = Field(0.5, gt=-1, lt=1)
    link_threshold: float = Field(0.55, gt=-1, lt=1)

    @field_validator("channel_names", mode="after")
    @classmethod
    def _channel_names(cls, names: list[str] | None) -> list[str] | None:
        """Any Unicode name (spaces inside included), NFC-normalised; refused: empty, surrounding
        spaces, control/format characters or line breaks (they would split tables and logs), ``+``
        (it joins the speakers of an overlap, ``A+B``), emoflow's own speaker labels
        (``SPEAKER_00``, ``G00``; ``CHn`` except as channel n's own name), and repeats, also
        those that differ only in case (``Agent``/``agent``: one speaker to a reader)."""
        if names is None:
            return None
        if not names:
            raise ValueError("channel_names must name at least one channel")
        out = []
        for index, name in enumerate(names):
            name = unicodedata.normalize("NFC", name)
            why = None
            if not name.strip():
                why = "empty"
            elif name != name.strip():
                why = "starts or ends with a space"
            elif any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for ch in name):
                why = "contains a control character or line break"
            elif "+" in name:
                why = "contains '+', which joins the speakers of an overlap"
            elif len(name) > 100:
                why = "longer than 100 characters"
            elif re.fullmatch(r"SPEAKER_\d+|G\d+|CH\d+", name) and name != f"CH{index}":
                why = "emoflow's own label for another speaker (SPEAKER_xx, Gxx, CHx)"
            if why:
                raise ValueError(f"channel name {name!r} is not valid ({why})")
            out.append(name)
        folded = [n.casefold() for n in out]
        if len(set(folded)) < len(folded):
            again = next(n for i, n in enumerate(out) if folded[i] in folded[:i])
            raise ValueError(f"channel_names repeats a name: {again!r} (names that differ only in case are one "
                             f"name): {out}")
        return out

    @model_validator(mode="after")
    def _speaker_bounds(self) -> "DiarizationConfig":
        lo, hi, n = self.min_speakers, self.max_speakers, self.num_speakers
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min_speakers ({lo}) is greater than max_speakers ({hi})")
        if n is not None and lo is not None and n < lo:
            raise ValueError(f"num_speakers ({n}) is less than min_speakers ({lo})")
        if n is not None and hi is not None and n > hi:
            raise ValueError(f"num_speakers ({n}) is greater than max_speakers ({hi})")
        if self.vad_offset > self.vad_onset:
            raise ValueError(f"vad_offset ({self.vad_offset:g}) is greater than vad_onset ({self.vad_onset:g}): "
                             "speech would end above the level it starts at")
        return self


class SegmentationConfig(_Section):
    min_s: float = Field(1.5, gt=0)
    max_s: float = Field(10.0, gt=0)
    merge_gap_s: float = Field(0.3, ge=0)
    split_search_s: float = Field(2.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> "SegmentationConfig":
        if self.min_s > self.max_s:
            raise ValueError(f"min_s ({self.min_s:g}) is greater than max_s ({self.max_s:g})")
        if self.max_s < 2 * self.min_s:
            raise ValueError(
                f"max_s ({self.max_s}) must be at least twice min_s ({self.min_s}) "
                "so long turns can be split into pieces within bounds"
            )
        return self


class EmotionConfig(_Section):
    model: str = "iic/emotion2vec_plus_large"
    hub: Literal["auto", "modelscope", "huggingface"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    audio: Literal["denoised", "original"] = "denoised"
    batch_seconds: float = Field(60.0, gt=0)
    threads: int = Field(0, ge=0)
    fast_path: bool = True
    cpu_batching: bool = False


class TranscribeConfig(_Section):
    enabled: bool = True
    model: str = "iic/SenseVoiceSmall"
    hub: Literal["auto", "modelscope", "huggingface"] = "auto"
    language: Literal["auto", "zh", "en", "yue", "ja", "ko"] = "auto"
    itn: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_seconds: float | None = Field(None, gt=0)
    threads: int = Field(1, ge=0)
    workers: int = Field(0, ge=0)


class ScreenConfig(_Section):
    threshold: float = Field(0.70, ge=0.0, le=1.0)


class DrilldownConfig(_Section):
    enabled: bool = True
    smooth_s: float = Field(0.0, ge=0)
    frame_hop_s: float = Field(0.02, ge=0.02)
    min_run_s: float = Field(0.2, ge=0)


class ExportConfig(_Section):
    embeddings: Literal["high_confidence", "all", "none"] = "high_confidence"
    denoised_audio: bool = False
    csv: bool = True


class ReportConfig(_Section):
    enabled: bool = True
    timeline_png: bool = True
    lowest_confidence_rows: int = Field(20, ge=0)
    audio_players: bool = True


class RunnerConfig(_Section):
    kind: Literal["thread", "dask"] = "thread"
    address: str | None = None
    max_workers: int = Field(1, ge=1)
    retries: int = Field(1, ge=0)
    retry_delay_s: float = Field(2.0, ge=0)


class Config(_Section):
    audio: AudioConfig = Field(default_factory=AudioConfig)
    denoise: DenoiseConfig = Field(default_factory=DenoiseConfig)
    diarization: DiarizationConfig = Field(default_factory=DiarizationConfig)
    segmentation: SegmentationConfig = Field(default_factory=SegmentationConfig)
    emotion: EmotionConfig = Field(default_factory=EmotionConfig)
    transcribe: TranscribeConfig = Field(default_factory=TranscribeConfig)
    screen: ScreenConfig = Field(default_factory=ScreenConfig)
    drilldown: DrilldownConfig = Field(default_factory=DrilldownConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)

    def to_plain(self) -> dict[str, Any]:
        """The config as plain JSON-compatible values."""
        return self.model_dump(mode="json")

    def section_hash(self, name: str) -> str:
        """sha256 of one section's canonical JSON."""
        return canonical_hash(getattr(self, name).model_dump(mode="json"))

    def sha256(self) -> str:
        """sha256 of the whole resolved config."""
        return canonical_hash(self.to_plain())

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_plain(), sort_keys=False, allow_unicode=True)


SECTIONS: tuple[str, ...] = tuple(Config.model_fields)


def canonical_hash(value: Any) -> str:
    """sha256 of ``value`` as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _one_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return "; ".join(parts)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` into a key path and a YAML-typed value."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes from the command line (a path's name)
        shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise ConfigError(f"--set {shown!r}: not valid UTF-8 (a config value goes into the run's config.yaml and "
                          "Prefect's records); use a path whose name is UTF-8") from None
    key, sep, raw = text.partition("=")
    path = [p for p in key.strip().split(".") if p]
    if not sep or len(path) < 2:
        raise ConfigError(f"--set {text!r}: expected section.key=value (e.g. screen.threshold=0.6)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return path, value


def _apply(tree: dict[str, Any], path: list[str], value: Any, text: str) -> None:
    if path[0] not in SECTIONS:
        raise ConfigError(f"--set {text!r}: unknown section {path[0]!r} (one of {', '.join(SECTIONS)})")
    node = tree
    model: type[BaseModel] = Config
    for part in path[:-1]:
        fields = model.model_fields
        if part not in fields:
            raise ConfigError(f"--set {text!r}: unknown key {part!r}")
        model = fields[part].annotation  # type: ignore[assignment]
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {text!r}: {part!r} is not a section")
    last = path[-1]
    if isinstance(model, type) and issubclass(model, BaseModel) and last not in model.model_fields:
        known = ", ".join(model.model_fields)
        raise ConfigError(f"--set {text!r}: unknown key {last!r} in {'.'.join(path[:-1])} (known: {known})")
    node[last] = value


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a mapping with the same key twice (YAML says keys are
    unique; PyYAML would silently keep the last value)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str) -> Any:
    """Parse YAML safely, refusing duplicate keys."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def load_config(path: str | os.PathLike[str] | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (defaults when ``path`` is None), apply ``--set`` overrides, validate.

    Raises
    ------
    ConfigError
        With a one-line message naming the file or override and the reason.
    """
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            loaded = read_yaml(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(f"{p}: not a UTF-8 text file") from None
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read config ({exc.strerror or exc})") from None
        except yaml.constructor.ConstructorError as exc:
            mark = exc.problem_mark
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise ConfigError(f"{p}: {exc.problem}{where}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise ConfigError(f"{p}: not valid YAML{where}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of sections at the top level")
        tree = loaded
    for text in overrides:
        keys, value = parse_override(text)
        _apply(tree, keys, value, text)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        where = "--set" if overrides and source == "defaults" else source
        if overrides:
            shown = "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape", "backslashreplace")
                            .decode("ascii") for ch in " ".join(overrides))  # one line, whatever was typed
            where = f"{source} with --set {shown}"
        raise ConfigError(f"invalid config ({where}): {_one_line(exc)}") from None


def write_config(cfg: Config, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as YAML, atomically."""
    from tasks.core.storage import atomic_write_text

    return atomic_write_text(Path(path), cfg.to_yaml())
