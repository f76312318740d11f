"""Nothing found on disk is trusted as it is: artefacts and published folders are checked
against the sizes and sha256 recorded when they were committed, and a damaged one is computed
again (with one warning line) instead of being exported."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tasks.core.config import load_config
from tasks.pipeline import artefacts
from tasks.pipeline.artefacts import ArtefactStore, BadArtefact, verify_files


def _committed(tmp_path: Path) -> tuple[ArtefactStore, Path]:
    store = ArtefactStore(tmp_path / "store")
    tmp = store.begin("emotion", "k1")
    np.save(tmp / "scores.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    (tmp / "sub").mkdir()
    (tmp / "sub" / "a.json").write_text('{"label": "happy"}')
    return store, store.commit("emotion", "k1", tmp, {"facts": {"n": 3}})


def _tamper_reverse_columns(folder: Path) -> None:
    a = np.load(folder / "scores.npy")
    np.save(folder / "scores.npy", a[:, ::-1].copy())  # same size, other content


@pytest.mark.parametrize("tamper, why", [
    (_tamper_reverse_columns, "sha256 differs"),
    (lambda f: (f / "sub" / "a.json").write_text('{"label": "angry"}'), "a.json was changed"),
    (lambda f: (f / "sub" / "a.json").write_text('{"label": "sad and more"}'), "bytes"),
    (lambda f: (f / "scores.npy").unlink(), "scores.npy is missing"),
    (lambda f: (f / "extra.npy").write_bytes(b"x"), "extra.npy was added"),
    (lambda f: ((f / "sub" / "a.json").unlink(), (f / "sub" / "a.json").symlink_to(f / "scores.npy")), "symlink"),
    (lambda f: (f / "sub" / "fifo").unlink(missing_ok=True) or os.mkfifo(f / "sub" / "fifo"), "not a regular file"),
    (lambda f: (f / "meta.json").write_text("{"), "meta.json"),
])
def test_a_damaged_artefact_is_discarded_not_reused(tmp_path: Path, tamper, why) -> None:
    store, folder = _committed(tmp_path)
    assert json.loads((folder / "meta.json").read_text())["files"]["scores.npy"][0] == (folder / "scores.npy").stat().st_size
    assert store.get("emotion", "k1") == folder  # intact: reused
    tamper(folder)
    told = []
    assert store.get("emotion", "k1", on_bad=lambda p, r: told.append((p, r))) is None
    assert len(told) == 1 and told[0][0] == folder and why in told[0][1], told
    assert not folder.exists() and not list(folder.parent.glob(".k1.bad-*"))  # moved aside and removed


def test_another_artefact_copied_or_linked_under_a_key_is_not_reused(tmp_path: Path) -> None:
    """A complete, self-consistent artefact of other content put in a key's place (copied, or
    linked) verifies against its own record: only its recorded stage and key tell it is not
    this key's. It is discarded with one warning line; a link is removed, never followed."""
    store, folder = _committed(tmp_path)
    tmp = store.begin("emotion", "k2")
    np.save(tmp / "scores.npy", np.zeros((3, 4), np.float32))
    other = store.commit("emotion", "k2", tmp, {"facts": {"n": 0}})
    shutil.rmtree(folder)
    shutil.copytree(other, folder)
    told = []
    assert store.get("emotion", "k1", on_bad=lambda p, r: told.append(r)) is None
    assert len(told) == 1 and "emotion/k2, not under this key" in told[0], told
    assert not folder.exists() and store.get("emotion", "k2") == other

    folder.symlink_to(other)
    told.clear()
    assert store.get("emotion", "k1", on_bad=lambda p, r: told.append(r)) is None
    assert told == ["the folder is a symbolic link"]
    assert not os.path.lexists(folder) and store.get("emotion", "k2") == other  # the link went, not its target
    assert not list(folder.parent.glob(".k1.bad-*"))

    for stage in ("load", "segment"):  # another stage's artefact under this stage's name
        tmp = store.begin(stage, "k3")
        np.save(tmp / "scores.npy", np.ones((3, 4), np.float32))
        store.commit(stage, "k3", tmp, {})
    shutil.copytree(store.path("load", "k3"), store.path("emotion", "k3"))
    assert store.get("emotion", "k3") is None


