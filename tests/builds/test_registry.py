"""The cluster's image registry: a real docker-registry (Debian's CNCF distribution registry)
with a password; builds push their image there, and an engine that lacks it pulls it back
under the name the release runs. Without the password, nothing is pushed or pulled."""

import shutil
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from kiln.builds.image import ImageBuilder
from kiln.builds.registry import ENGINE_TRUST, EmbeddedRegistry, RegistryAccess
from kiln.engine import DockerEngine, EngineError
from kiln.models import BuildStatus
from kiln.settings import Settings
from kiln.store import Store
from tests.conftest import free_port
from tests.support.apps import EXAMPLES
from tests.support.dynos import run_image
from tests.support.fixtures import deployer

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryAccess]:
    if shutil.which(EmbeddedRegistry.BINARY) is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    settings = Settings(home=tmp_path / "registry-home", registry_port=free_port())
    embedded = EmbeddedRegistry(settings, host="127.0.0.1")
    access = embedded.ensure()  # as root: this machine's engines now trust its CA
    yield access
    embedded.stop()
    for root in ENGINE_TRUST:
        shutil.rmtree(root / access.address, ignore_errors=True)


def test_an_image_is_pushed_at_build_and_pulled_back_where_it_is_missing(
    registry: RegistryAccess, engine: DockerEngine, sqlite_store: Store, build_settings: Settings,
    archive_of: Callable[[Path], Path],
) -> None:  # fmt: skip
    settings = build_settings.model_copy(update={
        "registry": registry.address, "registry_username": registry.username,
        "registry_password": SecretStr(registry.password or ""),
    })  # fmt: skip
    sqlite_store.create_app("echo", actor="test")
    builder = deployer(sqlite_store, settings, ImageBuilder(engine, settings))
    lines: list[str] = []
    build = builder.deploy("echo", archive_of(EXAMPLES / "echo"), actor="test", sink=lines.append)
    assert build.status is BuildStatus.SUCCEEDED and build.artifact is not None, "\n".join(lines)
    tag = build.artifact.reference
    remote = registry.remote(tag)
    assert f"-----> Pushing {remote}" in "\n".join(lines)
    ca = ssl.create_default_context(cadata=registry.ca)  # its certificate names its address
    catalog = httpx.get(f"https://{registry.address}/v2/_catalog", verify=ca,
                        auth=(registry.username or "", registry.password or ""))  # fmt: skip
    assert "kiln/echo" in catalog.json()["repositories"]
    assert engine.has_image(tag) and engine.has_image(remote)
    assert {name for name, _c, _s in engine.images_of("kiln/echo")} >= {tag, remote}  # gc sees both

    # A node's engine without it: pulled under the release's own name.
    for name in (remote, tag):
        engine.remove_image(name)
    assert not engine.has_image(tag)
    with pytest.raises(EngineError, match=f"could not pull {remote}"):
        engine.fetch(remote, tag, {"username": "kiln", "password": "wrong"}, print)
    progress: list[str] = []
    try:
        engine.fetch(remote, tag, registry.auth(), progress.append)
        assert engine.has_image(tag)
        assert progress  # its layers, as the engine reports them (the release log shows them)
        with run_image(engine, build.artifact) as url:
            assert httpx.get(f"{url}/").json() == {"hello": "world"}
    finally:  # podman answers to kiln/echo:bN with any registry's image of that name
        for name in (remote, tag):
            engine.remove_image(name)


def test_a_build_that_cannot_push_fails_and_says_where(
    registry: RegistryAccess, engine: DockerEngine, sqlite_store: Store, build_settings: Settings,
    archive_of: Callable[[Path], Path],
) -> None:  # fmt: skip
    settings = build_settings.model_copy(update={"registry": registry.address})  # no password
    sqlite_store.create_app("echo", actor="test")
    builder = deployer(sqlite_store, settings, ImageBuilder(engine, settings))
    build = builder.deploy("echo", archive_of(EXAMPLES / "echo"), actor="test")
    for name in (registry.remote(f"kiln/echo:b{build.id}"), f"kiln/echo:b{build.id}"):
        engine.remove_image(name)
    assert build.status is BuildStatus.FAILED
    assert build.error is not None and f"registry at {registry.address}" in build.error
    assert "could not push" in build.error
