"""Where the fixture apps and the examples are."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "tests" / "build" / "apps"
EXAMPLES = ROOT / "examples"
