"""Garbage collection and app removal: what goes, what stays (and why), nothing a kept release,
a running deploy or a rollback needs."""

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kiln.builds.builder import Builder
from kiln.builds.slug import SlugBuilder
from kiln.deploy import Deployer
from kiln.git.repos import ensure_repo
from kiln.models import BuildStatus, GcReport, ReleaseStatus, TokenScope
from kiln.release.gc import GarbageKind, collect, sweep
from kiln.release.releaser import Releaser
from kiln.sandbox import sandbox_for
from kiln.settings import Settings
from kiln.store import Store
from tests.conftest import LiveApi
from tests.support.apps import EXAMPLES
from tests.support.fakes import FakeVectors

Archive = Callable[[Path], Path]
LATER = 2 * 3600  # past the hour a fresh artifact is spared


@pytest.fixture
def kept_one(build_settings: Settings) -> Settings:
    return build_settings.model_copy(update={"keep_releases": 1})


def deployer(store: Store, settings: Settings, vectors: FakeVectors | None = None) -> Deployer:
    providers = (lambda _kind, _settings: vectors) if vectors else None
    releaser = Releaser(store, settings, **({"providers": providers} if providers else {}))  # type: ignore[arg-type]
    return Deployer(store, Builder(settings, SlugBuilder(settings)), releaser)


def version_of(where: Path, n: int, extra_requirement: str = "") -> Path:
    app = where / f"v{n}"
    app.mkdir()
    (app / "main.py").write_text((EXAMPLES / "echo" / "main.py").read_text() + f"\n# v{n}\n")
    (app / "requirements.txt").write_text("fastapi\n" + extra_requirement)
    return app


def succeed(store: Store, app: str) -> None:
    for release in store.list_releases(app):
        if release.status is ReleaseStatus.PENDING:
            store.set_release_status(app, release.version, ReleaseStatus.SUCCEEDED)


def test_old_artifacts_go_and_the_kept_releases_stay(
    kept_one: Settings, archive_of: Archive, tmp_path: Path
) -> None:
    store = Store.open(kept_one)
    store.create_app("echo", actor="t")
    deploys = deployer(store, kept_one.model_copy(update={"keep_releases": 10}))  # all kept, yet
    builds = []
    for n, extra in ((1, ""), (2, "# another dependency set\n"), (3, "")):
        builds.append(deploys.deploy("echo", archive_of(version_of(tmp_path, n, extra)), actor="t"))
        succeed(store, "echo")
    assert all(b.status is BuildStatus.SUCCEEDED for b in builds)
    box = sandbox_for(kept_one, "echo", store.sandbox_id("echo"))
    live = builds[-1].artifact
    assert live is not None
    plan = collect(store, kept_one, None)
    slugs = {i.ref for i in plan.items if i.kind is GarbageKind.SLUG}
    venvs = {i.ref for i in plan.items if i.kind is GarbageKind.VENV}
    assert slugs == {b.artifact.reference for b in builds[:2] if b.artifact}
    assert live.reference not in slugs and str(Path(live.command[0]).parents[1]) not in venvs
    assert len(venvs) == 1  # v2's dependency set; v1 and v3 share the one v3 runs
    sweep(plan, None)
    assert sorted(p.name for p in box.slugs.iterdir()) == [Path(live.reference).name]
    assert (Path(live.reference) / "app" / "main.py").exists()
    deploys.deploy("echo", archive_of(version_of(tmp_path, 4)), actor="t")
    assert collect(store, kept_one, None).items  # what v4's deploy kept (ten) is kiln gc's now


