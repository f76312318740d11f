"""Diarization evaluation against the AMI reference (pyannote.metrics, collar 0, overlap scored)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.output.evaluate import EvaluationError, evaluate_diarization
from tests.rundir_factory import make_run_dir


@pytest.fixture(scope="module")
def ami(tmp_path_factory: pytest.TempPathFactory):
    ami = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ami"
    if not (ami / "debug.development.rttm").is_file():
        pytest.skip("../shared/data/ami not present")
    run = make_run_dir(tmp_path_factory.mktemp("eval") / "run", seed=7,
                       reference_rttm=ami / "debug.development.rttm")
    return ami, run


def _rttm_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def _write(path: Path, rows: list[list[str]]) -> None:
    path.write_text("".join(" ".join(r) + "\n" for r in rows))


def test_reference_against_itself_is_zero(ami):
    ami_dir, run = ami
    df = evaluate_diarization(run.path, ami_dir / "debug.development.rttm", uem=ami_dir / "debug.development.uem")
    assert df.recording_id.tolist() == ["dev00", "dev01", "TOTAL"]
    assert (df[["der", "missed", "false_alarm", "confusion"]] == 0).all().all()
    assert (df.reference_s > 0).all()
    assert df.reference_s.iloc[-1] == pytest.approx(df.reference_s.iloc[:-1].sum())
    assert df.attrs["unscored"] == []
    from tasks.output.evaluate import format_table

    text = format_table(df)
    assert "TOTAL" in text and "0.00%" in text and "collar 0 s" in text


def test_speaker_names_do_not_matter(ami, tmp_path):
    ami_dir, run = ami
    rttm = run.path / "recordings" / "dev00" / "diarization.rttm"
    names: dict[str, str] = {}
    rows = _rttm_lines(rttm)
    for r in rows:
        r[7] = names.setdefault(r[7], f"SPEAKER_{len(names):02d}")
    copy = make_run_dir(tmp_path / "run", seed=7, reference_rttm=ami_dir / "debug.development.rttm")
    _write(copy.path / "recordings" / "dev00" / "diarization.rttm", rows)
    df = evaluate_diarization(copy.path, ami_dir / "debug.development.rttm")
    assert df.der.max() == 0


def test_perturbed_copy_has_the_expected_errors(ami, tmp_path):
    ami_dir, _ = ami
    run = make_run_dir(tmp_path / "run", seed=7, reference_rttm=ami_dir / "debug.development.rttm")
    rttm = run.path / "recordings" / "dev00" / "diarization.rttm"
    rows = _rttm_lines(rttm)
    # drop the first turn (1.44–13.312 s, MEE009, nobody else speaks then): pure missed speech
    dropped = rows.pop(0)
    assert dropped[3] == "1.440" and dropped[7] == "MEE009"
    _write(rttm, rows)
    df = evaluate_diarization(run.path, ami_dir / "debug.development.rttm", uem=ami_dir / "debug.development.uem")
    dev00 = df.set_index("recording_id").loc["dev00"]
    assert dev00.missed_s == pytest.approx(11.872, abs=1e-3)
    assert dev00.false_alarm_s == pytest.approx(0, abs=1e-6) and dev00.confusion_s == pytest.approx(0, abs=1e-6)
    assert dev00.der == pytest.approx(11.872 / dev00.reference_s)
    assert df.set_index("recording_id").loc["dev01", "der"] == 0
    total = df.iloc[-1]
    assert 0 < total.der < dev00.der
    assert total.missed_s == pytest.approx(11.872, abs=1e-3)

    # add a spurious turn of a new speaker in a silent stretch, and relabel another turn
    rows.append(["SPEAKER", "dev00", "1", "0.100", "1.000", "<NA>", "<NA>", "GHOST", "<NA>", "<NA>"])
    _write(rttm, rows)
    df2 = evaluate_diarization(run.path, ami_dir / "debug.development.rttm", uem=ami_dir / "debug.development.uem")
    d2 = df2.set_index("recording_id").loc["dev00"]
    assert d2.false_alarm_s == pytest.approx(1.0, abs=1e-3)
    assert d2.der > dev00.der


def test_errors_are_one_line(ami, tmp_path):
    ami_dir, run = ami
    with pytest.raises(EvaluationError, match="RTTM file not found"):
        evaluate_diarization(run.path, tmp_path / "missing.rttm")
    with pytest.raises(EvaluationError, match="not a run directory"):
        evaluate_diarization(tmp_path, ami_dir / "debug.development.rttm")
    with pytest.raises(EvaluationError, match="no recording of"):
        evaluate_diarization(run.path, ami_dir / "debug.train.rttm")


def _two_recording_run(tmp_path: Path) -> Path:
    for rid in ("r1", "r2"):
        rec = tmp_path / "run" / "recordings" / rid
        rec.mkdir(parents=True)
        (rec / "diarization.rttm").write_text(f"SPEAKER {rid} 1 0.000 2.000 <NA> <NA> A <NA> <NA>\n")
    return tmp_path / "run"


@pytest.mark.parametrize("reference,uem", [
    ("SPEAKER r1 1 1.000 0.000 <NA> <NA> A <NA> <NA>\n", None),  # a zero-length turn only
    ("SPEAKER r1 1 0.000 0.000 <NA> <NA> A <NA> <NA>\nSPEAKER r2 1 5.000 0.000 <NA> <NA> B <NA> <NA>\n", None),
    ("SPEAKER r1 1 50.000 2.000 <NA> <NA> A <NA> <NA>\n", "r1 1 0.000 10.000\n"),  # speech outside the UEM
])
def test_a_reference_without_any_speech_says_so_instead_of_a_number(tmp_path: Path, reference, uem) -> None:
    run = _two_recording_run(tmp_path)
    ref = tmp_path / "ref.rttm"
    ref.write_text(reference)
    uem_path = None
    if uem is not None:
        uem_path = tmp_path / "ref.uem"
        uem_path.write_text(uem)
    with pytest.raises(EvaluationError) as err:
        evaluate_diarization(run, ref, uem=uem_path)
    message = str(err.value)
    assert "no speech" in message and "undefined" in message and str(ref) in message
    assert "inf" not in message and "\n" not in message


def test_a_recording_without_reference_speech_has_no_rate(tmp_path: Path, capsys, monkeypatch) -> None:
    import sys

    from flows import cli
    from tasks.output.evaluate import format_table

    run = _two_recording_run(tmp_path)
    ref = tmp_path / "ref.rttm"
    ref.write_text("SPEAKER r1 1 1.000 0.000 <NA> <NA> A <NA> <NA>\nSPEAKER r2 1 0.000 2.000 <NA> <NA> A <NA> <NA>\n")
    df = evaluate_diarization(run, ref).set_index("recording_id")
    assert df.loc["r1", ["der", "missed", "false_alarm", "confusion"]].isna().all()
    assert df.loc["r1", "false_alarm_s"] == pytest.approx(2.0) and df.loc["r1", "reference_s"] == 0
    assert df.loc["r2", "der"] == 0 and df.loc["TOTAL", "der"] == pytest.approx(1.0)
    text = format_table(evaluate_diarization(run, ref))
    assert "inf" not in text and "nan" not in text.lower() and "no speech in the reference" in text

    ref.write_text("SPEAKER r1 1 1.000 0.000 <NA> <NA> A <NA> <NA>\n")
    monkeypatch.setattr(sys, "argv", ["emoflow", "evaluate", "diarization", str(run), "--reference", str(ref)])
    with pytest.raises(SystemExit) as ended:
        cli.main()
    out = capsys.readouterr()
    lines = (out.err + out.out).strip().splitlines()
    assert ended.value.code == 2 and len(lines) == 1 and lines[0].startswith("emoflow: error: "), lines
    assert "no speech" in lines[0] and "inf" not in lines[0]
