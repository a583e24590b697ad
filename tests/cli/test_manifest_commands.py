"""``kiln manifest:check`` and ``manifest:schema`` need no server."""

import json
from pathlib import Path

from click.testing import CliRunner

from kiln.cli.main import cli


def test_check_a_valid_manifest(tmp_path: Path) -> None:
    (tmp_path / "kiln.toml").write_text('name = "chat"\n[resources]\ngpu = "any:0.5"\n')
    result = CliRunner().invoke(cli, ["manifest:check", str(tmp_path)])
    assert (
        result.exit_code == 0
        and "is valid: app chat" in result.output
        and "any:0.5" in result.output
    )


def test_check_reports_each_problem_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "kiln.toml").write_text(
        'name = "chat"\n[scaling]\nmin_replicas = 3\nmax_replicas = 2\n'
    )
    result = CliRunner().invoke(cli, ["manifest:check", str(tmp_path)])
    assert result.exit_code == 1
    assert (
        "kiln.toml:4 scaling.max_replicas: got 2; must be >= scaling.min_replicas (3)"
        in result.output
    )


def test_check_without_a_manifest(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["manifest:check", str(tmp_path)])
    assert result.exit_code == 1 and "no kiln.toml in" in result.output


def test_schema_is_json_schema_of_the_manifest() -> None:
    result = CliRunner().invoke(cli, ["manifest:schema"])
    schema = json.loads(result.output)
    assert schema["title"] == "kiln.toml" and "resources" in schema["properties"]
