"""The reconciler against an in-memory Serve: applies, judges releases, falls back, re-applies."""

from pathlib import Path
from typing import Any

import pytest

from kiln.control.platform import Platform
from kiln.models import Artifact, ArtifactKind, Formation, ReleaseStatus
from kiln.release.releaser import Releaser
from kiln.run.logs import read_records
from kiln.run.reconciler import Reconciler
from kiln.run.serve_api import AppState
from kiln.run.serve_config import FRONT, NO_RELEASE, STARTING, STOPPED
from kiln.settings import Settings
from kiln.store import Store
from tests.support.fakes import FakeServe

ARTIFACT = Artifact(
    kind=ArtifactKind.SLUG, reference="/s", digest="d1", runtime="python", command=["python"]
)


@pytest.fixture
def world(settings: Settings) -> tuple[Store, FakeServe, Reconciler]:
    store = Store.open(settings)
    serve = FakeServe()
    return store, serve, Reconciler(store, serve, settings)


def with_keys(store: Store, app: str) -> None:
    """The api-keys add-on, attached as ``kiln addons:create api-keys`` would."""
    Releaser(store, Settings(home=Path("/nonexistent"))).attach_addon(app, "api-keys", None, "t")


def deploy(store: Store, app: str, digest: str = "d1", manifest: str | None = None) -> int:
    build = store.builds.start(app, actor="t")
    artifact = ARTIFACT.model_copy(update={"digest": digest})
    return store.release_build(
        app, build_id=build.id, artifact=artifact, manifest=manifest, description="d", actor="t"
    ).version


def running(store: Store, serve: FakeServe, reconciler: Reconciler, app: str, digest: str) -> int:
    version = deploy(store, app, digest)
    reconciler.reconcile()
    serve.settle(app, "RUNNING")
    reconciler.reconcile()
    assert store.get_release(app, version).status is ReleaseStatus.SUCCEEDED
    return version


def config_of(serve: FakeServe, app: str) -> dict[str, Any]:
    return next(a for a in serve.applied[-1]["applications"] if a["name"] == app)


def test_apps_without_a_deploy_are_not_run(world: tuple[Store, FakeServe, Reconciler]) -> None:
    store, serve, reconciler = world
    store.create_app("idle", actor="t")
    reconciler.reconcile()
    assert [a["name"] for a in serve.applied[-1]["applications"]] == [FRONT]


def test_the_front_knows_each_apps_state_and_is_no_app(
    world: tuple[Store, FakeServe, Reconciler],
) -> None:
    """Requests no app's route takes reach the front, which says why: so it is told each app's
    state, changed live (user_config), and never shows among the apps."""
    store, serve, reconciler = world
    store.create_app("idle", actor="t")
    store.create_app("web", actor="t")
    store.create_app("off", actor="t")
    deploy(store, "web")
    deploy(store, "off")
    store.set_formation("off", Formation(min_replicas=0, max_replicas=0).model_dump_json())
    reconciler.reconcile()
    assert serve.front is not None and serve.front["route_prefix"] == "/"
    states = serve.front["deployments"][0]["user_config"]["apps"]
    assert states == {"idle": NO_RELEASE, "off": STOPPED, "web": STARTING}
    assert [a["name"] for a in serve.applied[-1]["applications"]] == ["web", FRONT]
    serve.apps[FRONT] = AppState(name=FRONT, status="RUNNING")
    reconciler.reconcile()
    assert FRONT not in reconciler.last_status and "web" in reconciler.last_status


def test_a_release_goes_pending_then_succeeded_when_serve_runs_it(
    world: tuple[Store, FakeServe, Reconciler],
) -> None:
    store, serve, reconciler = world
    store.create_app("echo", actor="t")
    version = deploy(store, "echo")
    assert store.get_release("echo", version).status is ReleaseStatus.PENDING
    reconciler.reconcile()
    assert serve.apps["echo"].release == version
    serve.settle("echo", "RUNNING")
    reconciler.reconcile()
    assert store.get_release("echo", version).status is ReleaseStatus.SUCCEEDED
    lines = [r.line for r in read_records(reconciler.settings.log_dir, "echo")]
    assert lines == [f"v{version} is live"]


