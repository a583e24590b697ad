"""Where a benchmark's CPU time went, per request and per process role: read from ``/proc``
before and after a load run, so the figure holds on a noisy machine where req/s does not (the
CPU a request costs barely changes when a neighbour steals the cores; the req/s does).

Roles: the load generator (a process this one started and waited for, or one still running),
HAProxy, each Serve replica (``replica <app>``), dynos, Kiln's log sink, the rest of Ray, other
processes, and the kernel's share no process was charged with (softirqs: loopback networking).
"""

from __future__ import annotations

__all__ = ["Spent", "role", "snapshot", "spent"]

import os
import resource
from dataclasses import dataclass
from pathlib import Path

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")
KERNEL = "kernel"
LOAD = "load"


@dataclass(frozen=True)
class Snapshot:
    by_pid: dict[int, tuple[str, float]]  # pid -> (role, CPU seconds so far)
    machine_s: float  # busy CPU seconds of the whole machine so far
    children_s: float  # CPU seconds of this process's children that ended (the load generator)


@dataclass(frozen=True)
class Spent:
    by_role: dict[str, float]  # CPU seconds in the run, per role
    machine_s: float

    def per_request_ms(self, requests: int) -> dict[str, float]:
        """CPU milliseconds per request, per role, the biggest first."""
        ordered = sorted(self.by_role.items(), key=lambda item: -item[1])
        return {name: seconds * 1000 / max(requests, 1) for name, seconds in ordered}

    def line(self, requests: int) -> str:
        shares = self.per_request_ms(requests)
        parts = ", ".join(f"{name} {ms:.2f}" for name, ms in shares.items() if ms >= 0.005)
        return f"CPU ms/request {self.machine_s * 1000 / max(requests, 1):.2f}: {parts}"


def role(cmdline: str) -> str:
    """The role of a process, from its command line (Ray titles its workers ``ray::...``)."""
    if cmdline.startswith("ray::ServeReplica:"):
        return "replica " + cmdline.split(":")[3]
    if cmdline.startswith("ray::LogSink"):  # Kiln's: where the router's lines are written
        return "log sink"
    if "kiln.bench.load" in cmdline or cmdline.startswith("wrk"):
        return LOAD
    if "haproxy" in cmdline:
        return "HAProxy"
    if "kiln_runtime" in cmdline or "uvicorn" in cmdline:
        return "dyno"
    if cmdline.startswith("ray::") or "/ray/" in cmdline or "raylet" in cmdline:
        return "Ray"
    return "other"


def snapshot(proc: Path = Path("/proc")) -> Snapshot:
    by_pid: dict[int, tuple[str, float]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        # utime, stime: fields 14 and 15 of stat, counted from 1 (3 is the first after the name)
        by_pid[int(entry.name)] = (
            role(cmdline.strip()),
            (int(fields[11]) + int(fields[12])) * _TICK_S,
        )
    cpu = (proc / "stat").read_text().splitlines()[0].split()[1:]
    # user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait
    values = [int(value) for value in cpu[:8]]
    machine_s = (sum(values) - values[3] - values[4]) * _TICK_S
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Snapshot(by_pid, machine_s, children.ru_utime + children.ru_stime)


def spent(before: Snapshot, after: Snapshot) -> Spent:
    """CPU seconds between two snapshots, per role; processes that lived through both (and
    those born between them), and the kernel's uncharged rest."""
    by_role: dict[str, float] = {}
    for pid, (name, seconds) in after.by_pid.items():
        earlier = before.by_pid.get(pid)
        used = seconds - (earlier[1] if earlier is not None and earlier[0] == name else 0.0)
        by_role[name] = by_role.get(name, 0.0) + max(used, 0.0)
    # A load generator that ran in a process of its own ended before ``after``: its time is in
    # this process's children's.
    by_role[LOAD] = by_role.get(LOAD, 0.0) + after.children_s - before.children_s
    machine_s = after.machine_s - before.machine_s
    by_role[KERNEL] = max(machine_s - sum(by_role.values()), 0.0)
    return Spent(by_role, machine_s)
