"""The supervisor's policy, apart from its plumbing: keep one dyno of a release serving.

Start it and wait for its health path; restart it in place when it exits; give up after a crash
loop (three exits in a minute: the replica turns unhealthy, and Serve replaces it); swap it for
another release's dyno when asked (a canary), and go back when that one will not start or keep
running. What a dyno is, how it starts and how its health is probed is the host's
(``kiln.run.supervisor``, the Ray Serve deployment); time is the clock's, so tests run the
whole policy with a fake dyno and a fake clock.

    keeper = DynoKeeper(spec, host)
    await keeper.start()                  # raises DynoFailed with the dyno's last lines
    watching = asyncio.create_task(keeper.watch())
"""

from __future__ import annotations

__all__ = ["Clock", "DynoFailed", "DynoHost", "DynoKeeper", "RealClock"]

import asyncio
import collections
import time
from typing import Protocol

from kiln.run.dyno import Dyno
from kiln.run.spec import DynoSpec

CRASH_LOOP_RESTARTS = 3
CRASH_LOOP_WINDOW_S = 60.0


class DynoFailed(RuntimeError):
    """The dyno could not be made ready; the message carries its exit and last log lines."""


class Clock(Protocol):
    def now(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class DynoHost(Protocol):
    """What the keeper asks of whoever runs dynos for it."""

    async def prepare(self, spec: DynoSpec) -> None: ...
    def make(self, spec: DynoSpec) -> Dyno: ...
    async def start(self, dyno: Dyno) -> None: ...
    async def alive(self, dyno: Dyno) -> bool: ...
    async def stop(self, dyno: Dyno, timeout_s: float) -> None: ...
    async def healthy(self, dyno: Dyno, spec: DynoSpec) -> bool: ...
    def log(self, source: str, line: str, release: int) -> None: ...


class DynoKeeper:
    def __init__(
        self, spec: DynoSpec, host: DynoHost, clock: Clock | None = None,
        restarts: int = CRASH_LOOP_RESTARTS, window_s: float = CRASH_LOOP_WINDOW_S,
    ) -> None:  # fmt: skip
        self.host = host
        self.clock = clock or RealClock()
        # The release the app's args name; the one a canary swaps away from and back to.
        self.base = self.spec = self.wanted = spec
        self.dyno = host.make(spec)
        self.ready = asyncio.Event()
        self.failed: str | None = None  # set: the replica is unhealthy for good
        self.generation = 0  # dynos that became ready: a restart in place makes a new one
        self.restarts = restarts
        self.window_s = window_s
        self.exits: collections.deque[float] = collections.deque(maxlen=restarts)
        self.failed_canaries: set[int] = set()
        self.swapping = False
        self._swap: asyncio.Task[None] | None = None

    # -- starting ----------------------------------------------------------------------------

    async def start(self) -> None:
        artifact = self.spec.artifact
        self._log(
            "release", f"starting v{self.spec.release} ({artifact.kind} {artifact.digest[:19]})"
        )
        try:
            await self.host.prepare(self.spec)  # the artifact and weights on this node
        except DynoFailed as exc:
            self._log("release", str(exc))  # Serve keeps only its own words for a failed start
            raise
        await self._start(self.spec.startup_timeout_s)

    async def _start(self, timeout_s: float) -> None:
        """Start the dyno and wait until its health path answers 200; raise DynoFailed if not."""
        self.ready.clear()
        await self.host.start(self.dyno)
        deadline = self.clock.now() + timeout_s
        while self.clock.now() < deadline:
            if not await self.host.alive(self.dyno):
                await self.clock.sleep(0.2)  # let the last lines arrive
                raise DynoFailed(
                    self.report(f"exited with code {self.dyno.exit_code()} before it was ready")
                )
            if await self.host.healthy(self.dyno, self.spec):
                self.generation += 1
                self.ready.set()
                self._log("release", f"dyno ready at {self.dyno.url}")
                return
            await self.clock.sleep(0.05)
        await self.host.stop(self.dyno, self.spec.stop_timeout_s)
        raise DynoFailed(
            self.report(f"did not answer {self.spec.health_path} with 200 within {timeout_s:.0f}s")
        )

    def report(self, what: str) -> str:
        lines = "\n".join(self.dyno.recent_lines()[-15:]) or "(no output)"
        message = (
            f"the dyno of {self.spec.app} v{self.spec.release} {what}; its last lines:\n{lines}"
        )
        self._log("release", message)
        return message

    # -- keeping it running ------------------------------------------------------------------

    async def watch(self) -> None:
        """Restart the dyno in place when it exits; give up (unhealthy) on a crash loop, or,
        for a canary's dyno, give the canary up and go back to the release before it."""
        while True:
            if self.swapping or await self.host.alive(self.dyno):
                await self.clock.sleep(0.1)
                continue
            code = self.dyno.exit_code()
            self.ready.clear()
            now = self.clock.now()
            self.exits.append(now)
            self._log("dyno", f"exited with code {code}; restarting in place")
            if len(self.exits) == self.restarts and now - self.exits[0] < self.window_s:
                why = (
                    f"crashed {self.restarts} times in {self.window_s:.0f}s (last exit code {code})"
                )
                if self.spec.release != self.base.release:
                    self.give_up_canary(self.report(why))
                    continue
                self.failed = self.report(why)
                return
            try:
                await self._start(self.spec.startup_timeout_s)
            except DynoFailed as exc:
                self.failed = str(exc)
                return

    async def wait_ready(self) -> bool:
        """True once the dyno serves; False if it failed, or did not within its start time."""
        if self.ready.is_set():
            return True
        if self.failed:
            return False
        try:
            await asyncio.wait_for(self.ready.wait(), timeout=min(self.spec.startup_timeout_s, 120))
        except TimeoutError:
            return False
        return True

    async def recover(self) -> bool:
        """A request could not reach the dyno: True once it serves again. If it died, wait for
        the watch to have restarted it (a new generation), not just for a stale ready flag."""
        generation = self.generation
        # A dyno just killed refuses connections a moment before it can be reaped, and looks
        # alive meanwhile: look again for a while before trusting the ready flag.
        settle = self.clock.now() + 1.0
        while self.generation == generation and await self.host.alive(self.dyno):
            if self.clock.now() > settle:
                return self.ready.is_set()
            await self.clock.sleep(0.05)
        deadline = self.clock.now() + min(self.spec.startup_timeout_s, 120)
        while self.generation == generation and not self.failed and self.clock.now() < deadline:
            await self.clock.sleep(0.02)
        return self.generation != generation and self.ready.is_set()

    # -- another release in place (a canary) -------------------------------------------------

    def want(self, spec: DynoSpec) -> None:
        """Run ``spec``'s release here (a canary), or the base one again; the swap happens in
        the background, and a canary that failed here before is not tried again."""
        if spec.release != self.base.release and spec.release in self.failed_canaries:
            spec = self.base
        self.wanted = spec
        if spec.release != self.spec.release and (self._swap is None or self._swap.done()):
            self._swap = asyncio.get_running_loop().create_task(self.converge())

    async def converge(self) -> None:
        """Swap the dyno for the wanted release's until they agree."""
        while self.wanted.release != self.spec.release:
            wanted = self.wanted
            canary = wanted.release != self.base.release
            self._log("release", f"switching to v{wanted.release}"
                      + (" (canary)" if canary else f" from the canary v{self.spec.release}"))  # fmt: skip
            try:
                await self.host.prepare(wanted)  # while the old dyno still serves
            except DynoFailed as exc:
                if not canary:
                    self.failed = str(exc)
                    return
                self.failed_canaries.add(wanted.release)  # the old dyno never stopped
                self._log("release", f"canary v{wanted.release} failed: {exc}")
                self.wanted = self.base
                continue
            self.swapping = True
            try:
                self.ready.clear()
                await self.host.stop(self.dyno, self.spec.stop_timeout_s)
                self.spec = wanted
                self.exits.clear()
                self.dyno = self.host.make(wanted)
                await self._start(wanted.startup_timeout_s)
            except DynoFailed as exc:
                if not canary:
                    self.failed = str(exc)
                    return
                self.give_up_canary(str(exc))
            finally:
                self.swapping = False

    def give_up_canary(self, reason: str) -> None:
        """The canary's dyno would not start or keep running here: say so (the release stage
        aborts the canary) and go back to the release before it."""
        self.failed_canaries.add(self.spec.release)
        self._log("release", f"canary v{self.spec.release} failed: {reason}")
        self.wanted = self.base
        self.swapping = True  # the watch must not restart the canary's dyno meanwhile
        if self._swap is None or self._swap.done():
            self._swap = asyncio.get_running_loop().create_task(self.converge())

    async def stop(self) -> None:
        if self._swap is not None:
            self._swap.cancel()
        await self.host.stop(self.dyno, self.spec.stop_timeout_s)

    def _log(self, source: str, line: str) -> None:
        self.host.log(source, line, self.spec.release)
