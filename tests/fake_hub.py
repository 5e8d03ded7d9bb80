"""A Hugging Face Hub on 127.0.0.1 for tests: serves folders as model repositories to huggingface_hub's
``hf_hub_download`` (point ``HF_ENDPOINT`` at ``FakeHub.url``), so that downloads are tested without a network.

It answers what ``hf_hub_download`` asks: ``HEAD`` and ``GET /<org>/<repo>/resolve/<revision>/<file>`` with the
headers huggingface_hub reads (``X-Repo-Commit``, ``ETag``, ``Content-Length``) or a 404 with its
``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``). Every request is recorded.
"""

from __future__ import annotations

import hashlib
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    """``publish`` a folder as a commit of a repository, then download from ``url``; ``close`` when done."""

    def __init__(self) -> None:
        self.repositories: dict[str, dict] = {}  # repo_id -> {"refs": {name: commit}, "commits": {commit: files}}
        self.requests: list[tuple[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, repo_id: str, folder: str, ref: str = "main") -> str:
        """The files of ``folder`` as a new commit of ``repo_id`` that ``ref`` points to; returns the commit."""
        files = {}
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    files[name] = f.read()
        repository = self.repositories.setdefault(repo_id, {"refs": {}, "commits": {}})
        content = sorted((name, hashlib.sha256(data).hexdigest()) for name, data in files.items())
        commit = hashlib.sha1(f"{repo_id} {len(repository['commits'])} {content}".encode()).hexdigest()
        repository["commits"][commit] = files
        repository["refs"][ref] = commit
        return commit

    def downloads(self, filename: str) -> int:
        """How many times a file of that name was downloaded (GET)."""
        return sum(1 for method, path in self.requests if method == "GET" and path.endswith("/" + filename))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) for a ``/resolve/`` path."""
        parts = path.split("?")[0].strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return 404, {"X-Error-Code": "RepoNotFound"}, b""
        repository = self.repositories.get("/".join(parts[:2]))
        if repository is None:
            return 404, {"X-Error-Code": "RepoNotFound"}, b""
        commit = repository["refs"].get(parts[3], parts[3])
        files = repository["commits"].get(commit)
        if files is None:
            return 404, {"X-Error-Code": "RevisionNotFound"}, b""
        data = files.get("/".join(parts[4:]))
        if data is None:
            return 404, {"X-Error-Code": "EntryNotFound"}, b""
        return 200, {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}, data


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _respond(self, with_body: bool) -> None:
            hub.requests.append((self.command, self.path))
            status, headers, body = hub.answer(self.path)
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self._respond(False)

        def do_GET(self) -> None:
            self._respond(True)

    return Handler
