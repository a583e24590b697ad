"""The README's CLI table lists every command, and only commands that exist."""

import re
from pathlib import Path

from kiln.cli.main import cli

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_lists_every_cli_command() -> None:
    text = README.read_text()
    documented = set(re.findall(r"^\| `kiln ([a-z:]+)", text, flags=re.M))
    documented |= set(re.findall(r" / `([a-z]+:[a-z]+)", text))  # rows that list several verbs
    assert documented == {name for name, command in cli.commands.items() if not command.hidden}


def test_readme_starts_with_the_quickstart() -> None:
    headings = re.findall(r"^## (.+)$", README.read_text(), flags=re.M)
    assert headings[0] == "Quickstart"
