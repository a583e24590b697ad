"""Real slug builds with uv: examples and fixture apps, run and called over HTTP; failures explained."""

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from kiln.builds.slug import SlugBuilder
from kiln.deploy import Deployer
from kiln.models import ArtifactKind, BuildStatus
from kiln.settings import Settings
from kiln.store import Store
from tests.support.apps import APPS, EXAMPLES, echo_with_release
from tests.support.dynos import UNCOMPILED, run_slug
from tests.support.fixtures import deployer

Archive = Callable[[Path], Path]


@pytest.fixture
def builder(sqlite_store: Store, build_settings: Settings) -> Deployer:
    sqlite_store.create_app("echo", actor="test")
    return deployer(sqlite_store, build_settings, SlugBuilder(build_settings))


def test_the_echo_example_builds_into_a_slug_that_serves(
    builder: Deployer, archive_of: Archive
) -> None:
    lines: list[str] = []
    build = builder.deploy("echo", archive_of(EXAMPLES / "echo"), actor="test", sink=lines.append)
    assert build.status is BuildStatus.SUCCEEDED, "\n".join(lines)
    assert build.artifact is not None and build.artifact.kind is ArtifactKind.SLUG
    assert build.release == 2 and builder.store.get_app("echo").release == 2
    assert "-----> Detected a python app (main:app)" in lines
    assert lines[-1].startswith("-----> Released v2")
    assert (Path(build.artifact.reference) / "app" / "main.py").exists()
    with run_slug(build.artifact) as url:
        assert httpx.get(f"{url}/").json() == {"hello": "world"}
        assert httpx.post(f"{url}/echo", json={"a": [1, 2]}).json() == {"echo": {"a": [1, 2]}}


def test_a_slugs_dyno_finds_its_imports_compiled(builder: Deployer, archive_of: Archive) -> None:
    # Without bytecode, every dyno start compiles what it imports (torch and transformers: a
    # cold start twice as long), and a dyno that may not write beside its packages keeps no copy.
    build = builder.deploy("echo", archive_of(EXAMPLES / "echo"), actor="test")
    assert build.artifact is not None
    listed = subprocess.run(
        [build.artifact.command[0], "-c", UNCOMPILED], capture_output=True, text=True, check=True,
        env={**build.artifact.env, "PYTHONDONTWRITEBYTECODE": "1"},
    ).stdout  # fmt: skip
    assert listed.strip() == "[]", listed


def test_a_code_only_change_reuses_the_dependencies(
    builder: Deployer, tmp_path: Path, archive_of: Archive
) -> None:
    app = tmp_path / "echo"
    app.mkdir()
    for name in ("main.py", "requirements.txt"):
        (app / name).write_text((EXAMPLES / "echo" / name).read_text())
    first = builder.deploy("echo", archive_of(app), actor="test")
    (app / "main.py").write_text((app / "main.py").read_text() + "\nVERSION = 2\n")
    lines: list[str] = []
    second = builder.deploy("echo", archive_of(app), actor="test", sink=lines.append)
    assert first.artifact and second.artifact and first.artifact.digest != second.artifact.digest
    assert any(line.startswith("-----> Reusing dependencies") for line in lines)
    assert first.artifact.command == second.artifact.command  # the same virtualenv
    assert second.release == 3


def test_the_same_source_twice_reuses_the_slug(builder: Deployer, archive_of: Archive) -> None:
    first = builder.deploy("echo", archive_of(EXAMPLES / "echo"), actor="test")
    lines: list[str] = []
    second = builder.deploy("echo", archive_of(EXAMPLES / "echo"), actor="test", sink=lines.append)
    assert first.artifact and second.artifact and first.artifact.digest == second.artifact.digest
    assert any("already built from this exact source" in line for line in lines)


def test_a_model_class_builds_and_predicts(builder: Deployer, archive_of: Archive) -> None:
    build = builder.deploy("echo", archive_of(APPS / "model_class"), actor="test")
    assert build.status is BuildStatus.SUCCEEDED and build.runtime == "model"
    assert build.artifact is not None
    with run_slug(build.artifact) as url:
        response = httpx.post(f"{url}/predict", json={"x": 4, "label": "q"})
        assert response.json() == {"output": {"value": 8.0, "label": "q"}}
        assert httpx.post(f"{url}/predict", json={"x": "four"}).status_code == 422


def test_a_wsgi_app_builds_and_serves(builder: Deployer, archive_of: Archive) -> None:
    build = builder.deploy("echo", archive_of(APPS / "wsgi_app"), actor="test")
    assert build.artifact is not None, build.error
    with run_slug(build.artifact) as url:
        assert httpx.get(f"{url}/hello").text == "wsgi says /hello"


@pytest.mark.parametrize(
    ("fixture", "cause"),
    [("syntax_error", "main.py:8: syntax error"),
     ("missing_requirement", "could not install the dependencies from requirements.txt"),
     ("no_app_object", "main.py defines no `app`"),
     ("no_runtime", "could not detect how to build this app")],
)  # fmt: skip
def test_bad_sources_fail_with_the_cause_and_release_nothing(
    builder: Deployer, archive_of: Archive, fixture: str, cause: str
) -> None:
    lines: list[str] = []
    build = builder.deploy("echo", archive_of(APPS / fixture), actor="test", sink=lines.append)
    assert build.status is BuildStatus.FAILED
    assert build.error is not None and cause in build.error
    errors = [line for line in lines if line.startswith(" !     ")]
    assert cause in "\n".join(errors)
    assert errors[-1] == " !     Nothing was released; the app keeps running its current release."
    assert builder.store.get_app("echo").release == 1
    assert builder.store.builds.log("echo", build.id) == "\n".join(lines) + "\n"


