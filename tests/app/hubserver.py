"""A local HTTP server that answers like the Hugging Face Hub, for the real ``huggingface_hub`` client.

It serves the endpoints ``huggingface_hub`` 2.x calls to resolve a model without downloading weights:

- ``GET /api/models/{repo}`` and ``GET /api/models/{repo}/revision/{rev}``: model info (``id``, ``sha``,
  ``gated``, ``private``, ``siblings``);
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: files, with ``X-Repo-Commit``, ``ETag`` and
  ``Content-Length``; ``.safetensors`` files are LFS files, redirected (302, ``X-Linked-Etag``,
  ``X-Linked-Size``) to ``/lfs/...`` like the Hub redirects to its CDN, where ``Range: bytes=a-b`` is
  answered with ``206 Partial Content`` (how safetensors headers are read);
- errors the way the Hub signals them: ``X-Error-Code`` (``RepoNotFound``, ``GatedRepo``, ``EntryNotFound``,
  ``RevisionNotFound``) and ``X-Error-Message``.

Repos are declared with :meth:`HubServer.add_repo`. A repo can be gated (401 without a token, 403 with a token
that was not granted), private (looks missing without a granted token), slow (each answer delayed) or broken
(HTTP 5xx). Safetensors files are synthesised from a tensor list: a real header followed by zero bytes,
produced on the fly so a "weights" file of any size costs nothing. Every request is recorded for assertions.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


def safetensors_header(tensors: dict[str, tuple[str, list[int]]], metadata: dict[str, str] | None = None) -> bytes:
    """The first bytes of a ``.safetensors`` file: 8-byte little-endian length, then the JSON header."""
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = 1
        for dim in shape:
            n *= dim
        size = n * DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _data_size(tensors: dict[str, tuple[str, list[int]]]) -> int:
    total = 0
    for dtype, shape in tensors.values():
        n = 1
        for dim in shape:
            n *= dim
        total += n * DTYPE_BYTES[dtype]
    return total


@dataclass
class VirtualFile:
    """File content: a prefix of real bytes followed by ``zeros`` zero bytes (never materialised)."""

    prefix: bytes
    zeros: int = 0

    @property
    def size(self) -> int:
        return len(self.prefix) + self.zeros

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``start..end`` inclusive."""
        end = min(end, self.size - 1)
        if start > end:
            return b""
        head = self.prefix[start : end + 1]
        missing = end + 1 - start - len(head)
        return head + b"\0" * missing

    @property
    def etag(self) -> str:
        return hashlib.sha1(self.prefix + str(self.zeros).encode()).hexdigest()


@dataclass
class Repo:
    repo_id: str
    files: dict[str, VirtualFile]
    sha: str
    gated: bool = False
    private: bool = False
    delay_s: float = 0.0
    fail_status: int | None = None
    list_siblings: bool = True
    revisions: set[str] = field(default_factory=lambda: {"main"})


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]


