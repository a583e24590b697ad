"""A Hugging Face hub on loopback, serving model folders from disk, so the real download path
(huggingface-hub's snapshot_download, HF_ENDPOINT) runs in tests and benchmarks with no
network.

    hub = FakeHub({"kiln-test/tiny-llama": Path("model-folder")}).start()
    os.environ["HF_ENDPOINT"] = hub.url
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from kiln.run.dyno import free_port

_COMMIT = re.compile(r"[0-9a-f]{40}")


class FakeHub:
    def __init__(self, repos: dict[str, Path]) -> None:
        self.repos = repos
        self.commits = {
            name: hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest() for name in repos
        }
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.downloads: list[str] = []
        self._server: uvicorn.Server | None = None

    def _files(self, repo: str) -> list[Path]:
        root = self.repos[repo]
        return sorted(p for p in root.rglob("*") if p.is_file())

    def _resolve(self, repo: str, revision: str) -> str | None:
        commit = self.commits[repo]
        return commit if revision in ("main", commit) else None

    def _missing(self, code: str, message: str) -> Response:
        return JSONResponse(
            {"error": message},
            status_code=404,
            headers={"X-Error-Code": code, "X-Error-Message": message},
        )

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        api = re.fullmatch(r"/api/models/(.+?)/(revision|tree)/([^/]+)(/.*)?", path)
        if api:
            repo, kind, revision = api.group(1), api.group(2), api.group(3)
        else:
            file = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path)
            if not file:
                return self._missing("EntryNotFound", f"no route {path}")
            repo, revision = file.group(1), file.group(2)
        if repo not in self.repos:
            return JSONResponse({"error": "Repository Not Found"}, status_code=401,
                                headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository Not Found"})  # fmt: skip
        commit = self._resolve(repo, revision)
        if commit is None:
            return self._missing("RevisionNotFound", f"Invalid rev id: {revision}")
        root = self.repos[repo]
        if api and kind == "revision":
            siblings = [{"rfilename": p.relative_to(root).as_posix()} for p in self._files(repo)]
            return JSONResponse({"id": repo, "modelId": repo, "sha": commit, "siblings": siblings, "private": False,
                                 "lastModified": "2026-01-01T00:00:00.000Z", "tags": [], "downloads": 0})  # fmt: skip
        if api:
            entries = []
            for p in self._files(repo):
                data = p.read_bytes()
                entries.append(
                    {
                        "type": "file",
                        "path": p.relative_to(root).as_posix(),
                        "size": len(data),
                        "oid": hashlib.sha1(data, usedforsecurity=False).hexdigest(),
                    }
                )
            return JSONResponse(entries)
        assert file is not None  # not an API path: a file path
        name = file.group(3)
        target = root / name
        if not target.is_file():
            return self._missing("EntryNotFound", f"{name} does not exist")
        etag = f'"{hashlib.sha1(target.read_bytes(), usedforsecurity=False).hexdigest()}"'
        headers = {
            "X-Repo-Commit": commit,
            "ETag": etag,
            "Content-Length": str(target.stat().st_size),
        }
        if request.method == "HEAD":
            return Response(headers=headers)
        self.downloads.append(f"{repo}/{name}")
        return FileResponse(target, headers={"X-Repo-Commit": commit, "ETag": etag})

    def start(self) -> FakeHub:
        app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "HEAD"])])
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error")
        )
        threading.Thread(target=self._server.run, daemon=True).start()
        while not self._server.started:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