def test_the_syntax_error_names_file_and_line(builder: Deployer, archive_of: Archive) -> None:
    build = builder.deploy("echo", archive_of(APPS / "syntax_error"), actor="test")
    log = builder.store.builds.log("echo", build.id)
    assert " !     Build failed: main.py:8: syntax error: " in log


def test_the_missing_package_is_named(builder: Deployer, archive_of: Archive) -> None:
    build = builder.deploy("echo", archive_of(APPS / "missing_requirement"), actor="test")
    assert "kiln-no-such-package-anywhere" in builder.store.builds.log("echo", build.id)


def test_an_unsafe_archive_fails_the_build_not_the_platform(
    builder: Deployer, archive_of: Archive
) -> None:
    build = builder.deploy("echo", archive_of(APPS / "symlink_escape"), actor="test")
    assert build.status is BuildStatus.FAILED and build.error is not None
    assert "outside the app" in build.error


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


def test_the_release_command_runs_in_the_new_slug_with_the_app_config(
    builder: Deployer, archive_of: Archive, tmp_path: Path
) -> None:
    builder.store.update_config("echo", {"DATABASE_URL": "postgres://db/app"}, actor="test")
    command = (
        'python -c "import os, sys; '
        "print('migrating', os.environ['DATABASE_URL'], os.environ['GREETING'], sys.prefix)\""
    )
    lines: list[str] = []
    build = builder.deploy(
        "echo", archive_of(echo_with_release(tmp_path, command)), actor="test", sink=lines.append
    )
    assert build.status is BuildStatus.SUCCEEDED, "\n".join(lines)
    assert build.artifact is not None
    venv = Path(build.artifact.command[0]).parent.parent
    assert f"       migrating postgres://db/app world {venv}" in lines
    assert "-----> Release phase: the release command succeeded" in lines


def test_a_failing_release_command_fails_the_build_and_the_release_stays(
    builder: Deployer, archive_of: Archive, tmp_path: Path
) -> None:
    first = builder.deploy("echo", archive_of(EXAMPLES / "echo"), actor="test")
    lines: list[str] = []
    app = echo_with_release(tmp_path, "echo cannot reach the database; exit 3")
    build = builder.deploy("echo", archive_of(app), actor="test", sink=lines.append)
    assert build.status is BuildStatus.FAILED
    assert build.error is not None and build.error.startswith(
        "the release command `echo cannot reach the database; exit 3` exited with 3"
    )
    assert "       cannot reach the database" in lines
    assert builder.store.get_app("echo").release == first.release


def test_a_release_command_that_hangs_is_stopped(
    sqlite_store: Store, build_settings: Settings, archive_of: Archive, tmp_path: Path
) -> None:
    sqlite_store.create_app("echo", actor="test")
    settings = build_settings.model_copy(update={"release_timeout_s": 1.0})
    builder = deployer(sqlite_store, settings, SlugBuilder(settings))
    app = echo_with_release(tmp_path, "echo waiting for a lock; sleep 60")
    build = builder.deploy("echo", archive_of(app), actor="test")
    assert build.status is BuildStatus.FAILED and build.error is not None
    assert "`echo waiting for a lock; sleep 60` was stopped after 1 s" in build.error


@pytest.fixture
def secret_file() -> Iterator[Path]:
    """A file only the platform's user may read, where anyone may look (like secret.key)."""
    fd, name = tempfile.mkstemp(dir="/tmp", prefix="kiln-secret-")
    os.write(fd, b"TOPSECRET-do-not-leak\n")
    os.close(fd)
    yield Path(name)
    Path(name).unlink()


@pytest.mark.skipif(os.geteuid() != 0, reason="per-app uids need root")
def test_a_release_command_runs_as_the_apps_uid_and_cannot_read_the_platforms_files(
    builder: Deployer, archive_of: Archive, tmp_path: Path, secret_file: Path
) -> None:
    lines: list[str] = []
    command = f"id -u; echo HOME=$HOME; cat {secret_file}"
    build = builder.deploy(
        "echo", archive_of(echo_with_release(tmp_path, command)), actor="test", sink=lines.append
    )
    assert build.status is BuildStatus.FAILED
    log = "\n".join(lines)
    assert "Permission denied" in log and "TOPSECRET" not in log
    uid = next(int(line.strip()) for line in lines if line.strip().isdigit())
    assert uid == builder.settings.sandbox_uid_base + builder.store.sandbox_id("echo")
    assert f"HOME={builder.settings.resolved_sandbox_dir}/echo." in log


@pytest.mark.skipif(os.geteuid() != 0, reason="per-app uids need root")
def test_a_requirements_file_cannot_read_the_platforms_files_into_the_log(
    builder: Deployer, archive_of: Archive, tmp_path: Path, secret_file: Path
) -> None:
    """uv quotes the lines it cannot parse: run as root, a requirements file that includes
    another file would print that file into the build log."""
    app = tmp_path / "nosy_requirements"
    shutil.copytree(EXAMPLES / "echo", app)
    (app / "requirements.txt").write_text(f"fastapi\n-r {secret_file}\n")
    build = builder.deploy("echo", archive_of(app), actor="test")
    assert build.status is BuildStatus.FAILED
    log = builder.store.builds.log("echo", build.id)
    assert "TOPSECRET" not in log and "ermission denied" in log
