"""Journey: scaling to a fixed count, to zero and back, with every request answered."""

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from kiln.run import serve_fix
from tests.support.apps import APPS, EXAMPLES
from tests.support.platform import Platform, deploy

pytestmark = pytest.mark.integration


def test_scale_to_zero_and_back_answers_every_request(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
    tmp_path: Path,
) -> None:
    app = fresh_app(platform, "sleepy")
    source = tmp_path / "sleepy"
    shutil.copytree(APPS / "streams_sse", source)
    (source / "kiln.toml").write_text(
        "[scaling]\nmin_replicas = 0\nmax_replicas = 2\nupscale_delay_s = 0\n"
        "downscale_delay_s = 1\ndownscale_to_zero_delay_s = 2\n"
    )
    deploy(platform, source, app, "--artifact", "slug")
    platform.wait("zero replicas", lambda: not platform.ps(app)["replicas"], timeout_s=90)
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda _: (
                    httpx.get(f"{platform.app_url(app)}/slow?seconds=0.2", timeout=120).status_code
                ),
                range(16),
            )
        )
    assert answers == [200] * 16
    assert platform.ps(app)["replicas"]
    # The replica from zero did not wait for a new worker's imports: it got a worker made warm
    # ahead (kiln.run.warm), or its dyno started while its new worker imported Serve
    # (kiln.run.early), its first lines, printed before the supervisor adopted it, kept.

    def started_fast() -> str | None:
        logs = platform.kiln("logs", "-a", app, "-n", "500").output
        fast = "the replica's worker was warm" in logs or "the dyno started early" in logs
        return logs if fast and "dyno[dyno." in logs else None

    platform.wait("a warm worker or an early start in the release log", started_fast,
                  timeout_s=30)  # fmt: skip
    platform.wait("zero again", lambda: not platform.ps(app)["replicas"], timeout_s=90)


# A task in the platform's own Ray: started by its raylet as a replica's worker is, it says
# whether Serve's router in that process carries Kiln's mend (kiln.run.serve_fix).
PROBE = """
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR")

@ray.remote(num_cpus=0)
def mended():
    from ray.serve._private import router
    push = router.RouterMetricsManager.should_send_scaled_to_zero_optimized_push
    return getattr(push, MENDED, False)

print(ray.get(mended.remote(), timeout=60))
""".replace("MENDED", repr(serve_fix.MENDED))


