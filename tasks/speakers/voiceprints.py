"""Known speakers (voiceprints) and one speaker across recordings.

A **voiceprint** is the CAM++ embedding of a person's speech in a few files, stored in a
speakers directory (default ``~/.local/share/emoflow/speakers``, ``$EMOFLOW_SPEAKERS_DIR``,
or ``--speakers DIR``) as two files per name, no pickle:

``<name>.npy``
    the unit-length 192-d float32 vector;
``<name>.json``
    ``name``, ``model`` (id and sha256 of the CAM++ checkpoint that made it), ``sources``
    (each file's path and sha256, seconds of speech used), ``created`` (UTC), ``speech_s``.

Both are written atomically (the vector first; the JSON is what makes a voiceprint exist).
A voiceprint made with another CAM++ checkpoint is refused in one line: vectors of two models
are not comparable.

:func:`speaker_centroids` gives each diarized speaker one vector (its exclusive speech, the
same windows and weighting as enrolment, :func:`embed_speech`); :func:`name_speakers` matches
them to voiceprints as an assignment (two speakers of one recording never share a name);
:func:`link_speakers` clusters the centroids of many recordings into global speakers (one
voice, one id across the run), never joining two speakers of one recording.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from tasks.core.timebase import SAMPLE_RATE, compute_num_samples
from tasks.core.storage import atomic_write_json, atomic_write_npy, sha256_file
from tasks.speakers.vectors import unit, unit_centroids

if TYPE_CHECKING:
    from pyannote.core import Annotation

WINDOW_S = 3.0
"""Speech is embedded in windows of at most this length (CAM++ is trained on 3 s crops)."""
MIN_PIECE_S = 0.5
"""Speech pieces shorter than this are not embedded (too little for a stable embedding)."""
MAX_WINDOWS = 120
"""At most this many windows per speaker (6 min of speech), evenly spread, bound the cost."""
FORMAT = 1

_RESERVED = re.compile(r"^(SPEAKER_\d+|G\d+|CH\d+)$")
_MAX_NAME = 100


class SpeakerError(ValueError):
    """Bad speakers-directory input (name, store, voiceprint); the message is one line."""


class NoSpeechError(SpeakerError):
    """The files given for enrolment hold too little speech."""


# --------------------------------------------------------------------------- embeddings
def embed_speech(
    audio: np.ndarray,
    *,
    regions: Sequence[tuple[float, float]],
    embedder: Any,
    window_s: float = WINDOW_S,
) -> tuple[np.ndarray | None, float]:
    """One unit-length CAM++ vector for the speech of ``audio`` inside ``regions``.

    Each region is cut into near-equal windows of at most ``window_s``; pieces shorter than
    :data:`MIN_PIECE_S` are skipped. Window embeddings are normalised and averaged weighted by
    their duration, then normalised again.

    Parameters
    ----------
    audio : np.ndarray
        Mono float samples at 16 kHz.
    regions : sequence of (start, end)
        Seconds of speech to use.
    embedder : CamPlusPlusEmbedding
        Loaded CAM++ (:func:`tasks.speakers.campplus.load_embedding_model`).
    window_s : float
        Longest window.

    Returns
    -------
    vector : np.ndarray or None
        (192,) float32, None when no piece is long enough.
    seconds : float
        Speech used.
    """
    from tasks.speakers.campplus import embed_pieces

    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    windows: list[tuple[int, int]] = []
    for start, end in regions:
        length = end - start
        if length < MIN_PIECE_S:
            continue
        parts = max(1, int(np.ceil(length / window_s)))
        edges = np.linspace(start, end, parts + 1)
        for a, b in zip(edges[:-1], edges[1:]):
            i0, i1 = compute_num_samples(a), min(audio.shape[0], compute_num_samples(b))
            if i1 - i0 >= compute_num_samples(MIN_PIECE_S):
                windows.append((i0, i1))
    if len(windows) > MAX_WINDOWS:
        windows = [windows[i] for i in np.linspace(0, len(windows) - 1, MAX_WINDOWS).round().astype(int)]
    if not windows:
        return None, 0.0
    emb = embed_pieces(audio, windows, embedder=embedder, min_samples=compute_num_samples(MIN_PIECE_S))
    weights = np.array([b - a for a, b in windows], dtype=np.float64)
    ok = np.isfinite(emb).all(axis=1)
    if not ok.any():
        return None, 0.0
    mean = unit_centroids(emb, owner=np.zeros(len(windows)), count=1, weights=weights)[0]
    return mean.astype(np.float32), float(weights[ok].sum() / SAMPLE_RATE)


def speaker_centroids(
    audio: np.ndarray,
    annotation: Annotation,
    *,
    embedder: Any,
    channel_of: Mapping[str, int] | None = None,
    min_speech_s: float = 1.0,
) -> dict[str, np.ndarray]:
    """One unit-length CAM++ vector per diarized speaker, from the speech only they speak.

    Parameters
    ----------
    audio : np.ndarray
        (n,) mono, or (channels, n) with ``channel_of`` (split channels: each speaker is
        embedded from its own channel).
    annotation : pyannote.core.Annotation
        The (overlap-aware) diarization; overlapped speech is left out.
    embedder : CamPlusPlusEmbedding
        Loaded CAM++.
    channel_of : mapping of str to int, optional
        Speaker label → row of ``audio``; required when ``audio`` is 2-D.
    min_speech_s : float
        Speakers with less usable exclusive speech get no centroid.

    Returns
    -------
    dict of str to np.ndarray
        label → (192,) float32; labels with too little speech are absent.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2 and channel_of is None:
        raise ValueError("speaker_centroids: 2-D audio needs channel_of (label -> channel)")
    overlap = annotation.get_overlap()
    out: dict[str, np.ndarray] = {}
    for label in sorted(annotation.labels(), key=str):
        own = annotation.label_timeline(label).support()
        exclusive = own.extrude(overlap) if overlap else own
        regions = [(float(s.start), float(s.end)) for s in exclusive if s.duration > 0]
        source = audio[channel_of[label]] if audio.ndim == 2 else audio  # type: ignore[index]
        vector, seconds = embed_speech(source, regions=regions, embedder=embedder)
        if vector is not None and seconds >= min_speech_s:
            out[str(label)] = vector
    return out