def test_a_destroyed_app_leaves_nothing_and_a_new_one_starts_clean(
    build_settings: Settings, archive_of: Archive, tmp_path: Path
) -> None:
    store, vectors = Store.open(build_settings), FakeVectors()
    store.create_app("gone", actor="t")
    releaser = deployer(store, build_settings, vectors).releaser
    releaser.attach_addon("gone", "vector-store", None, "t")
    deployer(store, build_settings, vectors).deploy(
        "gone", archive_of(version_of(tmp_path, 1)), actor="t"
    )
    ensure_repo(build_settings.home, "gone")
    box = sandbox_for(build_settings, "gone", store.sandbox_id("gone"))
    build_settings.log_dir.mkdir(parents=True, exist_ok=True)
    (build_settings.log_dir / "gone.jsonl").write_text("{}\n")
    assert vectors.made == {"gone_vector-store"} and box.root.exists()
    assert releaser.destroy_app("gone") == []
    assert vectors.made == set()  # the database and role are gone too
    assert not box.root.exists() and not (build_settings.log_dir / "gone.jsonl").exists()
    assert not (build_settings.home / "repos" / "gone.git").exists()
    store.create_app("gone", actor="t")
    assert store.sandbox_id("gone") != int(box.root.name.rsplit(".", 1)[1])
    assert store.addons.all("gone") == [] and store.list_releases("gone")[0].version == 1


def test_models_a_kept_release_or_a_deploy_needs_are_never_pruned(
    build_settings: Settings,
) -> None:
    store = Store.open(build_settings)
    cache = build_settings.home / "models"
    for folder in ("models--org--old", "models--org--kept", "models--org--fetching",
                   "models--org--kept-lora"):  # fmt: skip
        (cache / folder / "blobs").mkdir(parents=True)
        (cache / folder / "blobs" / "w").write_bytes(b"\0" * 1000)
    store.create_app("chat", actor="t")
    from kiln.models import Artifact, ArtifactKind

    artifact = Artifact(kind=ArtifactKind.SLUG, reference="/s", digest="d", runtime="llm",
                        command=["python"])  # fmt: skip
    adapters = '"runtime": "llm", "llm": {"adapters": {"sql": "org/kept-lora@v1"}}'
    for model in ("org/kept", "org/newer"):  # v2 kept (a rollback target), v3 runs now
        build = store.builds.start("chat", actor="t")
        store.release_build("chat", build_id=build.id, artifact=artifact, description="d",
                            actor="t", manifest=f'{{"model": "{model}", {adapters}}}')  # fmt: skip
    plan = collect(store, build_settings, None, fetching={"org/fetching"}, now=time.time() + LATER)
    assert [Path(i.ref).name for i in plan.items if i.kind is GarbageKind.MODEL] == [
        "models--org--old"
    ]
    assert plan.kept_models == {"org/kept": ["chat v2"], "org/kept-lora": ["chat v2", "chat v3"],
                                "org/fetching": ["a deploy in progress needs it"]}  # fmt: skip


def test_a_stopped_deploys_uploads_and_scratch_go_at_the_next_start(settings: Settings) -> None:
    for folder in ("uploads", "builds"):
        (settings.home / folder / "left-behind").mkdir(parents=True)
    store = Store.open(settings)
    Releaser(store, settings).recover()
    assert list((settings.home / "uploads").iterdir()) == []
    assert list((settings.home / "builds").iterdir()) == []


def test_kiln_gc_dry_run_lists_what_it_would_free_and_only_an_admin_may_collect(
    live_api: LiveApi,
) -> None:
    store, settings = live_api.store, live_api.settings
    store.create_app("echo", actor="t")
    box = sandbox_for(settings, "echo", store.sandbox_id("echo"))
    stale = box.slugs / ("ab" * 32)  # a slug no release of echo runs
    (stale / "app").mkdir(parents=True)
    (stale / "app" / "main.py").write_bytes(b"#" * 4096)
    reader = store.create_token("r", scope=TokenScope.READ, apps=["echo"]).token
    with live_api.client(reader) as client:
        assert client.post("/gc", params={"dry_run": True}).status_code == 403
    with live_api.client() as client:
        plan = GcReport.model_validate(client.post("/gc", params={"dry_run": True}).json())
        assert plan.dry_run and plan.freed >= 4096
        # (tests share sandboxes, as one tenant's apps would: other tests' echo slugs go too)
        mine = next(i for i in plan.items if i.ref == str(stale))
        assert (mine.kind, mine.app, mine.why) == (
            "slug",
            "echo",
            "no kept release of echo runs it",
        )
        assert stale.exists()  # a dry run removes nothing
        done = GcReport.model_validate(client.post("/gc").json())
    assert not done.dry_run and done.freed == plan.freed and not stale.exists()