def test_a_stage_folder_that_is_a_link_is_neither_read_nor_written_through(tmp_path: Path) -> None:
    """A link (or a file) in a stage folder's place in the store: one warning, the link itself
    removed (its target untouched), the stage computed again into a folder of emoflow's own."""
    from tasks.core.storage import NotOwnedError

    store, folder = _committed(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(store.root / "emotion"), elsewhere)
    (store.root / "emotion").symlink_to(elsewhere)
    with pytest.raises(NotOwnedError, match=r"emotion: a symbolic link, which emoflow did not make"):
        store.begin("emotion", "k1")  # never written through
    told = []
    assert store.get("emotion", "k1", on_bad=lambda p, r: told.append((p.name, r))) is None
    assert len(told) == 1 and told[0][0] == "emotion" and "a symbolic link" in told[0][1]
    assert not os.path.lexists(store.root / "emotion")
    assert sorted(p.name for p in elsewhere.iterdir()) == ["k1"] and (elsewhere / "k1" / "meta.json").is_file()
    tmp = store.begin("emotion", "k1")
    assert not (store.root / "emotion").is_symlink()
    np.save(tmp / "scores.npy", np.zeros(3, np.float32))
    assert store.get("emotion", "k1") is None and store.commit("emotion", "k1", tmp, {}) == store.path("emotion", "k1")
    (store.root / "load").write_text("not a folder")
    told.clear()
    assert store.get("load", "k1", on_bad=lambda p, r: told.append(r)) is None
    assert "not a folder" in told[0] and not (store.root / "load").exists()


def test_a_file_rewritten_with_the_same_content_is_still_good(tmp_path: Path) -> None:
    store, folder = _committed(tmp_path)
    data = (folder / "scores.npy").read_bytes()
    (folder / "scores.npy").write_bytes(data)
    assert store.get("emotion", "k1") == folder


def test_an_artefact_without_a_record_of_its_files_is_not_trusted(tmp_path: Path) -> None:
    store, folder = _committed(tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    del meta["files"]
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BadArtefact, match="older emoflow"):
        verify_files(folder, meta.get("files"))
    assert store.get("emotion", "k1") is None


def test_published_folder_is_verified(tmp_path: Path) -> None:
    folder = tmp_path / "recordings" / "r1"
    tmp = artefacts.begin_published(folder)
    (tmp / "segments.csv").write_text("a,b\n1,2\n")
    artefacts.commit_published(tmp, folder, key="K", facts={"segments": 1})
    assert artefacts.published_facts(folder, key="K") == {"segments": 1}
    assert artefacts.published_facts(folder, key="other") is None
    (folder / "segments.csv").write_text("a,b\n1,3\n")
    told = []
    assert artefacts.published_facts(folder, key="K", on_bad=lambda p, r: told.append(r)) is None
    assert told and "segments.csv" in told[0]


def test_published_folder_that_is_a_symlink_is_replaced_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep")
    folder = tmp_path / "recordings" / "r1"
    folder.parent.mkdir()
    folder.symlink_to(victim, target_is_directory=True)
    assert artefacts.published_facts(folder, key="K") is None
    tmp = artefacts.begin_published(folder)
    (tmp / "x.csv").write_text("1")
    artefacts.commit_published(tmp, folder, key="K", facts={})
    assert not folder.is_symlink() and (folder / "x.csv").is_file()
    assert (victim / "precious.txt").read_text() == "keep" and sorted(p.name for p in victim.iterdir()) == ["precious.txt"]


# ------------------------------------------------------------------ the real stages, end to end


