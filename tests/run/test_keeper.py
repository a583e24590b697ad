"""The supervisor's policy with a fake dyno and a fake clock: start and wait for health, restart
in place, give up on a crash loop, swap for a canary and back."""

import asyncio

import pytest

from kiln.models import Artifact, ArtifactKind
from kiln.run.keeper import DynoFailed, DynoKeeper
from kiln.run.spec import DynoSpec
from tests.support.fakes import FakeClock, FakeHost

ARTIFACT = Artifact(kind=ArtifactKind.SLUG, reference="/s", digest="d" * 20, runtime="python",
                    command=["python"])  # fmt: skip


def spec(release: int, startup_timeout_s: float = 30) -> DynoSpec:
    return DynoSpec(app="echo", release=release, artifact=ARTIFACT, config_sealed="x",
                    log_dir="/l", startup_timeout_s=startup_timeout_s)  # fmt: skip


async def settle(clock: FakeClock, seconds: float = 5.0) -> None:
    """Let the keeper's tasks run for a while of fake time."""
    end = clock.t + seconds
    while clock.t < end:
        await clock.sleep(0.05)


def run(test: object) -> None:
    asyncio.run(test())  # type: ignore[operator]


def test_it_starts_the_dyno_and_waits_for_its_health() -> None:
    async def test() -> None:
        host, clock = FakeHost(lambda _r: (5, False)), FakeClock()
        keeper = DynoKeeper(spec(2), host, clock)
        await keeper.start()
        assert keeper.ready.is_set() and keeper.generation == 1
        assert host.made[0].probes == 5
        assert ("release", "dyno ready at http://dyno-v2", 2) in host.lines

    run(test)


def test_a_dyno_that_exits_at_start_fails_with_its_last_lines() -> None:
    async def test() -> None:
        keeper = DynoKeeper(spec(2), FakeHost(lambda _r: (1, True)), FakeClock())
        with pytest.raises(DynoFailed, match="exited with code 1 before it was ready; its last "
                                             "lines:\nv2 says goodbye"):  # fmt: skip
            await keeper.start()

    run(test)


def test_a_dyno_that_never_answers_is_stopped_at_its_start_time() -> None:
    async def test() -> None:
        host = FakeHost(lambda _r: (10**9, False))
        keeper = DynoKeeper(spec(2, startup_timeout_s=3), host, FakeClock())
        with pytest.raises(DynoFailed, match="did not answer /healthz with 200 within 3s"):
            await keeper.start()
        assert not host.made[0].running

    run(test)


def test_an_exit_is_restarted_in_place_and_a_crash_loop_gives_up() -> None:
    async def test() -> None:
        host, clock = FakeHost(), FakeClock()
        keeper = DynoKeeper(spec(2), host, clock)
        await keeper.start()
        watch = asyncio.create_task(keeper.watch())
        for crash in range(2):
            keeper.dyno.crash()
            await settle(clock, 1)
            assert keeper.ready.is_set() and keeper.generation == 2 + crash
        keeper.dyno.crash()  # the third exit within a minute
        await settle(clock, 1)
        assert keeper.failed is not None and "crashed 3 times in 60s" in keeper.failed
        assert watch.done() and not await keeper.wait_ready()

    run(test)


def test_exits_far_apart_are_not_a_crash_loop() -> None:
    async def test() -> None:
        clock = FakeClock()
        keeper = DynoKeeper(spec(2), FakeHost(), clock)
        await keeper.start()
        watch = asyncio.create_task(keeper.watch())
        for _ in range(5):
            keeper.dyno.crash()
            await settle(clock, 40)
        assert keeper.failed is None and keeper.ready.is_set() and keeper.generation == 6
        watch.cancel()

    run(test)


def test_a_canary_swaps_in_and_out_in_place() -> None:
    async def test() -> None:
        host, clock = FakeHost(), FakeClock()
        keeper = DynoKeeper(spec(2), host, clock)
        await keeper.start()
        keeper.want(spec(3))
        await settle(clock)
        assert keeper.spec.release == 3 and keeper.ready.is_set()
        assert not host.made[0].running and host.made[1].running
        keeper.want(keeper.base)  # the canary ended
        await settle(clock)
        assert keeper.spec.release == 2 and host.made[2].running
        said = [line for _s, line, _r in host.lines if line.startswith("switching")]
        assert said == ["switching to v3 (canary)", "switching to v2 from the canary v3"]

    run(test)


def test_a_canary_that_will_not_start_goes_back_and_is_not_tried_again() -> None:
    async def test() -> None:
        host, clock = FakeHost(lambda release: (1, release == 3)), FakeClock()
        keeper = DynoKeeper(spec(2), host, clock)
        await keeper.start()
        keeper.want(spec(3))
        await settle(clock)
        assert keeper.spec.release == 2 and keeper.ready.is_set() and keeper.failed is None
        assert any(line.startswith("canary v3 failed: the dyno of echo v3 exited with code 1")
                   for _s, line, _r in host.lines)  # fmt: skip
        made = len(host.made)
        keeper.want(spec(3))  # a key change re-sends the same canary: it is not tried again
        await settle(clock)
        assert len(host.made) == made and keeper.spec.release == 2

    run(test)


def test_artifacts_are_brought_first_and_a_canarys_while_the_old_dyno_serves() -> None:
    async def test() -> None:
        host, clock = FakeHost(), FakeClock()
        keeper = DynoKeeper(spec(2), host, clock)
        await keeper.start()
        assert host.prepared == [2]
        host.unreachable.add(3)  # the node cannot get v3's artifact
        keeper.want(spec(3))
        await settle(clock)
        assert host.prepared == [2, 3] and len(host.made) == 1 and host.made[0].running
        assert keeper.spec.release == 2 and keeper.ready.is_set() and keeper.failed is None
        assert any("canary v3 failed: could not bring v3's artifact" in line
                   for _s, line, _r in host.lines)  # fmt: skip

    run(test)


def test_a_canary_in_a_crash_loop_goes_back_instead_of_failing_the_replica() -> None:
    async def test() -> None:
        host, clock = FakeHost(), FakeClock()
        keeper = DynoKeeper(spec(2), host, clock)
        await keeper.start()
        watch = asyncio.create_task(keeper.watch())
        keeper.want(spec(3))
        await settle(clock)
        for _ in range(3):
            keeper.dyno.crash()
            await settle(clock, 1)
        await settle(clock)
        assert keeper.failed is None and keeper.spec.release == 2 and keeper.ready.is_set()
        assert 3 in keeper.failed_canaries
        watch.cancel()

    run(test)