def test_a_release_that_fails_is_marked_with_the_dyno_reason_and_the_previous_one_returns(
    world: tuple[Store, FakeServe, Reconciler],
) -> None:
    store, serve, reconciler = world
    store.create_app("echo", actor="t")
    good = deploy(store, "echo", "good")
    reconciler.reconcile()
    serve.settle("echo", "RUNNING")
    reconciler.reconcile()
    bad = deploy(store, "echo", "bad")
    reconciler.reconcile()
    serve.settle(
        "echo",
        "DEPLOY_FAILED",
        "Traceback ...\nkiln.run.supervisor.DynoFailed: the dyno of echo v3 exited with code 1 before it was ready; its last lines:\nKeyError: 'X'",
    )
    reconciler.reconcile()
    failed = store.get_release("echo", bad)
    assert failed.status is ReleaseStatus.FAILED
    assert failed.status_message is not None and failed.status_message.startswith(
        "the dyno of echo v3 exited with code 1"
    )
    assert "KeyError: 'X'" in failed.status_message
    reconciler.reconcile()  # the fallback: Serve is told to run the good release again
    assert serve.applied[-1]["applications"][0]["args"]["spec"]["release"] == good
    assert serve.applied[-1]["applications"][0]["args"]["spec"]["artifact"]["digest"] == "good"


def test_a_config_change_after_a_failed_deploy_keeps_the_good_artifact(
    world: tuple[Store, FakeServe, Reconciler],
) -> None:
    store, _serve, _reconciler = world
    store.create_app("echo", actor="t")
    deploy(store, "echo", "good")
    bad = deploy(store, "echo", "bad")
    store.set_release_status("echo", bad, ReleaseStatus.FAILED, "crashed")
    change = store.update_config("echo", {"FIX": "1"}, actor="t")
    assert change.release.artifact is not None and change.release.artifact.digest == "good"


def test_nothing_is_reapplied_when_nothing_changed(
    world: tuple[Store, FakeServe, Reconciler],
) -> None:
    store, serve, reconciler = world
    store.create_app("echo", actor="t")
    deploy(store, "echo")
    reconciler.reconcile()
    reconciler.reconcile()
    assert len(serve.applied) == 1


def test_apps_lost_by_serve_are_reapplied(world: tuple[Store, FakeServe, Reconciler]) -> None:
    store, serve, reconciler = world
    store.create_app("echo", actor="t")
    deploy(store, "echo")
    reconciler.reconcile()
    serve.apps.clear()  # Ray restarted: Serve knows nothing
    reconciler.reconcile()
    assert len(serve.applied) == 2 and "echo" in serve.apps


def test_a_new_reconciler_reapplies_the_same_config(
    world: tuple[Store, FakeServe, Reconciler], settings: Settings
) -> None:
    store, serve, reconciler = world
    store.create_app("echo", actor="t")
    deploy(store, "echo")
    reconciler.reconcile()
    Reconciler(store, serve, settings).reconcile()  # a restarted control plane
    assert serve.applied[0] == serve.applied[1]  # identical: Serve keeps its replicas


def test_rollback_runs_the_old_artifact_and_config(
    world: tuple[Store, FakeServe, Reconciler],
) -> None:
    store, serve, reconciler = world
    store.create_app("echo", actor="t")
    first = deploy(store, "echo", "one")
    store.set_release_status("echo", first, ReleaseStatus.SUCCEEDED)
    store.update_config("echo", {"MODE": "new"}, actor="t")
    deploy(store, "echo", "two")
    back = store.rollback("echo", None, actor="t")
    assert (
        back.description == f"Rollback to v{first}"
        and back.artifact is not None
        and back.artifact.digest == "one"
    )
    assert back.config_keys == []  # v2's config, from before MODE was set
    reconciler.reconcile()
    assert serve.applied[-1]["applications"][0]["args"]["spec"]["release"] == back.version


def test_rollback_needs_something_that_ran(world: tuple[Store, FakeServe, Reconciler]) -> None:
    from kiln.errors import InvalidInput

    store, _serve, _reconciler = world
    store.create_app("echo", actor="t")
    with pytest.raises(InvalidInput, match="no earlier release that ran"):
        store.rollback("echo", None, actor="t")
    with pytest.raises(InvalidInput, match="v1 of echo ran nothing"):
        store.rollback("echo", 1, actor="t")


def test_log_dir_is_under_home(settings: Settings) -> None:
    assert settings.log_dir == Path(settings.home) / "logs" / "apps"


