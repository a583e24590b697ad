"""A deploy is atomic: the release and its add-ons exist together, or nothing changed. Each test
stops the control plane at one step (an exception no code catches, as a kill would be), starts
it again over the same store, and checks what is there."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kiln.builds.builder import Builder
from kiln.builds.slug import SlugBuilder
from kiln.deploy import Deployer
from kiln.models import BuildStatus, ReleaseStatus
from kiln.release.releaser import Releaser
from kiln.settings import Settings
from kiln.store import Store
from tests.support.apps import EXAMPLES
from tests.support.fakes import FakeVectors

Archive = Callable[[Path], Path]


class Stopped(BaseException):
    """The control plane stopped here (a kill runs no cleanup: nothing may catch this)."""


@pytest.fixture
def vectors() -> FakeVectors:
    return FakeVectors()


@pytest.fixture
def store(build_settings: Settings) -> Iterator[Store]:
    opened = Store.open(build_settings)
    opened.create_app("rag", actor="t")
    yield opened
    opened.close()


def control_plane(
    store: Store, settings: Settings, vectors: FakeVectors, stop_at: str | None = None
) -> Deployer:
    def checkpoint(step: str) -> None:
        if step == stop_at:
            raise Stopped(step)

    releaser = Releaser(store, settings, providers=lambda _kind, _settings: vectors,  # type: ignore[arg-type,return-value]
                        checkpoint=checkpoint)  # fmt: skip
    return Deployer(store, Builder(settings, SlugBuilder(settings)), releaser)


def app_with_vectors(where: Path, release: str | None = None) -> Path:
    app = where / "rag"
    app.mkdir(exist_ok=True)
    for name in ("main.py", "requirements.txt"):
        (app / name).write_text((EXAMPLES / "echo" / name).read_text())
    extra = f"release = {release!r}\n" if release else ""
    (app / "kiln.toml").write_text(f'runtime = "python"\naddons = ["vector-store"]\n{extra}')
    return app


def nothing_changed(store: Store, vectors: FakeVectors) -> None:
    assert store.get_app("rag").release == 1
    assert [r.version for r in store.list_releases("rag")] == [1]
    assert store.addons.all("rag") == [] and store.addons.pending() == []
    assert "KILN_VECTOR_URL" not in store.get_config("rag")
    assert vectors.made == set()
    [build] = store.builds.list("rag")
    assert build.status is BuildStatus.FAILED and build.release is None


@pytest.mark.parametrize("step", ["built", "addons provisioned", "release phase done"])
def test_a_stop_before_the_release_is_recorded_leaves_nothing_after_the_restart(
    store: Store, build_settings: Settings, vectors: FakeVectors, archive_of: Archive,
    tmp_path: Path, step: str,
) -> None:  # fmt: skip
    deployer = control_plane(store, build_settings, vectors, stop_at=step)
    with pytest.raises(Stopped):
        deployer.deploy("rag", archive_of(app_with_vectors(tmp_path)), actor="t")
    assert store.builds.list("rag")[0].status is BuildStatus.BUILDING  # as the stop left it
    control_plane(store, build_settings, vectors).releaser.recover()  # the next start
    nothing_changed(store, vectors)


def test_a_stop_after_the_release_is_recorded_keeps_all_of_it(
    store: Store, build_settings: Settings, vectors: FakeVectors, archive_of: Archive,
    tmp_path: Path,
) -> None:  # fmt: skip
    deployer = control_plane(store, build_settings, vectors, stop_at="recorded")
    with pytest.raises(Stopped):
        deployer.deploy("rag", archive_of(app_with_vectors(tmp_path)), actor="t")
    control_plane(store, build_settings, vectors).releaser.recover()
    release = store.get_release("rag", 2)
    assert release.status is ReleaseStatus.PENDING  # the reconciler rolls it out when it runs
    assert release.config_keys == ["KILN_VECTOR_URL"]
    assert [a.name for a in store.addons.all("rag")] == ["vector-store"]
    assert vectors.made == {"rag_vector-store"}
    [build] = store.builds.list("rag")
    assert build.status is BuildStatus.SUCCEEDED and build.release == 2


def test_a_failing_release_command_undoes_the_addon_it_brought(
    store: Store, build_settings: Settings, vectors: FakeVectors, archive_of: Archive,
    tmp_path: Path,
) -> None:  # fmt: skip
    seen: list[str] = []
    deployer = control_plane(store, build_settings, vectors)
    app = app_with_vectors(tmp_path, release='sh -c "echo url=$KILN_VECTOR_URL; exit 3"')
    build = deployer.deploy("rag", archive_of(app), actor="t", sink=seen.append)
    assert "       url=postgresql://db/rag" in seen  # the release phase had the add-on's config
    assert build.error is not None and "exited with 3" in build.error
    nothing_changed(store, vectors)


def test_a_good_deploy_records_release_addon_and_build_together(
    store: Store, build_settings: Settings, vectors: FakeVectors, archive_of: Archive,
    tmp_path: Path,
) -> None:  # fmt: skip
    notified: list[bool] = []
    deployer = control_plane(store, build_settings, vectors)
    deployer.releaser.notify = lambda: notified.append(True)
    build = deployer.deploy("rag", archive_of(app_with_vectors(tmp_path)), actor="t")
    assert build.status is BuildStatus.SUCCEEDED and build.release == 2
    assert store.get_release("rag", 2).description.startswith("Deploy build")
    assert notified == [True]  # the reconciler was woken by the release writer itself
    assert "-----> Released v2" in store.builds.log("rag", build.id)