def in_platforms_ray(platform: Platform, code: str, timeout_s: float) -> str:
    """The last line ``code`` prints, run as a driver of the platform's own Ray."""
    # (Ray's own switch to reach a loopback cluster at 127.0.0.1, not at the host's address.)
    env = {**platform.env, "RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_AUTH_TOKEN_PATH": str(platform.home / "ray" / "auth_token")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", code, f"127.0.0.1:{platform.ports['ray']}"],
        capture_output=True, text=True, timeout=timeout_s, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_the_platforms_workers_mend_serves_push_at_zero_replicas(platform: Platform) -> None:
    assert in_platforms_ray(platform, PROBE, 180) == "True"


# A driver in the platform's own Ray: it asks the head's raylet for a warm worker (as a
# supervisor does once its dyno serves) and creates an actor as Serve creates a replica: the
# actor must land on that worker, with Serve's replica already imported before it came.
WARM_PROBE = """
import json, os, pathlib, sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
from kiln.run import warm

@ray.remote(num_cpus=0)
class Probe:
    def look(self):
        serve = "ray.serve._private.replica" in sys.modules
        return os.getpid(), serve, warm.taken(warm.directory(), os.getpid())

def ready(folder):  # the warm workers seen idle and ready now, with their parents' pids
    found = {}
    for mark in folder.glob("held-*"):
        try:
            pid = int(mark.name[5:])
            idle = (warm._title(pid) or b"").startswith(b"ray::IDLE")
            if idle and mark.read_bytes() == warm.READY:
                stat = open(f"/proc/{pid}/stat").read()
                found[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            pass
    return found

folder = warm.directory()
def raylets(session):  # this platform's raylet: the process Ray started for its session
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        try:
            line = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if b"raylet/raylet" in line and f"--session_dir={session}".encode() in line:
            found.append(int(entry.name))
    return found

raylet = raylets(folder.parent)
for attempt in range(2):  # a replica of another app may take the warm worker first
    asked = warm.top_up(folder, 1, warm.prestart, lambda: warm.idle_workers(raylet[0]))
    deadline = time.time() + 60
    while not (seen := ready(folder)) and time.time() < deadline:
        time.sleep(0.2)
    pid, serve, age = ray.get(Probe.remote().look.remote(), timeout=90)
    if pid in seen:
        break
print(json.dumps({"asked": asked, "pid": pid, "seen": list(seen), "serve": serve, "age": age,
                  "parents": sorted(set(seen.values())), "raylets": raylet}))
"""


def test_an_actor_lands_on_a_warm_worker_with_serve_imported(platform: Platform) -> None:
    found = json.loads(in_platforms_ray(platform, WARM_PROBE, 400))
    # Its worker was one seen idle and warm before the actor was asked for (its mark says so),
    # and had imported Serve's replica by then.
    assert found["pid"] in found["seen"] and found["age"] is not None, found
    assert found["serve"] is True, found
    # A warm worker is the raylet's own child, as the count of a node's idle workers expects.
    assert found["parents"] == found["raylets"] and len(found["raylets"]) == 1, found


def test_scale_sets_a_fixed_count(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
) -> None:
    app = fresh_app(platform, "scaled")
    deploy(platform, EXAMPLES / "echo", app, "--artifact", "slug")
    platform.kiln("scale", "3", "-a", app)
    platform.wait(
        "three running",
        lambda: [r["state"] for r in platform.ps(app)["replicas"]] == ["RUNNING"] * 3,
    )
    # Two replicas at once, and the node keeps one warm worker (kiln.run.warm): at least one
    # got a new worker, and its dyno started while that worker imported Serve (kiln.run.early).

    def started_early() -> str | None:
        logs = platform.kiln("logs", "-a", app, "-n", "500", "--source", "release").output
        return logs if "the dyno started early" in logs else None

    platform.wait("an early start in the release log", started_early, timeout_s=30)
    platform.kiln("scale", "0", "-a", app)
    platform.wait("no application", lambda: platform.ps(app)["status"] == "STOPPED")
    # Its URL now reaches the platform's front, which says why nothing answers, in Kiln's words.
    stopped = platform.wait(
        "the front to answer for it",
        lambda: (r := httpx.get(f"{platform.app_url(app)}/")).status_code == 503 and r,
    )
    assert stopped.json()["error"]["code"] == "app_stopped" and "Retry-After" in stopped.headers
    assert f"kiln scale 1 -a {app}" in stopped.json()["error"]["message"]
    unknown = httpx.get(f"{platform.url}/no-such-app-here/v1/models")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "no_such_app"
    assert "-/routes" not in unknown.text  # none of Serve's own words about its routes


SLOW_SECOND_START = """
import os, pathlib, time
_marker = pathlib.Path(os.environ["HOME"]) / "started-once"
if _marker.exists():  # every dyno after the one the deploy starts takes this long to be ready
    time.sleep(8)
_marker.touch()
"""


def test_requests_held_at_zero_replicas_are_bounded_and_the_rest_refused_at_once(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
    tmp_path: Path,
) -> None:
    app = fresh_app(platform, "held")
    source = tmp_path / "held"
    shutil.copytree(EXAMPLES / "echo", source)
    (source / "main.py").write_text(SLOW_SECOND_START + (source / "main.py").read_text())
    (source / "kiln.toml").write_text(
        "[scaling]\nmin_replicas = 0\nmax_replicas = 1\nupscale_delay_s = 0\n"
        "downscale_to_zero_delay_s = 2\nmax_queued_requests = 2\n"
    )
    deploy(platform, source, app, "--artifact", "slug")
    platform.wait("zero replicas", lambda: not platform.ps(app)["replicas"], timeout_s=90)

    def timed_get(_: int) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        answer = httpx.get(f"{platform.app_url(app)}/", timeout=90)
        return answer, time.monotonic() - started

    with ThreadPoolExecutor(6) as pool:  # more than max_queued_requests at once
        answers = list(pool.map(timed_get, range(6)))
    served = [s for a, s in answers if a.status_code == 200]
    refused = [(a, s) for a, s in answers if a.status_code != 200]
    assert served and len(served) <= 2  # those held until the replica was ready (8 s)
    assert refused and all(a.status_code == 503 for a, _ in refused), [a.text for a, _ in answers]
    assert all(a.headers.get("retry-after") == "5" for a, _ in refused)
    assert all("max_queued_requests=2" in a.text and s < 5 for a, s in refused)  # at once
