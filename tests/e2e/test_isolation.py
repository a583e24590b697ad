"""Isolation on a real Kiln, from the attacker's side: an app deployed beside a victim tries to
read the platform's secrets, reach the victim's dyno without its API key, drive Ray, and forge
the headers the platform sets. Each attempt must fail."""

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from kiln.engine import connect_engine
from tests.support.apps import APPS, EXAMPLES
from tests.support.platform import Platform

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="per-app uids need root"),
]


@pytest.fixture
def apps(platform: Platform) -> Iterator[Callable[[str, Path, bool, str], str]]:
    made: list[str] = []

    def deploy(name: str, source: Path, public: bool, artifact: str = "slug") -> str:
        platform.kiln("apps:create", name, *(["--public"] if public else []))
        made.append(name)
        platform.kiln("deploy", str(source), "-a", name, "--artifact", artifact)
        return name

    yield deploy
    for name in made:
        platform.kiln("apps:destroy", name, "--confirm", name, ok=False)


def probe(platform: Platform, app: str, *targets: str) -> dict[str, object]:
    response = httpx.post(f"{platform.app_url(app)}/probe", json=list(targets), timeout=60)
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def test_a_slug_dyno_cannot_reach_secrets_its_neighbour_or_ray(
    platform: Platform, apps: Callable[[str, Path, bool, str], str]
) -> None:
    victim = apps("vault", EXAMPLES / "echo", False)
    attacker = apps("mallory", APPS / "probe_neighbours", True)
    sandboxes = Path(platform.env["KILN_SANDBOX_DIR"])
    [victim_box] = sandboxes.glob("vault.*")
    victim_sockets = sorted(str(s) for s in (victim_box / "run").glob("*.sock"))
    assert victim_sockets, "the victim's dyno listens on a unix socket in its sandbox"
    supervisor = platform.ps(victim)["replicas"][0]["pid"]
    home = platform.home
    dashboard = f"http://127.0.0.1:{platform.ports['dashboard']}/api/serve/applications/"
    engine = platform.env.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
    seen = probe(
        platform, attacker,
        str(home / "secret.key"), str(home / "kiln.db"), str(home / "credentials.json"),
        str(home / "ray" / "auth_token"), str(home), str(victim_box), str(victim_box / "home"),
        *victim_sockets, f"/proc/{supervisor}/environ", engine, dashboard,
    )  # fmt: skip
    attempts = seen["attempts"]
    assert isinstance(attempts, dict)
    for target, outcome in attempts.items():
        if target == dashboard:
            assert outcome == "http 401", (target, outcome)  # Ray wants its token
        elif target == engine and not Path(engine).exists():
            continue
        else:
            assert outcome == "denied", (target, outcome)
    assert seen["uid"] != 0 and seen["environment"] == []  # no secret key, no Ray token
    # The victim itself still needs its key at its URL.
    assert httpx.get(f"{platform.app_url(victim)}/").status_code == 401


def test_headers_the_platform_sets_cannot_be_forged(
    platform: Platform, apps: Callable[[str, Path, bool, str], str]
) -> None:
    app = apps("mirror", APPS / "probe_neighbours", True)
    forged = {"X-Kiln-Key-Id": "1", "X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6"}
    seen = httpx.get(f"{platform.app_url(app)}/headers", headers=forged).json()
    assert "x-kiln-key-id" not in seen and "x-real-ip" not in seen
    assert "6.6.6.6" not in seen.get("x-forwarded-for", "")


def test_a_container_dyno_is_kept_to_its_own_network(
    platform: Platform, apps: Callable[[str, Path, bool, str], str]
) -> None:
    if connect_engine(platform.env.get("DOCKER_HOST")) is None:
        pytest.skip("no container engine at DOCKER_HOST")
    attacker = apps("boxprobe", APPS / "probe_neighbours", True, "image")
    dashboard, api = platform.ports["dashboard"], platform.ports["api"]
    seen = probe(platform, attacker, f"tcp://gateway:{dashboard}", f"tcp://gateway:{api}",
                 "/models", "/run/kiln")  # fmt: skip
    attempts = seen["attempts"]
    assert isinstance(attempts, dict)
    # Ray and the control plane listen on the host's loopback: a container cannot reach them.
    assert attempts[f"tcp://gateway:{dashboard}"] != "connected"
    assert attempts[f"tcp://gateway:{api}"] != "connected"
    assert attempts["/models"] == "FileNotFoundError"  # no model: no cache mounted at all
    assert seen["environment"] == []
    engine = connect_engine(platform.env.get("DOCKER_HOST"))
    assert engine is not None
    [container] = engine.client.containers.list(filters={"label": f"kiln.app={attacker}"})
    bound = (container.attrs["HostConfig"].get("PortBindings") or {}).values()
    assert not any(bound), bound  # nothing published
    assert list(container.attrs["NetworkSettings"]["Networks"]) == [f"kiln-app-{attacker}"]
    assert container.attrs["HostConfig"]["PidsLimit"] == 4096
