"""Input discovery: command-line paths → the audio files of a run, and failure rows for the rest.

Folders are searched recursively for the configured extensions. Hidden files and folders,
emoflow run directories (they hold a ``.emoflow`` folder) and the run's own output folder are
never searched, so a run whose ``--out`` lies inside its input folder does not ingest its own
exports. Every path that cannot be an input becomes one failure row naming the path and why.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from tasks.core.records import one_line, printable

RUN_MARKER = ".emoflow"
"""The folder every run directory holds (artefacts, lock); its presence marks a run directory."""


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an emoflow run directory."""
    return (Path(path) / RUN_MARKER).is_dir()


def input_failure(path: str, message: str) -> dict[str, str]:
    """The failures-table row of an input that cannot be read: ``<path>: <message>`` (a name that
    is not valid UTF-8 shown with its bytes as ``\\xNN``)."""
    shown = printable(os.fsdecode(path))
    return {"input": shown, "stage": "load", "error": "UnreadableInputError",
            "message": f"{one_line(shown)}: {one_line(message)}"}


def os_reason(exc: OSError, path: str | os.PathLike[str]) -> str:
    """Why ``path`` cannot be read, in words: a symlink loop and a broken link are told apart
    from a missing file."""
    if exc.errno == errno.ELOOP:
        return "symlink loop (too many levels of symbolic links)"
    if exc.errno == errno.ENOENT:
        return "broken symbolic link" if os.path.islink(path) else "no such file or directory"
    if exc.errno == errno.ENAMETOOLONG:
        return "file name too long"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)


def _not_regular(mode: int) -> str:
    kinds = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a pipe"),
             (stat.S_ISSOCK, "a socket"))
    kind = next((name for test, name in kinds if test(mode)), "a special file")
    return f"not a regular file ({kind}): cannot be an audio input"


def discover_inputs(inputs: list[str], *, extensions: list[str],
                    exclude: list[str | os.PathLike[str]] = ()) -> tuple[list[Path], list[dict[str, str]]]:
    """Expand files and folders into the run's input files, in a stable order.

    Parameters
    ----------
    inputs : list of str
        Paths from the command line. A file is taken whatever its extension; a folder is
        searched recursively for ``extensions``.
    extensions : list of str
        Lower-case suffixes with the dot (``.wav``).
    exclude : list of path-like
        Folders never searched (the run's ``--out``).

    Returns
    -------
    files : list of Path
        Regular files, each once (by resolved path), folders' contents sorted.
    failures : list of dict
        ``input, stage, error, message`` rows for paths that are missing, unreadable or not
        regular files.
    """
    exts = {e.lower() for e in extensions}
    excluded = {os.path.realpath(p) for p in exclude}
    files: list[Path] = []
    failures: list[dict[str, str]] = []
    for raw in inputs:
        if not os.fspath(raw):
            failures.append(input_failure("", "an empty path is not an input (not even the current folder)"))
            continue
        try:
            st = os.stat(raw)
        except OSError as exc:
            failures.append(input_failure(raw, f"cannot read file ({os_reason(exc, raw)})"))
            continue
        if stat.S_ISDIR(st.st_mode):
            if os.path.realpath(raw) in excluded or is_run_dir(raw):
                failures.append(input_failure(raw, "is an emoflow run directory: not searched for inputs"))
                continue
            files.extend(_walk(Path(raw), exts=exts, excluded=excluded, failures=failures))
        elif stat.S_ISREG(st.st_mode):
            if not os.access(raw, os.R_OK):
                failures.append(input_failure(raw, "cannot read file (permission denied)"))
            else:
                files.append(Path(raw))
        else:
            failures.append(input_failure(raw, _not_regular(st.st_mode)))
    failures = list({(f["input"], f["message"]): f for f in failures}.values())  # a path given twice: one row
    seen: set[str] = set()
    unique = []
    for f in files:
        r = os.path.realpath(f)
        if r not in seen:
            seen.add(r)
            unique.append(f)
    return unique, failures


def _walk(root: Path, *, exts: set[str], excluded: set[str], failures: list[dict[str, str]]) -> list[Path]:
    found: list[Path] = []

    def on_error(exc: OSError) -> None:
        where = exc.filename or root
        failures.append(input_failure(os.fsdecode(where), f"cannot read folder ({os_reason(exc, where)})"))

    for folder, dirs, names in os.walk(root, onerror=on_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and os.path.realpath(os.path.join(folder, d)) not in excluded
                         and not is_run_dir(os.path.join(folder, d)))
        for name in sorted(names):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in exts:
                continue
            path = Path(folder) / name
            try:
                mode = os.stat(path).st_mode
            except OSError as exc:
                failures.append(input_failure(str(path), f"cannot read file ({os_reason(exc, path)})"))
                continue
            if stat.S_ISREG(mode):
                found.append(path)
    return found