def test_api_keys_reach_replicas_as_user_config(world: tuple[Store, FakeServe, Reconciler]) -> None:
    store, serve, reconciler = world
    store.create_app("open", actor="t")
    store.create_app("closed", actor="t")
    with_keys(store, "closed")
    deploy(store, "open")
    deploy(store, "closed")
    made = store.keys.create("closed", "ci", None, 5.0)
    reconciler.reconcile()
    configs = {
        a["name"]: a["deployments"][0]["user_config"] for a in serve.applied[-1]["applications"]
    }
    assert configs["open"] == {"public": True}
    assert configs["closed"]["public"] is False
    [rule] = configs["closed"]["keys"]
    assert rule["id"] == made.id and rule["rate_per_s"] == 5.0 and made.key not in str(configs)
    store.keys.revoke("closed", made.prefix)
    reconciler.reconcile()
    assert serve.applied[-1]["applications"][0]["deployments"][0]["user_config"]["keys"] == []


def test_a_release_no_node_can_hold_fails_at_once_and_the_previous_one_keeps_running(
    settings: Settings,
) -> None:
    from kiln.gpu.capacity import NodeResources
    from kiln.manifest import parse_manifest

    store = Store.open(settings)
    serve = FakeServe()
    nodes = [NodeResources("head", 0), NodeResources("gpu-1", 1, "H100")]
    reconciler = Reconciler(store, serve, settings, nodes=lambda: nodes)
    store.create_app("llm", actor="t")

    def deploy_with(manifest: str, digest: str) -> int:
        build = store.builds.start("llm", actor="t")
        artifact = ARTIFACT.model_copy(update={"digest": digest})
        manifest_json = parse_manifest(manifest).model_dump_json()
        return store.release_build(
            "llm",
            build_id=build.id,
            artifact=artifact,
            manifest=manifest_json,
            description="d",
            actor="t",
        ).version

    good = deploy_with('[resources]\ngpu = ["A100", "H100:1"]\n', "fits")
    reconciler.reconcile()
    options = serve.applied[-1]["applications"][0]["deployments"][0]["ray_actor_options"]
    assert (
        options["accelerator_type"] == "H100" and options["num_gpus"] == 1
    )  # the second preference
    serve.settle("llm", "RUNNING")
    reconciler.reconcile()
    bad = deploy_with('[resources]\ngpu = "H100:2"\n', "too-big")
    reconciler.reconcile()
    failed = store.get_release("llm", bad)
    assert failed.status is ReleaseStatus.FAILED
    assert (
        failed.status_message
        == "cannot be placed: needs 2 x H100 per replica; the largest H100 node has 1 (node gpu-1)"
    )
    assert serve.applied[-1]["applications"][0]["args"]["spec"]["release"] == good  # never deployed


def test_on_an_autoscaling_cluster_a_gpu_app_waits_for_a_node_instead_of_failing(
    settings: Settings,
) -> None:
    from kiln.gpu.capacity import NodeResources
    from kiln.manifest import parse_manifest

    store = Store.open(settings)
    serve = FakeServe()
    nodes = [NodeResources("head", 0)]  # GPU workers scaled to zero
    autoscaling = settings.model_copy(update={"cluster_autoscales": True})
    reconciler = Reconciler(store, serve, autoscaling, nodes=lambda: nodes)
    store.create_app("llm", actor="t")
    build = store.builds.start("llm", actor="t")
    manifest = parse_manifest('[resources]\ngpu = ["H100:2", "A100:2"]\n').model_dump_json()
    version = store.release_build("llm", build_id=build.id, artifact=ARTIFACT, manifest=manifest,
                                  description="d", actor="t").version  # fmt: skip
    reconciler.reconcile()
    assert store.get_release("llm", version).status is ReleaseStatus.PENDING  # not failed
    options = serve.applied[-1]["applications"][0]["deployments"][0]["ray_actor_options"]
    assert options["accelerator_type"] == "H100" and options["num_gpus"] == 2  # what Ray asks for
    assert reconciler.waiting["llm"] == (
        "no node can hold a replica yet (no node has H100s (the cluster has: no GPUs); no node "
        "has A100s (the cluster has: no GPUs)); Ray's autoscaler was asked for a node that can"
    )


