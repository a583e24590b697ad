"""An app that tries to reach past its own boundary and reports what it got: files, sockets,
URLs, another process's environment, the request headers it was given. Tests deploy it beside a
victim app and assert that every attempt failed."""

import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

from fastapi import FastAPI, Request

app = FastAPI()


def attempt(target: str) -> str:
    """A read (file), a listing (directory), a connection (.sock or host:port) or a GET (URL)."""
    try:
        if target.startswith("http://"):
            with urllib.request.urlopen(target, timeout=5) as response:
                return f"http {response.status}"
        if target.startswith("tcp://"):
            host, port = target.removeprefix("tcp://").rsplit(":", 1)
            host = gateway() if host == "gateway" else host
            with socket.create_connection((host, int(port)), timeout=3):
                return "connected"
        if target.endswith(".sock"):
            with socket.socket(socket.AF_UNIX) as unix:
                unix.settimeout(3)
                unix.connect(target)
                return "connected"
        path = Path(target)
        if path.is_dir():
            return f"listed {len(list(path.iterdir()))}"
        return f"read {len(path.read_bytes())}"
    except urllib.error.HTTPError as exc:
        return f"http {exc.code}"
    except PermissionError:
        return "denied"
    except OSError as exc:
        return type(exc).__name__


def gateway() -> str:
    """The default route's gateway: the host, as a container sees it."""
    for line in Path("/proc/net/route").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == "00000000":
            return socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))
    return "127.0.0.1"


@app.post("/probe")
async def probe(request: Request) -> dict[str, object]:
    targets = json.loads(await request.body())
    return {
        "uid": os.getuid(),
        "environment": sorted(k for k in os.environ if "SECRET" in k or k.startswith("RAY_")),
        "attempts": {target: attempt(target) for target in targets},
    }


@app.get("/headers")
def headers(request: Request) -> dict[str, str]:
    return dict(request.headers)