# --------------------------------------------------------------------------- store
def default_store() -> Path:
    """``$EMOFLOW_SPEAKERS_DIR`` or ``~/.local/share/emoflow/speakers``."""
    env = os.environ.get("EMOFLOW_SPEAKERS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "emoflow" / "speakers"


def check_name(name: str) -> str:
    """A voiceprint name, NFC-normalised, or :class:`SpeakerError` saying what is wrong.

    Any language is fine; refused: empty, longer than 100 characters, path separators, control
    characters, a leading ``-`` or ``.``, surrounding spaces, ``+`` (it joins the speakers of an
    overlap row) and the labels emoflow makes itself (``SPEAKER_00``, ``G00``, ``CH0``).
    """
    name = unicodedata.normalize("NFC", str(name))
    why = None
    if not name:
        why = "empty"
    elif len(name) > _MAX_NAME:
        why = f"longer than {_MAX_NAME} characters"
    elif any(ch in name for ch in "/\\") or name in (".", ".."):
        why = "contains a path separator"
    elif any(unicodedata.category(ch).startswith("C") for ch in name):
        why = "contains a control character"
    elif name[0] in "-.":
        why = f"starts with {name[0]!r}"
    elif name != name.strip():
        why = "starts or ends with a space"
    elif "+" in name:
        why = "contains '+', which joins the speakers of an overlap"
    elif _RESERVED.match(name):
        why = "reserved for emoflow's own labels (SPEAKER_xx, Gxx, CHx)"
    if why:
        raise SpeakerError(f"{name!r}: not a valid speaker name ({why})")
    return name


@dataclass(frozen=True)
class Voiceprint:
    """An enrolled voice: ``vector`` (192,) unit float32 and the facts stored beside it."""

    name: str
    vector: np.ndarray
    model_id: str
    model_sha256: str
    sources: list[dict[str, Any]]
    created: str
    speech_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "name": self.name, "model": {"id": self.model_id, "sha256": self.model_sha256},
                "sources": self.sources, "created": self.created, "speech_s": round(self.speech_s, 2),
                "dimension": int(self.vector.shape[0])}


def _paths(store: Path, name: str) -> tuple[Path, Path]:
    return store / f"{name}.json", store / f"{name}.npy"