def test_gpu_memory_reserves_its_share_and_nvml_is_asked_once_per_node(settings: Settings) -> None:
    from kiln.gpu.capacity import NodeResources
    from kiln.manifest import parse_manifest
    from kiln.models import GpuInfo, NodeInventory

    store = Store.open(settings)
    serve = FakeServe()
    asked = []

    def inventory() -> list[NodeInventory]:
        asked.append(1)
        gpu = GpuInfo(index=0, uuid="GPU-0", name="NVIDIA H100", memory_total=80 * 1024**3,
                      memory_used=0)  # fmt: skip
        return [NodeInventory(node_id="g1", gpus=[gpu])]

    nodes = [NodeResources("head", 0, node_id="h"), NodeResources("gpu-1", 1, "H100", node_id="g1")]
    reconciler = Reconciler(store, serve, settings, nodes=lambda: nodes, inventory=inventory)
    store.create_app("emb", actor="t")
    build = store.builds.start("emb", actor="t")
    manifest = parse_manifest('[resources]\ngpu = "H100:0.1"\ngpu_memory = "20Gi"\n')
    store.release_build("emb", build_id=build.id, artifact=ARTIFACT,
                        manifest=manifest.model_dump_json(), description="d", actor="t")  # fmt: skip
    reconciler.reconcile()
    reconciler.reconcile()
    options = serve.applied[-1]["applications"][0]["deployments"][0]["ray_actor_options"]
    assert options["num_gpus"] == 0.25 and options["accelerator_type"] == "H100"
    assert len(asked) == 1  # a GPU's size does not change: NVML is not asked on every pass


