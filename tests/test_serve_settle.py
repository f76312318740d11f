"""``emoflow serve`` takes an inbox file only once it is complete: a file written slowly is
processed once, as a whole, and marked done once."""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import soundfile as sf

from flows.serve import complete_files, decodes_completely, scan_inbox, settle_seconds
from tasks.core.config import load_config
from tasks.core.storage import sha256_file

LOG = logging.getLogger("test-serve-settle")


def _wav_bytes(seconds: float, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    t = np.arange(int(seconds * 16000)) / 16000
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000, format=fmt)
    return buf.getvalue()


class SlowWriter(threading.Thread):
    """Appends ``data`` to ``path`` in ``pieces`` pieces, ``pause`` seconds apart (one pause of
    ``stall`` seconds half-way, when given)."""

    def __init__(self, path: Path, data: bytes, *, pieces: int = 10, pause: float = 0.15, stall: float = 0.0):
        super().__init__(daemon=True)
        self.path, self.data, self.pieces, self.pause, self.stall = path, data, pieces, pause, stall

    def run(self) -> None:
        step = -(-len(self.data) // self.pieces)
        with open(self.path, "wb") as fh:
            for i in range(self.pieces):
                fh.write(self.data[i * step:(i + 1) * step])
                fh.flush()
                time.sleep(self.stall if self.stall and i == self.pieces // 2 else self.pause)


def test_a_file_written_slowly_is_processed_once_as_a_whole(tmp_path: Path) -> None:
    inbox, root = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    data = _wav_bytes(3.0)
    runs: list[list[str]] = []

    def fake_run(paths, *, config, out_dir):
        runs.append([sha256_file(p) for p in paths])
        return SimpleNamespace(failed=[])

    cfg = load_config(None, [])
    writer = SlowWriter(inbox / "call.wav", data, pieces=12, pause=0.1)
    writer.start()
    while writer.is_alive():
        scan_inbox(inbox, root, cfg, logger=LOG, settle_s=0.4, run=fake_run)
        time.sleep(0.05)
    assert runs == []  # nothing taken while it grew
    deadline = time.time() + 10
    while not runs and time.time() < deadline:
        scan_inbox(inbox, root, cfg, logger=LOG, settle_s=0.4, run=fake_run)
        time.sleep(0.1)
    scan_inbox(inbox, root, cfg, logger=LOG, settle_s=0.4, run=fake_run)
    import hashlib

    whole = hashlib.sha256(data).hexdigest()
    assert runs == [[whole]]
    done = sorted(p.name for p in (root / ".emoflow" / "inbox").glob("*.done"))
    assert done == [f"{whole}.done"]


def test_a_stalled_copy_is_not_taken_even_after_the_settle_time(tmp_path: Path) -> None:
    """The header declares the whole duration; the half that is there decodes to less."""
    for fmt, name in (("WAV", "a.wav"), ("FLAC", "a.flac")):
        data = _wav_bytes(4.0, fmt)
        path = tmp_path / name
        path.write_bytes(data[: len(data) // 2])
        past = time.time() - 60
        os.utime(path, (past, past))
        assert decodes_completely(path) is not None, fmt
        assert complete_files([path], settle_s=0.4, logger=LOG) == {}
        path.write_bytes(data)
        os.utime(path, (past, past))
        assert decodes_completely(path) is None
        assert list(complete_files([path], settle_s=0.4, logger=LOG)) == [sha256_file(path)]


def test_a_file_changed_while_processed_is_not_marked_done(tmp_path: Path) -> None:
    inbox, root = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    f = inbox / "a.wav"
    f.write_bytes(_wav_bytes(2.0))
    past = time.time() - 60
    os.utime(f, (past, past))

    def appending_run(paths, *, config, out_dir):
        with open(paths[0], "ab") as fh:
            fh.write(b"\0" * 100)
        return SimpleNamespace(failed=[])

    result = scan_inbox(inbox, root, load_config(None, []), logger=LOG, settle_s=0.4, run=appending_run)
    assert result["processed"] == 1
    assert not list((root / ".emoflow" / "inbox").glob("*.done"))
    assert not list((root / ".emoflow" / "inbox").glob("*.claim"))


def test_settle_time_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("EMOFLOW_INBOX_SETTLE_S", "2.5")
    assert settle_seconds() == 2.5 and settle_seconds(0.1) == 0.1
    monkeypatch.setenv("EMOFLOW_INBOX_SETTLE_S", "soon")
    assert settle_seconds() == 10.0


def test_a_stalled_copy_of_a_raw_stream_is_not_taken(tmp_path: Path) -> None:
    """MP3 without a Xing header, ADTS AAC and Ogg declare no duration: a copy stalled half-way
    decodes cleanly to less, and only its framing tells (the last frame or page is cut, or an
    Ogg stream has no end-of-stream page)."""
    import subprocess

    src = tmp_path / "src.wav"
    src.write_bytes(_wav_bytes(4.0))
    for name, args in (("a.mp3", ["-c:a", "libmp3lame", "-write_xing", "0"]), ("a.aac", ["-c:a", "aac"]),
                       ("a.ogg", ["-c:a", "libvorbis"]), ("a.opus", ["-c:a", "libopus"])):
        full = tmp_path / f"full-{name}"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), *args, str(full)], check=True)
        data = full.read_bytes()
        path = tmp_path / name
        cuts = [len(data) // 2 + 1]
        if name.endswith((".ogg", ".opus")):
            cuts.append(data.rindex(b"OggS"))  # exactly between two pages: no end-of-stream page
        past = time.time() - 60
        for cut in cuts:
            path.write_bytes(data[:cut])
            os.utime(path, (past, past))
            assert decodes_completely(path) is not None, (name, cut)
            assert complete_files([path], settle_s=0.4, logger=LOG) == {}
        path.write_bytes(data)
        os.utime(path, (past, past))
        assert decodes_completely(path) is None, name
        assert list(complete_files([path], settle_s=0.4, logger=LOG)) == [sha256_file(path)]


def test_streamed_containers_complete_are_taken_and_cut_are_not(tmp_path: Path) -> None:
    """A WAV or CAF written to a pipe (no size in its header) is complete as it is: taken (the
    decoder's -xerror used to call its last packet corrupt and hold it back for an hour). A
    streamed FLAC (no sample count) or WebM cut mid-frame is not taken."""
    import subprocess

    src = tmp_path / "src.wav"
    src.write_bytes(_wav_bytes(4.0))
    past = time.time() - 60
    for name, fmt, args in (("a.wav", "wav", []), ("a.caf", "caf", ["-c:a", "pcm_s16le"]),
                            ("a.flac", "flac", []), ("a.webm", "webm", ["-c:a", "libopus"])):
        data = subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), *args, "-f", fmt, "-"], check=True,
                              capture_output=True).stdout
        path = tmp_path / name
        path.write_bytes(data)
        os.utime(path, (past, past))
        assert decodes_completely(path) is None, name
        assert list(complete_files([path], settle_s=0.4, logger=LOG)) == [sha256_file(path)]
        path.write_bytes(data[: len(data) - 1 if fmt in ("wav", "caf") else len(data) // 2])  # mid-sample, mid-frame
        os.utime(path, (past, past))
        assert decodes_completely(path) is not None, name
        assert complete_files([path], settle_s=0.4, logger=LOG) == {}
    wav = tmp_path / "declared.wav"
    data = _wav_bytes(4.0)
    wav.write_bytes(data[: len(data) * 9 // 10 // 2 * 2])  # its header declares 4 s; a whole sample cut
    os.utime(wav, (past, past))
    assert "declares 4.0 s" in decodes_completely(wav)


def test_non_utf8_and_control_names_in_the_inbox(tmp_path: Path, caplog) -> None:
    """An inbox (and out folder) whose names hold undecodable bytes or a line break: files are
    taken, the ledger is written, and every log line is one valid UTF-8 line."""
    root = os.fsencode(tmp_path)
    inbox, out = root + b"/in\xfd", root + b"/out\xfe"
    try:
        os.mkdir(inbox)
    except OSError:
        import pytest

        pytest.skip("the file system refuses non-UTF-8 names")
    past = time.time() - 60
    for i, name in enumerate((b"caf\xe9.wav", b"nl\nx.wav", b"half\xff.wav")):
        data = _wav_bytes(2.0 + i)
        with open(inbox + b"/" + name, "wb") as fh:
            fh.write(data[: len(data) // 2] if name.startswith(b"half") else data)
        os.utime(inbox + b"/" + name, (past, past))
    runs: list[list[str]] = []

    def fake_run(paths, *, config, out_dir):
        runs.append(list(paths))
        return SimpleNamespace(failed=[])

    with caplog.at_level(logging.INFO, logger=LOG.name):
        result = scan_inbox(os.fsdecode(inbox), Path(os.fsdecode(out)), load_config(None, []), logger=LOG,
                            settle_s=0.4, run=fake_run)
    assert result["processed"] == 2 and len(runs) == 1 and len(runs[0]) == 2
    ledger = Path(os.fsdecode(out)) / ".emoflow" / "inbox"
    assert len(list(ledger.glob("*.done"))) == 2
    for done in ledger.glob("*.done"):
        done.read_text(encoding="utf-8")
    messages = [r.getMessage() for r in caplog.records]
    assert any("half\\xff.wav" in m and "later scan" in m for m in messages), messages
    for m in messages:
        m.encode("utf-8")
        assert len(m.splitlines()) == 1, m
