"""Canary rollouts: the judgement (pure), the figures from router lines, the store's lifecycle
of a canary release, and the Serve config that puts it on a share of the replicas."""

import pytest

from kiln.manifest import Manifest, Rollout
from kiln.models import Artifact, ArtifactKind, LogRecord, LogSource, ReleaseStatus
from kiln.release.canary import Action, Figures, canary_failure, figures, judge
from kiln.run.serve_config import Deployable, application_config, canary_period
from kiln.settings import Settings
from kiln.store import Store

AUTO = Rollout(canary=25, auto=600, min_requests=20)


def router(release: int, status: int, ms: float, ts: float = 0.0) -> LogRecord:
    return LogRecord(ts=ts, source=LogSource.ROUTER, process="dyno.x", release=release,
                     line=f"GET / {status} {ms:.1f}ms")  # fmt: skip


def test_figures_come_from_one_releases_router_lines() -> None:
    records = [router(2, 200, 10.0 + i) for i in range(20)] + [router(3, 500, 5.0)]
    records.append(LogRecord(ts=0, source=LogSource.DYNO, process="dyno.x", line="GET / 500 1ms"))
    found = figures(records, 2)
    assert (found.requests, found.errors, found.p95_ms) == (20, 0, 28.0)  # nearest rank
    assert figures(records, 3).error_rate == 100.0 and figures(records, 9) == Figures()


@pytest.mark.parametrize(
    ("stable", "canary", "elapsed", "action", "says"),
    [
        (Figures(100, 0, 20), Figures(10, 5, 20), 60, Action.WAIT, "being judged"),  # too few yet
        (Figures(100, 0, 20), Figures(40, 10, 20), 60, Action.ABORT, "25.0% of its answers"),
        (Figures(100, 1, 20), Figures(40, 1, 20), 60, Action.WAIT, "being judged"),  # 2.5% <= 3%
        (Figures(100, 0, 20), Figures(40, 0, 200), 60, Action.ABORT, "p95 latency of 200 ms"),
        (Figures(100, 0, 20), Figures(40, 0, 25), 600, Action.PROMOTE, "within bounds for 10m"),
        (Figures(0, 0, None), Figures(0, 0, None), 700, Action.PROMOTE, "served no requests"),
    ],
)  # fmt: skip
def test_the_judgement(
    stable: Figures, canary: Figures, elapsed: float, action: Action, says: str
) -> None:
    decision = judge(stable, canary, elapsed_s=elapsed, rollout=AUTO)
    assert decision.action is action and says in decision.reason


def test_a_canary_whose_dyno_failed_is_aborted_at_once() -> None:
    records = [LogRecord(ts=0, source=LogSource.RELEASE, process="dyno.a", release=3,
                         line="canary v3 failed: the dyno of x v3 exited with code 1\nTraceback")]  # fmt: skip
    failed = canary_failure(records, 3)
    assert failed == "the dyno of x v3 exited with code 1"
    decision = judge(Figures(), Figures(), elapsed_s=1, rollout=AUTO, failed=failed)
    assert decision.action is Action.ABORT and "its dyno failed" in decision.reason


def test_the_share_falls_on_every_nth_rank_and_always_on_one() -> None:
    assert [canary_period(s) for s in (1, 10, 25, 33, 50, 99)] == [100, 10, 4, 3, 2, 1]
    on = [rank for rank in range(8) if rank % canary_period(25) == 0]
    assert on == [0, 4]


ARTIFACT = Artifact(kind=ArtifactKind.SLUG, reference="/s", digest="d", runtime="python",
                    command=["python"])  # fmt: skip


def deploy(store: Store, canary: int | None = None, digest: str = "d") -> int:
    build = store.builds.start("echo", actor="t")
    return store.release_build(
        "echo", build_id=build.id, artifact=ARTIFACT.model_copy(update={"digest": digest}),
        manifest=None, description="d", actor="t", canary=canary,
    ).version  # fmt: skip


@pytest.fixture
def store(settings: Settings) -> Store:
    opened = Store.open(settings)
    opened.create_app("echo", actor="t")
    return opened


def test_a_canary_runs_beside_the_last_release_that_went_live(store: Store) -> None:
    stable = deploy(store, digest="old")
    store.set_release_status("echo", stable, ReleaseStatus.SUCCEEDED)
    canary = deploy(store, canary=25, digest="new")
    [item] = store.deployables()
    assert item.release == stable and item.artifact.digest == "old"
    assert item.canary is not None and item.canary.release == canary and item.canary.share == 25
    store.canary_started("echo", canary)
    assert store.get_release("echo", canary).status is ReleaseStatus.CANARY
    promoted = store.end_canary("echo", promote=True, reason="looks good")
    assert promoted.status is ReleaseStatus.PENDING and promoted.canary == 25
    [item] = store.deployables()
    assert item.release == canary and item.canary is None  # now a plain rollout


def test_an_aborted_canary_fails_and_the_last_release_stays(store: Store) -> None:
    stable = deploy(store)
    store.set_release_status("echo", stable, ReleaseStatus.SUCCEEDED)
    canary = deploy(store, canary=50)
    aborted = store.end_canary("echo", promote=False, reason="5xx")
    assert (
        aborted.status is ReleaseStatus.FAILED and aborted.status_message == "canary aborted: 5xx"
    )
    [item] = store.deployables()
    assert item.release == stable and item.canary is None
    assert canary == aborted.version


def test_a_config_change_during_a_canary_ends_it_and_keeps_the_last_artifact(store: Store) -> None:
    stable = deploy(store, digest="old")
    store.set_release_status("echo", stable, ReleaseStatus.SUCCEEDED)
    canary = deploy(store, canary=25, digest="new")
    change = store.update_config("echo", {"A": "1"}, actor="t")
    assert change.release.artifact is not None and change.release.artifact.digest == "old"
    ended = store.get_release("echo", canary)
    assert ended.status is ReleaseStatus.FAILED and ended.status_message is not None
    assert f"v{change.release.version} came before it was promoted" in ended.status_message


def test_a_first_release_has_nothing_to_be_judged_against_and_rolls_out(store: Store) -> None:
    deploy(store, canary=25)
    [item] = store.deployables()
    assert item.canary is None


def test_the_serve_config_carries_the_canary_to_the_replicas(store: Store) -> None:
    manifest = Manifest.model_validate({"scaling": {"min_replicas": 4, "max_replicas": 4}})
    canary = Deployable("echo", 3, ARTIFACT, "sealed3", manifest)
    item = Deployable("echo", 2, ARTIFACT, "sealed2", manifest, canary=canary, canary_share=25)
    config = application_config(item, log_dir="/l", docker_host=None)
    assert config is not None
    assert config["args"]["spec"]["release"] == 2  # the replicas' release stays the stable one
    user_config = config["deployments"][0]["user_config"]
    assert user_config["canary"]["share"] == 25
    assert user_config["canary"]["spec"]["release"] == 3
    assert user_config["canary"]["spec"]["config_sealed"] == "sealed3"
