"""Where the fixture apps and the examples are."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "tests" / "apps"
EXAMPLES = ROOT / "examples"


def echo_with_release(where: Path, command: str) -> Path:
    """The echo example, its kiln.toml with ``release = COMMAND``, as a new directory in WHERE."""
    app = where / "echo-release"
    app.mkdir(exist_ok=True)
    for name in ("main.py", "requirements.txt"):
        (app / name).write_text((EXAMPLES / "echo" / name).read_text())
    manifest = (EXAMPLES / "echo" / "kiln.toml").read_text()
    (app / "kiln.toml").write_text(
        manifest.replace(
            'runtime = "python"', f'runtime = "python"\nrelease = {json.dumps(command)}'
        )
    )
    return app


def write_app(where: Path, name: str, files: dict[str, str]) -> Path:
    """An app's source as a new directory ``where/name`` holding ``files`` (path -> text)."""
    app = where / name
    app.mkdir()
    for path, text in files.items():
        (app / path).write_text(text)
    return app
