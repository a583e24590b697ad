"""The source layout guards: `platform/` is a folder, never a package shadowing the stdlib."""

import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_platform_folder_is_not_a_package() -> None:
    assert not (ROOT / "platform" / "__init__.py").exists(), (
        "platform/__init__.py makes 'platform' a package that shadows the standard library"
    )


def test_import_platform_is_the_standard_library() -> None:
    assert hasattr(platform, "python_version"), platform.__file__
    assert "site-packages" not in platform.__file__ and "/platform/" not in platform.__file__


def test_import_platform_from_repo_root_is_the_standard_library() -> None:
    probe = "import platform, uuid; print(platform.python_version())"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == platform.python_version()


def test_kiln_is_imported_from_the_platform_folder() -> None:
    import kiln

    assert Path(kiln.__file__).resolve().parent == ROOT / "platform" / "kiln"


def test_top_level_layout() -> None:
    for name in ("pyproject.toml", "platform", "runtimes", "examples", "tests", "infra"):
        assert (ROOT / name).exists(), name
