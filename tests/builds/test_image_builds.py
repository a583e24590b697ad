"""Real image builds through the Docker Engine API (dockerd or podman at DOCKER_HOST)."""

import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from kiln.builds.image import ImageBuilder
from kiln.deploy import Deployer
from kiln.engine import DockerEngine
from kiln.models import ArtifactKind, BuildStatus
from kiln.settings import Settings
from kiln.store import Store
from tests.support.apps import APPS, EXAMPLES, echo_with_release
from tests.support.dynos import UNCOMPILED, run_image
from tests.support.fixtures import deployer

Archive = Callable[[Path], Path]
pytestmark = pytest.mark.integration


@pytest.fixture
def builder(sqlite_store: Store, build_settings: Settings, engine: DockerEngine) -> Deployer:
    sqlite_store.create_app("echo", actor="test")
    return deployer(sqlite_store, build_settings, ImageBuilder(engine, build_settings))


def test_the_echo_example_builds_into_an_image_that_runs_alone(
    builder: Deployer, engine: DockerEngine, archive_of: Archive
) -> None:
    lines: list[str] = []
    build = builder.deploy("echo", archive_of(EXAMPLES / "echo"), actor="test", sink=lines.append)
    assert build.status is BuildStatus.SUCCEEDED, "\n".join(lines)
    artifact = build.artifact
    assert artifact is not None and artifact.kind is ArtifactKind.IMAGE
    assert artifact.reference == f"kiln/echo:b{build.id}" and artifact.digest.startswith("sha256:")
    image = engine.client.images.get(artifact.reference)
    assert image.attrs["Config"]["User"] == "10001:10001"
    assert image.attrs["Config"]["Env"].count("PORT=8080") == 1
    with run_image(engine, artifact) as url:
        assert httpx.get(f"{url}/").json() == {"hello": "world"}


def test_an_images_dyno_finds_its_imports_compiled(
    builder: Deployer, engine: DockerEngine, archive_of: Archive
) -> None:
    # A container writes no bytecode (and would lose it at its end): what is not compiled in
    # the image is compiled at every start.
    build = builder.deploy("echo", archive_of(EXAMPLES / "echo"), actor="test")
    assert build.artifact is not None
    listed = engine.client.containers.run(
        build.artifact.reference, ["python", "-c", UNCOMPILED], remove=True
    )
    assert listed.decode().strip() == "[]", listed


def test_a_code_only_change_reuses_the_dependency_layer(
    builder: Deployer, tmp_path: Path, archive_of: Archive
) -> None:
    app = tmp_path / "echo"
    app.mkdir()
    for name in ("main.py", "requirements.txt"):
        (app / name).write_text((EXAMPLES / "echo" / name).read_text())
    builder.deploy("echo", archive_of(app), actor="test")
    (app / "main.py").write_text((app / "main.py").read_text() + "\nVERSION = 2\n")
    lines: list[str] = []
    second = builder.deploy("echo", archive_of(app), actor="test", sink=lines.append)
    assert second.status is BuildStatus.SUCCEEDED
    install = next(i for i, line in enumerate(lines) if "uv pip install" in line)
    assert (
        "Using cache" in lines[install + 1]
    )  # docker: " ---> Using cache"; podman: "--> Using cache"


def test_the_model_runtime_image_stops_promptly_on_sigterm(
    builder: Deployer, engine: DockerEngine, archive_of: Archive
) -> None:
    import time

    build = builder.deploy("echo", archive_of(APPS / "model_class"), actor="test")
    assert build.artifact is not None, build.error
    container = engine.client.containers.run(build.artifact.reference, detach=True)
    try:
        time.sleep(1.5)
        started = time.monotonic()
        container.stop(timeout=20)
        assert time.monotonic() - started < 5, "SIGTERM did not stop the dyno"
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 0
    finally:
        container.remove(force=True)


def test_a_missing_requirement_fails_at_the_dependency_step(
    builder: Deployer, archive_of: Archive
) -> None:
    build = builder.deploy("echo", archive_of(APPS / "missing_requirement"), actor="test")
    assert build.status is BuildStatus.FAILED and build.error is not None
    assert build.error.startswith("could not install the dependencies from requirements.txt")
    log = builder.store.builds.log("echo", build.id)
    assert "kiln-no-such-package-anywhere" in log
    assert builder.store.get_app("echo").release == 1