@pytest.fixture(scope="module")
def short_wav(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    audio, sr = sf.read(shared_data / "ami" / "dev00.flac", dtype="float32")
    path = tmp_path_factory.mktemp("in") / "short.wav"
    sf.write(path, audio[: 12 * sr], sr)
    return path


def _published(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != artefacts.PUBLISHED_RECORD}


def test_damaged_cache_is_recomputed_and_results_match_a_clean_run(
        tmp_path: Path, short_wav: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Tamper with the cache the way a person (or a disk) might, then rerun with another threshold
    (so screen and export read the damaged artefacts): the result equals a clean run's."""
    from tasks.pipeline.runner import run_stages
    from tasks.run.plan import prepare_run

    base = [f"emotion.model={tiny_model_dir}", "export.denoised_audio=true"]

    def run(out: Path, *sets: str) -> dict:
        jobs, _ = prepare_run([str(short_wav)], config=load_config(None, [*base, *sets]), out_dir=out)
        return run_stages(jobs[0])

    out = tmp_path / "out"
    first = run(out, "screen.threshold=0.5")
    assert {r.status for r in first.values()} == {"computed"} and not any(r.discarded for r in first.values())
    clean = tmp_path / "clean"
    run(clean, "screen.threshold=0.7")
    expected = _published(clean / "recordings" / "short")

    store = ArtefactStore(out / ".emoflow" / "artefacts")
    folder = {s: next((store.root / s).glob("[0-9a-f]*")) for s in ("emotion", "diarize", "denoise", "segment")}
    _tamper_reverse_columns(folder["emotion"])  # scores.npy: columns reversed, same size
    turns = folder["diarize"] / "turns.json"
    turns.write_text(json.dumps([]))  # replaced
    den = folder["denoise"] / "denoised.npy"
    np.save(den, np.zeros_like(np.load(den)))  # zeroed
    (folder["segment"] / "stray.txt").write_text("added")
    capsys.readouterr()
    second = run(out, "screen.threshold=0.7")
    err = capsys.readouterr().err
    status = {s: r.status for s, r in second.items()}
    for stage in ("emotion", "diarize", "denoise", "segment"):
        assert status[stage] == "computed" and second[stage].discarded, (stage, status)
        assert err.count(f"discarded the {stage} artefact") == 1, err
    assert status["load"] == "reused" and second["load"].discarded is None
    assert _published(out / "recordings" / "short") == expected

    # the published folder itself: a tampered exported file is exported again
    seg_csv = out / "recordings" / "short" / "segments.csv"
    seg_csv.write_text(seg_csv.read_text().replace("happy", "angry").replace("neutral", "sad"))
    third = run(out, "screen.threshold=0.7")
    assert third["export"].status == "computed" and third["export"].discarded
    assert {s: r.status for s, r in third.items() if s != "export"} == dict.fromkeys(
        [s for s in third if s != "export"], "reused")
    assert _published(out / "recordings" / "short") == expected


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory, short_wav: Path, tiny_model_dir: Path) -> Path:
    from tasks.pipeline.runner import run_stages
    from tasks.run.plan import prepare_run

    out = tmp_path_factory.mktemp("clean") / "out"
    jobs, _ = prepare_run([str(short_wav)], config=load_config(None, [f"emotion.model={tiny_model_dir}"]), out_dir=out)
    run_stages(jobs[0])
    return out


@pytest.mark.parametrize("failure", ["numpy short write", "ENOSPC"])
def test_a_full_disk_is_one_line_and_a_rerun_after_freeing_space_is_identical(
        tmp_path: Path, clean_run: Path, short_wav: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
        failure: str) -> None:
    import errno

    from tasks.core.storage import NoSpaceError
    from tasks.pipeline.runner import run_stages
    from tasks.run.plan import prepare_run

    out = tmp_path / "out"
    shutil.copytree(clean_run, out, symlinks=True)
    shutil.rmtree(next((out / ".emoflow" / "artefacts" / "emotion").glob("[0-9a-f]*")))
    shutil.rmtree(out / "recordings")
    expected = _published(clean_run / "recordings" / "short")
    real_save = np.save

    def full_disk(file, arr, *a, **k):
        if failure == "ENOSPC":
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        real_save(file, np.asarray(arr)[: max(1, len(np.asarray(arr)) // 2)], *a, **k)  # half of it landed
        raise OSError("240000 requested and 109536 written")

    jobs, _ = prepare_run([str(short_wav)], config=load_config(None, [f"emotion.model={tiny_model_dir}"]), out_dir=out)
    monkeypatch.setattr(np, "save", full_disk)
    with pytest.raises(NoSpaceError) as info:
        run_stages(jobs[0])
    assert str(info.value).startswith(f"no space left on {out}") and "\n" not in str(info.value)
    assert not list((out / ".emoflow" / "artefacts" / "emotion").iterdir())  # nothing half-written kept
    monkeypatch.setattr(np, "save", real_save)
    reports = run_stages(jobs[0])
    assert reports["emotion"].status == "computed" and reports["diarize"].status == "reused"
    assert _published(out / "recordings" / "short") == expected


def test_no_space_is_recognised_through_causes() -> None:
    import errno

    from tasks.core.storage import NoSpaceError, no_space

    assert no_space(OSError(errno.ENOSPC, "No space left on device"))
    assert no_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert no_space(OSError("240000 requested and 109536 written"))
    try:
        try:
            raise OSError(errno.ENOSPC, "full")
        except OSError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert no_space(outer)
    assert not no_space(OSError(errno.EACCES, "Permission denied")) and not no_space(ValueError("x"))
    assert str(NoSpaceError("/x/out")).startswith("no space left on /x/out")


def _counting_digests(monkeypatch) -> list[str]:
    """Forget this process's digests (a new run) and count the files hashed from now on."""
    hashed: list[str] = []
    real = artefacts._digest
    monkeypatch.setattr(artefacts, "_DIGESTS", {})
    monkeypatch.setattr(artefacts, "_digest", lambda path, st: hashed.append(Path(path).name) or real(path, st))
    return hashed


def test_a_stamped_artefact_is_not_hashed_again_but_a_change_behind_its_stamp_is_found(tmp_path: Path,
                                                                                        monkeypatch) -> None:
    monkeypatch.setattr(artefacts, "SETTLED_S", 0.0)
    store, folder = _committed(tmp_path)
    time.sleep(0.05)  # the files' ctime is now in the past
    assert store.get("emotion", "k1") == folder  # hashed, found intact: stamped
    stamps = tmp_path / "store" / artefacts.STAMPS / "emotion" / "k1.json"
    assert set(json.loads(stamps.read_text())) == {"scores.npy", "sub/a.json"}
    hashed = _counting_digests(monkeypatch)
    assert store.get("emotion", "k1") == folder and hashed == []  # a later run: stat only
    # edited in place with the same size, and its mtime set back: ctime still moves
    target = folder / "scores.npy"
    st = target.stat()
    _tamper_reverse_columns(folder)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    hashed = _counting_digests(monkeypatch)
    told = []
    assert store.get("emotion", "k1", on_bad=lambda p, r: told.append(r)) is None
    assert hashed == ["scores.npy"] and "sha256 differs" in told[0]
    assert not stamps.exists()  # the discarded artefact's stamps go with it


@pytest.mark.parametrize("plant", [
    lambda p: p.write_text("{not json"),
    lambda p: p.write_text('["a list"]'),
    lambda p: p.symlink_to("/dev/null"),
    lambda p: p.mkdir(),
])
def test_a_damaged_or_planted_stamps_file_only_costs_a_hash(tmp_path: Path, monkeypatch, plant) -> None:
    monkeypatch.setattr(artefacts, "SETTLED_S", 0.0)
    store, folder = _committed(tmp_path)
    stamps = tmp_path / "store" / artefacts.STAMPS / "emotion" / "k1.json"
    stamps.parent.mkdir(parents=True)
    plant(stamps)
    time.sleep(0.05)
    hashed = _counting_digests(monkeypatch)
    assert store.get("emotion", "k1") == folder
    assert sorted(hashed) == ["a.json", "scores.npy"]


def test_a_fresh_file_is_never_stamped(tmp_path: Path) -> None:
    store, folder = _committed(tmp_path)  # written just now: within SETTLED_S
    assert store.get("emotion", "k1") == folder
    assert not (tmp_path / "store" / artefacts.STAMPS / "emotion" / "k1.json").exists()
