"""What runs inside a Kiln dyno: each runtime's buildpack (detect + plan) and its HTTP server."""

import os
from pathlib import Path

__version__ = "0.1.0"
__all__ = ["__version__", "process_age_s"]


def process_age_s() -> float | None:
    """Seconds since this process started, from its start time in /proc (to the clock tick);
    None where there is no /proc."""
    try:
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - int(stat[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