def test_a_syntax_error_in_a_helper_module_fails_the_compile_step(
    builder: Deployer, tmp_path: Path, archive_of: Archive
) -> None:
    app = tmp_path / "helper_syntax_error"
    app.mkdir()
    (app / "requirements.txt").write_text("fastapi\n")
    (app / "main.py").write_text("from fastapi import FastAPI\nimport helpers\napp = FastAPI()\n")
    (app / "helpers.py").write_text("def broken(:\n    pass\n")
    build = builder.deploy("echo", archive_of(app), actor="test")
    assert build.error is not None and build.error.startswith("the app does not compile")
    assert "helpers.py" in builder.store.builds.log("echo", build.id)


def test_a_missing_base_image_says_how_to_make_one(
    sqlite_store: Store, build_settings: Settings, engine: DockerEngine, archive_of: Archive
) -> None:
    sqlite_store.create_app("echo", actor="test")
    settings = build_settings.model_copy(update={"base_image": "kiln/no-such-base:never"})
    builder = deployer(sqlite_store, settings, ImageBuilder(engine, settings))
    build = builder.deploy("echo", archive_of(EXAMPLES / "echo"), actor="test")
    assert build.error is not None
    assert (
        "base image kiln/no-such-base:never is not on the engine and could not be pulled"
        in build.error
    )
    assert "kiln images:bootstrap" in builder.store.builds.log("echo", build.id)


def test_the_release_command_runs_in_a_container_of_the_new_image(
    builder: Deployer, engine: DockerEngine, archive_of: Archive, tmp_path: Path
) -> None:
    first = builder.deploy("echo", archive_of(EXAMPLES / "echo"), actor="test")
    failing = echo_with_release(tmp_path, "echo cannot reach the database; exit 3")
    lines: list[str] = []
    build = builder.deploy("echo", archive_of(failing), actor="test", sink=lines.append)
    assert build.status is BuildStatus.FAILED and build.error is not None
    assert "exited with 3" in build.error and "       cannot reach the database" in lines
    assert builder.store.get_app("echo").release == first.release
    builder.store.update_config("echo", {"DATABASE_URL": "postgres://db/app"}, actor="test")
    command = "echo migrating $DATABASE_URL $GREETING on port $PORT as $(id -u)"
    lines.clear()
    build = builder.deploy(
        "echo", archive_of(echo_with_release(tmp_path, command)), actor="test", sink=lines.append
    )
    assert build.status is BuildStatus.SUCCEEDED, "\n".join(lines)
    # The image's own environment (PORT, its user) with the app's config over it.
    assert "       migrating postgres://db/app world on port 8080 as 10001" in lines
    leftovers = engine.client.containers.list(
        all=True, filters={"ancestor": build.artifact.reference}
    )
    assert leftovers == []


def test_images_no_kept_release_runs_are_removed_from_the_engine(
    sqlite_store: Store, build_settings: Settings, engine: DockerEngine, archive_of: Archive,
    tmp_path: Path,
) -> None:  # fmt: skip
    sqlite_store.create_app("echo", actor="test")
    settings = build_settings.model_copy(update={"keep_releases": 1})
    deploys = deployer(sqlite_store, settings, ImageBuilder(engine, settings))
    app = tmp_path / "echo"
    shutil.copytree(EXAMPLES / "echo", app)
    first = deploys.deploy("echo", archive_of(app), actor="test")
    (app / "main.py").write_text((app / "main.py").read_text() + "\nVERSION = 2\n")
    second = deploys.deploy("echo", archive_of(app), actor="test")
    assert first.artifact is not None and second.artifact is not None
    tags = {tag for tag, _, _ in engine.images_of("kiln/echo")}
    assert first.artifact.reference not in tags  # podman names it docker.io/kiln/echo:b1
    assert second.artifact.reference in tags
    assert deploys.releaser.destroy_app("echo") == []
    assert second.artifact.reference not in {tag for tag, _, _ in engine.images_of("kiln/echo")}