def current_model(model_ref: str | None = None) -> tuple[str, str]:
    """(id, sha256) of the CAM++ checkpoint voiceprints are made and compared with."""
    from tasks.speakers.campplus import EMBEDDING_MODEL_ID
    from tasks.models.hub import resolve

    ref = model_ref or EMBEDDING_MODEL_ID
    return ref, resolve(ref, kind="embedding").sha256


def enroll(
    name: str,
    files: Sequence[str | os.PathLike[str]],
    *,
    store: str | os.PathLike[str] | None = None,
    embedder: Any = None,
    model_ref: str | None = None,
    audio_config: Any = None,
) -> Voiceprint:
    """Make (or replace) the voiceprint ``name`` from the speech in ``files``.

    Each file is decoded as 16 kHz mono (:func:`tasks.audio.decode.load_audio`), its speech found by
    the pipeline's detector (:func:`tasks.audio.vad.speech_regions`) and embedded with
    :func:`embed_speech` over all files together.

    Parameters
    ----------
    name : str
        Validated by :func:`check_name`.
    files : sequence of path-like
        Recordings of that one person alone.
    store : path-like, optional
        Speakers directory (default :func:`default_store`).
    embedder : CamPlusPlusEmbedding, optional
        Loaded CAM++ (default: the ``model_ref`` checkpoint on the CPU).
    model_ref : str, optional
        CAM++ model reference (default: emoflow's).
    audio_config : AudioConfig, optional
        Decoding limits.

    Returns
    -------
    Voiceprint

    Raises
    ------
    SpeakerError
        Bad name; :class:`NoSpeechError` when the files hold under 1 s of usable speech.
    tasks.audio.decode.AudioError
        A file is missing or not audio.
    """
    from tasks.audio.decode import load_audio
    from tasks.audio.vad import speech_regions

    name = check_name(name)
    if not files:
        raise SpeakerError(f"{name}: no files to enrol from")
    root = Path(store) if store is not None else default_store()
    if root.is_dir():  # "alice" beside "Alice" would be two voiceprints for one person
        for other in sorted(root.glob("*.json")):
            if other.stem != name and _same_name(other.stem, name):
                raise SpeakerError(f"{name}: {other.stem!r} is enrolled already (the names differ only in case or "
                                   f"Unicode form); enrol under that name to replace it, or remove it first: "
                                   f"emoflow speakers remove {other.stem}")
    model_id, model_sha = current_model(model_ref)
    if embedder is None:
        from tasks.speakers.campplus import load_embedding_model

        embedder = load_embedding_model(model_id, "cpu")
    pieces: list[np.ndarray] = []
    regions: list[tuple[float, float]] = []
    sources: list[dict[str, Any]] = []
    offset = 0.0
    for f in files:
        audio, _ = load_audio(f, config=audio_config)
        found = speech_regions(audio)
        sources.append({"path": str(Path(f).resolve()), "sha256": sha256_file(f),
                        "speech_s": round(sum(b - a for a, b in found), 2)})
        regions.extend((offset + a, offset + b) for a, b in found)
        pieces.append(audio)
        offset += audio.shape[0] / SAMPLE_RATE
    # regions never cross a file boundary, so concatenating is only bookkeeping
    vector, seconds = embed_speech(np.concatenate(pieces), regions=regions, embedder=embedder)
    if vector is None or seconds < 1.0:
        raise NoSpeechError(f"{name}: too little speech in {', '.join(str(f) for f in files)} "
                            f"({seconds:.1f} s usable; enrolment needs at least 1 s)")
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    vp = Voiceprint(name, vector, model_id, model_sha, sources, created, seconds)
    meta, vec = _paths(root, name)
    atomic_write_npy(vec, vector)
    atomic_write_json(meta, vp.to_dict())
    return vp


DIMENSION = 192
"""The length of a CAM++ voiceprint (the model's embedding size)."""
NORM_TOLERANCE = 1e-2
"""A voiceprint is a unit vector (enrolment normalises it): its norm must be 1 within this."""
MAX_VECTOR_BYTES = 64 * 1024
"""A voiceprint's ``.npy`` is under 2 kB (192 float32 or float64 and a header): a larger file is
refused before it is read (a huge file would be read whole into memory)."""
MAX_META_BYTES = 1024 * 1024
"""The most a voiceprint's ``.json`` may hold (its facts and source list are a few kB)."""


