"""``kiln deploy`` and ``kiln builds`` against a live control plane (slug builds)."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kiln.cli.main import cli
from tests.support.apps import APPS, EXAMPLES


@pytest.fixture
def kiln(slug_api, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KILN_API_URL", slug_api.url)
    monkeypatch.setenv("KILN_TOKEN", slug_api.token)
    return lambda *args: CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_deploy_streams_the_build_and_releases(kiln: Callable[..., Result]) -> None:
    assert kiln("apps:create", "echo").exit_code == 0
    result = kiln("deploy", str(EXAMPLES / "echo"))  # the app comes from examples/echo/kiln.toml
    assert result.exit_code == 0, result.output
    assert "-----> Uploading echo to echo: 3 files" in result.output
    assert "-----> Detected a python app (main:app)" in result.output
    assert "-----> Released v2" in result.output
    listing = json.loads(kiln("builds", "-a", "echo", "--json").output)
    assert listing[0]["status"] == "succeeded" and listing[0]["release"] == 2
    assert "Artifact: slug" in kiln("builds:info", str(listing[0]["id"]), "-a", "echo").output
    assert "-----> Released v2" in kiln("builds:log", str(listing[0]["id"]), "-a", "echo").output


def test_a_failed_deploy_exits_non_zero_with_the_cause(kiln: Callable[..., Result]) -> None:
    kiln("apps:create", "broken")
    result = kiln("deploy", str(APPS / "missing_requirement"), "-a", "broken")
    assert result.exit_code == 1
    assert (
        " !     Build failed: could not install the dependencies from requirements.txt"
        in result.output
    )
    assert (
        "Error: build 1 failed" in result.output and "kiln builds:log 1 -a broken" in result.output
    )


def test_deploy_to_a_missing_app(kiln: Callable[..., Result], tmp_path: Path) -> None:
    result = kiln("deploy", str(EXAMPLES / "echo"), "-a", "ghost")
    assert result.exit_code == 1 and "app ghost not found" in result.output
