"""A minimal Hugging Face Hub on localhost, enough for huggingface_hub to list and download a repo
(`HfApi.repo_info`, `list_repo_tree`, `/resolve/` file downloads), so that tests lay out a real cache
with huggingface_hub itself, offline. Repos are local folders; a name in `gated` answers 401 GatedRepo."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self, repos: dict[str, Path], gated: tuple[str, ...] = ()) -> None:
        self.repos = {name: Path(folder) for name, folder in repos.items()}
        self.gated = set(gated)
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                hub.handle(self, head=True)

            def do_GET(self) -> None:
                hub.handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def sha(repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()

    def files(self, repo: str) -> list[Path]:
        root = self.repos[repo]
        return sorted(p for p in root.rglob("*") if p.is_file())

    def _send(self, handler, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        handler.send_response(status)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if not head:
            handler.wfile.write(body)

    def _error(self, handler, repo: str, head: bool) -> bool:
        if repo in self.gated:
            self._send(handler, 401, b'{"error": "gated"}', {"X-Error-Code": "GatedRepo", "X-Error-Message": "gated"}, head)
            return True
        if repo not in self.repos:
            self._send(
                handler, 404, b'{"error": "not found"}', {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, head
            )
            return True
        return False

    def handle(self, handler, head: bool) -> None:
        path = unquote(urlparse(handler.path).path)
        self.requests.append(f"{'HEAD' if head else 'GET'} {path}")
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"]:
            repo = "/".join(parts[2:4])
            if self._error(handler, repo, head):
                return
            rest = parts[4:]
            root = self.repos[repo]
            entries = [{"type": "file", "path": p.relative_to(root).as_posix(), "size": p.stat().st_size,
                        "oid": hashlib.sha1(p.read_bytes()).hexdigest()} for p in self.files(repo)]  # fmt: skip
            if rest[:1] == ["tree"]:
                body = json.dumps(entries).encode()
            else:  # repo info (with or without /revision/<rev>)
                body = json.dumps({"id": repo, "sha": self.sha(repo), "siblings": [{"rfilename": e["path"]} for e in entries],
                                   "private": False, "gated": False, "disabled": False}).encode()  # fmt: skip
            self._send(handler, 200, body, {"Content-Type": "application/json"}, head)
            return
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = "/".join(parts[:2])
            if self._error(handler, repo, head):
                return
            file = self.repos[repo] / "/".join(parts[4:])
            if not file.is_file():
                self._send(handler, 404, b"", {"X-Error-Code": "EntryNotFound", "X-Error-Message": "no such file"}, head)
                return
            data = file.read_bytes()
            etag = hashlib.sha1(data).hexdigest()
            headers = {"X-Repo-Commit": self.sha(repo), "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"}
            self._send(handler, 200, data, headers, head)
            return
        self._send(handler, 404, b"", {}, head)
