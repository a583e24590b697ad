"""What a replica's fresh worker process does at each cold start before its dyno can start: import
Kiln's supervisor (after Ray and Serve), and measure its own age for the start's split."""

import subprocess
import sys
import time

# Each is only what the control plane needs (the API's HTTP client and CLI, the platform's
# settings, the engine scrape's parser); each was imported by every replica, at its start.
NOT_AT_A_COLD_START = ("httpx", "kiln.settings", "pydantic_settings", "prometheus_client")

IMPORTS = """
import sys
import kiln.run.supervisor
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in {"httpx", "kiln",
      "pydantic_settings", "prometheus_client"})))
"""


def test_the_supervisor_imports_nothing_only_the_control_plane_needs() -> None:
    imports = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True,
                             check=True, timeout=120)  # fmt: skip
    loaded = set(imports.stdout.split())
    assert "kiln.run.supervisor" in loaded
    assert not [m for m in loaded if m in NOT_AT_A_COLD_START], sorted(loaded)


AGE = """
import time
time.sleep(0.4)
from kiln_runtime import process_age_s
print(process_age_s())
"""


def test_a_process_knows_its_own_age_to_the_clock_tick() -> None:
    # The replica's split (worker process, then dyno) rests on it; a start time from the boot
    # time in whole seconds (psutil's) was off by up to a second.
    started = time.monotonic()
    printed = subprocess.run([sys.executable, "-c", AGE], capture_output=True, text=True,
                             check=True, timeout=60).stdout  # fmt: skip
    took = time.monotonic() - started
    age = float(printed)
    assert 0.39 <= age <= took + 0.02, (age, took)  # /proc counts in ticks of 10 ms
