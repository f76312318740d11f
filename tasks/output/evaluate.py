"""Diarization evaluation of a run against a reference RTTM (pyannote.metrics).

DER is computed with no forgiveness collar (``collar=0``) and with overlapped speech scored
(``skip_overlap=False``), the strict setting of the pyannote benchmarks.

Which recordings are scored: those of the run (``recordings/<id>/diarization.rttm``) whose
recording id is a ``uri`` of the reference. A reference may cover more files than the run (a
whole corpus); run recordings without a reference are listed in ``DataFrame.attrs["unscored"]``.
With a UEM file only its regions are scored; without one, pyannote approximates the scored region
by the extent of reference and hypothesis.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import pandas as pd

from tasks.core.errors import first_line

COLUMNS = ["recording_id", "der", "missed", "false_alarm", "confusion", "missed_s", "false_alarm_s",
           "confusion_s", "reference_s"]


class EvaluationError(ValueError):
    """The inputs cannot be evaluated; the message is one line for the user."""


def _check_file(path: Path, kind: str) -> None:
    """One line naming ``path`` and why it cannot be a ``kind`` file (missing, a symlink loop,
    a folder, a device or pipe)."""
    import errno
    import stat

    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            why = "symlink loop"
        elif exc.errno == errno.ENOENT:
            why = "broken symbolic link" if path.is_symlink() else "not found"
        else:
            why = f"cannot be read ({exc.strerror or exc})"
        raise EvaluationError(f"{path}: {kind} file {why}") from None
    if stat.S_ISDIR(st.st_mode):
        raise EvaluationError(f"{path}: a folder, not an {kind} file")
    if not stat.S_ISREG(st.st_mode):
        raise EvaluationError(f"{path}: not a regular file (a device, pipe or socket), not an {kind} file")


def _load_rttm(path: Path) -> dict:
    from tasks.diarization.rttm import read_rttm

    _check_file(path, "RTTM")
    try:
        return read_rttm(path)  # file ids and labels stay strings ("0001" is not 1)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{path}: not a valid RTTM file ({first_line(exc)})") from None


def read_hypotheses(run_dir: str | Path) -> dict:
    """``{recording_id: Annotation}`` from each ``recordings/<id>/diarization.rttm`` of a run.

    A recording whose RTTM holds no turns (nobody spoke) gets an empty annotation.
    """
    from pyannote.core import Annotation

    run = Path(run_dir)
    if not (run / "recordings").is_dir():
        raise EvaluationError(f"{run}: not a run directory (no recordings/ folder)")
    out = {}
    for rec_dir in sorted(p for p in (run / "recordings").iterdir() if p.is_dir()):
        rttm = rec_dir / "diarization.rttm"
        if not rttm.is_file():
            continue
        rid = rec_dir.name
        if rttm.stat().st_size == 0:
            out[rid] = Annotation(uri=rid)
            continue
        loaded = _load_rttm(rttm)
        ann = loaded.get(rid)
        if ann is None:  # uri differs from the folder name: take the file's only annotation
            ann = next(iter(loaded.values()), Annotation(uri=rid))
            ann = ann.rename_tracks()  # a copy
            ann.uri = rid
        out[rid] = ann
    if not out:
        raise EvaluationError(f"{run}: no recordings/<id>/diarization.rttm files")
    return out


def evaluate_diarization(run_dir: str | Path, reference_rttm: str | Path, *,
                         uem: str | Path | None = None) -> pd.DataFrame:
    """DER, missed speech, false alarm and speaker confusion per recording and in total.

    Parameters
    ----------
    run_dir : path-like
        A run directory.
    reference_rttm : path-like
        Reference RTTM; its ``uri`` field must equal the run's recording ids.
    uem : path-like, optional
        Scoring regions per uri (``load_uem`` format: ``uri channel start end``).

    Returns
    -------
    DataFrame with columns ``recording_id, der, missed, false_alarm, confusion`` (rates: seconds
    divided by the reference speech time), the same in seconds (``missed_s`` ...) and
    ``reference_s``; the last row, ``recording_id == "TOTAL"``, pools all recordings.
    ``attrs["unscored"]`` lists run recordings that the reference does not cover. A recording
    whose reference holds no speech has NaN rates (its seconds are kept) and is listed in
    ``attrs["no_reference_speech"]``.

    Raises
    ------
    EvaluationError
        Missing or invalid files, no recording in common, or no reference speech at all in the
        scored recordings (every rate would be undefined).
    """
    from pyannote.database.util import load_uem
    from pyannote.metrics.diarization import DiarizationErrorRate

    hyps = read_hypotheses(run_dir)
    refs = _load_rttm(Path(reference_rttm))
    uems = {}
    if uem is not None:
        _check_file(Path(uem), "UEM")
        try:
            uems = load_uem(str(uem))
        except Exception as exc:  # noqa: BLE001
            raise EvaluationError(f"{uem}: not a valid UEM file ({exc})") from None
    common = [rid for rid in hyps if rid in refs]
    if not common:
        raise EvaluationError(
            f"no recording of {run_dir} is in {reference_rttm} (run: {', '.join(sorted(hyps))}; "
            f"reference uris: {', '.join(sorted(refs)[:10])})"
        )
    metric = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "approximating UEM" when none is given
        for rid in common:
            kwargs = {"uem": uems[rid]} if rid in uems else {}
            d = metric(refs[rid], hyps[rid], detailed=True, **kwargs)
            rows.append(_row(rid, d))
    rows.append(_row("TOTAL", metric.accumulated_))
    if not rows[-1]["reference_s"] > 0:
        where = " inside the UEM regions" if uems else ""
        raise EvaluationError(
            f"{reference_rttm}: the reference has no speech{where} for {', '.join(common)}: DER, missed, false "
            f"alarm and confusion are undefined (nothing to divide by); the run has "
            f"{rows[-1]['false_alarm_s']:.2f} s of speech there, all false alarm")
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs["unscored"] = [rid for rid in hyps if rid not in refs]
    df.attrs["no_reference_speech"] = [r["recording_id"] for r in rows[:-1] if not r["reference_s"] > 0]
    df.attrs["collar"] = 0.0
    df.attrs["skip_overlap"] = False
    return df


def _row(rid: str, d: dict) -> dict:
    total = float(d.get("total", 0.0))
    missed, fa, conf = (float(d.get(k, 0.0)) for k in ("missed detection", "false alarm", "confusion"))

    def rate(x: float) -> float:
        # no reference speech: a rate is undefined (NaN, "n/a" in the table), never inf or 0
        return x / total if total > 0 else math.nan

    return {"recording_id": rid, "der": rate(missed + fa + conf), "missed": rate(missed), "false_alarm": rate(fa),
            "confusion": rate(conf), "missed_s": missed, "false_alarm_s": fa, "confusion_s": conf,
            "reference_s": total}


def format_table(df: pd.DataFrame) -> str:
    """The evaluation as a plain-text table (rates in %, times in seconds), for the command line."""
    out = df.copy()
    for col in ("der", "missed", "false_alarm", "confusion"):
        out[col] = (out[col] * 100).map(lambda v: f"{v:6.2f}%" if math.isfinite(v) else "    n/a")
    for col in ("missed_s", "false_alarm_s", "confusion_s", "reference_s"):
        out[col] = out[col].map(lambda v: f"{v:8.2f}")
    text = out.to_string(index=False)
    if df.attrs.get("unscored"):
        text += "\nnot in the reference (not scored): " + ", ".join(df.attrs["unscored"])
    if df.attrs.get("no_reference_speech"):
        text += ("\nno speech in the reference (rates n/a, seconds shown): "
                 + ", ".join(df.attrs["no_reference_speech"]))
    return text + "\n(collar 0 s, overlapped speech scored)"
