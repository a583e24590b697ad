"""Faithful fakes of the adapters, for fast unit tests: Serve (schema-checked, all or nothing),
an add-on provider, dynos with a fake clock. Each real adapter also has tests of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from kiln.addons.base import Provisioned
from kiln.manifest import AddonKind
from kiln.run.keeper import DynoFailed
from kiln.run.serve_api import AppState, ServeRefused
from kiln.run.serve_config import FRONT
from kiln.run.spec import DynoSpec


class FakeServe:
    """Serve as the reconciler sees it: a config goes in (checked against Serve's own schema, as
    its REST API does, all or nothing), app states come out. ``refuse`` names (app, release)
    pairs it refuses for reasons a schema does not show."""

    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []
        self.apps: dict[str, AppState] = {}
        self.refuse: set[tuple[str, int]] = set()
        self.front: dict[str, Any] | None = None  # the front's application, as last applied

    def apply(self, config: dict[str, Any]) -> None:
        try:
            ServeDeploySchema.model_validate(config)
        except ValidationError as exc:
            raise ServeRefused(f"Ray Serve refused the config (400): {exc}") from None
        apps = [a for a in config["applications"] if a["name"] != FRONT]
        refused = self.refuse & {(a["name"], a["args"]["spec"]["release"]) for a in apps}
        if refused:
            raise ServeRefused(f"Ray Serve refused the config (400): {sorted(refused)} conflict")
        self.applied.append(config)
        self.front = next(a for a in config["applications"] if a["name"] == FRONT)
        current = {a["name"]: a["args"]["spec"]["release"] for a in apps}
        self.apps = {n: s for n, s in self.apps.items() if n in current}
        for name, release in current.items():
            previous = self.apps.get(name)
            if previous is None or previous.release != release:
                self.apps[name] = AppState(name=name, status="DEPLOYING", release=release)

    def status(self) -> dict[str, AppState]:
        return dict(self.apps)

    def settle(self, name: str, status: str, message: str = "") -> None:
        self.apps[name] = self.apps[name].model_copy(
            update={"status": status, "deployment_message": message}
        )


class FakeVectors:
    """A vector-store provider that keeps what it made in a set."""

    kind = AddonKind.VECTOR_STORE

    def __init__(self) -> None:
        self.made: set[str] = set()

    def planned_state(self, app: str, name: str) -> dict[str, Any]:
        return {"database": f"{app}_{name}"}

    def provision(self, app: str, name: str) -> Provisioned:
        self.made.add(f"{app}_{name}")
        return Provisioned(
            {"KILN_VECTOR_URL": f"postgresql://db/{app}"}, self.planned_state(app, name)
        )

    def deprovision(self, app: str, state: dict[str, Any]) -> None:
        self.made.discard(state["database"])

    def status(self, state: dict[str, Any]) -> str:
        return "available"


class FakeClock:
    """Time that passes only when something sleeps."""

    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


class FakeDyno:
    """A dyno that becomes healthy after ``ready_after`` probes, or exits at start (``dies``)."""

    def __init__(self, spec: DynoSpec, ready_after: int = 2, dies: bool = False) -> None:
        self.spec = spec
        self.url = f"http://dyno-v{spec.release}"
        self.socket: Path | None = None
        self.ready_after = ready_after
        self.dies = dies
        self.running = False
        self.code: int | None = None
        self.probes = 0

    def start(self) -> None:
        self.running, self.code, self.probes = not self.dies, (1 if self.dies else None), 0

    def alive(self) -> bool:
        return self.running

    def exit_code(self) -> int | None:
        return self.code

    def stop(self, timeout_s: float) -> None:
        if self.running:
            self.running, self.code = False, -15

    def crash(self, code: int = 1) -> None:
        self.running, self.code = False, code

    def recent_lines(self) -> list[str]:
        return [f"v{self.spec.release} says goodbye"] if self.code else []


class FakeHost:
    """What a supervisor does for its keeper, with fake dynos; ``behaviour(release)`` gives
    each new dyno's (ready_after, dies)."""

    def __init__(
        self, behaviour: Callable[[int], tuple[int, bool]] = lambda _r: (2, False)
    ) -> None:
        self.behaviour = behaviour
        self.made: list[FakeDyno] = []
        self.lines: list[tuple[str, str, int]] = []
        self.prepared: list[int] = []  # releases whose artifacts were brought to the node
        self.unreachable: set[int] = set()  # releases whose artifacts cannot be brought

    async def prepare(self, spec: DynoSpec) -> None:
        self.prepared.append(spec.release)
        if spec.release in self.unreachable:
            raise DynoFailed(f"could not bring v{spec.release}'s artifact to node fake")

    def make(self, spec: DynoSpec) -> FakeDyno:
        ready_after, dies = self.behaviour(spec.release)
        dyno = FakeDyno(spec, ready_after, dies)
        self.made.append(dyno)
        return dyno

    async def start(self, dyno: FakeDyno) -> None:
        dyno.start()

    async def alive(self, dyno: FakeDyno) -> bool:
        return dyno.alive()

    async def stop(self, dyno: FakeDyno, timeout_s: float) -> None:
        dyno.stop(timeout_s)

    async def healthy(self, dyno: FakeDyno, spec: DynoSpec) -> bool:
        dyno.probes += 1
        return dyno.running and dyno.probes >= dyno.ready_after

    def log(self, source: str, line: str, release: int) -> None:
        self.lines.append((source, line, release))
