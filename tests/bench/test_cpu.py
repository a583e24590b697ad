"""The benchmark's CPU accounting: roles from command lines, and CPU time per role from /proc."""

from __future__ import annotations

import subprocess
import sys

from kiln.bench.cpu import KERNEL, LOAD, Snapshot, role, snapshot, spent

SPIN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


def test_roles_come_from_command_lines() -> None:
    assert role("ray::ServeReplica:echo:dyno") == "replica echo"
    assert role("ray::ServeReplica:bare:bare") == "replica bare"
    assert role("/venv/bin/python -m kiln.bench.load http://127.0.0.1:1/ 16 10") == LOAD
    assert role("wrk -t 2 -c 16 -d 10s --latency http://127.0.0.1:1/") == LOAD
    assert role("/tmp/kiln/kiln-haproxy /usr/sbin/haproxy -f cfg") == "HAProxy"
    assert role("/srv/venv/bin/python -m kiln_runtime.dyno") == "dyno"
    assert role("ray::LogSink.write") == "log sink"
    assert role("ray::ServeController") == "Ray"
    assert role("/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --x") == "Ray"
    assert role("/usr/bin/bash") == "other"


def test_a_finished_child_counts_as_the_load_and_a_running_process_by_its_role() -> None:
    before = snapshot()
    subprocess.run([sys.executable, "-c", SPIN], check=True)  # ends before the second snapshot
    running = subprocess.Popen([sys.executable, "-c", SPIN + "import time; time.sleep(30)"])
    try:
        for _ in range(100):  # until it has spun and sleeps
            after = snapshot()
            if after.by_pid.get(running.pid, ("", 0.0))[1] >= 0.25:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        used = spent(before, after)
    finally:
        running.kill()
        running.wait()
    assert used.by_role[LOAD] >= 0.25  # the finished child, through this process's rusage
    assert used.by_role["other"] >= 0.25  # the running one, through /proc
    assert used.machine_s >= 0.5


def test_a_process_that_changed_role_counts_whole_and_the_rest_is_the_kernels() -> None:
    before = Snapshot({1: ("Ray", 5.0), 2: ("Ray", 1.0)}, machine_s=100.0, children_s=0.0)
    # pid 2 was an idle Ray worker; it became a replica (Ray retitles it) and used 0.5 s since
    after = Snapshot({1: ("Ray", 5.25), 2: ("replica a", 1.5), 3: ("dyno", 0.75)},
                     machine_s=103.0, children_s=0.5)  # fmt: skip
    used = spent(before, after)
    assert used.by_role == {"Ray": 0.25, "replica a": 1.5, "dyno": 0.75, LOAD: 0.5, KERNEL: 0.0}
    assert used.per_request_ms(1000)["replica a"] == 1.5
    assert used.line(1000).startswith("CPU ms/request 3.00: replica a 1.50, dyno 0.75, load 0.50")
