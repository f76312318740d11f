"""Model downloads end to end against a fake Hugging Face Hub on 127.0.0.1 (no internet).

``emoflow models pull`` runs as a subprocess with ``HF_ENDPOINT`` pointing at
:class:`tests.fakehub.FakeHub` (what a user with a mirror does); reachability checks run in
process with the environment patched per test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.models.hub import (
    ModelUnavailableError,
    hub_endpoints,
    hub_reachable,
    hub_unreachable_reason,
    model_sha256,
    resolve,
)
from tests.fakehub import FakeHub, FakeProxy, SilentPort, closed_port

ROOT = Path(__file__).resolve().parent.parent
REPO = "test-org/emotion2vec-tiny"
CACHE_NAME = "test-org__emotion2vec-tiny"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
ENDPOINT_VARS = ("HF_ENDPOINT", "MODELSCOPE_ENDPOINT", "MODELSCOPE_DOMAIN", "MODELSCOPE_PREFER_AI_SITE")


def _pull_env(home: Path, endpoint: str) -> dict[str, str]:
    """The environment of a user whose hub is ``endpoint``: online, no proxy, caches in ``home``."""
    drop = {"EMOFLOW_OFFLINE", "HF_HUB_OFFLINE", *ENDPOINT_VARS, *PROXY_VARS}
    env = {k: v for k, v in os.environ.items() if k.upper() not in drop}
    env.update(HF_ENDPOINT=endpoint, EMOFLOW_MODEL_DIR=str(home / "models"), HF_HOME=str(home / "hf-home"))
    return env


def _pull(env: dict[str, str], ref: str = REPO) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "flows.cli", "models", "pull", ref]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)


def _same_files(cache: Path, source: Path) -> None:
    """``cache`` holds exactly ``source``'s files, byte for byte, plus the trust marker."""
    got = {p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file()}
    want = {p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()}
    assert got == want | {".emoflow-complete"}
    for name in want:
        assert (cache / name).read_bytes() == (source / name).read_bytes(), name


