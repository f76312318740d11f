"""The one CSV writer of emoflow: every text cell quoted, formula-like cells guarded.

Every CSV emoflow writes goes through :func:`write_csv` (or :func:`csv_text`):

- **quoting**: every text cell is quoted (``csv.QUOTE_NONNUMERIC``), so a value holding a comma,
  a quote, a carriage return, a line feed or any other line separator (``\\x0b``, ``\\x85``,
  ``U+2028`` ...) stays one cell of one row, and the file reads back with pandas or the ``csv``
  module into the same rows and columns. Numbers (floats, ints, booleans) are written bare.
- **formula guard** (OWASP "CSV injection"): a text cell that a spreadsheet would run as a
  formula (starting with ``=``, ``+``, ``-``, ``@``, a tab, a carriage return or a line feed, or
  their full-width forms) is written with a leading single quote ``'``; so is a text cell that
  already starts with ``'``, which makes the guard reversible: :func:`unguard` gives back the
  exact value (``read_csv`` here does it). Numeric columns are never guarded: ``-3.5`` stays the
  number -3.5. Parquet files keep the raw values.
- **surrogates**: a name that is not valid UTF-8 (a file name's raw bytes, decoded by Python
  with ``surrogateescape``) is written with those bytes as ``\\xNN`` escapes
  (:func:`tasks.core.records.printable`), so the file is always valid UTF-8.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from tasks.core.records import printable

FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r", "\n", "＝", "＋", "－", "＠", "'")
"""Cell starts that spreadsheets read as a formula (OWASP), and the guard's own quote."""


def guard(value: Any) -> Any:
    """A text cell as written: formula-like text gets a leading ``'``; anything else unchanged."""
    if isinstance(value, str):
        value = printable(value)
        if value.startswith(FORMULA_PREFIXES):
            return "'" + value
    return value


def unguard(value: Any) -> Any:
    """The inverse of :func:`guard` (on a cell read back as text)."""
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(FORMULA_PREFIXES):
        return value[1:]
    return value


def _is_text_column(series: pd.Series) -> bool:
    return (pd.api.types.is_object_dtype(series.dtype) or pd.api.types.is_string_dtype(series.dtype)
            or isinstance(series.dtype, pd.CategoricalDtype))


def guarded(frame: pd.DataFrame, *, text_columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A copy of ``frame`` whose text columns (``text_columns``, default every object, string or
    category column) hold guarded cells; numbers in them, and numeric columns, are untouched."""
    out = frame.copy()
    columns = text_columns if text_columns is not None else [c for c in out.columns if _is_text_column(out[c])]
    for c in columns:
        if c in out.columns:
            col = out[c].astype(object)
            out[c] = col.map(guard, na_action="ignore")
    return out


def csv_text(frame: pd.DataFrame, *, text_columns: Sequence[str] | None = None) -> str:
    """``frame`` as emoflow's CSV text (no index, ``\\n`` line ends, text quoted and guarded)."""
    return guarded(frame, text_columns=text_columns).to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC,
                                                              lineterminator="\n")


def write_csv(frame: pd.DataFrame, path: str | os.PathLike[str], *,
              text_columns: Sequence[str] | None = None) -> Path:
    """Write ``frame`` to ``path`` atomically as emoflow's CSV (:func:`csv_text`)."""
    from tasks.core.storage import atomic_write_text

    return atomic_write_text(path, csv_text(frame, text_columns=text_columns))


def write_rows(path: str | os.PathLike[str], fieldnames: Sequence[str], rows: Iterable[dict[str, Any]]) -> Path:
    """Write rows of text (missing keys empty) as emoflow's CSV, atomically; header only when
    there are no rows."""
    frame = pd.DataFrame([{k: str(r.get(k, "")) for k in fieldnames} for r in rows], columns=list(fieldnames),
                         dtype=object)
    return write_csv(frame, path, text_columns=list(fieldnames))


def read_csv(path: str | os.PathLike[str] | io.StringIO) -> pd.DataFrame:
    """Read an emoflow CSV back as text cells, guards removed (every cell a ``str``; empty
    cells are ``""``)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for c in frame.columns:
        frame[c] = frame[c].map(unguard)
    return frame