class HubServer:
    """The server: :meth:`start` runs it in a daemon thread on 127.0.0.1 (a free port); :meth:`stop`."""

    def __init__(self, granted_tokens: Iterable[str] = ("hf_granted",)) -> None:
        self.repos: dict[str, Repo] = {}
        self.granted_tokens = set(granted_tokens)
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------------ setup

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start() the server first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> HubServer:
        handler = _make_handler(self)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hubserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def add_repo(
        self,
        repo_id: str,
        config: dict[str, Any] | bytes | None,
        *,
        tensors: dict[str, tuple[str, list[int]]] | None = None,
        shards: list[dict[str, tuple[str, list[int]]]] | None = None,
        extra_files: dict[str, bytes] | None = None,
        **options: Any,
    ) -> Repo:
        """Declare a repo. ``tensors``: one ``model.safetensors``; ``shards``: a sharded checkpoint."""
        files: dict[str, VirtualFile] = {}
        if config is not None:
            raw = config if isinstance(config, bytes) else json.dumps(config, indent=2).encode()
            files["config.json"] = VirtualFile(raw)
        if tensors is not None:
            files["model.safetensors"] = VirtualFile(safetensors_header(tensors, {"format": "pt"}), _data_size(tensors))
        if shards is not None:
            weight_map: dict[str, str] = {}
            total = 0
            for i, shard in enumerate(shards, start=1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                files[name] = VirtualFile(safetensors_header(shard, {"format": "pt"}), _data_size(shard))
                total += _data_size(shard)
                weight_map.update(dict.fromkeys(shard, name))
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            files["model.safetensors.index.json"] = VirtualFile(json.dumps(index).encode())
        for name, content in (extra_files or {}).items():
            files[name] = VirtualFile(content)
        sha = hashlib.sha1(repo_id.encode()).hexdigest()
        repo = Repo(repo_id=repo_id, files=files, sha=sha, **options)
        self.repos[repo_id] = repo
        return repo

    def record(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append(RecordedRequest(method, path, headers))

    def requests_for(self, fragment: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if fragment in r.path]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+(?:/[^/]+)?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+(?:/[^/]+)??)(?:/revision/(?P<rev>[^/]+))?$")
_LFS = re.compile(r"^/lfs/(?P<repo>[^/]+(?:/[^/]+)?)/(?P<file>[^/]+\.safetensors)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def _make_handler(server: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        # ------------------------------------------------------------------------------------------------

        def do_HEAD(self) -> None:
            self._dispatch(head=True)

        def do_GET(self) -> None:
            self._dispatch(head=False)

        def _dispatch(self, head: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            server.record(self.command, path, {k.lower(): v for k, v in self.headers.items()})
            info = _INFO.match(path)
            if info and not head:
                self._model_info(info.group("repo"), info.group("rev") or "main")
                return
            lfs = _LFS.match(path)
            if lfs:
                self._lfs(lfs.group("repo"), lfs.group("file"), head)
                return
            resolve = _RESOLVE.match(path)
            if resolve:
                self._resolve(resolve.group("repo"), resolve.group("rev"), resolve.group("file"), head)
                return
            self._send(404, b'{"error":"Not Found"}', {"Content-Type": "application/json"}, head)

        # ------------------------------------------------------------------------------------------------

        def _token(self) -> str | None:
            auth = self.headers.get("Authorization") or ""
            return auth[7:].strip() if auth.lower().startswith("bearer ") else None

        def _repo_or_error(self, repo_id: str, rev: str, head: bool) -> Repo | None:
            repo = server.repos.get(repo_id)
            token = self._token()
            if repo is not None and repo.delay_s:
                time.sleep(repo.delay_s)
            if repo is None or (repo.private and token not in server.granted_tokens):
                self._error(404, "RepoNotFound", "Repository not found", head)
                return None
            if repo.fail_status is not None:
                self._send(repo.fail_status, b"upstream failure", {"Content-Type": "text/plain"}, head)
                return None
            if rev not in repo.revisions and rev != repo.sha:
                self._error(404, "RevisionNotFound", "Invalid rev id: " + rev, head, repo)
                return None
            return repo

        def _model_info(self, repo_id: str, rev: str) -> None:
            repo = self._repo_or_error(repo_id, rev, head=False)
            if repo is None:
                return
            body: dict[str, Any] = {
                "_id": repo.sha[:24],
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": repo.sha,
                "private": repo.private,
                "gated": "manual" if repo.gated else False,
                "disabled": False,
                "tags": ["transformers", "safetensors"],
                "pipeline_tag": "text-generation",
                "library_name": "transformers",
            }
            if repo.list_siblings:
                body["siblings"] = [{"rfilename": name} for name in sorted(repo.files)]
            self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head=False)

        def _resolve(self, repo_id: str, rev: str, filename: str, head: bool) -> None:
            repo = self._repo_or_error(repo_id, rev, head)
            if repo is None:
                return
            if repo.gated:
                token = self._token()
                if token is None:
                    self._error(
                        401,
                        "GatedRepo",
                        f"Access to model {repo_id} is restricted. You must have access to it and be "
                        "authenticated to access it. Please log in.",
                        head,
                        repo,
                    )
                    return
                if token not in server.granted_tokens:
                    self._error(
                        403,
                        "GatedRepo",
                        f"Access to model {repo_id} is restricted and you are not in the authorized list. "
                        f"Visit https://huggingface.co/{repo_id} to ask for access.",
                        head,
                        repo,
                    )
                    return
            file = repo.files.get(filename)
            if file is None:
                self._error(404, "EntryNotFound", f'{filename} does not exist on "{rev}"', head, repo)
                return
            if filename.endswith(".safetensors"):
                # LFS files: the Hub answers with a redirect to its CDN and the X-Linked-* headers
                self._send(
                    302,
                    b"",
                    {
                        "Location": f"{server.url}/lfs/{repo.repo_id}/{filename}",
                        "X-Repo-Commit": repo.sha,
                        "X-Linked-Etag": f'"{file.etag}"',
                        "X-Linked-Size": str(file.size),
                        "ETag": f'"{file.etag}"',
                    },
                    head,
                )
                return
            self._serve(file, head, {"X-Repo-Commit": repo.sha})

        def _lfs(self, repo_id: str, filename: str, head: bool) -> None:
            repo = server.repos.get(repo_id)
            file = repo.files.get(filename) if repo is not None else None
            if file is None:
                self._send(404, b"NoSuchKey", {"Content-Type": "text/plain"}, head)
                return
            self._serve(file, head, {})

        def _serve(self, file: VirtualFile, head: bool, extra: dict[str, str]) -> None:
            headers = {
                "Content-Type": "application/octet-stream",
                "ETag": f'"{file.etag}"',
                "Accept-Ranges": "bytes",
                **extra,
            }
            rng = self.headers.get("Range")
            if rng and not head:
                m = _RANGE.match(rng.strip())
                if m is None:
                    self._send(416, b"bad range", {"Content-Range": f"bytes */{file.size}"}, head)
                    return
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else file.size - 1
                if start >= file.size:
                    self._send(416, b"", {"Content-Range": f"bytes */{file.size}"}, head)
                    return
                end = min(end, file.size - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{file.size}"
                self._send(206, file.read(start, end), headers, head)
                return
            if not head and file.zeros:
                # Resolving a model must never download weights: refuse loudly so a test would notice.
                self._send(418, b"full weight download refused by the test Hub", {}, head)
                return
            self._send(200, file.read(0, file.size - 1), headers, head, length=file.size)

        # ------------------------------------------------------------------------------------------------

        def _error(self, status: int, code: str, message: str, head: bool, repo: Repo | None = None) -> None:
            headers = {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message}
            if repo is not None:
                headers["X-Repo-Commit"] = repo.sha
            self._send(status, json.dumps({"error": message}).encode(), headers, head)

        def _send(
            self, status: int, body: bytes, headers: dict[str, str], head: bool, length: int | None = None
        ) -> None:
            try:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                if not head:
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                pass

    return Handler