def _printed_sha(result: subprocess.CompletedProcess) -> str:
    return result.stdout.strip().splitlines()[-1].rsplit("sha256=", 1)[1]


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Downloads allowed, no proxy, no endpoint settings: each test sets what it needs."""
    for name in ("EMOFLOW_OFFLINE", "HF_HUB_OFFLINE", *ENDPOINT_VARS, *PROXY_VARS):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


@dataclass
class Pulled:
    hub: FakeHub
    home: Path
    result: subprocess.CompletedProcess

    @property
    def cache(self) -> Path:
        return self.home / "models" / CACHE_NAME


@pytest.fixture(scope="module")
def pulled(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Pulled:
    """``emoflow models pull`` from a healthy fake hub, which is stopped afterwards."""
    home = tmp_path_factory.mktemp("pull-home")
    with FakeHub(tiny_model_dir) as hub:
        result = _pull(_pull_env(home, hub.url))
    return Pulled(hub=hub, home=home, result=result)


def test_pull_downloads_checks_and_trusts_the_model(pulled: Pulled, tiny_model_dir: Path) -> None:
    r = pulled.result
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "(hub)" in r.stdout and f"from {pulled.hub.url} into {pulled.cache}" in r.stdout
    assert _printed_sha(r) == model_sha256(tiny_model_dir)
    _same_files(pulled.cache, tiny_model_dir)
    marker = json.loads((pulled.cache / ".emoflow-complete").read_text())
    assert marker == {"ref": REPO, "hub": "huggingface", "endpoint": pulled.hub.url,
                      "revision": pulled.hub.commit, "files": 4}
    assert not (pulled.home / "models" / f"{CACHE_NAME}.partial").exists()
    # Progress bars are shown although stderr is a pipe, not a terminal.
    assert "Fetching 4 files" in r.stderr and "100%|" in r.stderr
    # The reachability check asked the endpoint itself, then the download used it.
    assert pulled.hub.requests[0] == ("HEAD", "/")
    fetched = {path.rsplit("/", 1)[1] for method, path in pulled.hub.requests
               if method == "GET" and f"/{REPO}/resolve/{pulled.hub.commit}/" in path}
    assert fetched == {"config.yaml", "model.pt", "tokens.txt", "EMOFLOW_TEST_MODEL"}


@pytest.mark.slow
def test_run_uses_the_cached_model_with_the_hub_gone(pulled: Pulled, prefect_harness, shared_data: Path,
                                                     online: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import pandas as pd
    import soundfile as sf

    from flows.pipeline import run_pipeline
    from tasks.core.config import load_config

    assert pulled.result.returncode == 0, pulled.result.stderr
    online.setenv("HF_ENDPOINT", pulled.hub.url)
    online.setenv("EMOFLOW_MODEL_DIR", str(pulled.home / "models"))
    assert not hub_reachable("huggingface")  # the hub is stopped: only the cache can serve
    m = resolve(REPO)
    assert (m.source, Path(m.path), m.sha256) == ("cache", pulled.cache, _printed_sha(pulled.result))

    flac = sorted((shared_data / "librispeech" / "test-other").rglob("*.flac"))[0]
    audio, sr = sf.read(flac)
    wav = tmp_path / "utterance.wav"
    sf.write(wav, audio, sr)
    cfg = load_config(None, [f"emotion.model={REPO}", "report.enabled=false", "runner.retries=0",
                             "transcribe.enabled=false"])
    summary = run_pipeline([str(wav)], config=cfg, out_dir=tmp_path / "O")
    assert summary.failed == [] and summary.segments > 0
    emotion = json.loads((tmp_path / "O" / "manifest.json").read_text())["models"]["emotion"]
    assert emotion["id"] == REPO and emotion["source"] == "cache" and Path(emotion["path"]) == pulled.cache
    assert emotion["sha256"] == m.sha256 and emotion["is_test_model"] is True
    table = pd.read_parquet(tmp_path / "O" / "segments.parquet")
    assert set(table["model_sha256"]) == {m.sha256}


SV_REPO = "FunAudioLLM/SenseVoiceSmall"


def test_the_transcription_model_is_pulled_verified_and_used_from_the_cache(
        tiny_sensevoice_dir: Path, tiny_model_dir: Path, tmp_path: Path, online: pytest.MonkeyPatch) -> None:
    """SenseVoice comes from the hub like the emotion model: pulled with progress into the cache,
    checked file by file, vetted and loaded by ``models verify``, then found with the hub gone."""
    with FakeHub(tiny_sensevoice_dir, repo_id=SV_REPO) as hub:
        env = _pull_env(tmp_path, hub.url)
        r = _pull(env, SV_REPO)
    assert r.returncode == 0, r.stderr
    cache = tmp_path / "models" / SV_REPO.replace("/", "__")
    _same_files(cache, tiny_sensevoice_dir)
    assert _printed_sha(r) == model_sha256(tiny_sensevoice_dir)
    verify = subprocess.run([sys.executable, "-m", "flows.cli", "models", "verify", "--set",
                             f"transcribe.model={SV_REPO}", "--set", f"emotion.model={tiny_model_dir}"],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stderr
    line = next(x for x in verify.stdout.splitlines() if x.startswith("transcribe"))
    assert SV_REPO in line and str(cache) in line and "TEST model" in line
    online.setenv("HF_ENDPOINT", hub.url)  # stopped
    online.setenv("EMOFLOW_MODEL_DIR", str(tmp_path / "models"))
    assert resolve(SV_REPO, kind="transcribe").source == "cache"


def test_mirror_under_a_path_prefix(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Leftovers: an untrusted copy where the cache folder goes, and a file of an older commit
    # in the folder a former attempt downloaded into. Neither may end up in the trusted copy.
    (tmp_path / "models" / CACHE_NAME).mkdir(parents=True)
    (tmp_path / "models" / CACHE_NAME / "model.pt").write_bytes(b"half a model")
    (tmp_path / "models" / f"{CACHE_NAME}.partial").mkdir()
    (tmp_path / "models" / f"{CACHE_NAME}.partial" / "old_model.pt").write_bytes(b"older commit")
    with FakeHub(tiny_model_dir, prefix="/mirror") as hub:
        r = _pull(_pull_env(tmp_path, hub.url))
    assert r.returncode == 0, r.stderr
    assert hub.url.endswith("/mirror") and _printed_sha(r) == model_sha256(tiny_model_dir)
    _same_files(tmp_path / "models" / CACHE_NAME, tiny_model_dir)
    assert hub.requests[0] == ("HEAD", "/mirror")  # the probe asked the mirror, not huggingface.co
    assert all(path.startswith("/mirror/") or path == "/mirror" for _, path in hub.requests)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [CACHE_NAME]


def test_hub_dying_mid_file_leaves_nothing_trusted_and_pull_resumes(
        tiny_model_dir: Path, tmp_path: Path, online: pytest.MonkeyPatch) -> None:
    hub = FakeHub(tiny_model_dir, cut="model.pt").start()
    env = _pull_env(tmp_path, hub.url)
    try:
        r = _pull(env)
        assert hub.cut_done.is_set()
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
        errors = [line for line in r.stderr.splitlines() if line.startswith("emoflow: error:")]
        assert len(errors) == 1
        assert f"download from {hub.url} failed" in errors[0] and f"emoflow models pull {REPO}" in errors[0]
        target, partial = tmp_path / "models" / CACHE_NAME, tmp_path / "models" / f"{CACHE_NAME}.partial"
        assert not target.exists() and partial.is_dir() and not (partial / ".emoflow-complete").exists()
        online.setenv("EMOFLOW_MODEL_DIR", str(tmp_path / "models"))
        with pytest.raises(ModelUnavailableError, match="not downloaded"):
            resolve(REPO, allow_download=False)

        hub.cut = None
        hub.start()  # healthy again, same port
        r = _pull(env)
        assert r.returncode == 0, r.stderr
        assert _printed_sha(r) == model_sha256(tiny_model_dir)
        _same_files(target, tiny_model_dir)
        assert not partial.exists()
    finally:
        hub.stop()


def test_killed_pull_is_never_trusted(tiny_model_dir: Path, tmp_path: Path, online: pytest.MonkeyPatch) -> None:
    cmd = [sys.executable, "-m", "flows.cli", "models", "pull", REPO]
    with FakeHub(tiny_model_dir, stall="model.pt") as hub:
        env = _pull_env(tmp_path, hub.url)
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert hub.stalled.wait(120), "the pull never reached model.pt"
        finally:
            proc.kill()
            proc.wait()
        online.setenv("EMOFLOW_MODEL_DIR", str(tmp_path / "models"))
        with pytest.raises(ModelUnavailableError, match="not downloaded"):
            resolve(REPO, allow_download=False)
        assert not (tmp_path / "models" / CACHE_NAME).exists()
        hub.stall = None
        r = _pull(env)
    assert r.returncode == 0, r.stderr
    _same_files(tmp_path / "models" / CACHE_NAME, tiny_model_dir)


def test_corrupt_download_is_thrown_away(tiny_model_dir: Path, tmp_path: Path) -> None:
    with FakeHub(tiny_model_dir, corrupt="model.pt") as hub:
        env = _pull_env(tmp_path, hub.url)
        r = _pull(env)
        assert r.returncode == 2, r.stderr
        assert "model.pt sha256 differs" in r.stderr and "Traceback" not in r.stderr
        assert not list((tmp_path / "models").iterdir())  # neither trusted nor kept for resuming
        hub.corrupt = None
        r = _pull(env)
    assert r.returncode == 0, r.stderr
    _same_files(tmp_path / "models" / CACHE_NAME, tiny_model_dir)


# -- reachability -----------------------------------------------------------------------------


def test_closed_port_is_unreachable_at_once(online: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    online.setenv("HF_ENDPOINT", url)
    t0 = time.monotonic()
    why = hub_unreachable_reason("huggingface")
    assert time.monotonic() - t0 < 3
    assert why == f"{url} cannot be reached (connection refused)"


def test_silent_endpoint_gives_up_within_the_timeout(online: pytest.MonkeyPatch) -> None:
    with SilentPort() as port:
        online.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        t0 = time.monotonic()
        assert not hub_reachable("huggingface", timeout=1.0)
        assert time.monotonic() - t0 < 2.0


def test_any_http_answer_counts(tiny_model_dir: Path, online: pytest.MonkeyPatch) -> None:
    with FakeHub(tiny_model_dir) as hub:
        online.setenv("HF_ENDPOINT", f"{hub.url}/not-a-mirror/")
        assert hub_endpoints("huggingface") == [f"{hub.url}/not-a-mirror"]
        assert hub_reachable("huggingface")  # a 404 is an answer
    assert hub.requests == [("HEAD", "/not-a-mirror")]


@pytest.mark.parametrize("hub_name,setting", [("huggingface", "HF_ENDPOINT"), ("modelscope", "MODELSCOPE_DOMAIN")])
def test_proxy_from_the_environment(hub_name: str, setting: str, tiny_model_dir: Path,
                                    online: pytest.MonkeyPatch) -> None:
    with FakeHub(tiny_model_dir) as hub, FakeProxy() as proxy:
        online.setenv(setting, hub.url)
        assert hub_endpoints(hub_name) == [hub.url]
        online.setenv("HTTP_PROXY", proxy.url)
        assert hub_reachable(hub_name)
        assert proxy.seen and all(url.startswith(hub.url) for url in proxy.seen)
        seen = len(hub.requests)
        online.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")  # a dead proxy
        why = hub_unreachable_reason(hub_name)
        assert why is not None and why.startswith(f"{hub.url} cannot be reached")
        assert len(hub.requests) == seen
        online.setenv("NO_PROXY", "127.0.0.1")
        assert hub_reachable(hub_name)
        assert len(hub.requests) == seen + 1


@pytest.mark.parametrize("hub_name,setting", [("huggingface", "HF_ENDPOINT"), ("modelscope", "MODELSCOPE_ENDPOINT")])
def test_offline_switches_ask_nothing(hub_name: str, setting: str, tiny_model_dir: Path,
                                      online: pytest.MonkeyPatch) -> None:
    with FakeHub(tiny_model_dir) as hub:
        online.setenv(setting, hub.url)
        online.setenv("EMOFLOW_OFFLINE", "1")
        assert hub_unreachable_reason(hub_name) == "downloads are off (EMOFLOW_OFFLINE=1)"
        online.delenv("EMOFLOW_OFFLINE")
        online.setenv("HF_HUB_OFFLINE", "1")  # Hugging Face's switch leaves ModelScope alone
        assert hub_reachable(hub_name) is (hub_name == "modelscope")
    assert len(hub.requests) == (1 if hub_name == "modelscope" else 0)


def test_modelscope_endpoint_as_modelscope_builds_it(online: pytest.MonkeyPatch) -> None:
    assert hub_endpoints("modelscope") == ["https://modelscope.cn", "https://www.modelscope.ai"]
    online.setenv("MODELSCOPE_PREFER_AI_SITE", "true")
    assert hub_endpoints("modelscope") == ["https://www.modelscope.ai", "https://modelscope.cn"]
    online.setenv("MODELSCOPE_DOMAIN", "ms-mirror.example.org")
    assert hub_endpoints("modelscope") == ["https://ms-mirror.example.org"]
    online.setenv("MODELSCOPE_DOMAIN", "http://10.0.0.7:8080/")
    assert hub_endpoints("modelscope") == ["http://10.0.0.7:8080"]
    online.setenv("MODELSCOPE_ENDPOINT", "https://ms.internal.example.org")
    assert hub_endpoints("modelscope") == ["https://ms.internal.example.org"]


def test_unreachable_hub_names_the_endpoint_and_the_fix(online: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/mirror"
    online.setenv("HF_ENDPOINT", url)
    online.setenv("EMOFLOW_MODEL_DIR", str(tmp_path / "models"))
    t0 = time.monotonic()
    with pytest.raises(ModelUnavailableError) as err:
        resolve(REPO)
    assert time.monotonic() - t0 < 5
    msg = str(err.value)
    assert "\n" not in msg and f"{url} cannot be reached" in msg
    assert "HF_ENDPOINT" in msg and "HTTPS_PROXY" in msg and "--set emotion.model=DIR" in msg
    assert f"{tmp_path / 'models' / CACHE_NAME} with an empty .emoflow-complete file" in msg
    assert not (tmp_path / "models").exists()


def test_unreachable_reason_names_the_cause_and_the_proxy(online: pytest.MonkeyPatch) -> None:
    """A user is told why in a few words, and which proxy the request went through."""
    url = f"http://127.0.0.1:{closed_port()}"
    online.setenv("HF_ENDPOINT", "http://emoflow-no-such-host.invalid")
    assert hub_unreachable_reason("huggingface", timeout=2.0).endswith("(host name not found)")
    online.setenv("HF_ENDPOINT", "http://example.org")
    online.setenv("HTTP_PROXY", url)
    online.delenv("NO_PROXY", raising=False)
    online.delenv("no_proxy", raising=False)
    why = hub_unreachable_reason("huggingface", timeout=2.0)
    assert why is not None and why.endswith(f"via proxy {url})"), why