def _regular(path: Path) -> bool:
    """Whether ``path`` is a regular file, without following a link or opening it."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _read(meta: Path) -> Voiceprint:
    """The voiceprint of ``meta`` (``NAME.json`` beside ``NAME.npy``), checked: both regular
    files (a link is refused, never followed), the inner name equal to the file's, the vector
    192 finite numbers of norm 1."""
    from tasks.core.records import one_line

    vec_path = meta.with_suffix(".npy")
    for p in (meta, vec_path):
        if p.is_symlink():
            raise SpeakerError(f"{p}: a symbolic link in the speakers directory; emoflow reads only the files it "
                               "wrote there (copy the voiceprint in, or enrol again)")
    if not _regular(vec_path):
        raise SpeakerError(f"{vec_path}: voiceprint vector missing or not a regular file; enrol "
                           f"{meta.stem} again")
    try:  # the file name is the speaker's name in every table: it must be one enrol would take
        name = check_name(meta.stem)
    except SpeakerError as exc:
        raise SpeakerError(f"{one_line(str(meta))}: not a usable voiceprint: {one_line(str(exc))}; rename or "
                           "remove the file") from None
    for p, limit in ((meta, MAX_META_BYTES), (vec_path, MAX_VECTOR_BYTES)):
        size = os.lstat(p).st_size
        if size > limit:
            raise SpeakerError(f"{p}: not a usable voiceprint: {size} bytes, more than a voiceprint's {limit} "
                               f"(not read); enrol again: emoflow speakers enroll {name} FILE...")
    try:
        facts = json.loads(meta.read_text(encoding="utf-8"))
        vector = np.load(vec_path, allow_pickle=False)
        if not isinstance(facts, dict):
            raise TypeError(f"a JSON {type(facts).__name__}, not an object")
        if not isinstance(vector, np.ndarray):  # np.load opens an .npz archive too
            getattr(vector, "close", lambda: None)()
            raise TypeError(f"{vec_path.name} is not a NumPy .npy array")
        kind = np.asarray(vector).dtype
        vp = Voiceprint(
            name=str(facts["name"]),
            vector=np.asarray(vector, dtype=np.float32).reshape(-1) if kind.kind == "f" else np.zeros(0, np.float32),
            model_id=str(facts["model"]["id"]), model_sha256=str(facts["model"]["sha256"]),
            sources=list(facts.get("sources", [])), created=str(facts.get("created", "")),
            speech_s=float(facts.get("speech_s", 0.0)),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SpeakerError(f"{meta}: unreadable voiceprint ({type(exc).__name__}: {str(exc)[:120]})") from None
    why = None
    if kind.kind != "f":  # complex, integer, boolean or text numbers are not a CAM++ embedding
        why = f"its vector holds {kind} values, a voiceprint holds floating-point numbers"
    elif unicodedata.normalize("NFC", vp.name) != name:
        why = f"it holds the name {vp.name!r}, not {meta.stem!r} (a renamed file): rename it back, or enrol again"
    elif np.asarray(vector).ndim != 1 or vp.vector.shape != (DIMENSION,):
        why = f"its vector has shape {tuple(np.asarray(vector).shape)}, a CAM++ voiceprint has ({DIMENSION},)"
    elif not np.isfinite(vp.vector).all():
        why = "its vector holds NaN or infinite values"
    elif abs(float(np.linalg.norm(vp.vector.astype(np.float64))) - 1.0) > NORM_TOLERANCE:
        why = f"its vector has norm {float(np.linalg.norm(vp.vector)):.4g}, a voiceprint has norm 1"
    if why:
        raise SpeakerError(f"{meta}: not a usable voiceprint: {why}; enrol again: "
                           f"emoflow speakers enroll {name} FILE...")
    return Voiceprint(name, vp.vector, vp.model_id, vp.model_sha256, vp.sources, vp.created, vp.speech_s)


def _same_name(a: str, b: str) -> bool:
    """Whether two speaker names are one name to a person (NFC, case-folded)."""
    return unicodedata.normalize("NFC", a).casefold() == unicodedata.normalize("NFC", b).casefold()


def list_voiceprints(*, store: str | os.PathLike[str] | None = None) -> list[Voiceprint]:
    """The voiceprints in ``store`` by name (an absent directory holds none).

    Entries that are not regular files or links (a FIFO, a socket, a device, a folder named
    ``*.json``) are skipped without being opened: they are not voiceprints emoflow wrote, and
    opening a FIFO would block. A link is refused (:func:`_read`).

    Raises
    ------
    SpeakerError
        ``store`` is not a directory, or a voiceprint there is unreadable or unusable.
    """
    root = Path(store) if store is not None else default_store()
    if not root.exists():
        return []
    if not root.is_dir():
        raise SpeakerError(f"{root}: not a speakers directory (a file)")
    metas = [p for p in sorted(root.glob("*.json"))
             if not p.name.startswith(".") and (p.is_symlink() or _regular(p))]
    prints = [_read(p) for p in metas]
    seen: dict[str, Path] = {}
    for meta, vp in zip(metas, prints):  # Alice.json and alice.json (or José in NFC and NFD): which one?
        key = unicodedata.normalize("NFC", vp.name).casefold()
        if key in seen:
            raise SpeakerError(f"{seen[key]} and {meta}: two voiceprints for one speaker name (they differ only "
                               "in case or Unicode form); delete the one that is wrong")
        seen[key] = meta
    return prints


def remove(name: str, *, store: str | os.PathLike[str] | None = None) -> None:
    """Delete the voiceprint ``name``.

    Raises
    ------
    SpeakerError
        Bad name, or no voiceprint of that name in ``store``.
    """
    name = check_name(name)
    root = Path(store) if store is not None else default_store()
    meta, vec = _paths(root, name)
    if not meta.is_file():
        raise SpeakerError(f"{name}: no such speaker in {root}")
    meta.unlink()
    vec.unlink(missing_ok=True)


def load_voiceprints(
    *, store: str | os.PathLike[str], model_sha256: str
) -> dict[str, np.ndarray]:
    """The vectors of ``store`` by name, for :func:`name_speakers`.

    Raises
    ------
    SpeakerError
        ``store`` missing or not a directory, or a voiceprint made with another CAM++
        checkpoint (one line naming it and how to enrol it again).
    """
    root = Path(store)
    if not root.is_dir():
        raise SpeakerError(f"{root}: diarization.known_speakers is not a directory")
    out: dict[str, np.ndarray] = {}
    for vp in list_voiceprints(store=root):
        if vp.model_sha256 != model_sha256:
            raise SpeakerError(
                f"{root / (vp.name + '.json')}: voiceprint made with another speaker model "
                f"(sha256 {vp.model_sha256[:12]}…, current {model_sha256[:12]}…); enrol it again: "
                f"emoflow speakers enroll {vp.name} FILE...")
        out[vp.name] = vp.vector
    return out


# --------------------------------------------------------------------------- naming and linking
def _unit(vectors: Sequence[np.ndarray]) -> np.ndarray:
    m = np.stack([np.asarray(v, dtype=np.float64).reshape(-1) for v in vectors])
    return unit(m)


def name_speakers(
    centroids: Mapping[str, np.ndarray],
    voiceprints: Mapping[str, np.ndarray],
    *,
    threshold: float,
) -> dict[str, str]:
    """Give each diarized speaker the name of the voiceprint it matches.

    Cosine similarities between centroids and voiceprints are solved as an assignment
    (``scipy.optimize.linear_sum_assignment``, maximising total similarity), so no two
    speakers get one name; a pair is kept only when its similarity is at least ``threshold``.

    Parameters
    ----------
    centroids : mapping of str to np.ndarray
        Diarized label → vector (:func:`speaker_centroids`).
    voiceprints : mapping of str to np.ndarray
        Name → vector (:func:`load_voiceprints`).
    threshold : float
        ``diarization.known_threshold``.

    Returns
    -------
    dict of str to str
        Every label of ``centroids`` → its name, or itself when it matches nobody.
    """
    from scipy.optimize import linear_sum_assignment

    labels = sorted(centroids, key=str)
    out = {label: label for label in labels}
    names = sorted(voiceprints)
    if not labels or not names:
        return out
    sim = _unit([centroids[lab] for lab in labels]) @ _unit([voiceprints[n] for n in names]).T
    rows, cols = linear_sum_assignment(sim, maximize=True)
    for r, c in zip(rows, cols):
        if sim[r, c] >= threshold:
            out[labels[r]] = names[c]
    return out


def link_speakers(
    centroids_by_recording: Mapping[str, Mapping[str, np.ndarray]],
    *,
    threshold: float,
    names: Mapping[tuple[str, str], str] | None = None,
) -> dict[tuple[str, str], str]:
    """Global speaker ids across recordings: one voice, one id.

    Average-linkage agglomerative clustering of the per-recording centroids on cosine
    similarity, stopping when no pair of clusters is at least ``threshold`` similar, with
    cannot-links: two speakers of one recording, or with different enrolled names, never share
    a cluster; speakers with the same enrolled name start in one cluster. Memory: a square
    float32 matrix over the speakers (2000 speakers: 16 MB).

    Parameters
    ----------
    centroids_by_recording : mapping of str to mapping of str to np.ndarray
        recording id → {label → centroid}.
    threshold : float
        ``diarization.link_threshold`` (cosine similarity).
    names : mapping of (recording id, label) to str, optional
        Enrolled names already given (:func:`name_speakers`); a named cluster takes its name.

    Returns
    -------
    dict of (str, str) to str
        (recording id, label) → global id: the enrolled name of a named cluster, else ``G00``,
        ``G01``... numbered in order of first appearance (recording ids and labels sorted), so
        the same inputs always give the same ids.
    """
    keys = [(str(r), str(lab)) for r in sorted(centroids_by_recording, key=str)
            for lab in sorted(centroids_by_recording[r], key=str)]
    if not keys:
        return {}
    names = {k: v for k, v in (names or {}).items() if k in set(keys)}
    x = _unit([centroids_by_recording[r][lab] for r, lab in keys])
    recs = sorted({r for r, _ in keys})
    # initial clusters: one per item, items with one enrolled name together
    members: list[list[int]] = []
    by_name: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k in names and names[k] in by_name:
            members[by_name[names[k]]].append(i)
        else:
            if k in names:
                by_name[names[k]] = len(members)
            members.append([i])
    rec_index = {r: j for j, r in enumerate(recs)}
    m = len(members)
    in_rec = np.zeros((m, len(recs)), dtype=bool)
    label_of = [None] * m  # enrolled name of a cluster
    for c, items in enumerate(members):
        for i in items:
            in_rec[c, rec_index[keys[i][0]]] = True
            label_of[c] = names.get(keys[i], label_of[c])
    sizes = np.array([len(items) for items in members], dtype=np.float64)
    centre = np.stack([x[items].sum(axis=0) for items in members])
    # average linkage: mean pairwise similarity = (sum_a . sum_b) / (n_a n_b)
    sim = (centre @ centre.T) / np.outer(sizes, sizes)
    alive = np.ones(m, dtype=bool)

    name_codes = {n: i for i, n in enumerate(sorted({n for n in label_of if n is not None}))}
    code = np.array([name_codes[n] if n is not None else -1 for n in label_of])

    def blocked(a: int, b_rows: np.ndarray) -> np.ndarray:
        """Cannot-links of cluster ``a`` with clusters ``b_rows``: a shared recording, or two
        different enrolled names."""
        share = (in_rec[b_rows] & in_rec[a]).any(axis=-1)
        named = (code[a] >= 0) & (code[b_rows] >= 0) & (code[b_rows] != code[a])
        return share | named

    score = sim.astype(np.float32)
    np.fill_diagonal(score, -np.inf)
    for a in range(m):
        score[a, blocked(a, np.arange(m))] = -np.inf
    while True:
        flat = int(np.argmax(score))
        a, b = divmod(flat, m)
        if not np.isfinite(score[a, b]) or score[a, b] < threshold:
            break
        # merge b into a
        members[a].extend(members[b])
        members[b] = []
        in_rec[a] |= in_rec[b]
        label_of[a] = label_of[a] or label_of[b]
        code[a] = max(code[a], code[b])
        centre[a] += centre[b]
        sizes[a] += sizes[b]
        alive[b] = False
        score[b, :] = -np.inf
        score[:, b] = -np.inf
        rows = np.flatnonzero(alive & (np.arange(m) != a))
        new = (centre[rows] @ centre[a]) / (sizes[rows] * sizes[a])
        new[blocked(a, rows)] = -np.inf
        score[a, rows] = new
        score[rows, a] = new
    out: dict[tuple[str, str], str] = {}
    order = sorted((min(items), c) for c, items in enumerate(members) if items)
    number = 0
    for _, c in order:
        gid = label_of[c]
        if gid is None:
            gid = f"G{number:02d}"
            number += 1
        for i in members[c]:
            out[keys[i]] = gid
    return out
