"""A fake Hugging Face Hub (and a forwarding proxy) on 127.0.0.1, for offline download tests.

:class:`FakeHub` serves one local directory as a model repository through the endpoints that
``huggingface_hub.snapshot_download`` (2.x) calls:

* ``GET /api/models/{repo}[/revision/{rev}]``: the repo's commit (``sha``) and ``siblings``;
* ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=True``: files with ``size``, ``oid``
  (git blob id) and, for weight files, ``lfs`` (sha256, size, pointer size);
* ``HEAD``/``GET /{repo}/resolve/{rev}/{filename}``: ``X-Repo-Commit``, ``ETag`` (blob id, or
  sha256 as ``X-Linked-Etag`` for LFS files), ``Content-Length``, and byte ranges.

No Xet headers are sent, so downloads use plain HTTP. Everything lives under an optional path
prefix (a mirror such as ``HF_ENDPOINT=http://127.0.0.1:PORT/mirror``). Faults, each naming one
file: ``cut`` makes the hub die in the middle of it (headers and half the bytes, then the
connection drops and the hub stops listening); ``stall`` sends half of it and then waits until
the hub is stopped; ``corrupt`` serves it with its first byte changed (same size, so only a
checksum notices).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".onnx")


@dataclass(frozen=True)
class RepoEntry:
    path: str
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n".encode()

    @property
    def blob_id(self) -> str:
        """git's id of what the repo stores: the LFS pointer for LFS files, else the content."""
        stored = self.pointer if self.lfs else self.data
        return hashlib.sha1(f"blob {len(stored)}\0".encode() + stored).hexdigest()

    def tree_json(self) -> dict:
        info = {"type": "file", "path": self.path, "size": len(self.data), "oid": self.blob_id}
        if self.lfs:
            info["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": len(self.pointer)}
        return info


class FakeHub:
    """Serve ``source`` (a directory) as model repo ``repo_id`` at ``http://127.0.0.1:PORT{prefix}``."""

    def __init__(self, source: Path, *, repo_id: str = "test-org/emotion2vec-tiny", prefix: str = "",
                 port: int = 0, cut: str | None = None, stall: str | None = None,
                 corrupt: str | None = None) -> None:
        self.repo_id = repo_id
        self.prefix = prefix.rstrip("/")
        self.cut, self.stall, self.corrupt = cut, stall, corrupt
        files = sorted(p for p in Path(source).rglob("*") if p.is_file())
        self.entries = {
            p.relative_to(source).as_posix(): RepoEntry(p.relative_to(source).as_posix(), p.read_bytes(),
                                                        p.suffix in LFS_SUFFIXES)
            for p in files
        }
        listing = "".join(f"{e.path}\0{e.blob_id}\n" for e in self.entries.values())
        self.commit = hashlib.sha1(listing.encode()).hexdigest()
        self.requests: list[tuple[str, str]] = []
        self.cut_done = threading.Event()
        self.stalled = threading.Event()
        self._release = threading.Event()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        assert self._port, "hub never started"
        return self._port

    @property
    def url(self) -> str:
        """The endpoint to put in ``HF_ENDPOINT``."""
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def start(self) -> FakeHub:
        """Listen (again: on the same port after a stop)."""
        hub = self

        class Handler(_HubHandler):
            fake = hub

        self._release.clear()
        server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._port = server.server_address[1]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._server = server
        return self

    def stop(self) -> None:
        """Stop listening (later connections are refused); safe to call twice or from a handler."""
        self._release.set()
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- responses -----------------------------------------------------------------------------

    def info_json(self) -> dict:
        return {"id": self.repo_id, "modelId": self.repo_id, "sha": self.commit, "private": False,
                "disabled": False, "gated": False, "tags": [], "downloads": 0, "likes": 0,
                "siblings": [{"rfilename": p} for p in self.entries]}

    def tree_json(self, path: str, recursive: bool) -> list[dict]:
        base = f"{path.strip('/')}/" if path.strip("/") else ""
        out: list[dict] = []
        folders: set[str] = set()
        for name, entry in self.entries.items():
            if not name.startswith(base):
                continue
            rest = name[len(base):].split("/")
            for depth in range(1, len(rest)):
                folder = base + "/".join(rest[:depth])
                if folder not in folders and (recursive or depth == 1):
                    folders.add(folder)
                    out.append({"type": "directory", "path": folder, "oid": hashlib.sha1(folder.encode()).hexdigest(),
                                "size": 0})
            if recursive or len(rest) == 1:
                out.append(entry.tree_json())
        return out


