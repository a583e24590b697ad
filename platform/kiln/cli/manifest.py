"""``kiln manifest:check [DIR]`` and ``kiln manifest:schema``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from kiln.cli.output import success
from kiln.errors import InvalidInput
from kiln.manifest import MANIFEST_FILE, Manifest, find_manifest, load_manifest


@click.command("manifest:check")
@click.argument("path", default=".", type=click.Path(path_type=Path))
def manifest_check(path: Path) -> None:
    """Validate the kiln.toml in DIR (or the file PATH)."""
    file = find_manifest(path)
    manifest = load_manifest(path)
    if file is None or manifest is None:
        raise InvalidInput(
            f"no {MANIFEST_FILE} in {path}; create one (kiln manifest:schema shows every field), "
            "or let the runtime be detected at deploy time",
            code="no_manifest",
        )
    runtime = manifest.runtime.value if manifest.runtime else "detected at deploy"
    gpu = ", ".join(str(g) for g in manifest.resources.gpu) or "none"
    success(
        f"{file} is valid: app {manifest.name or '(from -a)'}, runtime {runtime}, GPU {gpu}, "
        f"replicas {manifest.scaling.min_replicas}..{manifest.scaling.max_replicas}.",
        "kiln deploy",
    )


@click.command("manifest:schema")
def manifest_schema() -> None:
    """Print the JSON Schema of kiln.toml (for editors and CI)."""
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "kiln.toml"
    click.echo(json.dumps(schema, indent=2))


COMMANDS = [manifest_check, manifest_schema]