def test_ps_shows_the_gpus_each_dyno_of_a_gpu_app_uses(settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from kiln.api import create_app
    from kiln.gpu.capacity import NodeResources
    from kiln.models import GpuInfo, GpuProcess, NodeInventory

    nodes = [NodeResources("gpu-1", 1, "H100", node_id="g1")]
    store, reconciler = running_apps(
        settings, {"llm": '[resources]\ngpu = "H100"\n', "web": ""}, nodes=lambda: nodes
    )

    class Gpus:
        asked = 0

        def inventory(self) -> list[NodeInventory]:
            Gpus.asked += 1
            return [NodeInventory(node_id="g1", gpus=[GpuInfo(
                index=0, uuid="GPU-0", name="NVIDIA H100 80GB HBM3", memory_total=80 * 2**30,
                memory_used=13 * 2**30, utilization=45,
                processes=[GpuProcess(pid=7, memory_used=12 * 2**30, app="llm", replica="dyno.abc123"),
                           GpuProcess(pid=8, memory_used=2**30, app="other", replica="dyno.zzz999")])])]  # fmt: skip

    token = store.create_token("t").token
    platform = Platform(settings, store=store, reconciler=reconciler)
    platform.gpus = Gpus()  # type: ignore[assignment]
    with TestClient(create_app(platform)) as api:
        api.headers["Authorization"] = f"Bearer {token}"
        llm = api.get("/apps/llm/ps").json()
        web = api.get("/apps/web/ps").json()
        asked_by_ps = Gpus.asked
        metrics = api.get("/metrics")
    assert llm["replicas"][0]["gpus"] == [{
        "uuid": "GPU-0", "name": "NVIDIA H100 80GB HBM3", "memory_used": 12 * 2**30,
        "memory_total": 80 * 2**30, "utilization": 45}]  # fmt: skip
    assert web["replicas"][0]["gpus"] == [] and asked_by_ps == 1  # a CPU app never asks NVML
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    lines = metrics.text.splitlines()
    assert 'kiln_app_replicas{app="llm",state="RUNNING"} 1.0' in lines
    assert 'kiln_app_replicas{app="web",state="RUNNING"} 1.0' in lines
    assert ('kiln_dyno_gpu_memory_used_bytes{app="llm",dyno="dyno.abc123",gpu="GPU-0",node=""} '
            "1.2884901888e+10") in [" ".join(sorted_labels(line)) for line in lines]  # fmt: skip
    assert any(line.startswith("kiln_gpu_utilization_percent{") and 'app="llm"' in line
               and line.endswith(" 45.0") for line in lines)  # fmt: skip


def running_apps(
    settings: Settings, manifests: dict[str, str], **options: Any
) -> tuple[Store, Reconciler]:
    """Apps released with these kiln.toml texts, each with one RUNNING replica (dyno.abc123)
    as a fake Serve reports it, the reconciler having read that."""
    from kiln.manifest import parse_manifest
    from kiln.run.serve_api import ReplicaState

    store = Store.open(settings)
    serve = FakeServe()
    reconciler = Reconciler(store, serve, settings, **options)
    for app, manifest in manifests.items():
        store.create_app(app, actor="t")
        build = store.builds.start(app, actor="t")
        store.release_build(app, build_id=build.id, artifact=ARTIFACT, description="d", actor="t",
                            manifest=parse_manifest(manifest).model_dump_json())  # fmt: skip
    reconciler.reconcile()
    for app in manifests:
        serve.apps[app] = serve.apps[app].model_copy(update={"status": "RUNNING", "replicas": [
            ReplicaState(replica_id="abc123xyz", state="RUNNING", node_ip="10.0.0.5")]})  # fmt: skip
    reconciler.reconcile()
    return store, reconciler


def sorted_labels(line: str) -> list[str]:
    """A Prometheus sample line with its labels in name order, for stable comparison."""
    if "{" not in line:
        return [line]
    name, rest = line.split("{", 1)
    labels, value = rest.rsplit("} ", 1)
    return [name + "{" + ",".join(sorted(labels.split(","))) + "}", value]


def test_an_app_serve_refuses_fails_alone_and_the_others_keep_deploying(
    world: tuple[Store, FakeServe, Reconciler],
) -> None:
    store, serve, reconciler = world
    for app in ("echo", "poison"):
        store.create_app(app, actor="t")
    with_keys(store, "echo")
    key = store.keys.create("echo", "ci", None, None)
    running(store, serve, reconciler, "echo", "e1")
    good_poison = running(store, serve, reconciler, "poison", "p1")
    bad = deploy(store, "poison", "p2")
    serve.refuse.add(("poison", bad))
    newer_echo = deploy(store, "echo", "e2")
    reconciler.reconcile()
    failed = store.get_release("poison", bad)
    assert failed.status is ReleaseStatus.FAILED
    assert failed.status_message is not None
    assert failed.status_message.startswith("Ray Serve refuses its config: Ray Serve refused")
    # In the same pass, the other app's deploy went ahead.
    assert config_of(serve, "echo")["args"]["spec"]["release"] == newer_echo
    # And it still scales and revokes keys while poison stays refused.
    store.set_formation("echo", Formation(min_replicas=3, max_replicas=3).model_dump_json())
    store.keys.revoke("echo", key.prefix)
    reconciler.reconcile()
    echo = config_of(serve, "echo")["deployments"][0]
    assert echo["num_replicas"] == 3 and echo["user_config"]["keys"] == []
    assert config_of(serve, "poison")["args"]["spec"]["release"] == good_poison


def test_a_stored_manifest_this_version_refuses_fails_its_release_alone(
    world: tuple[Store, FakeServe, Reconciler],
) -> None:
    """A release recorded by an older Kiln, whose manifest Serve would refuse (a queue of 0)."""
    store, serve, reconciler = world
    for app in ("echo", "old"):
        store.create_app(app, actor="t")
    running(store, serve, reconciler, "old", "o1")
    stale = deploy(store, "old", "o2", manifest='{"scaling": {"max_queued_requests": 0}}')
    fresh = deploy(store, "echo", "e1")
    reconciler.reconcile()
    failed = store.get_release("old", stale)
    assert failed.status is ReleaseStatus.FAILED and failed.status_message is not None
    assert "its kiln.toml is not valid any more" in failed.status_message
    assert "max_queued_requests" in failed.status_message
    assert config_of(serve, "echo")["args"]["spec"]["release"] == fresh
    assert config_of(serve, "old")["args"]["spec"]["artifact"]["digest"] == "o1"


def test_it_says_when_the_apps_it_brings_back_serve_again(
    world: tuple[Store, FakeServe, Reconciler], capsys: pytest.CaptureFixture[str]
) -> None:
    store, serve, reconciler = world
    for app in ("web", "chat"):
        store.create_app(app, actor="t")
        running(store, serve, reconciler, app, "d1")
    reconciler.announce()
    assert "-----> Bringing back 2 app(s): chat, web" in capsys.readouterr().out
    serve.apps = {}  # Ray restarted: Serve has nothing until the reconciler applies
    reconciler.applied = None
    reconciler.reconcile()
    assert "serves" not in capsys.readouterr().out  # both still deploying
    serve.settle("web", "RUNNING")
    serve.settle("chat", "DEPLOY_FAILED")
    reconciler.reconcile()
    said = capsys.readouterr().out
    assert "-----> Not every app serves: 1 of 2 apps serve again" in said
    assert "not: chat (DEPLOY_FAILED)" in said
    reconciler.reconcile()
    assert capsys.readouterr().out == ""  # said once

    store.create_app("off", actor="t")  # scaled to 0: not brought back, not waited for
    deploy(store, "off")
    store.set_formation("off", Formation(min_replicas=0, max_replicas=0).model_dump_json())
    reconciler.announce()
    assert "-----> Bringing back 3 app(s): chat, off, web" in capsys.readouterr().out
    serve.settle("chat", "RUNNING")
    reconciler.reconcile()
    assert "-----> Every app serves again (2, " in capsys.readouterr().out