class _HubHandler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.0"  # one request per connection: a stopped hub is really gone

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def do_HEAD(self) -> None:
        self._route(body=False)

    def do_GET(self) -> None:
        self._route(body=True)

    def _send(self, status: int, payload: bytes, *, body: bool, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def _json(self, value: object, *, body: bool) -> None:
        self._send(200, json.dumps(value).encode(), body=body)

    def _not_found(self, code: str | None, *, body: bool) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": f"{code} (fake hub)"} if code else {}
        self._send(404, json.dumps({"error": code or "Not Found"}).encode(), body=body, headers=headers)

    def _route(self, *, body: bool) -> None:
        hub = self.fake
        split = urlsplit(self.path)
        path = unquote(split.path)
        hub.requests.append((self.command, path))
        if hub.prefix and not (path == hub.prefix or path.startswith(hub.prefix + "/")):
            return self._not_found(None, body=body)
        path = path[len(hub.prefix):] or "/"
        if path == "/":
            return self._send(200, b"fake hub\n", body=body, content_type="text/plain")
        repo = hub.repo_id
        api = f"/api/models/{repo}"
        if path.startswith("/api/models/") and not (path == api or path.startswith(api + "/")):
            return self._not_found("RepoNotFound", body=body)
        if path == api or path.startswith(api + "/revision/"):
            rev = path[len(api + "/revision/"):] if path != api else "main"
            if rev not in ("main", hub.commit):
                return self._not_found("RevisionNotFound", body=body)
            return self._json(hub.info_json(), body=body)
        if path.startswith(api + "/tree/"):
            rev, _, sub = path[len(api + "/tree/"):].partition("/")
            if rev not in ("main", hub.commit):
                return self._not_found("RevisionNotFound", body=body)
            recursive = parse_qs(split.query).get("recursive", ["false"])[0].lower() == "true"
            return self._json(hub.tree_json(sub, recursive), body=body)
        resolve = f"/{repo}/resolve/"
        if path.startswith(resolve):
            rev, _, filename = path[len(resolve):].partition("/")
            if rev not in ("main", hub.commit):
                return self._not_found("RevisionNotFound", body=body)
            entry = hub.entries.get(filename)
            if entry is None:
                return self._not_found("EntryNotFound", body=body)
            return self._file(entry, body=body)
        if path.startswith(f"/{repo}/"):
            return self._not_found(None, body=body)
        return self._not_found("RepoNotFound", body=body)

    def _file(self, entry: RepoEntry, *, body: bool) -> None:
        hub = self.fake
        data = entry.data
        if hub.corrupt == entry.path:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes=") and ranged[6:].split("-")[0].isdigit():
            start = int(ranged[6:].split("-")[0])
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("X-Repo-Commit", hub.commit)
        self.send_header("ETag", f'"{entry.blob_id}"')
        if entry.lfs:
            self.send_header("X-Linked-Etag", f'"{entry.sha256}"')
            self.send_header("X-Linked-Size", str(len(data)))
        self.end_headers()
        if not body:
            return
        if hub.cut == entry.path:
            half = data[start:start + (len(data) - start) // 2]
            self.wfile.write(half)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            hub.cut_done.set()
            threading.Thread(target=hub.stop, daemon=True).start()
            return
        if hub.stall == entry.path:
            self.wfile.write(data[start:start + (len(data) - start) // 2])
            self.wfile.flush()
            hub.stalled.set()
            hub._release.wait(60)
            self.close_connection = True
            return
        self.wfile.write(data[start:])


class FakeProxy:
    """A forwarding HTTP proxy on 127.0.0.1 that records the URLs it was asked for."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self, body: bool) -> None:
                proxy.seen.append(self.path)
                target = urlsplit(self.path)
                if target.scheme != "http" or not target.hostname:
                    self.send_error(405, "only absolute http:// URLs are forwarded")
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=10)
                try:
                    path = target.path + (f"?{target.query}" if target.query else "")
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "host")}
                    conn.request(self.command, path or "/", headers=headers)
                    response = conn.getresponse()
                    self.send_response(response.status)
                    for key, value in response.getheaders():
                        if key.lower() not in ("connection", "transfer-encoding"):
                            self.send_header(key, value)
                    self.end_headers()
                    if body:
                        while chunk := response.read(1 << 16):
                            self.wfile.write(chunk)
                finally:
                    conn.close()

            def do_GET(self) -> None:
                self._forward(True)

            def do_HEAD(self) -> None:
                self._forward(False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def closed_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SilentPort:
    """A local port that accepts connections (via the kernel's backlog) but never answers."""

    def __enter__(self) -> int:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        return self._sock.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self._sock.close()
