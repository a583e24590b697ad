"""The platform's own lifecycle, as a user meets it, in one run: ``kiln up`` (until the API
answers, until a deployed app answers again), ``kiln down``, an app's first deploy and a
code-only redeploy (until the new code answers), for a slug; and what a client that keeps
calling a known app sees while the platform comes back up (refused connections, 404s, 503s).

    python -m kiln.bench.lifecycle [--artifact slug|image]

Targets (issue: cold start and the data path): ``kiln up`` until apps answer <= 15 s,
``kiln down`` <= 5 s, code-only redeploy <= 10 s and <= 0.5x the first deploy, and a known
app's URL never 404 while the platform comes back.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from kiln.bench.bare_echo import app_dir
from kiln.run.dyno import free_port


class Home:
    """A platform of its own: a KILN_HOME and free ports, driven through the kiln command."""

    def __init__(self, base: Path, shared: Path) -> None:
        self.home = base / "home"
        ports = {n: free_port() for n in ("api", "http", "ray", "dash", "agent", "st", "me", "pg",
                                          "reg", "fb")}  # fmt: skip
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("KILN_", "RAY_"))}
        self.env.update(
            KILN_HOME=str(self.home), KILN_API_PORT=str(ports["api"]),
            KILN_HTTP_PORT=str(ports["http"]), KILN_RAY_PORT=str(ports["ray"]),
            KILN_RAY_DASHBOARD_PORT=str(ports["dash"]), KILN_RAY_AGENT_PORT=str(ports["agent"]),
            KILN_SANDBOX_DIR=str(shared), KILN_PG_DIR=f"{shared}-pg",
            KILN_VECTOR_PORT=str(ports["pg"]), KILN_REGISTRY_PORT=str(ports["reg"]),
            KILN_SERVE_FALLBACK_PORT=str(ports["fb"]),
            RAY_SERVE_HAPROXY_STATS_PORT=str(ports["st"]),
            RAY_SERVE_HAPROXY_METRICS_PORT=str(ports["me"]),
        )  # fmt: skip
        self.api = f"http://127.0.0.1:{ports['api']}"
        self.apps = f"http://127.0.0.1:{ports['http']}"

    def kiln(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "kiln", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"kiln {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done


def wait(what: str, check: object, timeout_s: float = 300, every_s: float = 0.05) -> float:
    started = time.perf_counter()
    while not check():  # type: ignore[operator]
        if time.perf_counter() - started > timeout_s:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every_s)
    return time.perf_counter() - started


def answers(url: str, expect: str | None = None) -> bool:
    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and (expect is None or expect in response.text)


class Caller:
    """Calls a URL every 50 ms from a thread, counting what comes back."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: collections.Counter[str] = collections.Counter()
        self.spans: dict[str, list[float]] = {}  # status -> [first, last] seconds after start
        self.first_200: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.perf_counter()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status = str(httpx.get(self.url, timeout=5).status_code)
            except httpx.ConnectError:
                status = "refused"
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            self.seen[status] += 1
            now = time.perf_counter() - self.started
            self.spans.setdefault(status, [now, now])[1] = now
            if status == "200" and self.first_200 is None:
                self.first_200 = time.perf_counter() - self.started
            time.sleep(0.05)

    def __enter__(self) -> Caller:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--artifact", choices=("slug", "image"), default="slug")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="kiln-bench-life-"))
    # Apps' sandboxes where their own uids can reach them (a private temporary directory is not)
    shared = Path(f"/var/lib/kiln/bench-life-{os.getpid()}")
    home = Home(base, shared)
    source = base / "echo"
    shutil.copytree(app_dir(), source)
    figures: dict[str, float] = {}
    try:
        started = time.perf_counter()
        home.kiln("up", "--detach")
        figures["kiln up returns (first start)"] = time.perf_counter() - started
        home.kiln("apps:create", "echo", "--public")
        started = time.perf_counter()
        home.kiln("deploy", str(source), "-a", "echo", "--artifact", args.artifact)
        figures["first deploy, until kiln deploy returns"] = time.perf_counter() - started
        wait("the first deploy", lambda: answers(f"{home.apps}/echo/"))
        figures["first deploy, until it answers"] = time.perf_counter() - started
        main_py = source / "main.py"
        main_py.write_text(
            main_py.read_text().replace('{"hello":', '{"redeployed": "yes", "hello":')
        )
        started = time.perf_counter()
        new_code: list[float] = []

        def watch() -> None:  # while kiln deploy runs: when does the new code first answer?
            wait("the new code", lambda: answers(f"{home.apps}/echo/", "redeployed"))
            new_code.append(time.perf_counter() - started)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        home.kiln("deploy", str(source), "-a", "echo", "--artifact", args.artifact)
        figures["code-only redeploy, until kiln deploy returns"] = time.perf_counter() - started
        watcher.join()
        figures["code-only redeploy, until the new code answers"] = new_code[0]
        started = time.perf_counter()
        home.kiln("down")
        figures["kiln down"] = time.perf_counter() - started
        with Caller(f"{home.apps}/echo/") as caller:
            started = time.perf_counter()
            home.kiln("up", "--detach")
            figures["kiln up returns (with an app)"] = time.perf_counter() - started
            wait("the API", lambda: answers(f"{home.api}/healthz"))
            figures["kiln up, until the API answers"] = time.perf_counter() - started
            wait("the app", lambda: caller.first_200 is not None)
            figures["kiln up, until the app answers"] = time.perf_counter() - started
        print(f"\nthe platform's lifecycle ({args.artifact}), seconds")
        for name, seconds in figures.items():
            print(f"  {name:<52} {seconds:6.2f}")
        print(f"  a client calling the app during kiln up got: {json.dumps(dict(caller.seen))}")
        for status, (first, last) in caller.spans.items():
            print(f"    {status:<10} from {first:6.2f}s to {last:6.2f}s after kiln up began")
    finally:
        subprocess.run([sys.executable, "-m", "kiln", "down"], env=home.env,
                       capture_output=True, timeout=300)  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(shared, ignore_errors=True)
        shutil.rmtree(f"{shared}-pg", ignore_errors=True)


if __name__ == "__main__":
    main()
