"""The ``emoflow`` command line.

Exit codes of ``emoflow run``: 0 every input processed; 1 some inputs failed (see
failures.csv); 2 usage, config or model error.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from tasks.core.errors import first_line

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="emoflow: who felt what, when, in long noisy multi-speaker recordings.",
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(no_args_is_help=True, help="List, fetch and verify the models emoflow uses.")
evaluate_app = typer.Typer(no_args_is_help=True, help="Score a run against references.")
app.add_typer(models_app, name="models")
app.add_typer(evaluate_app, name="evaluate")
speakers_app = typer.Typer(no_args_is_help=True, help="Enrol, list and remove known speakers' voiceprints.")
app.add_typer(speakers_app, name="speakers")

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2

# No telemetry from the temporary Prefect server (and no error lines when offline).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    from tasks.core.records import one_line

    typer.echo(f"emoflow: error: {one_line(message)}", err=True)  # one line, whatever a name in it holds
    raise typer.Exit(code)


def _require_utf8_folder(flag: str, path: str) -> None:
    """A run folder's path travels in Prefect's records (JSON, UTF-8): one whose name is not
    valid UTF-8 (as given, or the current folder's) is refused in one line, before anything runs.
    Input files and folders may have any name."""
    from tasks.core.records import one_line, printable

    full = os.path.abspath(path)
    if printable(full) != full:
        _fail(f"{flag} {one_line(path)}: a folder whose path is not valid UTF-8 ({one_line(full)}) cannot go "
              "through Prefect's records; choose a folder with a UTF-8 path (input files may have any name)")


def _config(config: Optional[Path], sets: list[str]):
    from tasks.core.config import ConfigError, load_config

    try:
        return load_config(config, sets)
    except ConfigError as exc:
        _fail(str(exc))


@app.command()
def run(
    # str, not Path: Path("") is "." and an empty argument (a variable that expanded to nothing)
    # would silently mean the current folder
    inputs: list[str] = typer.Argument(..., help="Audio files or folders (searched recursively)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (default: configs/default.yaml)."),
    out: str = typer.Option("runs/latest", "--out", "-o", help="Run directory."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: section.key=value (repeatable)."),
) -> None:
    """Analyse recordings: denoise, diarize, segment, emotion screen, drill down, export."""
    if any(not p for p in inputs):
        _fail("an empty input path (\"\") is not an input; name the files or folders (\".\" for this folder)")
    if not out:
        _fail("--out \"\": an empty path is not a run directory")
    _require_utf8_folder("--out", out)
    cfg = _config(config, set_)
    from flows.pipeline import RunError, run_pipeline

    gc.freeze()  # the libraries just imported live as long as the process: no collection walks them again
    try:
        summary = run_pipeline(list(inputs), config=cfg, out_dir=Path(out))
    except RunError as exc:
        _fail(str(exc))
    typer.echo(summary.describe())
    raise typer.Exit(EXIT_FAILURES if summary.failed else EXIT_OK)


@app.command("config")
def show_config(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (default: configs/default.yaml)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: section.key=value (repeatable)."),
    hash_only: bool = typer.Option(False, "--hash", help="Print only the config's sha256."),
) -> None:
    """Print the resolved config and its hashes (whole config and each section)."""
    cfg = _config(config, set_)
    if hash_only:
        typer.echo(cfg.sha256())
        return
    typer.echo(cfg.to_yaml().rstrip())
    typer.echo(f"# sha256: {cfg.sha256()}")
    for name in cfg.to_plain():
        typer.echo(f"# {name}: {cfg.section_hash(name)}")


@app.command()
def serve(
    inbox: Path = typer.Option(..., "--inbox", help="Folder watched for new recordings."),
    cron: str = typer.Option("*/10 * * * *", "--cron", help="Cron schedule of the inbox scan."),
    config: Optional[Path] = typer.Option(None, "--config", "-c"),
    out: Path = typer.Option(Path("runs/inbox"), "--out", "-o", help="Output root (one run dir per scan)."),
    set_: list[str] = typer.Option([], "--set"),
    settle: Optional[float] = typer.Option(
        None, "--settle", min=0.0,
        help="Seconds a file must stay unchanged before it is taken (default 10, or EMOFLOW_INBOX_SETTLE_S)."),
) -> None:
    """Serve a Prefect deployment that processes new inbox files on a cron schedule."""
    _require_utf8_folder("--inbox", str(inbox))
    _require_utf8_folder("--out", str(out))
    cfg = _config(config, set_)
    from flows.serve import ServeError, serve_inbox

    try:
        serve_inbox(inbox=inbox, cron=cron, config=cfg, out_root=out, settle_s=settle)
    except ServeError as exc:
        _fail(str(exc))


@app.command()
def ui(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(7860, "--port"),
    config: Optional[Path] = typer.Option(None, "--config", "-c"),
    set_: list[str] = typer.Option([], "--set"),
) -> None:
    """Start the single-file web UI."""
    cfg = _config(config, set_)
    from flows.pipeline import RunError
    from flows.ui import launch_ui
    from tasks.models.hub import ModelUnavailableError

    try:
        launch_ui(host=host, port=port, config=cfg)
    except (ModelUnavailableError, RunError) as exc:  # one line naming the model file at fault
        _fail(str(exc))
    except OSError as exc:  # port taken, address not available
        _fail(f"cannot serve the UI on {host}:{port}: {exc.strerror or exc}")
    except (ValueError, RuntimeError) as exc:  # the model directory does not load
        _fail(f"{cfg.emotion.model}: model failed to load: {first_line(exc, limit=300)}")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run directory.")) -> None:
    """Rebuild report.html (and timeline plots) of a run."""
    if not (run_dir / "manifest.json").is_file():
        _fail(f"{run_dir}: not a run directory (no manifest.json)")
    from tasks.output.report import build_report

    try:
        typer.echo(str(build_report(run_dir)))
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a damaged run directory
        _fail(f"{run_dir}: cannot build the report ({first_line(exc, limit=300)})")


@app.command()
def similar(
    run_dir: Path = typer.Argument(...),
    segment_id: str = typer.Argument(...),
    top: int = typer.Option(10, "--top"),
    runs: list[Path] = typer.Option([], "--runs", help="More run dirs to search."),
) -> None:
    """Segments whose embeddings are most similar (cosine) to SEGMENT_ID."""
    from tasks.output.similarity import EmbeddingError, similar as find_similar

    if top < 1:
        _fail(f"--top {top}: expected a number of segments, 1 or more")
    try:
        table = find_similar([run_dir, *runs], segment_id, top=top)
    except EmbeddingError as exc:
        _fail(str(exc))
    if "text" in table.columns:  # what was said, shortened to keep one line per segment
        table["text"] = table["text"].fillna("").map(lambda t: t if len(t) <= 60 else t[:59] + "…")
    typer.echo(table.to_string(index=False))


@app.command()
def cluster(
    run_dir: Path = typer.Argument(...),
    k: str = typer.Option("auto", "--k", help="Number of clusters or 'auto' (silhouette)."),
    runs: list[Path] = typer.Option([], "--runs", help="More run dirs to include."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where clusters.csv/png go (default RUN_DIR)."),
) -> None:
    """k-means over exported embeddings; writes clusters.csv and clusters.png."""
    from tasks.output.similarity import EmbeddingError, cluster as run_cluster

    if k != "auto" and not (k.isdigit() and int(k) >= 2):
        _fail(f"--k {k!r}: expected 'auto' or a number of clusters, 2 or more")
    kk: str | int = k if k == "auto" else int(k)
    try:
        table = run_cluster([run_dir, *runs], k=kk, out_dir=out or run_dir)
    except EmbeddingError as exc:
        _fail(str(exc))
    typer.echo(table.groupby("cluster").size().to_string())


@evaluate_app.command("diarization")
def evaluate_diarization(
    run_dir: str = typer.Argument(...),  # str: Path("") would be "."
    reference: str = typer.Option(..., "--reference", help="Reference RTTM."),
    uem: Optional[str] = typer.Option(None, "--uem", help="Scored regions (UEM)."),
) -> None:
    """DER, missed, false alarm and confusion per recording and in total."""
    from tasks.output.evaluate import EvaluationError, evaluate_diarization as evaluate, format_table

    for flag, value in (("RUN_DIR", run_dir), ("--reference", reference), ("--uem", uem)):
        if value is not None and not str(value):
            _fail(f"{flag} \"\": an empty path")
    try:
        table = evaluate(Path(run_dir), Path(reference), uem=Path(uem) if uem is not None else None)
    except EvaluationError as exc:
        _fail(str(exc))
    typer.echo(format_table(table))


@models_app.command("list")
def models_list() -> None:
    """Known models and where each would be loaded from (no download)."""
    from tasks.models.hub import KNOWN_MODELS, status

    for ref, known in KNOWN_MODELS.items():
        source, where = status(ref, known.kind)
        typer.echo(f"{known.kind:<13} {ref:<52} {source:<15} {where}")


@models_app.command("pull")
def models_pull(ref: str = typer.Argument("iic/emotion2vec_plus_large"), hub: str = typer.Option("auto", "--hub")) -> None:
    """Download a hub model into the cache (with progress)."""
    from tasks.models.hub import KNOWN_MODELS, ModelUnavailableError, looks_like_hub_id, resolve

    if not looks_like_hub_id(ref):
        _fail(f"{ref}: not a hub model id (expected ORGANISATION/NAME, e.g. iic/emotion2vec_plus_large)")
    kind = KNOWN_MODELS[ref].kind if ref in KNOWN_MODELS else "emotion"
    try:
        model = resolve(ref, kind=kind, hub=hub)
    except ModelUnavailableError as exc:
        _fail(str(exc))
    typer.echo(f"{model.ref}: {model.path} ({model.source}) sha256={model.sha256}")


@models_app.command("verify")
def models_verify(
    config: Optional[Path] = typer.Option(None, "--config", "-c"),
    set_: list[str] = typer.Option([], "--set"),
) -> None:
    """Resolve the configured models, checksum them and check they load."""
    cfg = _config(config, set_)
    from flows.pipeline import RunError, resolve_models

    try:
        models = resolve_models(cfg, load=True)
    except RunError as exc:
        _fail(str(exc))
    for name, facts in models.items():
        test = "  (randomly initialised TEST model)" if facts.get("is_test_model") else ""
        typer.echo(f"{name:<13} {facts['id']:<52} sha256={facts['sha256'][:16]}… {facts['path']}{test}")


_SPEAKERS_HELP = "Speakers directory (default $EMOFLOW_SPEAKERS_DIR or ~/.local/share/emoflow/speakers)."


@speakers_app.command("enroll")
def speakers_enroll(
    name: str = typer.Argument(..., help="The speaker's name (any language; no path separators)."),
    files: list[Path] = typer.Argument(..., help="Recordings of that person alone."),
    speakers: Optional[Path] = typer.Option(None, "--speakers", help=_SPEAKERS_HELP),
) -> None:
    """Store (or replace) NAME's voiceprint: the CAM++ embedding of the speech in FILES."""
    from tasks.audio.decode import AudioError
    from tasks.models.hub import ModelUnavailableError
    from tasks.speakers.voiceprints import SpeakerError, check_name, default_store, enroll

    store = speakers or default_store()
    try:
        check_name(name)  # before decoding anything
        if store.exists() and not store.is_dir():
            _fail(f"{store}: not a speakers directory (a file)")
        vp = enroll(name, [str(f) for f in files], store=store)
    except (SpeakerError, AudioError, ModelUnavailableError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{store}: cannot write the speakers directory ({exc.strerror or exc})")
    typer.echo(f"{vp.name}: enrolled from {len(vp.sources)} file(s), {vp.speech_s:.1f} s of speech → {store}")


@speakers_app.command("list")
def speakers_list(speakers: Optional[Path] = typer.Option(None, "--speakers", help=_SPEAKERS_HELP)) -> None:
    """Enrolled speakers: name, seconds of speech, files, date."""
    from tasks.models.hub import ModelUnavailableError
    from tasks.speakers.voiceprints import SpeakerError, current_model, default_store, list_voiceprints

    store = speakers or default_store()
    try:
        prints = list_voiceprints(store=store)
        model_sha = current_model()[1] if prints else ""
    except (SpeakerError, ModelUnavailableError) as exc:
        _fail(str(exc))
    if not prints:
        typer.echo(f"no speakers enrolled in {store}")
        return
    for vp in prints:
        stale = "" if vp.model_sha256 == model_sha else "\tmade with another speaker model: enrol again"
        typer.echo(f"{vp.name}\t{vp.speech_s:.1f} s\t{len(vp.sources)} file(s)\t{vp.created}{stale}")


@speakers_app.command("remove")
def speakers_remove(
    name: str = typer.Argument(..., help="An enrolled speaker's name."),
    speakers: Optional[Path] = typer.Option(None, "--speakers", help=_SPEAKERS_HELP),
) -> None:
    """Delete NAME's voiceprint."""
    from tasks.speakers.voiceprints import SpeakerError, default_store, remove

    store = speakers or default_store()
    try:
        remove(name, store=store)
    except SpeakerError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{store}: cannot remove {name} ({exc.strerror or exc})")
    typer.echo(f"{name}: removed from {store}")


EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug, not the user's input


def _log_internal_error(exc: BaseException) -> Path | None:
    """Write the traceback of an unexpected error to a log file; return its path."""
    import datetime as dt
    import traceback

    folder = Path(os.environ.get("EMOFLOW_LOG_DIR") or Path.home() / ".cache" / "emoflow" / "logs")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"error-{dt.datetime.now():%Y%m%dT%H%M%S}-{os.getpid()}.log"
        path.write_text(f"emoflow {' '.join(sys.argv[1:])}\n" + "".join(traceback.format_exception(exc)),
                        encoding="utf-8", errors="backslashreplace")  # whatever bytes a name held
        return path
    except (OSError, ValueError):
        return None


def _click_kind(exc: BaseException) -> str | None:
    """``UsageError``, ``ClickException`` or ``Abort`` when ``exc`` is one of click's (typer
    vendors its own click, so the classes are told by name), else None."""
    names = {k.__name__ for k in type(exc).__mro__}
    return next((n for n in ("UsageError", "ClickException", "Abort") if n in names), None)


def _usage_error(exc: Any) -> None:
    """A wrong option or argument: one ``emoflow: error:`` line and a hint, exit 2 (click's
    usage box would be a dozen lines)."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # `emoflow` or `emoflow models` alone: the help
        exc.show()
        sys.exit(exc.exit_code)
    message = " ".join(str(exc.format_message()).split())
    typer.echo(f"emoflow: error: {message}", err=True)
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "emoflow"
    typer.echo(f"Try '{command} --help'.", err=True)
    sys.exit(EXIT_USAGE)


def _tune_gc() -> None:
    """Python's cyclic collector at its default pace (a young collection every 700 new
    objects) walks the hundreds of thousands of objects Prefect, pydantic and pandas create as
    they import, again and again; at exit it walks them once more. A command runs for seconds
    (a rerun) or hours (model stages whose memory is tensors, freed by reference counts): a
    young collection every 20 000 objects, and everything alive at exit frozen (atexit
    handlers and stream flushes still run), cut a ``screen.threshold`` rerun by 0.5-0.8 s
    (``benchmarks/rerun_command.sh``)."""
    gc.set_threshold(20_000, 10, 10)


def main() -> None:
    """Console entry point: expected errors are one line (exit 2 or 1), a wrong option or
    argument too (and a hint line); an unexpected one is one line too, with its traceback kept
    in a log file (``EMOFLOW_DEBUG=1`` shows it)."""
    _tune_gc()
    try:
        _main()
    finally:
        gc.freeze()  # nothing left to collect before exit: skip walking every object once more


def _main() -> None:
    try:
        try:
            code = app(standalone_mode=False, prog_name="emoflow")
        except Exception as exc:  # noqa: BLE001 - click's own errors first, the rest below
            kind = _click_kind(exc)
            if kind == "UsageError":
                _usage_error(exc)
            elif kind == "ClickException":
                message = " ".join(str(exc.format_message()).split())  # type: ignore[attr-defined]
                typer.echo(f"emoflow: error: {message}", err=True)
                sys.exit(getattr(exc, "exit_code", EXIT_USAGE))
            elif kind == "Abort":
                raise KeyboardInterrupt from exc
            raise
        sys.exit(code if isinstance(code, int) else EXIT_OK)
    except KeyboardInterrupt:
        typer.echo("emoflow: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if os.environ.get("EMOFLOW_DEBUG") == "1":
            raise
        from tasks.core.storage import NoSpaceError, no_space

        if no_space(exc):  # a full disk is the machine's state, not a bug: one line, exit 2
            where = exc.path if isinstance(exc, NoSpaceError) else (getattr(exc, "filename", None) or "the disk")
            typer.echo(f"emoflow: error: no space left on {where}: free some space and run again", err=True)
            sys.exit(EXIT_USAGE)
        log = _log_internal_error(exc)
        where = f"details in {log}" if log else "run with EMOFLOW_DEBUG=1 for details"
        from tasks.core.records import one_line

        typer.echo(f"emoflow: error: internal error: {type(exc).__name__}: {one_line(first_line(exc, limit=300))} ({where}; "
                   "please report it)", err=True)
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
